"""The append-only event log of a paper or live run: SQLite, one row per event, checksummed.

Rules:

- every event is written and committed *before* it is acted on (:meth:`EventLog.append`, or
  :meth:`EventLog.batch` for the events of one bar, committed together before any is applied);
- each run has its own sequence number 1, 2, 3, ... (``run_id`` column; one file may hold several runs);
- each row carries a checksum chained over the previous row's (CRC-32 of the previous checksum,
  seq, ts, kind and payload), so a changed, cut or missing row is detected on open. A bad *last*
  row is what a power cut mid-write leaves: it is moved to the ``damaged`` table, the log continues
  from the last complete event, a warning is logged and a ``log_repaired`` event appended. A bad row
  that is not the last is damage, not a power cut: :class:`EventLogError` names it.
- payloads are JSON (floats round-trip exactly); registered secrets (:meth:`EventLog.add_secret`)
  are replaced by ``***`` in every payload before it is written.

The state (balances, orders, trades) is a projection of the log: the paper exchange rebuilds it by
replaying the events (:meth:`EventLog.events`), and at a past time by replaying those up to it.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import sqlite3
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, ts INTEGER NOT NULL, kind TEXT NOT NULL,
    payload TEXT NOT NULL, checksum INTEGER NOT NULL, PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS damaged (
    run_id TEXT, seq INTEGER, ts INTEGER, kind TEXT, payload TEXT, checksum INTEGER, found_at TEXT
);
"""
REDACTED = "***"
_encode = json.JSONEncoder(separators=(",", ":")).encode  # (json.dumps's output, one encoder reused)
_INSERT = "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)"


class EventLogError(RuntimeError):
    """The event log is damaged in a way a restart cannot repair (names the file, run and event)."""


class Event(NamedTuple):
    """One event: per-run sequence number, exchange time (UTC ms), kind, and its fields."""

    seq: int
    ts: int
    kind: str
    data: dict[str, Any]


def checksum(previous: int, seq: int, ts: int, kind: str, payload: str) -> int:
    """CRC-32 of one row chained over the previous row's checksum (0 before the first)."""
    return zlib.crc32(f"{previous}|{seq}|{ts}|{kind}|{payload}".encode())


class EventLog:
    """The event log of run ``run_id`` in the SQLite file ``path`` (created if missing).

    ``durable=True`` commits with ``synchronous=FULL`` (an event survives a power cut once
    :meth:`append` returns); ``False`` uses ``NORMAL`` (survives a killed process, not a power cut;
    much faster on slow disks). Opening checks every row's checksum (see the module's rules).

    Attributes:
        repaired: the ``log_repaired`` event appended on open when a damaged last event was dropped, else None.
    """

    def __init__(self, path: str | Path, run_id: str = "paper", *, durable: bool = True) -> None:
        self.path = Path(path)
        self.run_id = str(run_id)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.executescript(SCHEMA)
        self._secrets: list[str] = []
        self._in_batch = self._open_tx = False
        self._pending: list[Event] = []
        self._rows: list[tuple] = []  # a batch's rows not inserted yet
        self.repaired: Event | None = None
        self._seq, self._last_checksum = 0, 0
        self._verify()

    # ---- writing
    def add_secret(self, secret: str | None) -> None:
        """Never write ``secret`` into the log: it becomes ``***`` in every later payload."""
        if secret and len(secret) >= 4 and secret not in self._secrets:
            self._secrets.append(secret)

    def append(self, kind: str, ts: int, /, **data: Any) -> Event:
        """Write one event and commit it (inside :meth:`batch`: commit at the batch's end)."""
        payload = _encode(data)
        redacted = False
        for secret in self._secrets:
            if secret in payload:
                payload, redacted = payload.replace(secret, REDACTED), True
        seq = self._seq + 1
        ts = int(ts)
        crc = checksum(self._last_checksum, seq, ts, kind, payload)
        row = (self.run_id, seq, ts, kind, payload, crc)
        if self._in_batch:
            self._rows.append(row)  # (inserted at the batch's end, or before a read inside it)
        else:
            self._db.execute(_INSERT, row)  # autocommit: its own transaction, committed on return
        self._seq, self._last_checksum = seq, crc
        # the caller's dict (it must not change it afterwards), or what a replay reads where a secret was cut
        event = Event(seq, ts, kind, json.loads(payload) if redacted else data)
        if self._in_batch:
            self._pending.append(event)
        return event

    @contextlib.contextmanager
    def batch(self) -> Iterator[list[Event]]:
        """Append several events in one transaction, committed when the block ends (nothing of it
        is written if the block raises). Yields the list the block's events are collected in."""
        if self._in_batch:
            yield self._pending
            return
        seq, crc = self._seq, self._last_checksum
        self._in_batch, self._pending, self._rows, self._open_tx = True, [], [], False
        try:
            yield self._pending
            self._flush()
            if self._open_tx:
                self._db.execute("COMMIT")
        except BaseException:
            if self._open_tx:
                self._db.execute("ROLLBACK")
            self._seq, self._last_checksum = seq, crc
            raise
        finally:
            self._in_batch, self._rows, self._open_tx = False, [], False

    def _flush(self) -> None:
        """Insert a batch's rows so far, inside its (then open) transaction."""
        if self._rows:
            if not self._open_tx:
                self._db.execute("BEGIN IMMEDIATE")
                self._open_tx = True
            self._db.executemany(_INSERT, self._rows)
            self._rows = []

    # ---- reading
    def events(self, *, after_seq: int = 0, until_ts: int | None = None) -> Iterator[Event]:
        """This run's events with seq > ``after_seq`` (and ts <= ``until_ts``), in order. The cyclic
        garbage collector is paused until the iterator is exhausted or dropped (see below)."""
        self._flush()
        sql = "SELECT seq, ts, kind, payload FROM events WHERE run_id = ? AND seq > ?"
        args: list[Any] = [self.run_id, after_seq]
        if until_ts is not None:
            sql += " AND ts <= ?"
            args.append(int(until_ts))
        # A replay builds many small acyclic dicts (the events; the book's orders and trades): the
        # cyclic collector's passes over that growing heap cost about a third of a restart and free
        # nothing (reference counts do). So it is paused while this iterator is alive and not
        # exhausted (a dropped iterator restores it at once), and restored after.
        paused = gc.isenabled()
        gc.disable()
        try:
            for seq, ts, kind, payload in self._db.execute(sql + " ORDER BY seq", args):
                yield Event(seq, ts, kind, json.loads(payload))
        finally:
            if paused:
                gc.enable()

    def __iter__(self) -> Iterator[Event]:
        return self.events()

    def __len__(self) -> int:
        return self._seq

    @property
    def last_seq(self) -> int:
        return self._seq

    def last(self, kind: str | None = None) -> Event | None:
        """The latest event (of ``kind``), or None."""
        self._flush()
        sql = "SELECT seq, ts, kind, payload FROM events WHERE run_id = ?"
        args: list[Any] = [self.run_id]
        if kind is not None:
            sql += " AND kind = ?"
            args.append(kind)
        row = self._db.execute(sql + " ORDER BY seq DESC LIMIT 1", args).fetchone()
        return None if row is None else Event(row[0], row[1], row[2], json.loads(row[3]))

    def count(self, kind: str | None = None) -> int:
        if kind is None:
            return self._seq
        self._flush()
        return self._db.execute("SELECT COUNT(*) FROM events WHERE run_id = ? AND kind = ?",
                                (self.run_id, kind)).fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "EventLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- integrity
    def _verify(self) -> None:
        """Check the chain of checksums; drop a damaged last row (power cut), refuse other damage."""
        previous, expected_seq = 0, 1
        bad: tuple | None = None
        rows = self._db.execute("SELECT seq, ts, kind, payload, checksum FROM events WHERE run_id = ? ORDER BY seq",
                                (self.run_id,))
        for seq, ts, kind, payload, crc in rows:
            if bad is not None:  # a damaged row with good-looking rows after it
                raise EventLogError(f"{self.path}: event {bad[0]} of run {self.run_id!r} is damaged "
                                    f"({bad[1]}) and is not the last; the log cannot be trusted past it")
            ok_json = isinstance(payload, str)  # (a cut payload fails its checksum; JSON is parsed on replay)
            if seq != expected_seq:
                bad = (expected_seq, f"sequence jumps to {seq}")
            elif not ok_json or checksum(previous, seq, ts, kind, payload) != crc:
                bad = (seq, "checksum mismatch")
            else:
                previous, expected_seq = crc, seq + 1
                self._seq, self._last_checksum = seq, crc
        if bad is None:
            return
        seq = bad[0]
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute("INSERT INTO damaged SELECT run_id, seq, ts, kind, payload, checksum, datetime('now') "
                         "FROM events WHERE run_id = ? AND seq >= ?", (self.run_id, seq))
        self._db.execute("DELETE FROM events WHERE run_id = ? AND seq >= ?", (self.run_id, seq))
        self._db.execute("COMMIT")
        log.warning("%s: the last event of run %r (seq %d) was incomplete (%s; a power cut mid-write?): "
                    "replaying up to event %d, the damaged row kept in table 'damaged'",
                    self.path, self.run_id, seq, bad[1], self._seq)
        last = self.last()
        self.repaired = self.append("log_repaired", last.ts if last else 0, dropped_seq=seq, reason=bad[1],
                                    replayed_to=self._seq)
