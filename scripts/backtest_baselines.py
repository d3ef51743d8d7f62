"""Same as `factorgym backtest-baselines ...` (see `factorgym backtest-baselines --help`)."""

import sys

from factorgym.cli import main

if __name__ == "__main__":
    sys.exit(main(["backtest-baselines", *sys.argv[1:]]))
