"""Soak: the engine at nominal load for ``MW_SOAK_S`` seconds (3600 by default), on demand only.

Run: ``.venv/bin/pytest -m soak tests/soak -s`` (excluded from the normal run by ``addopts``).
Nominal load: one 25.6 kHz vibration machine and one temperature stream over MQTT in real time
(``machinewatch simulate --speedup 1``), summaries every second to VictoriaMetrics. Asserts: every
message ingested, every summary in the database once, RSS and open fds flat (the last quarter's
median within 10 % / +5 of the second quarter's), no crash.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import uuid
from pathlib import Path
from typing import Any

import pytest
from e2e.harness import MW, Sampler, db_summaries, engine_toml, final_counters, sim_toml, until, watch, write

SOAK_S = float(os.environ.get("MW_SOAK_S", "3600"))
pytestmark = [pytest.mark.soak, pytest.mark.timeout(int(SOAK_S) + 600)]


async def test_soak_nominal_load(
    mosquitto_factory: Any, victoria: Any, run_process: Any, tmp_path: Path
) -> None:
    site = "soak" + uuid.uuid4().hex[:6]
    broker = mosquitto_factory()
    state = tmp_path / "state"
    cfg = write(
        tmp_path / "engine.toml",
        engine_toml(
            state, broker.url, influx_url=victoria.url, site=site, latching=False, stale_after_s=30.0
        ),
    )
    async with watch(broker.port, site) as w:
        eng = run_process([MW, "run", str(cfg)], name="engine")
        await until(lambda: w.status().count(b"online") >= 1, 60, "engine online")
        sampler = Sampler(eng.pid, period=1.0)
        task = asyncio.create_task(sampler.run())
        sim = run_process(
            [
                MW,
                "simulate",
                "--broker",
                broker.url,
                "--config",
                str(write(tmp_path / "sim.toml", sim_toml(site=site, speedup=1.0, duration_s=SOAK_S))),
            ],
            name="sim",
        )
        await asyncio.to_thread(sim.wait, SOAK_S + 120)
        task.cancel()
        eng.stop()
    assert eng.returncode == 0
    c = final_counters(eng.log_text())
    sent = int(sim.log_text().split("published ")[1].split()[0])
    assert c["chunks_in"] == sent and c["spool_records_left"] == 0
    got = db_summaries(victoria, site)
    assert sum(len(v) for v in got.values()) >= 2 * (SOAK_S - 5)
    n = len(sampler.samples)
    q2 = sampler.samples[n // 4 : n // 2]
    q4 = sampler.samples[3 * n // 4 :]
    rss2, rss4 = statistics.median(r for _, r, _ in q2), statistics.median(r for _, r, _ in q4)
    fd2, fd4 = statistics.median(f for _, _, f in q2), statistics.median(f for _, _, f in q4)
    assert rss4 <= rss2 * 1.10, f"RSS grew: {rss2 / 1024:.0f} -> {rss4 / 1024:.0f} MiB"
    assert fd4 <= fd2 + 5, f"fds grew: {fd2} -> {fd4}"
    n_db = sum(len(v) for v in got.values())
    print(
        f"\nsoak {SOAK_S:.0f} s: {sent} messages, all ingested; {n_db} summaries in the database; "
        f"RSS {rss2 / 1024:.0f} -> {rss4 / 1024:.0f} MiB (peak {sampler.peak_rss_mib:.0f}), "
        f"fds {fd2:.0f} -> {fd4:.0f}"
    )
