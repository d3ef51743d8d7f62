"""Same as `factorgym quickstart ...` (see `factorgym quickstart --help`)."""

import sys

from factorgym.cli import main

if __name__ == "__main__":
    sys.exit(main(["quickstart", *sys.argv[1:]]))
