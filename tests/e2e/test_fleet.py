"""A fleet: three ``machinewatch run`` processes share one Mosquitto and one VictoriaMetrics.

The three gateways use the same plant (nine assets): eight are split by ``--shard i/3``, one is
assigned to ``gw2`` in the config. The test publishes 40 s of data for every asset, stops the
engines and checks that every asset was run and scored by exactly one engine (its counters, the
``gateway`` tag in the database) and that every summary arrived exactly once.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pytest
from harness import export_all, final_counters

from machinewatch.engine.codecs import encode_frame

MW = str(Path(sys.executable).parent / "machinewatch")
pytestmark = pytest.mark.timeout(120)

#: who runs what: shard_of(asset, 3) (pinned by GOLDEN_3 in tests/engine/test_fleet_ownership.py),
#: and boiler by config
OWNERS = {
    "gw1": {"pump2", "pump3", "kiln2"},
    "gw2": {"pump1", "fan2", "boiler"},
    "gw3": {"fan1", "fan3", "mixer1"},
}
ASSETS = sorted(set().union(*OWNERS.values()))
RATE_HZ = 10
SECONDS = 40  # of data per asset, one 1 s message each
INTERVAL_S = 5


def plant() -> str:
    text = ""
    for a in ASSETS:
        text += f"[assets.{a}]\n" + ('gateway = "gw2"\n' if a == "boiler" else "")
        text += f'[assets.{a}.streams.temp]\nkind = "temperature"\nrate_hz = {RATE_HZ}\n'
        text += f"window_samples = {RATE_HZ}\nstale_after_s = 1000\n"
    return text


def engine_config(tmp: Path, gw: str, site: str, mqtt_url: str, db_url: str) -> Path:
    p = tmp / f"{gw}.toml"
    p.write_text(f"""
[engine]
site = "{site}"
gateway_id = "{gw}"
state_dir = "{tmp / gw}"
summary_interval_s = {INTERVAL_S}
health_interval_s = 1
[model]
learn_windows = 10
{plant()}
[sources.plant]
kind = "mqtt"
url = "{mqtt_url}"
heartbeat_s = 1
[sinks.influx]
kind = "influxdb"
url = "{db_url}"
bucket = "machinewatch"
org = "plant"
""")
    return p


async def wait_for(cond: Any, what: str, timeout: float = 30.0) -> None:
    t = time.monotonic()
    while not cond():
        if time.monotonic() - t > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


async def publish(port: int, site: str, t0_ns: int) -> None:
    rng = np.random.default_rng(7)
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"fleet-pub-{site}") as c:
        for k in range(SECONDS):
            for i, a in enumerate(ASSETS):
                values = 40.0 + i + 0.2 * rng.standard_normal(RATE_HZ)
                frame = encode_frame(values.astype(np.float32), t0_ns + k * 10**9, k, RATE_HZ, 1)
                await c.publish(f"machinewatch/{site}/{a}/temp", frame, qos=1)


async def retained_status(port: int, site: str) -> dict[str, bytes]:
    got: dict[str, bytes] = {}
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"fleet-watch-{site}") as c:
        await c.subscribe(f"machinewatch/{site}/_engine/+/status", qos=1)
        async with asyncio.timeout(15):
            async for m in c.messages:
                got[str(m.topic)] = bytes(m.payload)  # type: ignore[arg-type]
                if len(got) == 3:
                    return got
    return got


def test_three_engines_share_the_assets_and_every_summary_arrives_once(
    mosquitto: Any, victoria: Any, run_process: Any, tmp_path: Path
) -> None:
    site = "fleet-" + uuid.uuid4().hex[:8]
    procs = {}
    for i, gw in enumerate(OWNERS, 1):
        cfg = engine_config(tmp_path, gw, site, mosquitto.url, victoria.url)
        procs[gw] = run_process([MW, "run", str(cfg), "--shard", f"{i}/3"], name=gw)

    def subscribed() -> bool:
        return all("mqtt source plant: connected" in p.log_text() for p in procs.values())

    # data of an aligned past minute: every summary interval is whole and dated before now
    t0_ns = (time.time_ns() // 10**9 - 120) // INTERVAL_S * INTERVAL_S * 10**9

    async def drive() -> dict[str, bytes]:
        await wait_for(subscribed, "three engines subscribed", 60)
        status = await retained_status(mosquitto.port, site)
        await publish(mosquitto.port, site, t0_ns)

        def counters(gw: str) -> dict[str, int]:
            try:
                return dict(json.loads((tmp_path / gw / "counters.json").read_text()))
            except (OSError, ValueError):
                return {}

        await wait_for(
            lambda: all(counters(gw).get("chunks_in", 0) >= 3 * SECONDS for gw in OWNERS),
            "every engine took its chunks",
        )
        # baselines are fitted in a child process; the windows that waited are scored after it
        await wait_for(
            lambda: all(
                counters(gw).get("models_fitted", 0) >= 3 and counters(gw).get("windows_scored", 0) >= 30
                for gw in OWNERS
            ),
            "every engine fitted its models and scored",
            60,
        )
        return status

    t = time.monotonic()
    status = asyncio.run(drive())
    for p in procs.values():
        assert p.stop() == 0
    print(f"fleet: data in and engines stopped in {time.monotonic() - t:.1f} s")

    # each gateway its own retained status (none overwrote another's)
    assert status == {f"machinewatch/{site}/_engine/{gw}/status": b"online" for gw in OWNERS}

    # each engine ran exactly its assets, took exactly their data and nothing else
    for i, (gw, mine) in enumerate(OWNERS.items(), 1):
        log = procs[gw].log_text()
        assert f"gateway {gw} (shard {i}/3) runs 3 of 9 assets: " in log
        assert (
            set(log.split(f"gateway {gw} (shard {i}/3) runs 3 of 9 assets: ")[1].splitlines()[0].split(", "))
            == mine
        )
        c = final_counters(log)
        assert c["chunks_in"] == len(mine) * SECONDS, (gw, c)
        assert c.get("not_owned", 0) == 0  # others' topics are not even subscribed to
        assert not {k: v for k, v in c.items() if k.startswith("rejected_") and v}, (gw, c)
        assert c["windows_scored"] >= len(mine) * 10, (gw, c)  # baseline learned, then scored
        assert c.get("sink_pending_at_stop", 0) == 0

    # the database: every asset written by its one owner, every summary exactly once
    victoria.flush()
    owner = {a: gw for gw, mine in OWNERS.items() for a in mine}
    for field in ("state_code", "score_max"):
        series = export_all(
            victoria, f'{{__name__="machinewatch_summary_{field}",site="{site}",stream="_asset"}}'
        )
        gateways: dict[str, set[str]] = {}
        samples: dict[str, list[int]] = {}
        for s in series:
            a = s["metric"]["asset"]
            gateways.setdefault(a, set()).add(s["metric"]["gateway"])
            samples.setdefault(a, []).extend(s["timestamps"])
        assert {a: g for a, g in gateways.items()} == {a: {owner[a]} for a in ASSETS}, field
        for a, ts in samples.items():
            assert len(ts) == len(set(ts)), f"{field}: duplicate summaries of {a}"
        if field == "state_code":  # one per interval of data, each once, and the engines agree
            for gw, mine in OWNERS.items():
                assert sum(len(samples[a]) for a in mine) == final_counters(procs[gw].log_text())["summaries"]
            # a window is dated by its (exclusive) end: the last one ends at t0 + 40 s, which opens
            # a ninth interval
            assert {len(samples[a]) for a in ASSETS} == {SECONDS // INTERVAL_S + 1}, samples
    health = export_all(victoria, f'{{__name__="machinewatch_health_assets",site="{site}"}}')
    assert {s["metric"]["gateway"]: set(s["values"]) for s in health} == {gw: {3.0} for gw in OWNERS}
