"""The SQLite event log: sequence numbers, commit before acting, checksums that catch a damaged last
event (power cut) and refuse damage elsewhere, batches, group commit, format 2 (MessagePack
payloads) beside format 1 (JSON), secrets never written."""

from __future__ import annotations

import logging
import sqlite3
import zlib

import pytest

from factorgym.envs.live.events import SCHEMA, EventLog, EventLogError, checksum


def _fill(path, n=5, run_id="r", kind="tick"):
    with EventLog(path, run_id) as log:
        for k in range(n):
            log.append(kind, 1000 * k, k=k, x=0.1 * k)


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
            assert log.count("fill") == 1  # (a read inside the batch puts its rows in the transaction)
            raise RuntimeError("crash mid-bar")
    other = sqlite3.connect(path, timeout=0)  # the failed batch's transaction is over: another writer gets the lock
    other.execute("BEGIN IMMEDIATE")
    other.execute("ROLLBACK")
    other.close()
    with log.batch() as written:
        log.append("fill", 1, q=2.0)
        log.append("bar", 1, cash=1.0)
    assert [e.seq for e in written] == [2, 3]
    log.close()
    with EventLog(path, "r") as again:
        assert [(e.kind, e.data) for e in again] == [("start", {}), ("fill", {"q": 2.0}), ("bar", {"cash": 1.0})]


@pytest.mark.parametrize("kind", ["tick", "fill"])  # a JSON payload, a MessagePack one
@pytest.mark.parametrize("damage", ["cut_payload", "bad_checksum", "garbage"])
def test_a_damaged_last_event_is_dropped_and_said(tmp_path, caplog, damage, kind):
    path = tmp_path / "events.sqlite"
    _fill(path, 5, kind=kind)
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


@pytest.mark.parametrize("group_commit", [1, 4, 256])
def test_a_killed_writer_leaves_only_whole_events(tmp_path, subprocess_env, group_commit):
    """SIGKILL a process that appends batches of 3 events in a loop: every row on disk verifies, the
    sequence has no hole, and it ends at a batch's end (with group commit too)."""
    import subprocess
    import sys
    import time
    path = tmp_path / "events.sqlite"
    code = ("import sys; from factorgym.envs.live.events import EventLog\n"
            f"log = EventLog(sys.argv[1], 'r', durable=False, group_commit={group_commit})\n"
            "k = 0\n"
            "while True:\n"
            "    with log.batch():\n"
            "        for kind in ('tick', 'fill', 'bar'):\n"
            "            k += 1; log.append(kind, k, k=k, pad='x' * 500)\n")
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
        assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) > 50 and len(seqs) % 3 == 0
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


# ---------------------------------------------------------------------- group commit
def _on_disk(path) -> int:
    """Events another connection (another process) sees: the committed ones."""
    other = sqlite3.connect(path)
    try:
        return other.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    finally:
        other.close()


def test_group_commit_commits_every_n_batches_commit_and_close(tmp_path):
    path = tmp_path / "events.sqlite"
    log = EventLog(path, "r", group_commit=3)
    for b in range(2):
        with log.batch():
            log.append("fill", b, q=1.0)
            log.append("bar", b, cash=2.0)
    assert _on_disk(path) == 0 and log.last_seq == 4
    assert [e.seq for e in log] == [1, 2, 3, 4] and log.last().kind == "bar"  # this log reads its own pending events
    assert _on_disk(path) == 0
    log.append("tick", 2)  # a lone append is a batch of its own: the third
    assert _on_disk(path) == 5
    with log.batch():
        log.append("fill", 3, q=3.0)
    assert _on_disk(path) == 5
    log.commit()
    assert _on_disk(path) == 6
    with log.batch():
        log.append("fill", 4, q=4.0)
        log.commit()  # inside a batch: deferred to its end, never a half batch on disk
        assert _on_disk(path) == 6
    assert _on_disk(path) == 7
    log.append("tick", 5)
    log.close()
    assert _on_disk(path) == 8
    with EventLog(path, "r") as again:
        assert [e.seq for e in again] == list(range(1, 9)) and again.repaired is None


def test_group_commit_commits_a_batch_that_waited_long_enough(tmp_path, monkeypatch):
    import factorgym.envs.live.events as events

    clock = [100.0]
    monkeypatch.setattr(events.time, "monotonic", lambda: clock[0])
    path = tmp_path / "events.sqlite"
    log = EventLog(path, "r", group_commit=100)
    log.append("tick", 0)
    clock[0] += events.GROUP_COMMIT_S - 0.01
    log.append("tick", 1)
    assert _on_disk(path) == 0
    clock[0] += 0.02  # the oldest uncommitted batch is now older than GROUP_COMMIT_S
    log.append("tick", 2)
    assert _on_disk(path) == 3
    log.append("tick", 3)  # a new group starts its own clock
    assert _on_disk(path) == 3
    log.close()


@pytest.mark.parametrize("read_inside", [False, True])  # rows still in Python, or already in the transaction
def test_a_failed_batch_in_a_group_drops_only_itself(tmp_path, read_inside):
    path = tmp_path / "events.sqlite"
    log = EventLog(path, "r", group_commit=10)
    with log.batch():
        log.append("fill", 0, q=1.0)
    with pytest.raises(RuntimeError):
        with log.batch():
            log.append("fill", 1, q=2.0)
            if read_inside:
                assert log.count("fill") == 2
            raise RuntimeError("crash mid-bar")
    assert log.last_seq == 1
    with log.batch():
        log.append("bar", 2, cash=3.0)
    assert [(e.seq, e.kind) for e in log] == [(1, "fill"), (2, "bar")]
    log.close()
    with EventLog(path, "r") as again:
        assert [(e.seq, e.kind, e.data) for e in again] == [(1, "fill", {"q": 1.0}), (2, "bar", {"cash": 3.0})]


def test_pending_batches_are_committed_at_interpreter_exit(tmp_path, subprocess_env):
    import subprocess
    import sys

    path = tmp_path / "events.sqlite"
    code = ("import sys; from factorgym.envs.live.events import EventLog\n"
            "log = EventLog(sys.argv[1], 'r', group_commit=100)\n"
            "for k in range(5):\n"
            "    with log.batch():\n"
            "        log.append('fill', k, k=k); log.append('bar', k, k=k)\n")  # (never closed)
    subprocess.run([sys.executable, "-c", code, str(path)], env=subprocess_env, check=True, timeout=120)
    assert _on_disk(path) == 10


def test_group_commit_must_be_a_positive_integer(tmp_path):
    from factorgym.errors import ConfigError

    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="group_commit"):
            EventLog(tmp_path / "e.sqlite", "r", group_commit=bad)


# ---------------------------------------------------------------------- formats
def test_format_2_packs_the_per_bar_kinds_and_reads_them_back_exactly(tmp_path):
    import math

    path = tmp_path / "events.sqlite"
    data = {"trade": {"id": "t1", "price": 0.1 + 0.2, "amount": 1e-17, "info": {"kind": "order"}},
            "positions": [1.5, -2.25, 0.0], "weird": float("nan"), "big": 2**62, "none": None, "flag": True}
    with EventLog(path, "r") as log:
        assert log.format == 2
        log.append("fill", 1, **data)
        log.append("start", 0, note="JSON: readable in the sqlite3 shell")
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    assert db.execute("SELECT kind, typeof(payload) FROM events ORDER BY seq").fetchall() == [
        ("fill", "blob"), ("start", "text")]
    db.close()
    with EventLog(path, "r") as again:
        fill, start = list(again)
        assert math.isnan(fill.data.pop("weird")) and start.data == {"note": "JSON: readable in the sqlite3 shell"}
        assert fill.data == {k: v for k, v in data.items() if k != "weird"}
        assert again.last("fill").data["trade"]["price"] == 0.1 + 0.2


def _format_1_log(path, events):
    """A log as format 1 wrote it: JSON text payloads, no user_version, the same checksum chain."""
    import json

    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    crc = 0
    for seq, (kind, ts, data) in enumerate(events, 1):
        payload = json.dumps(data, separators=(",", ":"))
        crc = zlib.crc32(f"{crc}|{seq}|{ts}|{kind}|{payload}".encode())  # (format 1's checksum, spelled out)
        db.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", ("r", seq, ts, kind, payload, crc))
    db.commit()
    db.close()


def test_a_format_1_log_is_read_and_stays_format_1(tmp_path):
    path = tmp_path / "events.sqlite"
    _format_1_log(path, [("start", 0, {"initial_cash": 10.0}), ("fill", 5, {"q": 0.1}), ("bar", 5, {"cash": 9.5})])
    with EventLog(path, "r") as log:
        assert log.format == 1 and log.repaired is None
        assert [(e.kind, e.data) for e in log] == [("start", {"initial_cash": 10.0}), ("fill", {"q": 0.1}),
                                                   ("bar", {"cash": 9.5})]
        log.append("fill", 6, q=0.2)  # written as JSON: older versions still read the file
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 0
    assert {t for (t,) in db.execute("SELECT typeof(payload) FROM events")} == {"text"}
    db.close()
    with EventLog(path, "r") as again:
        assert again.last_seq == 4 and again.last().data == {"q": 0.2} and again.repaired is None


def test_a_newer_format_is_refused_in_one_line(tmp_path, capsys):
    from factorgym.cli import main

    path = tmp_path / "events.sqlite"
    _fill(path, 2)
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 3")
    db.commit()
    db.close()
    with pytest.raises(EventLogError, match="format 3 is newer than this factorgym reads"):
        EventLog(path, "r")
    (tmp_path / "run.json").write_text("{}")
    assert main(["paper", "status", "--state", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "format 3" in err and str(path) in err


def test_a_secret_in_a_packed_kind_is_redacted_too(tmp_path):
    path = tmp_path / "events.sqlite"
    key = "PLANTEDKEY-packed-1234567890"
    with EventLog(path, "r") as log:
        log.add_secret(key)
        event = log.append("fill", 0, trade={"info": {"raw": f"apiKey={key}"}})
        assert event.data["trade"]["info"]["raw"] == "apiKey=***"
    assert key.encode() not in path.read_bytes()
    with EventLog(path, "r") as again:
        assert again.last().data["trade"]["info"]["raw"] == "apiKey=***"


@pytest.mark.parametrize("n", [1, 3, 4, 5, 17, 63, 64, 65, 255, 256, 257, 600])
def test_a_group_of_any_size_is_written_whole_and_in_order(tmp_path, n):
    """One commit of ``n`` events (multi-row INSERTs of 256, 64, 16 and 4 rows, then one by one):
    every event on disk, in order, each with its own fields, and the chain of checksums verifies."""
    path = tmp_path / "events.sqlite"
    log = EventLog(path, "r", group_commit=10_000)
    with log.batch():
        for k in range(n):
            log.append("fill" if k % 2 else "tick", 1000 + k, k=k)
    assert _on_disk(path) == 0
    log.commit()
    assert _on_disk(path) == n
    log.close()
    with EventLog(path, "r") as again:
        assert again.repaired is None
        assert [(e.seq, e.ts, e.kind, e.data) for e in again] == [
            (k + 1, 1000 + k, "fill" if k % 2 else "tick", {"k": k}) for k in range(n)]
