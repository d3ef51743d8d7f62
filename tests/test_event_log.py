"""The SQLite event log: sequence numbers, commit before acting, checksums that catch a damaged last
event (power cut) and refuse damage elsewhere, batches, secrets never written."""

from __future__ import annotations

import logging
import sqlite3

import pytest

from factorgym.envs.live.events import EventLog, EventLogError, checksum


def _fill(path, n=5, run_id="r"):
    with EventLog(path, run_id) as log:
        for k in range(n):
            log.append("tick", 1000 * k, k=k, x=0.1 * k)


def test_sequence_numbers_per_run_and_exact_floats(tmp_path):
    path = tmp_path / "events.sqlite"
    _fill(path, 3, "a")
    _fill(path, 2, "b")
    with EventLog(path, "a") as a, EventLog(path, "b") as b:
        assert [e.seq for e in a] == [1, 2, 3] and [e.seq for e in b] == [1, 2]
        assert [e.data["x"] for e in a] == [0.0, 0.1, 0.2]  # floats round-trip exactly
        assert a.append("tick", 5000, k=3).seq == 4
        assert [e.seq for e in a.events(until_ts=1000)] == [1, 2]
        assert a.last().seq == 4 and a.count("tick") == 4


def test_each_append_is_committed_before_it_returns(tmp_path):
    path = tmp_path / "events.sqlite"
    log = EventLog(path, "r")
    log.append("order_accepted", 0, id="1")
    other = sqlite3.connect(path)  # another connection (another process) sees it at once
    assert other.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1
    other.close()
    log.close()


def test_a_batch_is_all_or_nothing(tmp_path):
    path = tmp_path / "events.sqlite"
    log = EventLog(path, "r")
    log.append("start", 0)
    with pytest.raises(RuntimeError):
        with log.batch():
            log.append("fill", 1, q=1.0)
            raise RuntimeError("crash mid-bar")
    with log.batch() as written:
        log.append("fill", 1, q=2.0)
        log.append("bar", 1, cash=1.0)
    assert [e.seq for e in written] == [2, 3]
    log.close()
    with EventLog(path, "r") as again:
        assert [(e.kind, e.data) for e in again] == [("start", {}), ("fill", {"q": 2.0}), ("bar", {"cash": 1.0})]


@pytest.mark.parametrize("damage", ["cut_payload", "bad_checksum", "garbage"])
def test_a_damaged_last_event_is_dropped_and_said(tmp_path, caplog, damage):
    path = tmp_path / "events.sqlite"
    _fill(path, 5)
    db = sqlite3.connect(path)
    if damage == "cut_payload":  # a power cut mid-write: the last payload is incomplete
        db.execute("UPDATE events SET payload = substr(payload, 1, 7) WHERE seq = 5")
    elif damage == "bad_checksum":
        db.execute("UPDATE events SET checksum = checksum + 1 WHERE seq = 5")
    else:
        db.execute("UPDATE events SET payload = X'00FF01' WHERE seq = 5")  # bytes, not text
    db.commit()
    db.close()
    with caplog.at_level(logging.WARNING):
        log = EventLog(path, "r")
    assert "replaying up to event 4" in caplog.text
    assert [e.seq for e in log][:4] == [1, 2, 3, 4]
    assert log.repaired is not None and log.repaired.kind == "log_repaired"
    assert log.repaired.data["dropped_seq"] == 5 and log.repaired.data["replayed_to"] == 4
    assert log.append("tick", 9000).seq == 6  # the log goes on after the repair event
    log.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT seq FROM damaged").fetchall() == [(5,)]
    db.close()
    with EventLog(path, "r") as again:  # and opens clean afterwards
        assert again.repaired is None and again.last_seq == 6


def test_damage_before_the_last_event_is_refused(tmp_path):
    path = tmp_path / "events.sqlite"
    _fill(path, 5)
    db = sqlite3.connect(path)
    db.execute("UPDATE events SET payload = '{\"k\":99,\"x\":0.2}' WHERE seq = 3")
    db.commit()
    db.close()
    with pytest.raises(EventLogError, match="event 3 .* is damaged .* not the last"):
        EventLog(path, "r")


def test_a_missing_event_breaks_the_chain(tmp_path):
    path = tmp_path / "events.sqlite"
    _fill(path, 5)
    db = sqlite3.connect(path)
    db.execute("DELETE FROM events WHERE seq = 2")
    db.commit()
    db.close()
    with pytest.raises(EventLogError, match="event 2"):
        EventLog(path, "r")


def test_checksum_is_chained():
    assert checksum(0, 1, 0, "a", "{}") != checksum(1, 1, 0, "a", "{}")
    assert checksum(0, 1, 0, "a", "{}") == checksum(0, 1, 0, "a", "{}")


def test_secrets_are_never_written(tmp_path):
    path = tmp_path / "events.sqlite"
    key = "PLANTEDKEY-1234567890abcdef"
    with EventLog(path, "r") as log:
        log.add_secret(key)
        event = log.append("error", 0, message=f"GET https://api.x/order?apiKey={key}&signature=1")
        assert key not in event.data["message"] and "***" in event.data["message"]
    assert key.encode() not in path.read_bytes()
    wal = path.with_name(path.name + "-wal")
    assert not wal.exists() or key.encode() not in wal.read_bytes()


def test_a_killed_writer_leaves_only_whole_events(tmp_path, subprocess_env):
    """SIGKILL a process that appends in a loop: every row on disk verifies, the sequence has no hole."""
    import subprocess
    import sys
    import time
    path = tmp_path / "events.sqlite"
    code = ("import sys; from factorgym.envs.live.events import EventLog\n"
            "log = EventLog(sys.argv[1], 'r', durable=False)\n"
            "k = 0\n"
            "while True:\n"
            "    k += 1; log.append('tick', k, k=k, pad='x' * 500)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], env=subprocess_env)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            time.sleep(0.3)
            if path.exists():
                try:
                    db = sqlite3.connect(path)
                    n = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
                    db.close()
                except sqlite3.Error:
                    n = 0
                if n > 50:
                    break
    finally:
        proc.kill()
        proc.wait()
    with EventLog(path, "r") as log:
        seqs = [e.seq for e in log]
        assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) > 50
        assert log.repaired is None


def test_synchronous_setting_follows_durable(tmp_path):
    for durable, level in ((True, 2), (False, 1)):  # FULL = 2, NORMAL = 1
        with EventLog(tmp_path / f"{durable}.sqlite", "r", durable=durable) as log:
            assert log._db.execute("PRAGMA synchronous").fetchone()[0] == level
            assert log._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize("flags, replay, durable", [
    ([], True, False),                # a replay can be rerun from its inputs: NORMAL
    ([], False, True),                # live candles: every commit fsynced
    (["--durable"], True, True),
    (["--fast-log"], False, False),
])
def test_paper_log_durability_rule(flags, replay, durable):
    from factorgym.cli import build_parser
    from factorgym.commands.paper import log_durable

    args = build_parser().parse_args(["paper", "--policy", "p", "--state", "s", *flags])
    assert log_durable(args, replay=replay) is durable


def test_paper_durable_and_fast_log_contradict():
    from factorgym.cli import build_parser
    from factorgym.commands.paper import log_durable
    from factorgym.errors import ConfigError

    args = build_parser().parse_args(["paper", "--policy", "p", "--state", "s", "--durable", "--fast-log"])
    with pytest.raises(ConfigError, match="--durable and --fast-log"):
        log_durable(args, replay=True)


def test_reading_pauses_the_cyclic_gc_and_restores_it(tmp_path):
    import gc

    path = tmp_path / "events.sqlite"
    _fill(path, 4)
    with EventLog(path, "r") as log:
        seen = []
        for e in log:
            seen.append(gc.isenabled())
        assert seen == [False] * 4 and gc.isenabled()
        first = iter(log)
        assert next(first).seq == 1 and not gc.isenabled()  # paused while an iterator is alive ...
        del first
        assert gc.isenabled()  # ... and restored as soon as it is dropped
        gc.disable()
        try:
            list(log)
            assert not gc.isenabled()  # a caller's disabled collector stays disabled
        finally:
            gc.enable()
