"""The engine end to end in-process: a scripted source, the hot path, the local sink."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from machinewatch.connectors.base import Rejected, Source, StreamDown
from machinewatch.connectors.sinks.local import read_alarms, read_summaries
from machinewatch.engine.config import Config, load_config_text
from machinewatch.engine.pipeline import Engine
from machinewatch.engine.registry import registry
from machinewatch.engine.types import Chunk

RATE = 4096.0
WIN = 512


class ScriptedSource(Source):
    """Healthy noise, then (from ``fault_at`` windows on) a strong 1x tone; one junk record."""

    async def chunks(self) -> AsyncIterator[Chunk | Rejected]:
        rng = np.random.default_rng(int(self.options.get("seed", 0)))
        n = int(self.options["windows"])
        fault_at = int(self.options.get("fault_at", n + 1))
        t = np.arange(WIN) / RATE
        yield Rejected("m1/vib", "bad_json", "not json")
        for i in range(n):
            x = rng.normal(0, 1.0, WIN)
            if i >= fault_at:
                x += 6.0 * np.sin(2 * np.pi * 25.0 * (t + i * WIN / RATE))
            yield Chunk("m1/vib", int(i * WIN / RATE * 1e9), RATE, i, x.astype(np.float32))
            if i % 64 == 0:
                await asyncio.sleep(0)


registry.add("sources", "scripted", ScriptedSource)


class DownSource(Source):
    """Healthy noise with one ``StreamDown`` in the middle (a failed poll), then data again."""

    async def chunks(self) -> AsyncIterator[Chunk | Rejected | StreamDown]:
        rng = np.random.default_rng(1)
        n = int(self.options["windows"])
        for i in range(n):
            if i == n // 2:
                yield StreamDown("m1/vib", "poll_timeout", "no answer in 1.0 s")
                yield StreamDown("nosuch/vib", "poll_timeout")
            x = rng.normal(0, 1.0, WIN).astype(np.float32)
            yield Chunk("m1/vib", int(i * WIN / RATE * 1e9), RATE, i, x)
            if i % 64 == 0:
                await asyncio.sleep(0)


registry.add("sources", "down", DownSource)


class CountingSource(Source):
    """``windows`` chunks as fast as the engine takes them, then waits forever (a live source
    with nothing more to say); counts what it yielded in :attr:`yielded`."""

    yielded: ClassVar[dict[str, int]] = {}

    async def chunks(self) -> AsyncIterator[Chunk]:
        x = np.random.default_rng(2).normal(0, 1.0, WIN).astype(np.float32)
        CountingSource.yielded[self.name] = 0
        for i in range(int(self.options["windows"])):
            CountingSource.yielded[self.name] += 1
            yield Chunk("m1/vib", int(i * WIN / RATE * 1e9), RATE, i, x)
        await asyncio.Event().wait()


registry.add("sources", "counting", CountingSource)


def make_config(tmp_path: Path, windows: int, fault_at: int) -> Config:
    return load_config_text(f"""
[engine]
state_dir = "{tmp_path}"
summary_interval_s = 1.0
[model]
learn_windows = 60
[alarm]
on_delay_windows = 3
actuators = ["panel"]
[assets.m1]
[assets.m1.machine]
shaft_hz = 25.0
[assets.m1.streams.vib]
kind = "vibration"
rate_hz = {RATE}
window_samples = {WIN}
[sources.s]
kind = "scripted"
windows = {windows}
fault_at = {fault_at}
[sinks.local]
kind = "local"
[actuators.panel]
kind = "log"
""")


def test_learns_then_alarms_on_fault_and_writes_everything(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, windows=300, fault_at=200)
    engine = Engine(cfg, install_signals=False)
    report = asyncio.run(engine.run())
    c = report.counters
    assert c["chunks_in"] == 300
    assert c["rejected_bad_json"] == 1
    assert c["buffer_windows"] == 300
    assert c["windows_scored"] == 300 - 60
    assert c["actuations"] >= 1
    db = sqlite3.connect(tmp_path / "machinewatch.db")
    alarms = read_alarms(db, "m1")
    states = [(a["from_state"], a["to_state"]) for a in alarms]
    assert states[0] == ("LEARNING", "NORMAL")
    assert ("NORMAL", "ALARM") in states or ("WARNING", "ALARM") in states
    first_alarm = next(a for a in alarms if a["to_state"] == "ALARM")
    assert first_alarm["time_ns"] >= int(200 * WIN / RATE * 1e9)
    assert "vib.x1" in first_alarm["top_features"]
    summaries = read_summaries(db, "m1")
    # 300 windows x 0.125 s = 37.5 s of data in 1 s intervals: 38 summaries, scored windows all counted
    assert len(summaries) == 38
    assert sum(s.get("windows_scored", 0) for s in summaries) == 240
    vib = read_summaries(db, "m1", stream="vib")
    assert sum(s["windows"] for s in vib) == 300
    assert all(s["rms_min"] <= s["rms_mean"] <= s["rms_max"] for s in vib)


def test_stream_down_raises_stale_at_once_and_clears_with_data(tmp_path: Path) -> None:
    import dataclasses

    cfg = make_config(tmp_path, windows=400, fault_at=10_000)
    src = dataclasses.replace(cfg.sources["s"], kind="down")
    cfg = dataclasses.replace(cfg, sources={"s": src})
    report = asyncio.run(Engine(cfg, install_signals=False).run())
    c = report.counters
    assert c["stream_down_poll_timeout"] == 2  # one known stream, one unknown (logged, not fatal)
    assert c.get("actuations", 0) == 0
    db = sqlite3.connect(tmp_path / "machinewatch.db")
    alarms = read_alarms(db, "m1")
    quality = [(a["from_state"], a["to_state"], a["reason"]) for a in alarms if a["kind"] == "quality"]
    # (scripted data times are in 1970, the STALE event is stamped with the wall clock: compare sets)
    assert sorted(q[:2] for q in quality) == [("OK", "STALE"), ("STALE", "OK")]
    assert any("poll_timeout" in q[2] and "no answer" in q[2] for q in quality)
    assert [a["to_state"] for a in alarms if a["kind"] == "machine"] == ["NORMAL"]  # no machine alarm
    # the window spanning the outage is never scored: 400 chunks of one window each, all windowed
    assert c["buffer_windows"] == 400


def test_healthy_run_never_alarms(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, windows=400, fault_at=10_000)
    report = asyncio.run(Engine(cfg, install_signals=False).run())
    assert report.counters.get("actuations", 0) == 0
    db = sqlite3.connect(tmp_path / "machinewatch.db")
    assert [a["to_state"] for a in read_alarms(db, "m1")] == ["NORMAL"]


def test_stop_drains_and_flushes(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, windows=100_000, fault_at=10_000_000)

    async def main() -> dict[str, int]:
        engine = Engine(cfg, install_signals=False)
        task = asyncio.create_task(engine.run())
        while engine.counters["chunks_in"] < 500:
            await asyncio.sleep(0.01)
        engine.stop()
        report = await asyncio.wait_for(task, 30)
        return report.counters

    c = asyncio.run(main())
    assert 500 <= c["chunks_in"] < 100_000
    assert c["buffer_windows"] == c["chunks_in"]  # every chunk that came in was windowed
    db = sqlite3.connect(tmp_path / "machinewatch.db")
    vib = read_summaries(db, "m1", stream="vib", limit=100_000)
    assert sum(s["windows"] for s in vib) == c["buffer_windows"] - c.get("windows_shed", 0)


def test_shedding_is_counted(tmp_path: Path) -> None:
    import dataclasses

    cfg = make_config(tmp_path, windows=3000, fault_at=10_000)
    cfg = dataclasses.replace(cfg, engine=dataclasses.replace(cfg.engine, queue_windows=1))
    engine = Engine(cfg, install_signals=False)
    report = asyncio.run(engine.run())
    c = report.counters
    db = sqlite3.connect(tmp_path / "machinewatch.db")
    vib = read_summaries(db, "m1", stream="vib", limit=100_000)
    # the ledger balances: every window was either processed or shed
    assert sum(s["windows"] for s in vib) + c.get("windows_shed", 0) == c["buffer_windows"] == 3000


@pytest.mark.parametrize("bad", ["m1/nosuch", "other/vib"])
def test_unknown_stream_is_counted(tmp_path: Path, bad: str) -> None:
    from machinewatch.engine.hotpath import HotPath

    hp = HotPath(make_config(tmp_path, 1, 1))
    assert hp.ingest(Chunk(bad, 0, RATE, 0, np.zeros(8, np.float32))) == []
    assert hp.counters["rejected_unknown_stream"] == 1


@pytest.mark.parametrize(("windows", "stop_at"), [(50, 50), (100_000, 700)])
def test_stop_loses_nothing_the_source_yielded(tmp_path: Path, windows: int, stop_at: int) -> None:
    """A stop cancels a source only while the engine waits on it: every chunk it yielded is
    windowed, whether the stop came while it was idle (50 of 50 sent) or mid-stream, with a
    2-chunk queue that keeps the source waiting for room."""
    import dataclasses

    text = make_config(tmp_path, windows=1, fault_at=1)
    cfg = dataclasses.replace(
        text,
        engine=dataclasses.replace(text.engine, queue_chunks=2),
        sources={"s": dataclasses.replace(text.sources["s"], kind="counting", options={"windows": windows})},
    )

    async def main() -> dict[str, int]:
        engine = Engine(cfg, install_signals=False)
        task = asyncio.create_task(engine.run())
        while engine.counters["chunks_in"] < stop_at:
            await asyncio.sleep(0.005)
        engine.stop()
        report = await asyncio.wait_for(task, 30)  # a source waiting forever is cancelled
        return report.counters

    c = asyncio.run(main())
    assert c["chunks_in"] == CountingSource.yielded["s"] >= stop_at
    assert c["buffer_chunks"] == c["chunks_in"]
    if windows == stop_at:
        assert c["chunks_in"] == windows
