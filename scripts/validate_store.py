"""Same as `factorgym validate ...` (see `factorgym validate --help`)."""

import sys

from factorgym.cli import main

if __name__ == "__main__":
    sys.exit(main(["validate", *sys.argv[1:]]))
