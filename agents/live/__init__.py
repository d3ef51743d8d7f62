"""Paper and live trading on the agents side: the ccxt adapter of the ``Exchange`` port and the runner."""
