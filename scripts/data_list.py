"""Same as `factorgym data list ...` (see `factorgym data list --help`)."""

import sys

from factorgym.cli import main

if __name__ == "__main__":
    sys.exit(main(["data", "list", *sys.argv[1:]]))
