"""Reliability: the database down, hanging, and rejecting one row among good ones.

The engine (a process, with its simulator source at high speed and a short summary interval, so
the summary rate is far above nominal) writes through a small HTTP relay in the test to a real
VictoriaMetrics. The relay forwards every write, except that it answers ``400`` to any batch
holding one chosen summary line (VictoriaMetrics itself accepts nearly anything, so the relay
plays the database that refuses a row). During the run the database is stopped, then frozen
with SIGSTOP past the sink's timeout, then resumed.

Ledger at the end: summaries made = in the database + dead-lettered + left in the spool + dropped
by the overflow policy, with no duplicate timestamp, and the refused row was tried a bounded
number of times (bisected once, dead-lettered once: no endless retry).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from e2e.harness import MW, OVENS, Sampler, db_resent, db_summaries, final_counters, metrics, until, write
from servers import free_port

T0 = 1_700_000_000_000_000_000
SPEEDUP = 20.0
INTERVAL_S = 1.0  # nominal is 10 s: at speedup 20 the summary rate is 200x nominal
#: summaries made while the database is down: 300 (~7.5 s) in the suite; on demand longer, e.g.
#: ``MW_DB_DOWN_SUMMARIES=7200`` for a 3-minute outage (two ovens make 40 summaries per second)
DOWN_SUMMARIES = int(os.environ.get("MW_DB_DOWN_SUMMARIES", "300"))
DATA_S = 900.0 + DOWN_SUMMARIES / 2
RUN_S = DATA_S / SPEEDUP  # wall seconds of data

pytestmark = pytest.mark.timeout(int(200 + RUN_S))


class Relay:
    """``/api/v2/write`` -> VictoriaMetrics, answering 400 to every batch with a line ``refuse`` picks."""

    def __init__(self, upstream: str, refuse: Callable[[str], bool]) -> None:
        self.upstream, self.refuse = upstream, refuse
        self.refused = 0
        self.forwarded = 0
        self.port = free_port()
        self.session: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if any(self.refuse(ln) for ln in body.decode().splitlines()):
            self.refused += 1
            return web.Response(status=400, text='{"code":"invalid","message":"partial write: refused row"}')
        assert self.session is not None
        try:
            async with self.session.post(
                f"{self.upstream}/api/v2/write",
                params=request.query,
                data=body,
                timeout=aiohttp.ClientTimeout(total=1.5),
            ) as r:
                self.forwarded += 1
                return web.Response(status=r.status, text=await r.text())
        except (aiohttp.ClientError, TimeoutError):
            return web.Response(status=503, text="upstream unavailable")

    async def __aenter__(self) -> Relay:
        self.session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_post("/api/v2/write", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()
        assert self.session is not None
        await self.session.close()


async def test_database_down_hanging_and_refusing_a_row(
    victoria: Any, run_process: Any, tmp_path: Path
) -> None:
    site = "db" + uuid.uuid4().hex[:6]
    poison_t = T0 + 100 * 10**9  # the oven1 asset summary of data second 100
    # tags in key order; other tags (gateway) may sit between these
    poison = ("asset=oven1,", f"site={site},", "stream=_asset ")
    port = free_port()

    def refuse(line: str) -> bool:
        return (
            line.startswith("machinewatch_summary,")
            and all(p in line for p in poison)
            and line.endswith(f" {poison_t}")
        )

    async with Relay(victoria.url, refuse) as relay:
        cfg = write(
            tmp_path / "engine.toml",
            f"""
[engine]
site = "{site}"
state_dir = "{tmp_path / "state"}"
summary_interval_s = {INTERVAL_S}
health_interval_s = 1.0
http_port = {port}
{OVENS}
[sources.sim]
kind = "simulator"
seed = 3
speedup = {SPEEDUP}
duration_s = {DATA_S}
start_ns = {T0}
[sinks.influx]
kind = "influxdb"
url = "http://127.0.0.1:{relay.port}"
bucket = "machinewatch"
org = "plant"
timeout_s = 2.0
""",
        )
        eng = run_process([MW, "run", str(cfg)], name="engine")
        sampler = Sampler(eng.pid)
        samp = asyncio.create_task(sampler.run())
        m = lambda: metrics(port)  # noqa: E731
        # both ovens monitoring (their baselines are fitted in a child process) and writing
        await until(
            lambda: m().get("models_fitted", 0) >= 2 and m().get("sink_written_influx", 0) >= 50,
            60,
            "models fitted, first writes",
        )

        # 1. database down: monitoring goes on, the spool holds everything
        await asyncio.to_thread(victoria.stop)
        t_down = time.monotonic()
        s0 = m()
        await until(
            lambda: m().get("summaries", 0) >= s0["summaries"] + DOWN_SUMMARIES,
            60 + DOWN_SUMMARIES / 20,
            f"{DOWN_SUMMARIES} summaries while down",
        )
        down_s = time.monotonic() - t_down
        during = m()
        assert during["windows_scored"] > s0["windows_scored"]
        assert during["spool_pending_influx"] >= DOWN_SUMMARIES
        await asyncio.to_thread(victoria.start)
        rec_down = await until(
            lambda: m().get("spool_pending_influx", 1e9) < 20, 60 + DOWN_SUMMARIES / 50, "spool drained"
        )

        # 2. database hanging (SIGSTOP) longer than the sink's 2 s timeout
        w0 = m()["sink_write_errors"]
        victoria.pause()
        t_hang = time.monotonic()
        await until(lambda: m().get("sink_write_errors", 0) >= w0 + 2, 30, "timeouts while frozen")
        await asyncio.sleep(max(0.0, 8.0 - (time.monotonic() - t_hang)))  # the hang lasts 8 s
        victoria.resume()
        rec_hang = await until(lambda: m().get("spool_pending_influx", 1e9) < 20, 60, "spool drained")
        assert await asyncio.to_thread(eng.wait, 120 + RUN_S) == 0, eng.log_tail()
        samp.cancel()
    c = final_counters(eng.log_text())
    got = db_summaries(victoria, site)
    n_db = sum(len(ts) for ts in got.values())
    resent = db_resent(victoria, site)
    dl = (tmp_path / "state" / "deadletter-influx.lp").read_text().splitlines()
    dead = [ln for ln in dl if not ln.startswith("#")]
    dead_asset = [ln for ln in dead if ln.startswith("machinewatch_summary,") and "stream=_asset" in ln]
    assert len(dead) == 1 and dead_asset and dead_asset[0].endswith(f" {poison_t}"), dead
    assert poison_t // 10**6 not in got["oven1"]
    assert c["summaries"] == n_db + len(dead_asset) + c["spool_records_left"] + c["spool_dropped_overflow"]
    assert c["spool_records_left"] == 0 and c["spool_dropped_overflow"] == 0
    assert relay.refused <= 12, "the refused row must be isolated and dead-lettered, not retried forever"
    assert n_db >= 2 * int(DATA_S / INTERVAL_S) - 4  # one per data second and oven, bar the edges
    print(
        f"\ndatabase: {c['summaries']} summaries ({SPEEDUP * 10 / INTERVAL_S:.0f}x nominal rate), "
        f"{n_db} in the database + {len(dead_asset)} dead-lettered + 0 in the spool + 0 dropped, "
        f"0 duplicated ({resent} identical re-sent copies after timeouts); "
        f"down {down_s:.1f} s (drained {rec_down:.1f} s after it came back), "
        f"frozen 8 s (drained {rec_hang:.1f} s after SIGCONT), {c['sink_write_errors']} failed writes "
        f"retried, refused row tried {relay.refused} times; peak RSS {sampler.peak_rss_mib:.0f} MiB"
    )
