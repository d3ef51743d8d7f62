"""Same as `factorgym import ...` (see `factorgym import --help`)."""

import sys

from factorgym.cli import main

if __name__ == "__main__":
    sys.exit(main(["import", *sys.argv[1:]]))
