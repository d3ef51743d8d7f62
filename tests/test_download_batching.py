"""Store writes during a download are batched so they stay a bounded share of the run."""

from __future__ import annotations

import time

import pandas as pd

import factorgym.data_layer.download as dl


def test_writes_wait_ten_times_the_last_write_and_lose_nothing(monkeypatch):
    monkeypatch.setattr(dl, "FLUSH_SECONDS", 0.0)  # without the write-share rule every page would be written
    monkeypatch.setattr(dl, "FLUSH_ROWS", 1)
    written, stamps = [], []

    def slow_write(frame: pd.DataFrame) -> int:
        time.sleep(0.03)  # a store write that costs 30 ms (as a big series does)
        written.append(len(frame))
        stamps.append(time.monotonic())
        return len(frame)

    batch = dl._Batcher(slow_write)
    t_end = time.monotonic() + 0.9
    pages = 0
    while time.monotonic() < t_end:
        batch.add(pd.DataFrame({"timestamp": [pages]}))
        pages += 1
        time.sleep(0.002)
    batch.flush()
    assert sum(written) == pages == batch.added  # every page written exactly once
    gaps = [b - a for a, b in zip(stamps, stamps[1:-1])]  # between flushes triggered by add()
    assert gaps and min(gaps) >= 0.03 / dl.WRITE_SHARE  # at least 10x the last write apart
    assert len(written) <= 0.9 / 0.3 + 2 < pages / 10
