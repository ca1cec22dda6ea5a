"""Start-up time and memory of the engine, each in a fresh process.

- ``demo``: ``machinewatch demo --seconds 1`` (600 s of simulated data for three machines, as
  fast as the machine goes) with an empty numba cache (cold: ``NUMBA_CACHE_DIR`` set to a new
  temporary directory) and again with the cache that run filled (warm): process wall time and
  the engine's warm-up (kernel compilation or cache load).
- ``run``: three simulated 25.6 kHz vibration assets; a first ``machinewatch run`` learns and
  stores their models, then a restart (simulator at real time, warm numba cache, models restored
  so it monitors at once): seconds from process start to the first scored window (target <= 2 s).
- ``rss``: ``machinewatch run`` of a config with 64 vibration channels at 25.6 kHz (64 assets,
  4096-sample windows, a bearing each, simulated at real time), RSS sampled every second: the
  target is <= 200 MB and flat.

Thread counts are pinned to 1 (numba, OpenMP, BLAS). Run::

    .venv/bin/python bench/startup.py [--json] [--rss-seconds 60] [--only demo,run,rss]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

THREAD_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
THREADS = dict.fromkeys(THREAD_VARS, "1")
BIN = Path(sys.executable).parent

#: harness run in a fresh process: seconds from process start to the first scored window
FIRST_SCORE = r"""
import os, time
def since_start():
    with open('/proc/self/stat') as f:
        start = int(f.read().rsplit(')', 1)[1].split()[19]) / os.sysconf('SC_CLK_TCK')
    with open('/proc/uptime') as f:
        return float(f.read().split()[0]) - start
import asyncio, json, sys
from machinewatch.engine.config import load_config
from machinewatch.engine.pipeline import Engine
cfg = load_config(sys.argv[1])
first = {}
def on_outputs(out):
    if out.scores and 'score' not in first:
        first['score'] = since_start()
        engine.stop()
engine = Engine(cfg, on_outputs=on_outputs, install_signals=False)
t_engine = since_start()
report = asyncio.run(engine.run())
print(json.dumps({'first_score_s': first.get('score'), 'engine_ready_s': t_engine,
                  'warmup_s': report.warmup_s}))
"""


def demo_toml() -> str:
    return (resources.files("machinewatch.engine") / "default_configs" / "demo.toml").read_text()


def run_demo(cache: Path, state: Path) -> dict[str, Any]:
    env = {**os.environ, **THREADS, "NUMBA_CACHE_DIR": str(cache)}
    t0 = time.perf_counter()
    cmd = [str(BIN / "machinewatch"), "demo", "--seconds", "1", "--json", "--state-dir", str(state)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    d = json.loads(p.stdout)
    return {
        "process_wall_s": round(wall, 2),
        "warmup_s": d["warmup_s"],
        "engine_wall_s": d["wall_s"],
        "windows_scored": d["counters"].get("windows_scored"),
    }


def run_first_score(cache: Path, tmp: Path, channels: int) -> dict[str, Any]:
    """Learn and store models in a first run (simulator as fast as possible), then time a restart
    at real time from process start to the first scored window (warm numba cache)."""
    state = tmp / "first-score-state"
    env = {**os.environ, **THREADS, "NUMBA_CACHE_DIR": str(cache)}
    learn = tmp / "learn.toml"
    learn.write_text(rss_config(state, channels, 30.0, speedup="max", learn_windows=40))
    subprocess.run(
        [str(BIN / "machinewatch"), "run", str(learn)], env=env, capture_output=True, check=True, timeout=600
    )
    cfg = tmp / "first-score.toml"
    cfg.write_text(rss_config(state, channels, 30.0))
    p = subprocess.run(
        [sys.executable, "-c", FIRST_SCORE, str(cfg)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return {"channels": channels, **json.loads(p.stdout.strip().splitlines()[-1])}


def rss_config(
    state: Path, channels: int, seconds: float, speedup: str = "1.0", learn_windows: int = 100
) -> str:
    """``channels`` assets with one 25.6 kHz vibration stream each, simulated."""
    sp = '"max"' if speedup == "max" else speedup
    parts = [
        f'[engine]\nsite = "rss"\nstate_dir = "{state}"\n',
        f'[model]\nkind = "mahalanobis"\nlearn_windows = {learn_windows}\n',
        f'[sources.sim]\nkind = "simulator"\nseed = 1\nspeedup = {sp}\nduration_s = {seconds}\n'
        "chunk_samples = 2560\n",
    ]
    for i in range(channels):
        a = f"m{i:02d}"
        parts.append(
            f'[assets.{a}]\nprimary_stream = "vib"\n[assets.{a}.machine]\nshaft_rpm = {1480 + 10 * i}\n'
            f"[assets.{a}.machine.bearing]\nballs = 9\nball_diameter_mm = 7.94\npitch_diameter_mm = 39.04\n"
            f'[assets.{a}.streams.vib]\nkind = "vibration"\nrate_hz = 25600\nwindow_samples = 4096\n'
            'hop_samples = 4096\nunits = "g"\n'
        )
    return "\n".join(parts)


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        return None
    return None


def run_rss(cache: Path, tmp: Path, channels: int, seconds: float) -> dict[str, Any]:
    state = tmp / "rss-state"
    cfg = tmp / "rss.toml"
    env = {**os.environ, **THREADS, "NUMBA_CACHE_DIR": str(cache)}
    warm = tmp / "rss-warm.toml"  # fill the numba cache first: RSS is measured on a warm start
    warm.write_text(rss_config(tmp / "rss-warm-state", 1, 2.0, speedup="max"))
    subprocess.run([str(BIN / "machinewatch"), "run", str(warm)], env=env, capture_output=True, timeout=600)
    cfg.write_text(rss_config(state, channels, seconds))
    p = subprocess.Popen(
        [str(BIN / "machinewatch"), "run", str(cfg)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    samples: list[tuple[float, float]] = []
    t0 = time.perf_counter()
    try:
        while p.poll() is None:
            r = rss_mb(p.pid)
            if r is not None:
                samples.append((time.perf_counter() - t0, r))
            time.sleep(1.0)
    finally:
        if p.poll() is None:
            p.terminate()
        _, err = p.communicate(timeout=60)
    scored = re.findall(r'"windows_scored": (\d+)', err)
    shed = re.findall(r'"windows_shed": (\d+)', err)
    late = [r for t, r in samples if t >= seconds / 2]
    early = [r for t, r in samples if seconds / 4 <= t < seconds / 2]
    return {
        "channels": channels,
        "seconds": seconds,
        "rss_max_mb": round(max(r for _, r in samples), 1) if samples else None,
        "rss_second_quarter_mb": round(sum(early) / len(early), 1) if early else None,
        "rss_second_half_mb": round(sum(late) / len(late), 1) if late else None,
        "rss_end_mb": round(samples[-1][1], 1) if samples else None,
        "samples": [(round(t, 1), round(r, 1)) for t, r in samples],
        "windows_scored": int(scored[-1]) if scored else None,
        "windows_shed": int(shed[-1]) if shed else 0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--only", default="demo,run,rss", help="comma-separated: demo, run, rss")
    ap.add_argument("--rss-seconds", type=float, default=60.0)
    ap.add_argument("--channels", type=int, default=64)
    args = ap.parse_args(argv)
    only = set(args.only.split(","))
    res: dict[str, Any] = {"threads": THREADS, "load_average": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="mw-startup-") as d:
        tmp = Path(d)
        cache = tmp / "numba-cache"
        state = tmp / "demo-state"
        if "demo" in only:
            res["demo_cold"] = run_demo(cache, state)
            res["demo_warm"] = run_demo(cache, tmp / "demo-state-2")
        if "run" in only:
            res["run_first_score"] = run_first_score(cache, tmp, 3)
        if "rss" in only:
            res["rss"] = run_rss(cache, tmp, args.channels, args.rss_seconds)
    res["load_average_end"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(res))
        return 0
    for k, v in res.items():
        if isinstance(v, dict) and "samples" in v:
            v = {**v, "samples": f"{len(v['samples'])} samples"}
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
