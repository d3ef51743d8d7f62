"""Same as `factorgym build ...` (see `factorgym build --help`)."""

import sys

from factorgym.cli import main

if __name__ == "__main__":
    sys.exit(main(["build", *sys.argv[1:]]))
