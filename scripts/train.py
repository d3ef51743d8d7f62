"""Same as `factorgym train ...` (see `factorgym train --help`)."""

import sys

from factorgym.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
