"""The embedded default store: a SQLite file with the summary and alarm schema.

Tables mirror the InfluxDB measurements (README, "Schema"): ``machinewatch_summary`` has one
row per (site, asset, stream, time) with the fields as JSON (asset-level fields under
stream ``""``), ``machinewatch_alarm`` one row per transition. Primary keys make a replayed
write overwrite instead of duplicating, as explicit timestamps do in InfluxDB.

Options: ``path`` (default ``<state_dir>/machinewatch.db``).
"""

from __future__ import annotations

__all__ = ["LocalSink", "open_db", "read_alarms", "read_summaries"]

import asyncio
import json
import math
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from machinewatch.connectors.base import Sink
from machinewatch.engine.config import Config
from machinewatch.engine.errors import ConfigProblem, ConnectorError
from machinewatch.engine.types import AlarmEvent, Summary

_SCHEMA = """
CREATE TABLE IF NOT EXISTS machinewatch_summary (
    time_ns INTEGER NOT NULL, site TEXT NOT NULL, asset TEXT NOT NULL, stream TEXT NOT NULL,
    state TEXT NOT NULL, fields TEXT NOT NULL,
    PRIMARY KEY (site, asset, stream, time_ns));
CREATE TABLE IF NOT EXISTS machinewatch_alarm (
    time_ns INTEGER NOT NULL, site TEXT NOT NULL, asset TEXT NOT NULL, stream TEXT NOT NULL,
    kind TEXT NOT NULL, from_state TEXT NOT NULL, to_state TEXT NOT NULL, reason TEXT NOT NULL,
    score REAL, threshold REAL, top_features TEXT NOT NULL,
    PRIMARY KEY (site, asset, stream, kind, time_ns, to_state));
"""


def open_db(path: str | Path) -> sqlite3.Connection:
    """Open (and create) the local store."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), timeout=10.0, check_same_thread=False)  # used by one task at a time
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(_SCHEMA)
    return db


def _finite(d: Mapping[str, float]) -> dict[str, float]:
    return {k: v for k, v in d.items() if math.isfinite(v)}


def _nan_to_none(v: float) -> float | None:
    return v if math.isfinite(v) else None


def write_rows(db: sqlite3.Connection, summaries: Sequence[Summary], events: Sequence[AlarmEvent]) -> None:
    """Upsert summaries and alarm events in one transaction."""
    rows = []
    for s in summaries:
        rows.append((s.t_ns, s.site, s.asset, "", s.state, json.dumps(_finite(s.fields))))
        for stream, f in s.streams.items():
            rows.append((s.t_ns, s.site, s.asset, stream, s.state, json.dumps(_finite(f))))
    ev = [
        (
            e.t_ns,
            e.site,
            e.asset,
            e.stream,
            e.kind,
            e.from_state,
            e.to_state,
            e.reason,
            _nan_to_none(e.score),
            _nan_to_none(e.threshold),
            json.dumps(list(e.top_features)),
        )
        for e in events
    ]
    with db:
        db.executemany("INSERT OR REPLACE INTO machinewatch_summary VALUES (?,?,?,?,?,?)", rows)
        db.executemany("INSERT OR REPLACE INTO machinewatch_alarm VALUES (?,?,?,?,?,?,?,?,?,?,?)", ev)


def read_summaries(
    db: sqlite3.Connection, asset: str | None = None, stream: str = "", limit: int = 1000
) -> list[dict[str, Any]]:
    """Latest summaries (oldest first), asset-level unless ``stream`` is given."""
    q = "SELECT time_ns, site, asset, stream, state, fields FROM machinewatch_summary WHERE stream = ?"
    args: list[Any] = [stream]
    if asset:
        q += " AND asset = ?"
        args.append(asset)
    q += " ORDER BY time_ns DESC LIMIT ?"
    args.append(limit)
    out = [
        {"time_ns": t, "site": si, "asset": a, "stream": st, "state": state, **json.loads(f)}
        for t, si, a, st, state, f in db.execute(q, args)
    ]
    return out[::-1]


def read_alarms(db: sqlite3.Connection, asset: str | None = None) -> list[dict[str, Any]]:
    """Every alarm transition, oldest first."""
    q = "SELECT * FROM machinewatch_alarm" + (" WHERE asset = ?" if asset else "") + " ORDER BY time_ns"
    cur = db.execute(q, [asset] if asset else [])
    cols = [c[0] for c in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur]


class LocalSink(Sink):
    """Writes summaries and alarm events to a local SQLite file."""

    def __init__(self, name: str, options: Mapping[str, Any], config: Config) -> None:
        super().__init__(name, options, config)
        self.path = Path(str(options.get("path") or config.engine.state_dir / "machinewatch.db"))
        self._db: sqlite3.Connection | None = None

    @classmethod
    def validate_options(cls, options: Mapping[str, Any], path: str) -> list[ConfigProblem]:
        probs = [ConfigProblem(f"{path}.{k}", "unknown key") for k in options if k != "path"]
        if "path" in options and not isinstance(options["path"], str):
            probs.append(ConfigProblem(f"{path}.path", "must be a string"))
        return probs

    async def __aenter__(self) -> LocalSink:
        try:
            self._db = await asyncio.to_thread(open_db, self.path)
        except sqlite3.Error as exc:
            raise ConnectorError(f"sink {self.name}: cannot open {self.path}: {exc}") from exc
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def write(self, summaries: Sequence[Summary], events: Sequence[AlarmEvent]) -> None:
        """Upsert one batch (in a worker thread: SQLite commits wait on the disk)."""
        if self._db is None:
            raise ConnectorError(f"sink {self.name}: not open")
        db = self._db
        try:
            await asyncio.to_thread(write_rows, db, summaries, events)
        except sqlite3.Error as exc:
            raise ConnectorError(f"sink {self.name}: write to {self.path} failed: {exc}") from exc
