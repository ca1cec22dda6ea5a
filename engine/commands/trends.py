"""``machinewatch trends [ASSET]``: recent summaries from the local store, with a sparkline."""

from __future__ import annotations

import argparse
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from machinewatch.connectors.sinks.local import open_db, read_alarms, read_summaries
from machinewatch.engine.config import load_config
from machinewatch.engine.errors import ConfigError

NAME = "trends"
HELP = "print recent summaries per asset from the local store (table + score sparkline)"
_BARS = "▁▂▃▄▅▆▇█"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("asset", nargs="?", help="one asset (default: all)")
    p.add_argument("--db", help="SQLite file of the local sink")
    p.add_argument("--config", help="config whose local sink to read (default database path)")
    p.add_argument("--rows", type=int, default=12, help="table rows per asset (default 12)")
    p.add_argument("--points", type=int, default=60, help="sparkline points (default 60)")


def sparkline(values: list[float], threshold: float | None = None) -> str:
    """Unicode sparkline; a value over ``threshold`` shows as ``!``.

    >>> sparkline([0.0, 1.0, 2.0, 3.0])
    '▁▃▆█'
    """
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return ""
    lo, hi = min(finite), max(finite)
    span = hi - lo or 1.0
    out = []
    for v in values:
        if not math.isfinite(v):
            out.append(" ")
        elif threshold is not None and v > threshold:
            out.append("!")
        else:
            out.append(_BARS[min(len(_BARS) - 1, int((v - lo) / span * (len(_BARS) - 1) + 0.5))])
    return "".join(out)


def _db_path(args: argparse.Namespace) -> Path:
    if args.db:
        return Path(args.db)
    if args.config:
        cfg = load_config(args.config)
        for s in cfg.sinks.values():
            if s.kind == "local":
                return Path(str(s.options.get("path") or cfg.engine.state_dir / "machinewatch.db"))
        raise ConfigError(f"{args.config} has no local sink")
    return Path("machinewatch-demo/machinewatch.db")


def _fmt(v: Any) -> str:
    return f"{v:9.3g}" if isinstance(v, float) else f"{v!s:>9}"


def render(db_path: Path, asset: str | None, rows: int, points: int) -> str:
    """The trends report for one asset or all of them."""
    if not db_path.exists():
        raise ConfigError(f"no local store at {db_path} (run the engine or the demo first, or pass --db)")
    db = open_db(db_path)
    try:
        assets = (
            [asset]
            if asset
            else [r[0] for r in db.execute("SELECT DISTINCT asset FROM machinewatch_summary ORDER BY asset")]
        )
        out: list[str] = []
        for a in assets:
            summ = read_summaries(db, a, limit=max(rows, points))
            if not summ:
                out.append(f"{a}: no summaries")
                continue
            thr = next((s["threshold"] for s in reversed(summ) if "threshold" in s), None)
            line = sparkline([float(s.get("score_max", math.nan)) for s in summ[-points:]], thr)
            out.append(
                f"== {a}  ({summ[-1]['site']})  state {summ[-1]['state']}"
                + (f"  threshold {thr:.3g}" if thr else "")
            )
            out.append(f"score_max  {line}")
            out.append(f"{'time (UTC)':<20}{'state':>9}{'score_mean':>11}{'score_max':>10}{'scored':>9}")
            for s in summ[-rows:]:
                t = datetime.fromtimestamp(s["time_ns"] / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")
                out.append(
                    f"{t:<20}{s['state']:>9}{_fmt(s.get('score_mean', '-')):>11}"
                    f"{_fmt(s.get('score_max', '-')):>10}{_fmt(s.get('windows_scored', 0.0)):>9}"
                )
            for e in read_alarms(db, a)[-5:]:
                t = datetime.fromtimestamp(e["time_ns"] / 1e9, UTC).strftime("%H:%M:%S")
                out.append(f"  alarm {t} {e['from_state']} -> {e['to_state']}: {e['reason']}")
            out.append("")
        return "\n".join(out)
    finally:
        db.close()


def main(args: argparse.Namespace) -> int:
    print(render(_db_path(args), args.asset, args.rows, args.points))
    return 0
