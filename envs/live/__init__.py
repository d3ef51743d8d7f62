"""Paper and live trading: the ``Exchange`` port, the SQLite event log and the paper exchange.

Plain Python over the engine's accounting (:mod:`factorgym.envs.execution`); no ccxt here (the ccxt
adapter lives in :mod:`factorgym.agents.live.ccxt_exchange`).
"""

from __future__ import annotations

from factorgym._lazy import export_lazily

_EXPORTS = {
    "Exchange": "factorgym.envs.live.exchange:Exchange",
    "EventLog": "factorgym.envs.live.events:EventLog",
    "PaperExchange": "factorgym.envs.live.paper:PaperExchange",
    "CandleFeed": "factorgym.envs.live.candle_feed:CandleFeed",
    "LiveCandles": "factorgym.envs.live.candle_feed:LiveCandles",
}
export_lazily(__name__, _EXPORTS)
