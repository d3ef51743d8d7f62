"""Same as `factorgym download ...` (see `factorgym download --help`)."""

import sys

from factorgym.cli import main

if __name__ == "__main__":
    sys.exit(main(["download", *sys.argv[1:]]))
