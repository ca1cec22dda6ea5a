"""``machinewatch demo``: a simulated line of machines, a developing fault, a live view.

Runs the packaged ``configs/demo.toml`` (or ``--config``) with the simulator paced so that the
whole run takes about ``--seconds`` of wall time, learns each machine's baseline, then monitors.
``--json`` prints the outcome as one JSON object on stdout (logs go to stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import shutil
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

from machinewatch.engine.config import Config, PluginConfig, load_config
from machinewatch.engine.hotpath import Outputs
from machinewatch.engine.pipeline import Engine

NAME = "demo"
HELP = "run the engine on simulated machines with a developing fault (no servers needed)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=60.0, help="wall time of the run (default 60)")
    p.add_argument("--json", action="store_true", help="print the outcome as one JSON object on stdout")
    p.add_argument("--config", help="config to run instead of the packaged demo.toml")
    p.add_argument("--state-dir", default="machinewatch-demo", help="where the demo keeps its data")


def demo_config_path() -> Path:
    """The packaged demo config (the same file as ``configs/demo.toml``)."""
    return Path(str(resources.files("machinewatch.engine") / "default_configs" / "demo.toml"))


def prepare(cfg: Config, seconds: float, state_dir: Path, start_ns: int) -> Config:
    """The demo config paced to ``seconds`` of wall time, writing under ``state_dir``."""
    sources = {}
    for name, p in cfg.sources.items():
        opts = dict(p.options)
        if p.kind == "simulator":
            duration = float(opts.get("duration_s", 600.0))
            opts["speedup"] = duration / max(seconds, 1e-3)
            opts["start_ns"] = start_ns
        sources[name] = PluginConfig(p.name, p.kind, opts)
    engine = dataclasses.replace(cfg.engine, state_dir=state_dir)
    return dataclasses.replace(cfg, engine=engine, sources=sources)


class Tracker:
    """Follows the run: state, score and top features per asset, and every alarm."""

    def __init__(self, cfg: Config, start_ns: int) -> None:
        self.cfg = cfg
        self.start_ns = start_ns
        self.rows: dict[str, dict[str, Any]] = {
            a: {"state": "LEARNING", "score": float("nan"), "threshold": float("nan"), "top": ()}
            for a in cfg.assets
        }
        self.first_alarm: dict[str, tuple[float, tuple[str, ...], str]] = {}
        self.alarms: list[dict[str, Any]] = []
        self.data_s = 0.0

    def __call__(self, out: Outputs) -> None:
        for sc in out.scores:
            row = self.rows[sc.asset]
            row["score"], row["threshold"] = sc.score, sc.threshold
            self.data_s = max(self.data_s, (sc.t_ns - self.start_ns) / 1e9)
        for e in out.events:
            if e.kind != "machine":
                continue
            row = self.rows[e.asset]
            row["state"] = e.to_state
            t = (e.t_ns - self.start_ns) / 1e9
            if e.to_state == "ALARM":
                row["top"] = e.top_features
                self.first_alarm.setdefault(e.asset, (t, e.top_features, e.reason))
            if e.to_state != "NORMAL" or e.from_state != "LEARNING":
                self.alarms.append(
                    {
                        "asset": e.asset,
                        "t_s": round(t, 2),
                        "from": e.from_state,
                        "to": e.to_state,
                        "reason": e.reason,
                    }
                )

    def render(self, engine: Engine | None) -> str:
        """The live table (``engine`` gives learning progress while running)."""
        lines = [
            f"machinewatch demo  data time {self.data_s:7.1f} s",
            "",
            f"{'asset':<14}{'state':<10}{'score':>9}{'thresh':>9}  top features",
        ]
        for a, row in self.rows.items():
            state = row["state"]
            if state == "LEARNING" and engine is not None:
                state = f"LEARN {engine.hot.scorers[a].learn_progress:3.0%}"
            lines.append(
                f"{a:<14}{state:<10}{row['score']:>9.2f}{row['threshold']:>9.2f}  {', '.join(row['top'])}"
            )
        return "\n".join(lines)


def faults_of(cfg: Config) -> dict[str, float]:
    """Asset -> start of the first fault the simulator injects into it (simulated seconds)."""
    out: dict[str, float] = {}
    for p in cfg.sources.values():
        for f in p.options.get("faults", []) if p.kind == "simulator" else []:
            out.setdefault(str(f["asset"]), float(f.get("start_s", 0.0)))
    return out


async def _run(cfg: Config, tracker: Tracker, live: bool) -> Any:
    engine = Engine(cfg, on_outputs=tracker)

    async def view() -> None:
        while True:
            sys.stdout.write("\x1b[H\x1b[J" + tracker.render(engine) + "\n")
            sys.stdout.flush()
            await asyncio.sleep(0.5)

    task = asyncio.create_task(view()) if live else None
    try:
        return await engine.run()
    finally:
        if task:
            task.cancel()


def main(args: argparse.Namespace) -> int:
    if args.json or not sys.stdout.isatty():
        logging.getLogger().setLevel(logging.WARNING)
    base = load_config(args.config or demo_config_path())
    state_dir = Path(args.state_dir).resolve()
    shutil.rmtree(state_dir, ignore_errors=True)  # the demo starts from scratch every time
    start_ns = time.time_ns() // 1_000_000_000 * 1_000_000_000
    cfg = prepare(base, args.seconds, state_dir, start_ns)
    tracker = Tracker(cfg, start_ns)
    live = not args.json and sys.stdout.isatty()
    if not args.json:
        print(
            f"machinewatch demo: {len(cfg.assets)} machines, learning their baselines, then monitoring "
            f"(about {args.seconds:g} s)..."
        )
    t0 = time.perf_counter()
    report = asyncio.run(_run(cfg, tracker, live))
    wall = time.perf_counter() - t0
    faults = faults_of(cfg)
    assets = []
    for a in cfg.assets:
        first = tracker.first_alarm.get(a)
        assets.append(
            {
                "asset": a,
                "fault_injected": a in faults,
                "fault_start_s": faults.get(a),
                "alarmed": first is not None,
                "first_alarm_s": round(first[0], 2) if first else None,
                "top_features": list(first[1]) if first else [],
                "reason": first[2] if first else None,
                "final_state": tracker.rows[a]["state"],
            }
        )
    db = state_dir / "machinewatch.db"
    outcome = {
        "assets": assets,
        "alarms": tracker.alarms,
        "database": str(db),
        "state_dir": str(state_dir),
        "wall_s": round(wall, 2),
        "warmup_s": round(report.warmup_s, 3),
        "data_s": round(tracker.data_s, 1),
        "counters": report.counters,
    }
    if args.json:
        print(json.dumps(outcome, indent=2))
        return 0
    if live:
        print("\x1b[H\x1b[J" + tracker.render(None))
    print(
        f"\nfinished in {wall:.1f} s wall ({tracker.data_s:.0f} s of machine time, warm-up "
        f"{report.warmup_s:.2f} s)\n"
    )
    for row in assets:
        if row["alarmed"]:
            print(
                f"  {row['asset']:<13} ALARM at {row['first_alarm_s']:.1f} s"
                + (
                    f" (fault injected at {row['fault_start_s']:.0f} s)"
                    if row["fault_injected"]
                    else " (no fault injected: false alarm)"
                )
                + f"\n                top features: {', '.join(row['top_features'])}"
            )
        else:
            miss = " (fault injected: MISSED)" if row["fault_injected"] else ""
            print(f"  {row['asset']:<13} no alarm{miss}")
    print(f"\nlocal data: {db}\n  see it with: machinewatch trends --db {db}")
    return 0
