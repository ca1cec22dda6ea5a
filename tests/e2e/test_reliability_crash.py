"""Reliability: ``kill -9`` of the engine at random moments, many times, under load.

Engine, Mosquitto, VictoriaMetrics and the publisher are separate processes on loopback. The
publisher (``machinewatch simulate``, QoS 1, persistent session at the broker) streams a machine
that develops an outer-race fault; the engine latches the alarm, and is then killed with SIGKILL
at a random moment, ``MW_KILLS`` times (20 by default): half of them while it runs under load,
half anywhere in its start-up (imports, spool recovery, broker connects).

Ledger after each kill: every asset summary the crash left in the spool (durable, not yet
acknowledged by the database) is in the database at the end, exactly once (one point per
timestamp). The latched alarm is restored at every start, the healthy asset is never energised,
and nothing is energised between a start and the first data after it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from e2e.harness import (
    MW,
    OUTER_RACE,
    counters,
    db_summaries,
    engine_toml,
    proc_status,
    sim_toml,
    spool_summaries,
    until,
    watch,
    write,
)

# The "1 full run in 4 ended with one spooled summary missing" (2026-11-22) was the read-back, not
# the engine: the simulator at speedup 2 dates its data ahead of the wall clock, and
# VictoriaMetrics' export ends at "now" unless told otherwise, so a summary spooled at a late kill
# could be dated after the moment of the read-back. The harness now exports up to 3 days ahead
# (e2e.harness.export_all). The 20-kill loop takes ~100 s: on demand (-m soak); a 5-kill loop
# with the same assertions runs in the normal suite.
KILLS = int(os.environ.get("MW_KILLS", "20"))
SHORT_KILLS = 5


@pytest.mark.timeout(180)
async def test_kill9_loop_short(
    mosquitto_factory: Any, victoria: Any, run_process: Any, tmp_path: Path
) -> None:
    await _kill_loop(SHORT_KILLS, mosquitto_factory, victoria, run_process, tmp_path)


@pytest.mark.soak
@pytest.mark.timeout(300 + 15 * KILLS)
async def test_kill9_at_random_moments_under_load(
    mosquitto_factory: Any, victoria: Any, run_process: Any, tmp_path: Path
) -> None:
    await _kill_loop(KILLS, mosquitto_factory, victoria, run_process, tmp_path)


async def _kill_loop(
    kills: int, mosquitto_factory: Any, victoria: Any, run_process: Any, tmp_path: Path
) -> None:
    site = "k9" + uuid.uuid4().hex[:6]
    broker = mosquitto_factory()
    state = tmp_path / "state"
    cfg = write(
        tmp_path / "engine.toml",
        engine_toml(
            state, broker.url, influx_url=victoria.url, site=site, interval_s=0.5, stale_after_s=30.0
        ),
    )
    rng = random.Random(int(os.environ.get("MW_SEED", "1")))
    pending_at_kill: set[tuple[str, int]] = set()
    starts: list[float] = []
    peak_rss = 0.0
    async with watch(broker.port, site) as w:
        eng = run_process([MW, "run", str(cfg)], name="engine")
        await until(lambda: w.status().count(b"online") >= 1, 60, "engine online")
        sim_dur = 2 * (20.0 + 3.0 * kills)  # simulated s at speedup 2
        sim_cfg = sim_toml(site=site, speedup=2.0, duration_s=sim_dur, faults=[OUTER_RACE.format(start=12.0)])
        sim = run_process(
            [
                MW,
                "simulate",
                "--broker",
                broker.url,
                "--client-id",
                "rel-sim",
                "--config",
                str(write(tmp_path / "sim.toml", sim_cfg)),
            ],
            name="sim",
        )
        await until(lambda: w.energised("p1"), 60, "p1 latched alarm energised")
        await asyncio.to_thread(victoria.stop)  # first half: the database is down, the spool fills
        for k in range(kills):
            if k == kills // 2:
                await asyncio.to_thread(victoria.start)
            # the random moment: odd kills land anywhere in start-up (imports, spool open, connects),
            # even ones while it runs under load
            await asyncio.sleep(rng.uniform(0.0, 2.5) if k % 2 else rng.uniform(0.1, 1.5))
            peak_rss = max(peak_rss, proc_status(eng.pid).get("VmHWM", 0) / 1024)
            eng.kill()
            pending_at_kill |= {(a, t // 10**6) for a, t in spool_summaries(state, ["influx"])}
            n_cmd = len(w.commands("p1")), len(w.commands("t1"))
            snap = json.loads((state / "alarms.json").read_text())["assets"]
            assert snap["p1"]["state"] == "ALARM" and not snap["p1"]["acked"], snap  # latched, restored
            assert snap["t1"]["state"] != "ALARM"
            (state / "counters.json").unlink(missing_ok=True)
            t0 = time.monotonic()
            eng.start()
            if k % 2 == 0:
                await until(lambda: counters(state), 60, "engine running again")
                starts.append(time.monotonic() - t0)
            # nothing is energised by the start itself; the first command comes with data
            new = w.commands("p1")[n_cmd[0] :]
            assert all(c.get("from") in ("RESTORED", None) or not c["energised"] for c in new), new
            assert len(w.commands("t1")) == n_cmd[1] or not any(c["energised"] for c in w.commands("t1"))
        await asyncio.to_thread(sim.wait, sim_dur)
        await until(lambda: counters(state), 60, "engine running after the last kill")
        eng.stop()  # SIGTERM: drains and writes what is left
        assert eng.returncode == 0, eng.log_tail()
        final = json.loads(eng.log_text().rsplit("stopped after", 1)[1].split(": ", 1)[1].splitlines()[0])
    assert final["spool_records_left"] == 0 and final["spool_dropped_overflow"] == 0
    got = db_summaries(victoria, site)
    read_ms = time.time_ns() // 10**6
    have = {(a, t) for a, ts in got.items() for t in ts}
    lost = pending_at_kill - have
    assert not lost, (
        f"{len(lost)} spooled summaries never reached the database: "
        f"{[(a, t, f'{(t - read_ms) / 1e3:+.1f} s from the read-back') for a, t in sorted(lost)[:10]]}"
    )
    assert set(got) == {"p1", "t1"}
    assert not w.energised("t1"), "the healthy asset was energised"
    log = eng.log_text()
    assert log.count("=== start") == kills + 1
    assert "Traceback" not in log
    n_db = sum(len(ts) for ts in got.values())
    ahead = sum(t > read_ms for ts in got.values() for t in ts)
    holes = sum((b - a) // 500 - 1 for ts in map(sorted, got.values()) for a, b in itertools.pairwise(ts))
    print(
        f"\nkill -9 x{kills}: {len(pending_at_kill)} summaries pending in the spool at the kills, 0 lost, "
        f"0 duplicated; {n_db} summaries in the database ({ahead} dated after the read-back's wall clock), "
        f"{holes} interval(s) without a summary "
        f"(data acknowledged to the broker but still in memory at a kill); "
        f"restart to running: median {sorted(starts)[len(starts) // 2]:.2f} s, max {max(starts):.2f} s; "
        f"peak RSS {peak_rss:.0f} MiB; p1 commands {len(w.commands('p1'))}, "
        f"t1 energised {len(w.energised('t1'))}"
    )
