"""Same as `factorgym inspect ...` (see `factorgym inspect --help`)."""

import sys

from factorgym.cli import main

if __name__ == "__main__":
    sys.exit(main(["inspect", *sys.argv[1:]]))
