"""The append-only event log of a paper or live run: SQLite, one row per event, checksummed.

Rules:

- every event is appended, with its sequence number, *before* it is acted on (:meth:`EventLog.append`,
  or :meth:`EventLog.batch` for the events of one bar, which become durable together or not at all);
- by default every append and every batch is committed before it returns. ``group_commit=N`` (a
  replay, which can recompute what it loses) commits every N batches instead, or at the end of a
  batch when the oldest uncommitted one is :data:`GROUP_COMMIT_S` old, and always on
  :meth:`EventLog.commit`, :meth:`EventLog.close` and at interpreter exit. What is on disk is then
  always the log as it stood at the end of some batch: a kill loses the batches after it, exactly
  as a kill at that earlier moment would have with ``group_commit=1``;
- each run has its own sequence number 1, 2, 3, ... (``run_id`` column; one file may hold several runs);
- each row carries a checksum chained over the previous row's (CRC-32 of the previous checksum,
  seq, ts, kind and the payload's bytes), so a changed, cut or missing row is detected on open. A bad
  *last* row is what a power cut mid-write leaves: it is moved to the ``damaged`` table, the log
  continues from the last complete event, a warning is logged and a ``log_repaired`` event appended.
  A bad row that is not the last is damage, not a power cut: :class:`EventLogError` names it.
- payloads (format 2, ``PRAGMA user_version``): MessagePack BLOBs for the kinds written every bar
  (:data:`PACKED_KINDS`; smaller and faster to write and replay), JSON text for the rest (readable
  with the ``sqlite3`` shell). A format-1 log (JSON only, ``user_version`` 0) is still read, and
  written in JSON so that older versions keep reading it; a newer format is refused. Floats
  round-trip exactly in both. Registered secrets (:meth:`EventLog.add_secret`) are replaced by
  ``***`` in every payload before it is written (an event that would carry one is written as JSON).

The state (balances, orders, trades) is a projection of the log: the paper exchange rebuilds it by
replaying the events (:meth:`EventLog.events`), and at a past time by replaying those up to it.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import sqlite3
import time
import weakref
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import msgpack

from factorgym.errors import ConfigError, FactorgymError

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
#: the log format this version writes in a new file (``PRAGMA user_version``); 1: JSON payloads only
FORMAT = 2
#: kinds whose payloads format 2 packs with MessagePack (a ``payload`` column of type BLOB)
PACKED_KINDS = frozenset({"decision", "order_accepted", "order_done", "fill", "bar", "loop_book", "candle"})
#: with ``group_commit > 1``, a batch's end commits once the oldest uncommitted batch is this old
GROUP_COMMIT_S = 0.25
REDACTED = "***"
_encode = json.JSONEncoder(separators=(",", ":")).encode  # (json.dumps's output, one encoder reused)
_INSERT = "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)"
#: rows per multi-row INSERT statement (largest first; 256 x 6 parameters is under SQLite's 32,766)
_CHUNKS = (256, 64, 16, 4)
_INSERT_N = {n: "INSERT INTO events VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?)"] * n) for n in _CHUNKS}


def _insert(db: sqlite3.Connection, rows: list[tuple]) -> None:
    """Insert ``rows`` in order: multi-row statements of :data:`_CHUNKS` rows, the rest one by one (a
    quarter less CPU an event than ``executemany`` of one row per statement; a few statements, cached)."""
    i, n = 0, len(rows)
    for size in _CHUNKS:
        sql = _INSERT_N[size]
        while n - i >= size:
            db.execute(sql, [v for row in rows[i:i + size] for v in row])
            i += size
    if i < n:
        db.executemany(_INSERT, rows[i:])


class EventLogError(FactorgymError, RuntimeError):
    """The event log is damaged in a way a restart cannot repair, or is of a newer format (names the
    file, run and event)."""


class Event(NamedTuple):
    """One event: per-run sequence number, exchange time (UTC ms), kind, and its fields."""

    seq: int
    ts: int
    kind: str
    data: dict[str, Any]


_crc32 = zlib.crc32
_new_tuple = tuple.__new__


def checksum(previous: int, seq: int, ts: int, kind: str, payload: str | bytes) -> int:
    """CRC-32 of one row chained over the previous row's checksum (0 before the first); covers the
    payload's bytes (UTF-8 of a JSON payload: format 1's value)."""
    head = zlib.crc32(f"{previous}|{seq}|{ts}|{kind}|".encode())
    return zlib.crc32(payload if type(payload) is bytes else payload.encode(), head)


def decode(payload: str | bytes) -> dict[str, Any]:
    """An event's fields from its stored payload (MessagePack bytes or JSON text)."""
    if type(payload) is bytes:
        return msgpack.unpackb(payload, strict_map_key=False)
    return json.loads(payload)


def _commit_left(db: sqlite3.Connection, rows: list[tuple], state: dict[str, bool]) -> None:
    """At interpreter exit (or when a log is dropped unclosed): commit the complete batches not yet
    committed (never a batch cut short), then close the connection."""
    with contextlib.suppress(sqlite3.Error):
        if not state["in_batch"]:
            if rows:
                if not db.in_transaction:
                    db.execute("BEGIN IMMEDIATE")
                _insert(db, rows)
            if db.in_transaction:
                db.execute("COMMIT")
        db.close()


class _Batch:
    """:meth:`EventLog.batch`'s context manager (a class, not a generator: it runs twice a bar)."""

    __slots__ = ("log", "outer", "seq", "crc")

    def __init__(self, log: "EventLog") -> None:
        self.log = log

    def __enter__(self) -> list[Event]:
        log = self.log
        self.outer = not log._in_batch
        if self.outer:
            self.seq, self.crc = log._seq, log._last_checksum
            log._in_batch, log._pending = True, []
            log._exit_state["in_batch"] = True
        return log._pending

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if not self.outer:
            return False
        log = self.log
        log._in_batch = log._exit_state["in_batch"] = False
        if exc_type is None:
            try:
                log._batch_done()
                return False
            except BaseException:  # (a failed commit)
                self._drop()
                raise
        self._drop()
        return False

    def _drop(self) -> None:
        """Forget the block's events (a failed commit has already dropped what it could not write)."""
        if self.log._seq > self.seq:
            self.log._drop_after(self.seq, self.crc)


class EventLog:
    """The event log of run ``run_id`` in the SQLite file ``path`` (created if missing).

    ``durable=True`` commits with ``synchronous=FULL`` (an event survives a power cut once it is
    committed); ``False`` uses ``NORMAL`` (survives a killed process, not a power cut; much faster
    on slow disks). ``group_commit``: commit every that many batches (see the module's rules; 1:
    each append and batch is committed before it returns). Opening checks every row's checksum.

    Attributes:
        repaired: the ``log_repaired`` event appended on open when a damaged last event was dropped, else None.
        format: the file's log format (1 or 2).
    """

    def __init__(self, path: str | Path, run_id: str = "paper", *, durable: bool = True,
                 group_commit: int = 1) -> None:
        if isinstance(group_commit, bool) or int(group_commit) != group_commit or group_commit < 1:
            raise ConfigError(f"group_commit={group_commit!r}; expected an integer >= 1")
        self.path = Path(path)
        self.run_id = str(run_id)
        self.group_commit = int(group_commit)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        try:
            self.format = self._open_format(durable)
        except BaseException:
            self._db.close()
            raise
        self._packed = PACKED_KINDS if self.format >= 2 else frozenset()
        self._pack = msgpack.Packer().pack
        self._secrets: list[str] = []
        self._in_batch = False
        self._pending: list[Event] = []
        self._rows: list[tuple] = []  # appended, not yet inserted (never rebound: the exit hook holds it)
        self._exit_state = {"in_batch": False}
        self._inserted_seq = 0  # the last seq inserted into the open transaction (or committed)
        self._n_batches, self._oldest = 0, 0.0  # batches not committed yet, and when the first ended
        self._commit_asked = False
        self.repaired: Event | None = None
        self._seq, self._last_checksum = 0, 0
        self._verify()
        self._inserted_seq = self._seq
        self._closer = weakref.finalize(self, _commit_left, self._db, self._rows, self._exit_state)

    def _open_format(self, durable: bool) -> int:
        """Set the pragmas and the schema; the file's format (a new or empty file gets :data:`FORMAT`)."""
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > FORMAT:
            raise EventLogError(f"{self.path}: event log format {version} is newer than this factorgym reads "
                                f"(format {FORMAT}); upgrade factorgym or use a new --state folder")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.executescript(SCHEMA)
        if version == 0:  # a new file, or a format-1 log (JSON payloads; no version was written then)
            if self._db.execute("SELECT 1 FROM events LIMIT 1").fetchone() is not None:
                return 1
            self._db.execute(f"PRAGMA user_version = {FORMAT}")
            version = FORMAT
        return version

    # ---- writing
    def add_secret(self, secret: str | None) -> None:
        """Never write ``secret`` into the log: it becomes ``***`` in every later payload."""
        if secret and len(secret) >= 4 and secret not in self._secrets:
            self._secrets.append(secret)

    def append(self, kind: str, ts: int, /, **data: Any) -> Event:
        """Append one event (outside :meth:`batch` it is a batch of its own; see the module's rules)."""
        return self.append_data(kind, ts, data)

    def append_data(self, kind: str, ts: int, data: dict[str, Any]) -> Event:
        """:meth:`append` with the fields as one dict (kept as the event's data: the caller must not
        change it afterwards)."""
        payload: str | bytes | None = self._pack(data) if kind in self._packed else None
        redacted = False
        if payload is not None and self._secrets and any(s.encode() in payload for s in self._secrets):
            payload = None  # (cut from the JSON text below: a packed string's length is part of it)
        if payload is None:
            payload = _encode(data)
            for secret in self._secrets:
                if secret in payload:
                    payload, redacted = payload.replace(secret, REDACTED), True
        seq = self._seq + 1
        ts = ts if type(ts) is int else int(ts)
        head = _crc32(f"{self._last_checksum}|{seq}|{ts}|{kind}|".encode())  # (checksum() inlined: ~11 events a bar)
        if type(payload) is bytes:
            crc = _crc32(payload, head)
            # the same BLOB, bound as a bytearray: sqlite3 binds one as it is, but looks a bytes value up
            # in its adapter registry first (failed attribute look-ups: ~2% of a replay's instructions)
            stored: str | bytes | bytearray = bytearray(payload)
        else:
            crc, stored = _crc32(payload.encode(), head), payload
        self._rows.append((self.run_id, seq, ts, kind, stored, crc))
        self._seq, self._last_checksum = seq, crc
        # the caller's dict (it must not change it afterwards), or what a replay reads where a secret was cut
        # (tuple.__new__: what Event(...) does, without its Python-level __new__)
        event = _new_tuple(Event, (seq, ts, kind, json.loads(payload) if redacted else data))
        if self._in_batch:
            self._pending.append(event)
        else:
            self._batch_done()
        return event

    def batch(self) -> "_Batch":
        """``with log.batch() as events:``: append several events as one unit, committed together
        (nothing of it is written if the block raises; with ``group_commit`` N, with the batches around
        it). ``events`` is the list the block's events are collected in. A batch inside a batch is
        part of the outer one."""
        return _Batch(self)

    def commit(self) -> None:
        """Commit every complete batch appended so far (inside a batch: when it ends)."""
        if self._in_batch:
            self._commit_asked = True
            return
        db, rows = self._db, self._rows
        try:
            if rows and len(rows) == 1 and not db.in_transaction:
                db.execute(_INSERT, rows[0])  # autocommit: one event, its own transaction
            else:
                if rows:
                    if not db.in_transaction:
                        db.execute("BEGIN IMMEDIATE")
                    _insert(db, rows)
                if db.in_transaction:
                    db.execute("COMMIT")
        except BaseException:
            self._drop_uncommitted()
            raise
        rows.clear()
        self._inserted_seq = self._seq
        self._n_batches, self._commit_asked = 0, False

    def _batch_done(self) -> None:
        """A batch (or a lone append) ended: commit when the group is full or old enough."""
        self._n_batches += 1
        if self._n_batches == 1:
            self._oldest = time.monotonic()
        if (self._n_batches >= self.group_commit or self._commit_asked
                or time.monotonic() - self._oldest >= GROUP_COMMIT_S):
            self.commit()

    def _flush(self) -> None:
        """Insert the rows appended so far into the (then open) transaction, so a read sees them."""
        if self._rows:
            if not self._db.in_transaction:
                self._db.execute("BEGIN IMMEDIATE")
            _insert(self._db, self._rows)
            self._rows.clear()
            self._inserted_seq = self._seq

    def _drop_after(self, seq: int, crc: int) -> None:
        """Forget the events after ``seq`` (a batch that raised); earlier uncommitted ones stay."""
        self._rows[:] = [r for r in self._rows if r[1] <= seq]
        if self._inserted_seq > seq:
            try:
                if self._n_batches == 0:  # (the open transaction holds this batch alone)
                    self._db.execute("ROLLBACK")
                else:
                    self._db.execute("DELETE FROM events WHERE run_id = ? AND seq > ?", (self.run_id, seq))
            except BaseException:
                self._drop_uncommitted()
                raise
            self._inserted_seq = seq
        self._seq, self._last_checksum = seq, crc

    def _drop_uncommitted(self) -> None:
        """After a failed write: roll back, and go on from what the file holds."""
        with contextlib.suppress(sqlite3.Error):
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        self._rows.clear()
        row = self._db.execute("SELECT seq, checksum FROM events WHERE run_id = ? ORDER BY seq DESC LIMIT 1",
                               (self.run_id,)).fetchone()
        self._seq, self._last_checksum = row if row is not None else (0, 0)
        self._inserted_seq = self._seq
        self._n_batches, self._commit_asked = 0, False

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
        unpack, loads = msgpack.unpackb, json.loads
        try:
            for seq, ts, kind, payload in self._db.execute(sql + " ORDER BY seq", args):
                data = unpack(payload, strict_map_key=False) if type(payload) is bytes else loads(payload)
                yield Event(seq, ts, kind, data)
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
        return None if row is None else Event(row[0], row[1], row[2], decode(row[3]))

    def count(self, kind: str | None = None) -> int:
        if kind is None:
            return self._seq
        self._flush()
        return self._db.execute("SELECT COUNT(*) FROM events WHERE run_id = ? AND kind = ?",
                                (self.run_id, kind)).fetchone()[0]

    def close(self) -> None:
        """Commit what is pending and close the file."""
        if self._closer.alive:
            try:
                self.commit()
            finally:
                self._closer.detach()
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
            if seq != expected_seq:
                bad = (expected_seq, f"sequence jumps to {seq}")
            elif type(payload) not in (str, bytes) or checksum(previous, seq, ts, kind, payload) != crc:
                bad = (seq, "checksum mismatch")  # (a cut payload fails its checksum; it is decoded on replay)
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
        self.commit()
