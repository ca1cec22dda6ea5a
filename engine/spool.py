"""The durable store-and-forward spool between the summariser and the sinks.

One SQLite file (WAL journal, ``synchronous=FULL``: every commit is fsync'ed) holds the records
in arrival order, and one cursor per sink: the id of the last record that sink acknowledged.

- :meth:`Spool.put` commits a batch before it returns: a summary is durable before any sink
  sees it.
- :meth:`Spool.peek` gives a sink the records after its cursor; :meth:`Spool.ack` moves the
  cursor once the database acknowledged the write. A record leaves the file only when every sink
  acknowledged it. A crash between a write and its ack re-sends that batch on restart; explicit
  timestamps make the re-sent points overwrite themselves, so nothing is lost or doubled.
- Bounded in bytes (``max_bytes``, the sum of the encoded records plus a fixed per-row
  overhead): when a put would exceed it, the *oldest* records are dropped and counted
  (``dropped_overflow``, persisted in the file so it survives restarts). Monitoring never waits
  for the database.
- A full disk is the same policy: when a put fails with ``SQLITE_FULL``, the oldest records are
  dropped in growing batches (counted in the same ``dropped_overflow``) and the put is retried
  in the pages they freed (SQLite reuses freed pages inside the file; no VACUUM). Only when
  nothing is left to drop is the put refused (:class:`SpoolError`, the caller counts it). The
  WAL is kept small (checkpoint every :data:`WAL_PAGES` pages) so the growth is in the database
  file, where freed pages are reused: with SQLite's default 1000-page WAL a 256 KiB disk held
  20 records in a 220 KiB WAL and nothing could be dropped to make room.
- The spool keeps ``min_free_bytes`` of its disk as headroom, half of it as a *reserve*:
  ``<name>.reserve``, a file of real blocks that only the spool gives back. Free space alone is
  no guarantee: another writer (a model file, a log) can take the last byte between a commit
  that grew the file and its checkpoint, and then neither the checkpoint nor the transaction
  that drops records can be written, for good. When dropping fails on a full disk the reserve
  is deleted, which lets the checkpoint and the drop through (logged, counted in
  ``reserve_released``). While it is missing it is re-made at most every :data:`REARM_S`
  seconds: the oldest records are dropped (counted) until the file's free list covers it, the
  file is shortened by that much (``auto_vacuum`` incremental, for spool files created by this
  version) and the reserve written again.
- At open, a file that is not a database, or fails SQLite's ``quick_check``, is moved aside to
  ``<name>.corrupt-<unix time>`` and a fresh spool is created; every record that can still be
  read from the bad file (and decodes) is copied over, in order.
- Sinks that are no longer configured lose their cursor at open; a new sink starts at the
  oldest record still in the file.

The methods are synchronous and thread-safe (one connection behind a lock); a commit costs one
fsync, so callers on the event loop batch their records.

>>> import tempfile, pathlib
>>> from machinewatch.engine.types import Summary
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> sp = Spool(d / "spool.db", ["influx"], max_bytes=1 << 20)
>>> sp.put([Summary("s", "pump1", 10, 10.0, "NORMAL", {"score_max": 1.0})])
1
>>> [(i, r.asset) for i, r in sp.peek("influx", 10)]
[(1, 'pump1')]
>>> sp.ack("influx", 1); sp.stats().records
0
>>> sp.close()
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MIN_FREE_BYTES",
    "REARM_S",
    "WAL_PAGES",
    "Record",
    "Spool",
    "SpoolStats",
    "decode_record",
    "disk_full",
    "encode_record",
]

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeAlias

from machinewatch.engine.errors import SpoolError
from machinewatch.engine.health import HealthSample
from machinewatch.engine.logutil import RateLimitedLog
from machinewatch.engine.types import AlarmEvent, Summary

log = logging.getLogger(__name__)
_rl = RateLimitedLog(log)

Record: TypeAlias = Summary | AlarmEvent | HealthSample
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
#: bytes counted per row on top of its body (row header, index entry, id): keeps the bound honest
#: for many tiny records
ROW_OVERHEAD = 48
#: WAL pages before an automatic checkpoint (SQLite's default is 1000, i.e. 4 MiB of WAL)
WAL_PAGES = 8
#: free space the spool leaves on its disk by default: room for a full WAL and for the checkpoint
#: that copies it back into the file, so the transactions that drop records can always be written
MIN_FREE_BYTES = 2 * WAL_PAGES * 4096
#: on a full disk: rounds of dropping the oldest records (doubling the batch) before a put is refused
_FULL_ROUNDS = 10
#: on a full disk a put is stored in chunks of at most this many records
_FULL_CHUNK = 32
#: seconds between attempts to re-make a missing reserve (each may drop records, counted)
REARM_S = 10.0
_KINDS: dict[str, type[Any]] = {"s": Summary, "a": AlarmEvent, "h": HealthSample}
#: a stored row: id, wall time (ns), kind, body
_Row = tuple[int, int, str, bytes]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT, wall_ns INTEGER NOT NULL, kind TEXT NOT NULL, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS cursors (sink TEXT PRIMARY KEY, acked INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def encode_record(r: Record) -> tuple[str, bytes]:
    """``(kind, body)`` of a record: a one-letter kind and compact JSON (NaN allowed)."""
    if isinstance(r, Summary):
        kind = "s"
    elif isinstance(r, AlarmEvent):
        kind = "a"
    elif isinstance(r, HealthSample):
        kind = "h"
    else:
        raise TypeError(f"cannot spool a {type(r).__name__}")
    # shallow: asdict() deep-copies every nested dict first, for nothing
    d = {f.name: getattr(r, f.name) for f in fields(r)}
    return kind, json.dumps(d, separators=(",", ":")).encode()


def decode_record(kind: str, body: bytes) -> Record:
    """The record back from :func:`encode_record`'s output; ``ValueError`` when it is damaged."""
    cls = _KINDS.get(kind)
    if cls is None:
        raise ValueError(f"unknown record kind {kind!r}")
    d = json.loads(body)
    if not isinstance(d, dict):
        raise ValueError("record body is not an object")
    if cls is AlarmEvent:
        d["top_features"] = tuple(d.get("top_features", ()))
    try:
        rec: Record = cls(**d)
    except TypeError as exc:
        raise ValueError(f"record does not match {cls.__name__}: {exc}") from exc
    return rec


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """A snapshot of the spool for health metrics."""

    records: int
    bytes: int
    max_bytes: int
    oldest_age_s: float
    dropped_overflow: int
    pending: dict[str, int]
    lag_s: dict[str, float]
    quarantined: int
    reserve_released: int = 0


class Spool:
    """A durable, bounded, multi-consumer queue of records in one SQLite file.

    Parameters
    ----------
    path
        The spool file (created with its folder).
    sinks
        Names of the consumers; each has its own cursor.
    max_bytes
        Bound on the stored records (see the module docstring); oldest dropped beyond it.
    min_free_bytes
        Free space the spool leaves on its disk: oldest records are dropped (counted) rather
        than growing the file into it. The headroom lets SQLite write the transactions that
        drop records even when the disk is full. Half of it is held as the reserve file while
        that exists; 0 turns both off.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        sinks: Sequence[str],
        max_bytes: int = DEFAULT_MAX_BYTES,
        min_free_bytes: int = MIN_FREE_BYTES,
    ) -> None:
        if max_bytes <= 0:
            raise SpoolError(f"spool max_bytes must be > 0, got {max_bytes}")
        if min_free_bytes < 0:
            raise SpoolError(f"spool min_free_bytes must be >= 0, got {min_free_bytes}")
        self.path = Path(path)
        self.sinks = list(sinks)
        self.max_bytes = int(max_bytes)
        self.min_free_bytes = int(min_free_bytes)
        self.reserve_bytes = self.min_free_bytes // 2
        self.quarantined = 0
        self.reserve_path = self.path.with_name(self.path.name + ".reserve")
        self.reserve_released = 0
        self._reserve_armed = False
        self._rearm_after = 0.0
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        salvaged: list[_Row] = []
        cursors: dict[str, int] = {}
        bad = self._check_file()
        if bad:
            salvaged, cursors = self._quarantine(bad)
        try:
            self._db = self._connect()
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot open spool {self.path}: {exc}") from exc
        if salvaged or cursors:
            self._restore(salvaged, cursors)
        self._init_cursors()
        self._bytes, self._records = self._measure()
        self._dropped = self._meta("dropped_overflow")
        self._page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
        # 2 = incremental: files made before the reserve cannot be shortened (no drops for it)
        self._can_shrink = int(self._db.execute("PRAGMA auto_vacuum").fetchone()[0]) == 2
        self._reserve_armed = self._arm_reserve()
        if not self._reserve_armed:
            self._rearm_after = time.monotonic() + REARM_S
            log.warning(
                "spool %s: no room for its %d-byte reserve on a full disk yet (retried every %.0f s)",
                self.path,
                self.reserve_bytes,
                REARM_S,
            )

    # -- opening, checking, quarantine --------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), timeout=30.0, check_same_thread=False, isolation_level=None)
        # new files only (SQLite ignores it once tables exist): lets the spool give pages back
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
        # a WAL that one large transaction grew is cut back after the next checkpoint
        db.execute(f"PRAGMA journal_size_limit={4 * WAL_PAGES * 4096}")
        db.executescript(_SCHEMA)
        return db

    def _check_file(self) -> str:
        """Why the existing file cannot be used, or ``""`` (also for no file)."""
        if not self.path.exists():
            return ""
        try:
            db = sqlite3.connect(str(self.path), timeout=30.0)
            try:
                res = db.execute("PRAGMA quick_check").fetchall()
                db.execute("SELECT id, wall_ns, kind, body FROM records LIMIT 1").fetchall()
                db.execute("SELECT sink, acked FROM cursors").fetchall()
            finally:
                db.close()
        except sqlite3.Error as exc:
            return str(exc)
        if res != [("ok",)]:
            return "; ".join(str(r[0]) for r in res[:5])
        return ""

    def _quarantine(self, why: str) -> tuple[list[_Row], dict[str, int]]:
        dest = self.path.with_name(f"{self.path.name}.corrupt-{time.time_ns() // 1_000_000}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                os.replace(src, Path(str(dest) + suffix))
        rows, cursors = _salvage(dest)
        self.quarantined = 1
        log.error(
            "spool %s is damaged (%s): moved to %s; %d record(s) salvaged, the engine goes on",
            self.path,
            why,
            dest,
            len(rows),
        )
        return rows, cursors

    def _restore(self, rows: list[_Row], cursors: dict[str, int]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            # salvaged rows keep their ids: the cursors refer to them
            self._db.executemany("INSERT INTO records (id, wall_ns, kind, body) VALUES (?, ?, ?, ?)", rows)
            self._db.executemany("INSERT OR REPLACE INTO cursors VALUES (?, ?)", cursors.items())
            self._db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('quarantined', "
                "COALESCE((SELECT value FROM meta WHERE key='quarantined'), 0) + 1)"
            )
            self._db.execute("COMMIT")

    def _init_cursors(self) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            known = dict(self._db.execute("SELECT sink, acked FROM cursors").fetchall())
            for gone in set(known) - set(self.sinks):
                self._db.execute("DELETE FROM cursors WHERE sink = ?", (gone,))
            for new in set(self.sinks) - set(known):
                self._db.execute("INSERT INTO cursors VALUES (?, 0)", (new,))
            self._gc()
            self._db.execute("COMMIT")

    def _measure(self) -> tuple[int, int]:
        n, size = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM records").fetchone()
        return int(size) + ROW_OVERHEAD * int(n), int(n)

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    # -- the queue -----------------------------------------------------------------------------

    def put(self, records: Iterable[Record]) -> int:
        """Store records durably (one fsync'ed commit); return how many were stored.

        When the bound is exceeded, or the disk would keep less than ``min_free_bytes`` free,
        the oldest records are dropped (counted) to make room; a batch larger than the whole
        bound keeps only its newest records. On a full disk see :meth:`_put_on_full_disk`.
        """
        if not self.sinks:  # nobody would ever take them
            return 0
        enc = [encode_record(r) for r in records]
        if not enc:
            return 0
        now = time.time_ns()
        rows = [(now, k, b) for k, b in enc]
        with self._lock:
            stored = 0
            try:
                make_room, tight = self._room_to_make(rows)
                if not tight:
                    self._insert(rows)
                    stored = len(rows)
                # near full: transactions of at most _FULL_CHUNK records, each copied back from
                # the WAL at once, so if something else takes the last free bytes no committed
                # frame still needs the file to grow, and the WAL's own blocks can be reused by
                # the transactions that drop records. One transaction for a large put grew the
                # WAL and the file by all of it at once: on a 512 KiB disk the checkpoint could
                # then never be written and every later put was refused (e2e disk-full test)
                for i in range(stored, len(rows), _FULL_CHUNK):
                    chunk = rows[i : i + _FULL_CHUNK]
                    room = make_room if len(chunk) == len(rows) else self._room_to_make(chunk)[0]
                    self._insert(chunk, room)
                    stored += len(chunk)
                    self._checkpoint()
                if not self._reserve_armed:
                    self._rearm()
                return stored
            except sqlite3.Error as exc:
                self._rollback()
                self._resync()
                if not disk_full(exc):
                    raise SpoolError(
                        f"spool {self.path}: cannot store {len(enc) - stored} record(s): {exc}", stored
                    ) from exc
                err = exc
            try:
                return stored + self._put_on_full_disk(rows[stored:], err)
            except SpoolError as exc:
                raise SpoolError(str(exc), stored + exc.stored) from exc

    def _insert(self, rows: list[tuple[int, str, bytes]], make_room: int = 0) -> None:
        """One committed transaction: ``make_room`` bytes of the oldest records dropped first
        (their pages are reused by the rows in the same transaction), the rows, the byte bound."""
        self._db.execute("BEGIN IMMEDIATE")
        if make_room > 0:
            self._delete_oldest(max_bytes=make_room, why="disk")
        self._db.executemany("INSERT INTO records (wall_ns, kind, body) VALUES (?, ?, ?)", rows)
        self._bytes += sum(len(b) + ROW_OVERHEAD for _, _, b in rows)
        self._records += len(rows)
        if self._bytes > self.max_bytes:
            self._delete_oldest(max_bytes=self._bytes - self.max_bytes, why="bound")
        self._db.execute("COMMIT")

    def _room_to_make(self, rows: list[tuple[int, str, bytes]]) -> tuple[int, bool]:
        """Bytes of old records to drop so that storing ``rows`` leaves ``min_free_bytes`` free,
        and whether the disk is nearly full (less than twice that free).

        Pages on the file's free list (freed by acknowledged or dropped records) are used first;
        only growth of the file counts against the free space. ``(0, False)`` on a roomy disk
        (one statvfs).
        """
        headroom = self._headroom()
        if not headroom:
            return 0, False
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return 0, False
        free = st.f_bavail * st.f_frsize
        # a stored record costs about its body plus the page slack of the b-tree: count 2x, plus
        # a few pages of index and meta updates
        need = 2 * sum(len(b) + ROW_OVERHEAD for _, _, b in rows) + 4 * self._page_size
        if free - need >= 2 * headroom:
            return 0, False
        reusable = int(self._db.execute("PRAGMA freelist_count").fetchone()[0]) * self._page_size
        grow = max(0, need - reusable)
        short = headroom - (free - grow)
        return (grow if short > 0 and grow > 0 else 0), True

    def _resync(self) -> None:
        """After a rollback: the counts as the file has them."""
        self._bytes, self._records = self._measure()
        self._dropped = self._meta("dropped_overflow")

    def _put_on_full_disk(self, rows: list[tuple[int, str, bytes]], err: sqlite3.Error) -> int:
        """The disk is full (something else took the reserve): drop the oldest records and retry.

        The batch dropped doubles each round (from the size of the put, at least 8 records), so
        a put needs a few rounds at most; a large put goes in chunks of :data:`_FULL_CHUNK`
        records (later chunks push out earlier ones). A put is refused (:class:`SpoolError`)
        only when nothing is left to drop or dropping itself cannot be written.
        """
        if len(rows) > _FULL_CHUNK:
            # one transaction for a large put would need the file to grow by all of it at once
            # (its pages in the WAL until a checkpoint the full disk no longer allows: the
            # spool wedged after a 400-record put in a test); in chunks, each reuses the pages
            # the previous drops freed, and later chunks push out earlier ones (drop-oldest)
            stored = 0
            for i in range(0, len(rows), _FULL_CHUNK):
                try:
                    stored += self._put_on_full_disk(rows[i : i + _FULL_CHUNK], err)
                except SpoolError as exc:
                    raise SpoolError(str(exc), stored) from exc
            return stored
        batch = max(8, len(rows))
        # a WAL fully copied back is cut to nothing: its blocks are free for the drops and the file
        self._checkpoint("TRUNCATE")
        for _ in range(_FULL_ROUNDS):
            self._checkpoint()  # a WAL fully copied back is reused from its start: no new blocks
            if not self._drop_batch(batch):
                if self._release_reserve():
                    continue  # the same round again, with the reserve's blocks free
                break
            self._checkpoint()
            try:
                self._insert(rows)
                return len(rows)
            except sqlite3.Error as exc:
                self._rollback()
                self._resync()
                if not disk_full(exc):
                    raise SpoolError(f"spool {self.path}: cannot store {len(rows)} record(s): {exc}") from exc
                err = exc
            batch *= 2
        raise SpoolError(
            f"spool {self.path}: disk full and nothing left to drop, {len(rows)} record(s) refused: {err}"
        ) from err

    def _drop_batch(self, n: int) -> bool:
        """Drop the ``n`` oldest records (counted) in one commit; False when none or it failed."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            dropped = self._delete_oldest(max_rows=n, why="disk")
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            self._resync()
            _rl.warning(
                f"dropfail:{self.path}", "spool %s: disk full, cannot drop records: %s", self.path, exc
            )
            return False
        return dropped > 0

    # -- the reserve ---------------------------------------------------------------------------

    def _arm_reserve(self) -> bool:
        """Write the reserve file (real blocks, fsync'ed) if it is missing; False on a full disk."""
        size = self.reserve_bytes
        if not size:
            return True
        with contextlib.suppress(OSError):
            if self.reserve_path.stat().st_size == size:
                return True
        try:
            fd = os.open(self.reserve_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(bytes(size))
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            with contextlib.suppress(OSError):
                self.reserve_path.unlink()
            return False
        return True

    def _headroom(self) -> int:
        """Free bytes to keep on the disk: ``min_free_bytes``, less the reserve while it exists."""
        return self.min_free_bytes - (self.reserve_bytes if self._reserve_armed else 0)

    def _release_reserve(self) -> bool:
        """Delete the reserve to free its blocks for the spool; False when there is none."""
        self._reserve_armed = False
        self._rearm_after = time.monotonic() + REARM_S
        try:
            self.reserve_path.unlink()
        except OSError:
            return False
        self.reserve_released += 1
        log.warning(
            "spool %s: disk full and the oldest records could not be dropped: released the %d-byte "
            "reserve (%d time(s) so far)",
            self.path,
            self.reserve_bytes,
            self.reserve_released,
        )
        return True

    def _rearm(self) -> None:
        """Re-make a missing reserve (at most every :data:`REARM_S` s). With too little free
        space for it and the headroom, the oldest records are dropped (counted) until the free
        list covers it and the file is shortened by that much first."""
        now = time.monotonic()
        if not self.reserve_bytes or now < self._rearm_after:
            return
        self._rearm_after = now + REARM_S
        try:
            st = os.statvfs(self.path.parent)
            free = st.f_bavail * st.f_frsize
        except OSError:
            free = 0
        if free < self.min_free_bytes and not self._shrink(self.reserve_bytes):
            return
        self._reserve_armed = self._arm_reserve()
        if self._reserve_armed:
            log.info("spool %s: reserve of %d bytes made again", self.path, self.reserve_bytes)

    def _shrink(self, nbytes: int) -> bool:
        """Give ``nbytes`` of the file back to the disk, dropping the oldest records (counted)
        when the free list is shorter; False when SQLite could not."""
        if not self._can_shrink:
            return False
        pages = -(-nbytes // self._page_size)
        try:
            short = pages - int(self._db.execute("PRAGMA freelist_count").fetchone()[0])
            if short > 0:
                self._db.execute("BEGIN IMMEDIATE")
                self._delete_oldest(max_bytes=short * self._page_size, why="reserve")
                self._db.execute("COMMIT")
            self._db.execute(f"PRAGMA incremental_vacuum({pages})").fetchall()
        except sqlite3.Error as exc:
            self._rollback()
            self._resync()
            _rl.warning(
                f"rearm:{self.path}", "spool %s: cannot make room for its reserve: %s", self.path, exc
            )
            return False
        self._checkpoint()  # the shortened file is written back: its blocks are free
        return True

    def _checkpoint(self, mode: str = "PASSIVE") -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()

    def _delete_oldest(self, *, max_bytes: int = 0, max_rows: int = 0, why: str) -> int:
        """Delete the oldest rows (inside the caller's transaction), counted; return how many.

        ``max_bytes``: rows until that many bytes (as the bound counts them) are freed;
        ``max_rows``: that many rows. ``why`` (``bound``, ``disk``, ``reserve``) picks the warning.
        """
        if max_rows:
            last, n, body = self._db.execute(
                "SELECT MAX(id), COUNT(*), COALESCE(SUM(LENGTH(body)), 0) "
                "FROM (SELECT id, body FROM records ORDER BY id LIMIT ?)",
                (max_rows,),
            ).fetchone()
            last, n, freed = int(last or 0), int(n), int(body) + ROW_OVERHEAD * int(n)
        else:
            cur = self._db.execute("SELECT id, LENGTH(body) FROM records ORDER BY id")
            last, freed, n = 0, 0, 0
            for rid, ln in cur:
                if freed >= max_bytes:
                    break
                last, freed, n = rid, freed + ln + ROW_OVERHEAD, n + 1
            cur.close()
        if not n:
            return 0
        self._db.execute("DELETE FROM records WHERE id <= ?", (last,))
        self._dropped += n
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('dropped_overflow', ?)", (self._dropped,))
        self._bytes -= freed
        self._records -= n
        if why == "bound":
            msg = "spool %s full (%d bytes): dropping the oldest records (%d so far)"
            _rl.warning(f"full:{self.path}", msg, self.path, self.max_bytes, self._dropped)
        elif why == "reserve":
            msg = "spool %s: disk full: dropped the oldest records to re-make the reserve (%d so far)"
            _rl.warning(f"reserve:{self.path}", msg, self.path, self._dropped)
        else:
            msg = "spool %s: disk (nearly) full, < %d bytes free: dropping the oldest records (%d so far)"
            _rl.warning(f"diskfull:{self.path}", msg, self.path, self.min_free_bytes, self._dropped)
        return n

    def peek(self, sink: str, limit: int) -> list[tuple[int, Record]]:
        """Up to ``limit`` records ``sink`` has not acknowledged, oldest first, with their ids.

        A record that no longer decodes is skipped (logged); the next ack passes over it.
        """
        with self._lock:
            acked = self._cursor(sink)
            rows = self._db.execute(
                "SELECT id, kind, body FROM records WHERE id > ? ORDER BY id LIMIT ?", (acked, limit)
            ).fetchall()
        out: list[tuple[int, Record]] = []
        for rid, kind, body in rows:
            try:
                out.append((rid, decode_record(kind, body)))
            except ValueError as exc:
                log.error("spool %s: record %d unreadable, skipped: %s", self.path, rid, exc)
        if rows and not out:
            self.ack(sink, rows[-1][0])  # a whole batch of damaged records: step over it
        return out

    def ack(self, sink: str, up_to_id: int) -> None:
        """``sink`` acknowledged every record up to ``up_to_id``; free what everyone has.

        On a full disk the WAL is checkpointed and the ack tried once more; if it still fails
        (:class:`SpoolError`) the batch stays unacknowledged and is sent again later, which
        overwrites the same points.
        """
        with self._lock:
            for attempt in (1, 2):
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                    self._db.execute(
                        "UPDATE cursors SET acked = MAX(acked, ?) WHERE sink = ?", (up_to_id, sink)
                    )
                    self._gc()
                    self._db.execute("COMMIT")
                    return
                except sqlite3.Error as exc:
                    self._rollback()
                    self._bytes, self._records = self._measure()
                    if attempt == 1 and disk_full(exc):
                        self._checkpoint()
                        continue
                    raise SpoolError(f"spool {self.path}: cannot acknowledge for {sink}: {exc}") from exc

    def _gc(self) -> None:
        row = self._db.execute("SELECT MIN(acked) FROM cursors").fetchone()
        low = row[0] if row and row[0] is not None else None
        if low is None:  # no sinks: keep nothing
            low = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM records").fetchone()[0]
        n, size = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM records WHERE id <= ?", (low,)
        ).fetchone()
        if n:
            self._db.execute("DELETE FROM records WHERE id <= ?", (low,))
            if hasattr(self, "_bytes"):
                self._bytes -= int(size) + ROW_OVERHEAD * int(n)
                self._records -= int(n)

    def _cursor(self, sink: str) -> int:
        row = self._db.execute("SELECT acked FROM cursors WHERE sink = ?", (sink,)).fetchone()
        if row is None:
            raise SpoolError(f"spool {self.path}: unknown sink {sink!r}")
        return int(row[0])

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def pending(self, sink: str) -> int:
        """How many records ``sink`` has yet to write."""
        with self._lock:
            return int(
                self._db.execute(
                    "SELECT COUNT(*) FROM records WHERE id > ?", (self._cursor(sink),)
                ).fetchone()[0]
            )

    def stats(self) -> SpoolStats:
        """Records, bytes, oldest age, drops, and per-sink backlog and lag."""
        now = time.time_ns()
        with self._lock:
            oldest = self._db.execute("SELECT MIN(wall_ns) FROM records").fetchone()[0]
            pending: dict[str, int] = {}
            lag: dict[str, float] = {}
            for sink, acked in self._db.execute("SELECT sink, acked FROM cursors").fetchall():
                n, first = self._db.execute(
                    "SELECT COUNT(*), MIN(wall_ns) FROM records WHERE id > ?", (acked,)
                ).fetchone()
                pending[sink] = int(n)
                lag[sink] = 0.0 if first is None else max(0.0, (now - first) / 1e9)
            return SpoolStats(
                records=self._records,
                bytes=self._bytes,
                max_bytes=self.max_bytes,
                oldest_age_s=0.0 if oldest is None else max(0.0, (now - oldest) / 1e9),
                dropped_overflow=self._dropped,
                pending=pending,
                lag_s=lag,
                quarantined=self.quarantined,
                reserve_released=self.reserve_released,
            )

    def close(self) -> None:
        """Checkpoint the WAL and close the file."""
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self._db.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def disk_full(exc: BaseException) -> bool:
    """Whether an SQLite error means the disk (or the file size limit) is full."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF == sqlite3.SQLITE_FULL:
        return True
    return "disk is full" in str(exc)


def _salvage(path: Path) -> tuple[list[_Row], dict[str, int]]:
    """Every readable, decodable record of a damaged spool (by id) and its cursors.

    Rows are read one at a time by id, so a damaged page costs the rows on it and no more.
    """
    padded = _pad_truncated(path)
    try:
        return _salvage_rows(padded or path)
    finally:
        if padded is not None:
            padded.unlink(missing_ok=True)


def _pad_truncated(path: Path) -> Path | None:
    """A copy of a truncated database padded with zero pages to the size its header states.

    SQLite refuses a file shorter than its header says ("malformed") before reading any row;
    padded, the intact pages read again and only the zero pages fail. None when not truncated.
    """
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    if len(raw) < 100 or not raw.startswith(b"SQLite format 3\0"):
        return None
    page = int.from_bytes(raw[16:18], "big")
    page = 65536 if page == 1 else page
    want = int.from_bytes(raw[28:32], "big") * page
    if not 0 < len(raw) < want <= 1 << 34:
        return None
    out = path.with_name(path.name + ".padded")
    try:
        with out.open("wb") as f:
            f.write(raw)
            f.truncate(want)  # sparse zero pages
    except OSError:
        out.unlink(missing_ok=True)
        return None
    return out


def _salvage_rows(path: Path) -> tuple[list[_Row], dict[str, int]]:
    rows: list[_Row] = []
    cursors: dict[str, int] = {}
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error:
        return [], {}
    try:
        try:
            cursors = {str(s): int(a) for s, a in db.execute("SELECT sink, acked FROM cursors")}
        except (sqlite3.Error, ValueError, TypeError):
            cursors = {}
        try:
            hi = db.execute("SELECT MAX(id) FROM records").fetchone()[0] or 0
        except sqlite3.Error:  # the last page is gone (a truncated file): AUTOINCREMENT's high mark
            try:
                hi = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'records'").fetchone()[0] or 0
            except (sqlite3.Error, TypeError):
                hi = 0
        rid, misses = 0, 0
        while rid < hi and misses < 10_000:
            try:
                row = db.execute(
                    "SELECT id, wall_ns, kind, body FROM records WHERE id > ? ORDER BY id LIMIT 1", (rid,)
                ).fetchone()
            except sqlite3.Error:
                rid += 1
                misses += 1
                continue
            if row is None:
                break
            if int(row[0]) <= rid:  # a damaged b-tree can hand back an older row: never loop on it
                rid += 1
                misses += 1
                continue
            rid = int(row[0])
            try:
                decode_record(str(row[2]), bytes(row[3]))
            except (ValueError, TypeError):
                continue
            rows.append((rid, int(row[1]), str(row[2]), bytes(row[3])))
    finally:
        db.close()
    return rows, cursors
