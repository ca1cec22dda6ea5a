"""``machinewatch bench [--config CONFIG]``: how many vibration channels this gateway can take.

Runs the real hot path (:class:`~machinewatch.engine.hotpath.HotPath`: buffering, quality
checks, batched feature kernels, scoring with an int8 model, alarm decisions, summaries) on
synthetic data shaped like the configured streams (or like one typical vibration asset:
25.6 kHz, 4096-sample windows, a bearing), on this machine, single-threaded, and reports:

- the CPU time per second of data of each configured stream;
- the expected CPU share of the configuration as it stands;
- how many vibration channels like the configured one(s) one core sustains with headroom (the
  engine should use at most ``--headroom`` of a core, 70 % by default), and how many in total
  given how the engine spreads work: feature kernels run in one worker thread (``nogil``) while
  the event loop ingests, scores and writes, so with two cores or more the busier of the two sets
  the limit.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from machinewatch.engine.config import Config, load_config, load_config_text
from machinewatch.engine.features.vibration import fft_backend
from machinewatch.engine.hotpath import HotPath, model_factory
from machinewatch.engine.scoring import LearnedModel, fit_for
from machinewatch.engine.types import Chunk, Window

NAME = "bench"
HELP = "measure the hot path on this gateway and print how many vibration channels it can sustain"

TYPICAL = """
[engine]
site = "bench"
[assets.typical]
primary_stream = "vib"
[assets.typical.machine]
shaft_rpm = 1797
[assets.typical.machine.bearing]
balls = 9
ball_diameter_mm = 7.94
pitch_diameter_mm = 39.04
[assets.typical.streams.vib]
kind = "vibration"
rate_hz = 25600
window_samples = 4096
hop_samples = 4096
units = "g"
[sources.sim]
kind = "simulator"
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="config whose assets to measure (default: one typical vibration asset)")
    p.add_argument("--seconds", type=float, default=20.0, help="seconds of data per timed run (default 20)")
    p.add_argument("--repeat", type=int, default=5, help="timed runs; the median is reported (default 5)")
    p.add_argument("--headroom", type=float, default=0.7, help="share of a core the engine may use (0.7)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


@dataclass(slots=True)
class StreamCost:
    """Measured CPU seconds per second of data of one stream, split by thread."""

    stream_id: str
    kind: str
    loop_s: float  # ingest + scoring/alarms/summaries (event loop)
    worker_s: float  # quality checks + feature kernels (worker thread)

    @property
    def total_s(self) -> float:
        return self.loop_s + self.worker_s


def _chunks(cfg: Config, seconds: float, seed: int) -> list[Chunk]:
    """Synthetic chunks of every stream (0.1 s each, interleaved in time like live data)."""
    rng = np.random.default_rng(seed)
    out: list[tuple[int, Chunk]] = []
    for a in cfg.assets.values():
        for s in a.streams.values():
            sid = a.stream_id(s.name)
            per = max(1, round(0.1 * s.rate_hz))
            n_chunks = max(1, int(seconds * s.rate_hz / per))
            base = 1.0 if s.kind in ("vibration", "current") else 20.0
            for i in range(n_chunks):
                t0 = round(i * per * 1e9 / s.rate_hz)
                v = base * rng.standard_normal(per * s.channels).astype(np.float32)
                if s.kind not in ("vibration", "current"):
                    v += 50.0
                out.append((t0, Chunk(sid, t0, s.rate_hz, i, v)))
    out.sort(key=lambda p: p[0])
    return [c for _, c in out]


def _learned_models(cfg: Config) -> dict[str, LearnedModel]:
    """A model per asset (int8 if configured), fitted on the features of synthetic data."""
    hot = HotPath(cfg)
    hot.warmup()
    learned: dict[str, LearnedModel] = {}
    windows: dict[str, list[Window]] = defaultdict(list)
    for c in _chunks(cfg, 30.0, 1):
        for w in hot.ingest(c):
            windows[w.stream_id].append(w)
    for name, scorer in hot.scorers.items():
        a = cfg.assets[name]
        vecs = []
        for s in scorer.streams:
            res = hot.features(windows[a.stream_id(s)][-40:])
            rows = [r.features for r in res if r.features is not None]
            vecs.append(np.array(rows[-40:]))
        n = min(len(v) for v in vecs)
        rng = np.random.default_rng(2)
        x = np.hstack([v[-n:] for v in vecs])
        x = np.vstack([x * (1 + 0.01 * rng.standard_normal(x.shape)) for _ in range(max(1, 60 // n + 1))])
        m = a.model
        learned[name] = fit_for(m, scorer.names, model_factory(m.kind, dict(m.options)), x)
    return learned


def measure(cfg: Config, seconds: float, repeat: int) -> dict[str, StreamCost]:
    """CPU seconds per data second of every stream (medians of ``repeat`` runs), one thread."""
    learned = _learned_models(cfg)
    chunks = _chunks(cfg, seconds, 3)
    runs: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for _ in range(repeat):
        hot = HotPath(cfg, learned)
        loop: dict[str, float] = defaultdict(float)
        work: dict[str, float] = defaultdict(float)
        pending: dict[str, list[Window]] = defaultdict(list)
        for c in chunks:
            t0 = time.perf_counter()
            ws = hot.ingest(c)
            loop[c.stream_id] += time.perf_counter() - t0
            pending[c.stream_id].extend(ws)
            if len(pending[c.stream_id]) >= 32:  # the pipeline batches up to 256 windows
                _run(hot, pending.pop(c.stream_id), c.stream_id, loop, work)
        for sid, ws in pending.items():
            if ws:
                _run(hot, ws, sid, loop, work)
        for sid in hot.buffers:
            runs[sid].append((loop[sid] / seconds, work[sid] / seconds))
    costs = {}
    for sid, vals in runs.items():
        _, s = cfg.stream(sid)
        costs[sid] = StreamCost(
            sid, s.kind, statistics.median(v[0] for v in vals), statistics.median(v[1] for v in vals)
        )
    return costs


def _run(hot: HotPath, ws: list[Window], sid: str, loop: dict[str, float], work: dict[str, float]) -> None:
    t0 = time.perf_counter()
    res = hot.features(ws)
    t1 = time.perf_counter()
    hot.apply(res)
    t2 = time.perf_counter()
    work[sid] += t1 - t0
    loop[sid] += t2 - t1


def capacity(costs: dict[str, StreamCost], headroom: float, cpus: int) -> dict[str, object]:
    """Vibration channels per core and in total, and the current configuration's CPU share."""
    vib = [c for c in costs.values() if c.kind == "vibration"]
    loop_now = sum(c.loop_s for c in costs.values())
    work_now = sum(c.worker_s for c in costs.values())
    res: dict[str, object] = {
        "cpus": cpus,
        "headroom": headroom,
        "cpu_share_of_one_core": loop_now + work_now,
        "cpu_share_of_gateway": (loop_now + work_now) / cpus,
        "loop_thread_share": loop_now,
        "worker_thread_share": work_now,
    }
    if not vib:
        res["vibration_channels_per_core"] = None
        res["vibration_channels_total"] = None
        return res
    per_loop = statistics.mean(c.loop_s for c in vib)
    per_work = statistics.mean(c.worker_s for c in vib)
    eps = 1 + 1e-9  # 0.7 / 0.004 is 174.999...
    per_core = int(eps * headroom / (per_loop + per_work))
    total = int(eps * min(headroom / per_loop, headroom / per_work)) if cpus >= 2 else per_core
    res |= {
        "vibration_channel_cpu_s_per_s": per_loop + per_work,
        "vibration_channel_loop_s_per_s": per_loop,
        "vibration_channel_worker_s_per_s": per_work,
        "vibration_channels_per_core": per_core,
        "vibration_channels_total": total,
    }
    return res


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config) if args.config else load_config_text(TYPICAL, source="<typical asset>")
    costs = measure(cfg, args.seconds, args.repeat)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cap = capacity(costs, args.headroom, cpus)
    load = os.getloadavg()
    if args.json:
        print(
            json.dumps(
                {
                    "config": str(cfg.path) if args.config else "typical",
                    "streams": {
                        k: {"kind": c.kind, "loop_s_per_s": c.loop_s, "worker_s_per_s": c.worker_s}
                        for k, c in costs.items()
                    },
                    **cap,
                    "fft_backend": fft_backend(),
                    "load_average": load[0],
                }
            )
        )
        return 0
    print(
        f"hot path on this gateway ({cpus} cpus, load average {load[0]:.2f}, FFT backend {fft_backend()}); "
        f"{args.seconds:g} s of synthetic data per run, median of {args.repeat}"
    )
    for c in costs.values():
        _, s = cfg.stream(c.stream_id)
        print(
            f"  {c.stream_id:24s} {c.kind:12s} {s.rate_hz:>8g} Hz x {s.channels} ch, "
            f"window {s.window_samples:>6d} hop {s.hop_samples:>6d}: {100 * c.total_s:6.2f} % of a core "
            f"(loop {100 * c.loop_s:.2f} %, kernels {100 * c.worker_s:.2f} %)"
        )
    one_core, gateway = cap["cpu_share_of_one_core"], cap["cpu_share_of_gateway"]
    assert isinstance(one_core, int | float) and isinstance(gateway, int | float)
    print(f"this configuration: {100 * one_core:.2f} % of one core, {100 * gateway:.2f} % of the gateway")
    if cap["vibration_channels_per_core"] is None:
        print("no vibration stream configured: no channel capacity to report")
        return 0
    vib = next(c for c in costs.values() if c.kind == "vibration")
    _, s = cfg.stream(vib.stream_id)
    print(
        f"vibration channels at {s.rate_hz:g} Hz, window {s.window_samples}, hop {s.hop_samples}, "
        f"keeping the engine under {100 * args.headroom:.0f} % of a core:"
    )
    print(f"  per core: {cap['vibration_channels_per_core']}")
    print(
        f"  total on this gateway: {cap['vibration_channels_total']} "
        "(kernels in the worker thread, ingest and scoring on the event loop)"
    )
    return 0
