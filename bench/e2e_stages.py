"""Where the end-to-end latency goes: the engine with a wall-clock stamp at every stage.

``python bench/e2e_stages.py run CONFIG`` runs ``machinewatch run CONFIG`` with the source's
decode, the hot path's features and apply, the dispatch, the actuator's set and the socket
send of each command stamped with ``time.time_ns()`` (comparable across processes on one
machine), and dumps them to ``$MW_TRACE`` at exit. ``python bench/e2e_stages.py report WORKDIR``
joins them with a latency run's ``sent.json`` / ``arrivals.json`` and prints, per stage, the
time since the completing chunk was published (p50/p90/p99, ms).

Used by ``bench/e2e_latency.py --trace-stages`` (diagnosis only: the stamps cost a little).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

T: dict[str, Any] = {"decode": {}, "feat": [], "dispatch": [], "act": [], "send": {}, "lag": [], "gc": []}


def _key(sid_or_asset: str, t_end_ns: int) -> str:
    return f"{sid_or_asset.split('/')[0]}:{t_end_ns}"


def install() -> None:
    """Monkeypatch the stamps in (engine process only)."""
    import asyncio
    import gc

    import paho.mqtt.client as pc

    from machinewatch.connectors.actuators import mqtt as act
    from machinewatch.connectors.sources import mqtt as src
    from machinewatch.engine import hotpath, pipeline

    now = time.time_ns
    dec: Callable[..., Any] = src.MqttSource.decode

    def decode(self: Any, topic: str, payload: bytes, now_ns: int | None = None) -> Any:
        t = now()
        r = dec(self, topic, payload, now_ns)
        if hasattr(r, "values"):
            T["decode"][_key(r.stream_id, r.t0_ns + round(r.values.size * 1e9 / r.rate_hz))] = t
        return r

    feat: Callable[..., Any] = hotpath.HotPath.features

    def features(self: Any, windows: list[Any]) -> Any:
        t = now()
        r = feat(self, windows)
        T["feat"].append([t, now(), [_key(w.stream_id, w.t_end_ns) for w in windows]])
        return r

    disp: Callable[..., Any] = pipeline.Engine._dispatch

    def dispatch(self: Any, out: Any) -> None:
        T["dispatch"].append([now(), [_key(e.asset, e.t_ns) for e in out.events]])
        disp(self, out)

    aset: Callable[..., Any] = act.MqttActuator.set

    async def set_(self: Any, asset: str, on: bool, event: Any) -> None:
        t = now()
        await aset(self, asset, on, event)
        if event is not None:
            T["act"].append([t, now(), _key(asset, event.t_ns)])

    send: Callable[..., Any] = pc.Client._sock_send

    def sock_send(self: Any, buf: Any) -> Any:
        b = bytes(buf[:400])
        if b and (b[0] & 0xF0) == 0x30 and b'"event_t_ns": ' in b:
            body = json.loads(bytes(buf)[bytes(buf).index(b"{") :])
            T["send"].setdefault(_key(body["asset"], body["event_t_ns"]), now())
        return send(self, buf)

    run: Callable[..., Any] = pipeline.Engine.run

    async def run_(self: Any) -> Any:
        async def lag() -> None:  # event-loop lag: how late a 5 ms sleep wakes
            while True:
                t = time.perf_counter_ns()
                await asyncio.sleep(0.005)
                T["lag"].append((time.perf_counter_ns() - t) / 1e6 - 5.0)

        task = asyncio.create_task(lag())
        try:
            return await run(self)
        finally:
            task.cancel()

    gc_t0 = [0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_t0[0] = time.perf_counter_ns()
        else:
            T["gc"].append([info["generation"], (time.perf_counter_ns() - gc_t0[0]) / 1e6, time.time_ns()])

    gc.callbacks.append(on_gc)
    src.MqttSource.decode = decode
    hotpath.HotPath.features = features
    pipeline.Engine._dispatch = dispatch
    act.MqttActuator.set = set_
    pc.Client._sock_send = sock_send  # type: ignore[method-assign]
    pipeline.Engine.run = run_


def report(workdir: str) -> dict[str, Any]:
    """Stage times since publish (ms) of every command of a latency run."""
    import numpy as np

    sent = json.load(open(f"{workdir}/sent.json"))
    arr = json.load(open(f"{workdir}/arrivals.json"))
    tr = json.load(open(f"{workdir}/trace.json"))
    fs: dict[str, int] = {}
    fe: dict[str, int] = {}
    disp: dict[str, int] = {}
    for t, t2, keys in tr["feat"]:
        for k in keys:
            fs[k], fe[k] = t, t2
    for t, keys in tr["dispatch"]:
        for k in keys:
            disp.setdefault(k, t)
    act = {k: (t, t2) for t, t2, k in tr["act"]}
    stages = {
        "chunk decoded": tr["decode"],
        "features start": fs,
        "features end": fe,
        "dispatched": disp,
        "actuator set()": {k: v[0] for k, v in act.items()},
        "command on the socket": tr["send"],
        "arrived at subscriber": {f"{a}:{t}": now for a, t, now in arr},
        "PUBACK back (set() returns)": {k: v[1] for k, v in act.items()},
    }
    keys = [f"{a}:{t}" for a, t, _ in arr if all(f"{a}:{t}" in m for m in (sent, *stages.values()))]
    out: dict[str, Any] = {"commands": len(keys)}
    for name, m in stages.items():
        x = np.array([(m[k] - sent[k]) / 1e6 for k in keys])
        out[name] = [round(float(v), 2) for v in np.percentile(x, [50, 90, 99])] if len(x) else None
    first = min(tr["decode"].values(), default=0)  # collections while data flowed (not at start-up)
    for g in (0, 1, 2):
        ms = [d for gen, d, t in tr["gc"] if gen == g and t >= first]
        out[f"gc gen{g} while running: count, max ms"] = [len(ms), round(max(ms), 2) if ms else 0.0]
    lag = np.array(tr["lag"])
    out["loop lag (5 ms sleep)"] = [round(float(v), 2) for v in np.percentile(lag, [50, 90, 99])]
    return out


def main() -> int:
    if sys.argv[1] == "report":
        print("ms since the completing chunk was published: p50, p90, p99")
        for k, v in report(sys.argv[2]).items():
            print(f"{k:30s} {v}")
        return 0
    install()
    import atexit

    def dump() -> None:
        with open(os.environ["MW_TRACE"], "w") as f:
            json.dump(T, f)

    atexit.register(dump)
    from machinewatch.engine.cli import main as cli

    return int(cli(sys.argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
