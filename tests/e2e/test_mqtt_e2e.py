"""End to end over a real Mosquitto: ``machinewatch run`` and ``machinewatch simulate`` as processes.

- healthy then faulty data: the command arrives for the faulted asset only; the latched alarm
  survives ``kill -9`` (the broker's Last Will releases the output meanwhile), is re-asserted by
  the first data after the restart, cleared by ``machinewatch ack``; SIGTERM takes the safe state;
- the broker is down for 30 s: the engine reconnects within 5 s of its return, flags the gap
  (STALE, buffer gap), raises no machine alarm and does not crash;
- QoS 1 messages published while the engine is stopped arrive after it starts again;
- 10,000 malformed payloads: no crash, no actuation, every one counted by reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pytest

from machinewatch.connectors.sources.simulator import SimulatorSource
from machinewatch.engine.codecs import FRAME_HEADER, FRAME_MAGIC, encode_frame
from machinewatch.engine.config import load_config
from machinewatch.engine.types import Chunk

MW = str(Path(sys.executable).parent / "machinewatch")
pytestmark = pytest.mark.timeout(240)

ASSETS = """
[assets.p1.machine]
shaft_rpm = 1480
[assets.p1.streams.vib]
kind = "vibration"
rate_hz = 25600
window_samples = 4096
stale_after_s = 3
[assets.t1.streams.temp]
kind = "scalar"
rate_hz = 1
stale_after_s = 1000
[assets.p2.machine]
shaft_rpm = 970
[assets.p2.streams.vib]
kind = "vibration"
rate_hz = 25600
window_samples = 4096
stale_after_s = 3
"""


def engine_config(tmp: Path, url: str, learn: int = 30, latching: bool = True) -> Path:
    p = tmp / "engine.toml"
    p.write_text(f"""
[engine]
site = "s1"
state_dir = "{tmp / "state"}"
summary_interval_s = 5.0
[model]
learn_windows = {learn}
[alarm]
on_delay_windows = 3
off_delay_windows = 5
latching = {str(latching).lower()}
actuators = ["relay"]
{ASSETS}
[sources.plant]
kind = "mqtt"
url = "{url}"
heartbeat_s = 1
reconnect_max_s = 1.0
[actuators.relay]
kind = "mqtt"
url = "{url}"
""")
    return p


def sim_config(tmp: Path, name: str, fault: bool, duration_s: float, speedup: float = 4.0) -> Path:
    p = tmp / name
    faults = (
        """
[[sources.sim.faults]]
asset = "p1"
kind = "outer_race"
start_s = 12.0
ramp_s = 1.0
severity = 1.0
"""
        if fault
        else ""
    )
    p.write_text(f"""
[engine]
site = "s1"
{ASSETS}
[sources.sim]
kind = "simulator"
seed = 5
speedup = {speedup}
duration_s = {duration_s}
{faults}""")
    return p


class Watch:
    """Collects every message under machinewatch/s1/ (commands, status) with its arrival time."""

    def __init__(self) -> None:
        self.msgs: list[tuple[float, str, bytes, bool]] = []

    def commands(self, asset: str) -> list[dict[str, Any]]:
        return [json.loads(p) for _, t, p, _ in self.msgs if t == f"machinewatch/s1/{asset}/command"]

    def status(self) -> list[bytes]:
        return [p for _, t, p, _ in self.msgs if "/_engine/" in t and t.endswith("/status")]


@contextlib.asynccontextmanager
async def watch(port: int) -> AsyncIterator[Watch]:
    w = Watch()

    async def run() -> None:
        async with aiomqtt.Client("127.0.0.1", port, identifier="e2e-watch") as c:
            await c.subscribe("machinewatch/s1/+/command", qos=1)
            await c.subscribe("machinewatch/s1/_engine/+/status", qos=1)
            async for m in c.messages:
                w.msgs.append((time.monotonic(), str(m.topic), bytes(m.payload), m.retain))  # type: ignore[arg-type]

    task = asyncio.create_task(run())
    try:
        await until(lambda: True)
        yield w
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await task


async def until(cond: Any, timeout: float = 30.0, what: str = "") -> None:
    t = time.monotonic()
    while not cond():
        if time.monotonic() - t > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or cond}")
        await asyncio.sleep(0.05)


def counters(tmp: Path) -> dict[str, int]:
    try:
        return dict(json.loads((tmp / "state" / "counters.json").read_text()))
    except (OSError, ValueError):
        return {}


async def online(w: Watch, n: int = 1) -> None:
    await until(lambda: w.status().count(b"online") >= n, 60, "engine status online")


async def test_fault_latch_kill9_ack_and_sigterm(
    mosquitto_factory: Any, run_process: Any, tmp_path: Path
) -> None:
    broker = mosquitto_factory()
    cfg = engine_config(tmp_path, broker.url)
    async with watch(broker.port) as w:
        eng = run_process([MW, "run", str(cfg)], name="engine")
        await online(w)
        sim = run_process(
            [
                MW,
                "simulate",
                "--broker",
                broker.url,
                "--config",
                str(sim_config(tmp_path, "sim1.toml", True, 24.0)),
            ],
            name="sim1",
        )
        await until(lambda: any(c["energised"] for c in w.commands("p1")), 60, "p1 energised")
        await asyncio.to_thread(sim.wait, 30)
        assert not any(c["energised"] for c in w.commands("p2")), "healthy asset must never be energised"
        snap = json.loads((tmp_path / "state" / "alarms.json").read_text())["assets"]
        assert snap["p1"]["state"] == "ALARM" and snap["p1"]["acked"] is False

        # crash: the Last Will releases the output; the latched alarm survives on disk
        eng.kill()
        await until(
            lambda: w.commands("p1")[-1].get("reason") == "engine offline (last will)", 30, "last will"
        )
        assert w.status()[-1] == b"offline"
        n_before = len(w.commands("p1"))
        eng.start()
        await online(w, 2)
        assert len(w.commands("p1")) == n_before, "nothing is energised at boot before data"
        sim2 = run_process(
            [
                MW,
                "simulate",
                "--broker",
                broker.url,
                "--config",
                str(sim_config(tmp_path, "sim2.toml", False, 12.0)),
            ],
            name="sim2",
        )
        await until(
            lambda: len(w.commands("p1")) > n_before and w.commands("p1")[-1]["energised"],
            30,
            "restored latched alarm re-asserted by data",
        )
        assert w.commands("p1")[-1]["from"] == "RESTORED"
        await asyncio.to_thread(sim2.wait, 30)
        out = subprocess.run([MW, "ack", str(cfg), "p1", "--by", "e2e"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        await until(lambda: not w.commands("p1")[-1]["energised"], 10, "release after acknowledge")
        assert "acknowledged by e2e" in w.commands("p1")[-1]["reason"]
        assert not any(c["energised"] for c in w.commands("p2"))

        # SIGTERM: safe state (explicit command) and status offline, exit 0
        eng.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(eng.wait, 30) == 0
        await until(lambda: w.status()[-1] == b"offline", 10, "offline status")
        assert w.commands("p1")[-1]["reason"] == "engine stopping"
        assert w.commands("p1")[-1]["energised"] is False


async def _steady_publisher(cfg_path: Path, port: int, stop: asyncio.Event, sent: list[int]) -> None:
    """Real-time simulated data; chunks produced while the broker is away are lost (a gap)."""
    cfg = load_config(cfg_path)
    src = SimulatorSource("steady", {"seed": 2, "speedup": 1.0}, cfg)
    it = aiter(src.chunks())
    client: Any = None
    try:
        while not stop.is_set():
            c = await anext(it)
            if not isinstance(c, Chunk):
                continue
            if client is None:
                try:
                    client = aiomqtt.Client("127.0.0.1", port, identifier="e2e-steady")
                    await client.__aenter__()
                except aiomqtt.MqttError:
                    client = None
                    continue
            a, _, s = c.stream_id.partition("/")
            try:
                await client.publish(
                    f"machinewatch/s1/{a}/{s}", encode_frame(c.values, c.t0_ns, c.seq, c.rate_hz), qos=0
                )
                sent[0] += 1
            except aiomqtt.MqttError:
                with contextlib.suppress(Exception):
                    await client.__aexit__(None, None, None)
                client = None
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)


async def test_broker_outage_30s(mosquitto_factory: Any, run_process: Any, tmp_path: Path) -> None:
    broker = mosquitto_factory()
    cfg = engine_config(tmp_path, broker.url, learn=40, latching=False)
    stop = asyncio.Event()
    sent = [0]
    async with watch(broker.port) as w:
        eng = run_process([MW, "run", str(cfg)], name="engine")
        await online(w)
    pub = asyncio.create_task(_steady_publisher(cfg, broker.port, stop, sent))
    try:
        await until(lambda: counters(tmp_path).get("windows_scored", 0) >= 20, 60, "monitoring")
        broker.kill()
        await asyncio.sleep(30)  # the outage itself is the behaviour under test, not a wait for time
        before = counters(tmp_path)
        broker.start()
        t_back = time.monotonic()
        await until(
            lambda: counters(tmp_path).get("chunks_in", 0) > before.get("chunks_in", 0),
            15,
            "engine receiving again",
        )
        assert time.monotonic() - t_back < 5.0
        await until(
            lambda: counters(tmp_path).get("windows_scored", 0) > before.get("windows_scored", 0) + 5, 15
        )
    finally:
        stop.set()
        await pub
    assert eng.running, "engine must survive the outage"
    eng.stop()
    c = counters(tmp_path)
    assert c.get("quality_stale", 0) >= 2  # both vibration streams flagged STALE during the gap
    assert c.get("buffer_gaps_seq", 0) + c.get("buffer_gaps_time", 0) >= 2
    log = eng.log_text()
    assert " -> ALARM" not in log, "an outage must not raise a machine alarm"
    after = log[log.index("Disconnected") :]
    assert " -> WARNING" not in after, "nor a warning"
    assert "safe state for p1 not published" not in log  # the actuator reconnected for its safe state
    assert c.get("actuations", 0) == 0


async def test_qos1_while_stopped_and_malformed_flood(
    mosquitto_factory: Any, run_process: Any, tmp_path: Path
) -> None:
    broker = mosquitto_factory()
    cfg = engine_config(tmp_path, broker.url, learn=100000)
    async with watch(broker.port) as w:
        eng = run_process([MW, "run", str(cfg)], name="engine")
        await online(w)
        eng.stop()  # SIGTERM; its session (and subscription) stays at the broker
        t0 = time.time_ns()
        async with aiomqtt.Client("127.0.0.1", broker.port) as c:
            for i in range(50):
                await c.publish(
                    "machinewatch/s1/t1/temp",
                    json.dumps({"t_ns": t0 + i * 10**9, "value": 40.0 + i, "seq": i}).encode(),
                    qos=1,
                )
        eng.start()
        await online(w, 2)
        await until(lambda: counters(tmp_path).get("chunks_in", 0) >= 50, 20, "queued QoS 1 messages")
        assert counters(tmp_path)["chunks_in"] == 50

        payloads = _malformed(10_000)
        async with aiomqtt.Client("127.0.0.1", broker.port, max_inflight_messages=200) as c:
            for topic, p in payloads:
                await c.publish(topic, p, qos=1)
        expected: dict[str, int] = {}
        for topic, p in payloads:
            expected[_reason(topic, p)] = expected.get(_reason(topic, p), 0) + 1

        def rejected() -> dict[str, int]:
            return {
                k[9:]: v
                for k, v in counters(tmp_path).items()
                if k.startswith("rejected_") and k != "rejected_disconnected"
            }

        await until(lambda: sum(rejected().values()) >= 10_000, 60, "every malformed payload counted")
        assert rejected() == expected
        assert eng.running
        c2 = counters(tmp_path)
        assert c2.get("actuations", 0) == 0 and c2["chunks_in"] == 50
        assert not w.commands("p1") or not any(x["energised"] for x in w.commands("p1"))
        eng.stop()
        assert eng.returncode == 0


def _malformed(n: int) -> list[tuple[str, bytes]]:
    """Many kinds of hostile payloads, each with one known rejection reason."""
    rng = np.random.default_rng(7)
    t0 = time.time_ns()
    good = encode_frame(np.ones(8, np.float32), t0, 1, 25600.0)
    kinds = [
        lambda i: ("machinewatch/s1/p1/vib", b""),
        lambda i: ("machinewatch/s1/p1/vib", b"{" + rng.bytes(int(rng.integers(1, 40)))),
        lambda i: ("machinewatch/s1/p1/vib", b'{"t": 1700000000, "value": NaN}'),
        lambda i: ("machinewatch/s1/p1/vib", b'{"v": [1, "x"]}'),
        lambda i: ("machinewatch/s1/p1/vib", b"MWWF" + rng.bytes(int(rng.integers(0, 30)))),
        lambda i: ("machinewatch/s1/p1/vib", good[:-3]),
        lambda i: (
            "machinewatch/s1/p1/vib",
            FRAME_HEADER.pack(FRAME_MAGIC, 1, 1, 1, 25600.0, 5, 0, 1, 1.0) + b"\0\0\0\0",
        ),
        lambda i: ("machinewatch/s1/p1/vib", encode_frame(np.ones(8, np.float32), t0, 1, 100.0)),
        lambda i: ("machinewatch/s1/p1/vib", b"x" * 100),
        lambda i: ("machinewatch/s1/p1/vib", b"inf"),
        lambda i: ("machinewatch/s1/p9/vib", b"1.0"),
        lambda i: (f"machinewatch/s1/p1/{rng.integers(1 << 30)}", b"1.0"),
    ]
    out = [kinds[i % len(kinds)](i) for i in range(n)]
    for i in range(0, n, n // 5):  # a few oversize ones (4 MiB + 1 KiB each)
        out[i] = ("machinewatch/s1/p1/vib", b"1" * (4 * (1 << 20) + 1024))
    return out


def _reason(topic: str, p: bytes) -> str:
    from machinewatch.engine.codecs import decode_payload
    from machinewatch.engine.errors import PayloadError

    if topic not in ("machinewatch/s1/p1/vib", "machinewatch/s1/t1/temp"):
        return "unknown_topic"
    try:
        d = decode_payload(p)
    except PayloadError as exc:
        return exc.reason
    assert d.rate_hz == 100.0
    return "rate_mismatch"
