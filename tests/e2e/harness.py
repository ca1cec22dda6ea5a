"""Shared helpers for the reliability battery (``tests/e2e/test_reliability*.py``, ``tests/soak/``).

The engine runs as a process (``machinewatch run``) against a real Mosquitto and a real
VictoriaMetrics on loopback; data comes from ``machinewatch simulate`` (another process) or from
frames published by the test. Everything the ledgers need is read from outside the engine: the
counters file it rewrites every 0.5 s, its spool file after a ``kill -9``, the database's export,
and ``/proc/<pid>`` for memory and file descriptors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from machinewatch.engine.spool import Spool
from machinewatch.engine.types import Summary

MW = str(Path(sys.executable).parent / "machinewatch")
SITE = "rel"

#: two assets: p1 (vibration, 25.6 kHz, 0.16 s windows) and t1 (temperature, 10 Hz, never faulted)
ASSETS = """
[assets.p1]
primary_stream = "vib"
[assets.p1.machine]
shaft_rpm = 1480
[assets.p1.streams.vib]
kind = "vibration"
rate_hz = 25600
window_samples = 4096
stale_after_s = {stale}
[assets.t1.streams.temp]
kind = "temperature"
rate_hz = 10
window_samples = 4
hop_samples = 2
stale_after_s = 1000
"""


def engine_toml(
    state: Path,
    mqtt_url: str,
    *,
    influx_url: str | None = None,
    site: str = SITE,
    interval_s: float = 1.0,
    learn: int = 30,
    latching: bool = True,
    keepalive_s: int = 30,
    stale_after_s: float = 3.0,
    spool_max_bytes: int = 64 << 20,
    http_port: int = 0,
    extra: str = "",
    influx_extra: str = "",
) -> str:
    """An engine: MQTT source, mqtt actuator ``relay`` on every asset, optional InfluxDB sink."""
    text = f"""
[engine]
site = "{site}"
state_dir = "{state}"
summary_interval_s = {interval_s}
health_interval_s = 1.0
spool_max_bytes = {spool_max_bytes}
http_port = {http_port}
# these tests are about sinks, the spool, the broker and clocks: fit in-process so their timing does
# not depend on a child's start (fitting in a child: tests/engine/test_fitworker.py, test_fleet, demo)
fit_in_subprocess = false
{extra}
[model]
learn_windows = {learn}
[alarm]
on_delay_windows = 3
off_delay_windows = 5
latching = {str(latching).lower()}
actuators = ["relay"]
{ASSETS.format(stale=stale_after_s)}
[sources.plant]
kind = "mqtt"
url = "{mqtt_url}"
heartbeat_s = 1
keepalive_s = {keepalive_s}
reconnect_max_s = 1.0
[actuators.relay]
kind = "mqtt"
url = "{mqtt_url}"
"""
    if influx_url:
        text += f"""
[sinks.influx]
kind = "influxdb"
url = "{influx_url}"
bucket = "machinewatch"
org = "plant"
timeout_s = 2.0
{influx_extra}
"""
    return text


def sim_toml(
    *,
    site: str = SITE,
    speedup: float | str = 4.0,
    duration_s: float = 60.0,
    seed: int = 5,
    start_ns: int | None = None,
    faults: Iterable[str] = (),
) -> str:
    """A simulator config with the same assets; ``faults`` are ``[[sources.sim.faults]]`` bodies."""
    sp = f'"{speedup}"' if isinstance(speedup, str) else speedup
    text = f"""
[engine]
site = "{site}"
{ASSETS.format(stale=3.0)}
[sources.sim]
kind = "simulator"
seed = {seed}
speedup = {sp}
duration_s = {duration_s}
"""
    if start_ns is not None:
        text += f"start_ns = {start_ns}\n"
    for f in faults:
        text += f"\n[[sources.sim.faults]]\n{f}\n"
    return text


OUTER_RACE = 'asset = "p1"\nkind = "outer_race"\nstart_s = {start}\nramp_s = 1.0\nseverity = 1.0'


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- observing the engine


def counters(state: Path) -> dict[str, int]:
    """The engine's counters file (rewritten every 0.5 s and at stop); {} while absent."""
    try:
        return dict(json.loads((state / "counters.json").read_text()))
    except (OSError, ValueError):
        return {}


async def until(cond: Callable[[], Any], timeout: float = 30.0, what: str = "") -> float:
    """Poll ``cond`` every 20 ms; return the seconds it took, fail after ``timeout``."""
    t = time.monotonic()
    while not cond():
        if time.monotonic() - t > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or cond}")
        await asyncio.sleep(0.02)
    return time.monotonic() - t


def proc_status(pid: int) -> dict[str, int]:
    """``VmRSS``, ``VmHWM`` (peak RSS) in KiB and the number of open fds of a live process."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return out


@dataclass
class Sampler:
    """Samples RSS and fds of a process every ``period`` s in the background."""

    pid: int
    period: float = 0.25
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, rss KiB, fds)
    hwm_kib: int = 0

    async def run(self) -> None:
        t0 = time.monotonic()
        while True:
            s = proc_status(self.pid)
            if "VmRSS" in s:
                self.samples.append((time.monotonic() - t0, s["VmRSS"], s["fds"]))
                self.hwm_kib = max(self.hwm_kib, s.get("VmHWM", 0))
            await asyncio.sleep(self.period)

    @property
    def peak_rss_mib(self) -> float:
        return max(self.hwm_kib, *(r for _, r, _ in self.samples)) / 1024 if self.samples else 0.0


def spool_summaries(state: Path, sinks: list[str]) -> list[tuple[str, int]]:
    """``(asset, t_ns)`` of every asset summary still pending in a stopped engine's spool."""
    sp = Spool(state / "spool.db", sinks)
    try:
        return [(r.asset, r.t_ns) for _, r in sp.peek(sinks[0], 10**7) if isinstance(r, Summary)]
    finally:
        sp.close()


#: how far past the wall clock a read-back looks: beyond the sink's own bound on future points
#: (``max_future_s``, 1 day), so every point the engine may write is seen
EXPORT_AHEAD_S = 3 * 86_400


def export_all(vm: Any, match: str) -> list[dict[str, Any]]:
    """Every sample of the matching series, *including those dated after the wall clock*.

    VictoriaMetrics' ``/api/v1/export`` ends at "now" unless told otherwise. A simulator run
    faster than real time (``speedup`` > 1, starting at the wall clock) dates its data ahead
    of the wall clock, so a read-back without an ``end`` silently missed the newest summaries:
    that, not the engine, was the kill -9 loop's "one spooled summary missing" (issue 6).
    """
    return list(vm.export(match, start="0", end=str(int(time.time()) + EXPORT_AHEAD_S)))


def db_summaries(vm: Any, site: str) -> dict[str, list[int]]:
    """Per asset, the distinct timestamps (ms) of its asset summaries in VictoriaMetrics.

    InfluxDB overwrites a point written again with the same series and timestamp; VictoriaMetrics
    (without ``-dedup``) keeps both copies of a re-sent batch. A copy with the *same* value is the
    idempotent re-send of a write whose acknowledgement was lost (a timeout): it is folded here.
    Two different values at one timestamp would be two different summaries of one interval, a
    real duplicate: :class:`AssertionError`.

    The export reaches :data:`EXPORT_AHEAD_S` past the wall clock (see :func:`export_all`).
    """
    vm.flush()
    out: dict[str, list[int]] = {}
    names = "machinewatch_summary_(state_code|score_max|score_mean)"
    match = f'{{__name__=~"{names}",site="{site}",stream="_asset"}}'
    for s in export_all(vm, match):
        seen: dict[int, float] = {}
        for t, v in zip(s["timestamps"], s["values"], strict=True):
            assert seen.setdefault(t, v) == v, f"two different summaries at {t} for {s['metric']}"
        if s["metric"]["__name__"].endswith("state_code"):
            out.setdefault(s["metric"]["asset"], []).extend(seen)
    return out


def db_resent(vm: Any, site: str) -> int:
    """How many identical re-sent copies VictoriaMetrics holds (see :func:`db_summaries`)."""
    n = 0
    for s in export_all(vm, f'{{__name__="machinewatch_summary_state_code",site="{site}",stream="_asset"}}'):
        n += len(s["timestamps"]) - len(set(s["timestamps"]))
    return n


# ----------------------------------------------------------------------------- MQTT observer


class Watch:
    """Every command and status message of the site, with its arrival time."""

    def __init__(self, site: str = SITE) -> None:
        self.site = site
        self.msgs: list[tuple[float, str, bytes]] = []

    def commands(self, asset: str) -> list[dict[str, Any]]:
        topic = f"machinewatch/{self.site}/{asset}/command"
        return [json.loads(p) for _, t, p in self.msgs if t == topic and p]

    def energised(self, asset: str) -> list[dict[str, Any]]:
        return [c for c in self.commands(asset) if c.get("energised")]

    def status(self) -> list[bytes]:
        return [p for _, t, p in self.msgs if t.endswith("/status") and "/_engine/" in t]


@contextlib.asynccontextmanager
async def watch(port: int, site: str = SITE, ident: str = "rel-watch") -> AsyncIterator[Watch]:
    """Subscribe to commands and status while the block runs (reconnects if the broker goes)."""
    w = Watch(site)
    subscribed = asyncio.Event()

    async def run() -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", port, identifier=ident) as c:
                    await c.subscribe(f"machinewatch/{site}/+/command", qos=1)
                    await c.subscribe(f"machinewatch/{site}/_engine/+/status", qos=1)
                    subscribed.set()
                    async for m in c.messages:
                        w.msgs.append((time.monotonic(), str(m.topic), bytes(m.payload)))  # type: ignore[arg-type]
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)

    task = asyncio.create_task(run())
    try:
        await asyncio.wait_for(subscribed.wait(), 10)
        yield w
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def metrics(port: int) -> dict[str, float]:
    """The engine's ``/metrics`` (Prometheus text) as ``{name without prefix: value}``; {} if down."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name.split("{")[0].removeprefix("machinewatch_")] = float(value)
    return out


def final_counters(log_text: str) -> dict[str, int]:
    """The counters a cleanly stopped ``machinewatch run`` printed last (``stopped after ...: {..}``)."""
    tail = log_text.rsplit("stopped after", 1)[1]
    return dict(json.loads(tail.split(": ", 1)[1].splitlines()[0]))


#: a light plant for the database tests: two ovens, temperature at 10 Hz, one window a second
OVENS = """
[model]
# 150 windows (150 s of 1 s hops): the threshold is calibrated on the last 50; with a 30-window
# learn phase (10 held-out windows) the load-driven temperature wander of a healthy oven alarmed
learn_windows = 150
[alarm]
on_delay_windows = 3
off_delay_windows = 3
actuators = ["panel"]
[assets.oven1.streams.temp]
kind = "temperature"
rate_hz = 10
window_samples = 20
hop_samples = 10
[assets.oven2.streams.temp]
kind = "temperature"
rate_hz = 10
window_samples = 20
hop_samples = 10
[actuators.panel]
kind = "log"
"""
