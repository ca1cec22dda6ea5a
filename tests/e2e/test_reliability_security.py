"""Reliability: hostile config, secrets, TLS, model files, wall-clock jumps and a damaged spool.

Codec fuzzing is ``tests/connectors/test_codecs.py::test_fuzz_only_payload_error_escapes``, the
pickle-in-npz unit case ``tests/models/test_contract.py``, the inline-secret unit case
``tests/engine/test_config.py`` and the sample ACL ``tests/connectors/test_mqtt.py``; this file
adds what runs the engine as a process, or fuzzes what had no fuzzer (the config loader).
"""

from __future__ import annotations

import asyncio
import os
import pickle
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pytest
from e2e.harness import MW, OVENS, counters, db_summaries, engine_toml, final_counters, until, watch, write
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import free_port, make_tls_files

from machinewatch.connectors.base import Rejected
from machinewatch.connectors.sources.mqtt import MqttSource
from machinewatch.engine.codecs import encode_frame, encode_json
from machinewatch.engine.config import load_config_text
from machinewatch.engine.errors import ConfigError

pytestmark = pytest.mark.timeout(240)

T0 = 1_700_000_000_000_000_000
GOOD = engine_toml(Path("/tmp/mw-fuzz-state"), "mqtt://127.0.0.1:1883", influx_url="http://127.0.0.1:8086")


# ----------------------------------------------------------------------------- config loader fuzz


@st.composite
def mutated_config(draw: st.DrawFn) -> str:
    """The good config with lines dropped, values swapped for hostile ones, bytes flipped."""
    lines = GOOD.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.integers(0, 3))
        if op == 0:
            del lines[i]
        elif op == 1 and "=" in lines[i]:
            key = lines[i].split("=")[0]
            val = draw(
                st.sampled_from(
                    [
                        "-1",
                        "0",
                        "1e309",
                        "nan",
                        "inf",
                        '""',
                        '"x"',
                        "true",
                        "[]",
                        "{}",
                        '[1, "a"]',
                        "99999999999999999999",
                        '"../../etc/passwd"',
                        "{ a = 1 }",
                        "1979-05-27T07:32:00Z",
                        "'\\u0000'",
                    ]
                )
            )
            lines[i] = f"{key}= {val}"
        elif op == 2:
            lines.insert(
                i,
                draw(
                    st.sampled_from(
                        [
                            "[engine]",
                            "[assets.p1]",
                            "[[sources.plant]]",
                            "x = 1",
                            "[assets.p1.streams.vib]",
                            "kind = 'nope'",
                            "[sinks.z]",
                        ]
                    )
                ),
            )
        else:
            b = bytearray(lines[i].encode())
            if b:
                b[draw(st.integers(0, len(b) - 1))] = draw(st.integers(0, 127))
            lines[i] = b.decode("ascii", "replace")
    return "\n".join(lines)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_config())
def test_fuzz_config_loader_only_config_errors(text: str) -> None:
    try:
        load_config_text(text)
    except ConfigError as exc:
        assert str(exc).strip(), "a config error says what is wrong"


def test_config_fuzz_baseline_is_valid() -> None:
    cfg = load_config_text(GOOD)
    assert set(cfg.assets) == {"p1", "t1"}


# ----------------------------------------------------------------------------- secrets


async def test_token_and_password_never_in_logs(
    mosquitto_factory: Any, run_process: Any, tmp_path: Path
) -> None:
    token, password = "tok-" + uuid.uuid4().hex, "pw-" + uuid.uuid4().hex
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "engine", password], check=True)
    broker = mosquitto_factory(f"password_file {pw}\nallow_anonymous false")
    state = tmp_path / "state"
    text = engine_toml(
        state,
        broker.url,
        influx_url=f"http://127.0.0.1:{free_port()}",
        extra='log_level = "DEBUG"',
        influx_extra='token_env = "MW_REL_TOKEN"',
    )
    text = text.replace(
        "heartbeat_s = 1\n", 'heartbeat_s = 1\nusername = "engine"\npassword_env = "MW_REL_PW"\n'
    )
    cfg = write(tmp_path / "engine.toml", text)
    env = {"MW_REL_TOKEN": token, "MW_REL_PW": password}
    eng = run_process([MW, "run", str(cfg)], name="engine", env=env)
    await until(
        lambda: (
            counters(state).get("sink_write_errors", 0) >= 2
            or counters(state).get("health", 0) > 0
            or counters(state).get("sink_write_errors", 0) >= 2
        ),
        60,
        "failed writes (the token is in play)",
    )
    async with aiomqtt.Client("127.0.0.1", broker.port, username="engine", password=password) as c:
        await c.publish("machinewatch/rel/t1/temp", b"21.5", qos=1)
        await c.publish("machinewatch/rel/t1/temp", b"garbage", qos=1)
    await until(lambda: counters(state).get("chunks_in", 0) >= 1, 20)
    eng.stop()
    # a wrong password: the auth failure is logged, the password is not
    env_bad = {"MW_REL_TOKEN": token, "MW_REL_PW": password + "x"}
    bad = run_process([MW, "run", str(cfg)], name="engine-badpw", env=env_bad)
    await until(
        lambda: (
            "not authori" in bad.log_text().lower()
            or "refused" in bad.log_text().lower()
            or "bad user" in bad.log_text().lower()
        ),
        30,
        "auth failure logged",
    )
    bad.stop()
    chk = subprocess.run([MW, "check", str(cfg)], capture_output=True, text=True, env={**os.environ, **env})
    logs = eng.log_text() + bad.log_text() + chk.stdout + chk.stderr
    assert "DEBUG" in eng.log_text() and len(logs) > 2000
    assert token not in logs and password not in logs and (password + "x") not in logs
    assert token[4:12] not in logs and password[3:11] not in logs  # nor a fragment
    print(
        f"\nsecrets: {len(logs)} bytes of DEBUG logs (run, failed writes, auth failure, check): "
        "token and password absent"
    )


def test_inline_secret_refused_by_the_engine_process(tmp_path: Path) -> None:
    text = engine_toml(
        tmp_path / "state",
        "mqtt://127.0.0.1:1",
        influx_url="http://127.0.0.1:1",
        influx_extra='token = "inline-secret-123"',
    )
    cfg = write(tmp_path / "engine.toml", text)
    r = subprocess.run([MW, "run", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "sinks.influx.token" in r.stderr and "inline" in r.stderr, r.stderr
    assert "inline-secret-123" not in r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "state" / "spool.db").exists(), "refused before anything ran"


# ----------------------------------------------------------------------------- TLS


async def _connects(src: MqttSource, timeout: float = 4.0) -> tuple[int, list[str]]:
    why: list[str] = []

    async def run() -> None:
        async for item in src.chunks():
            if isinstance(item, Rejected):
                why.append(item.detail)

    task = asyncio.create_task(run())
    await asyncio.sleep(0)
    t = time.monotonic()
    while time.monotonic() - t < timeout and not src.connects and not why:
        await asyncio.sleep(0.05)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    return src.connects, why


async def test_tls_rejects_wrong_ca_and_plaintext(
    mosquitto_factory: Any, tls_files: Any, tmp_path: Path
) -> None:
    tls_port = free_port()
    broker = mosquitto_factory(f"listener {tls_port} 127.0.0.1\n{tls_files.mosquitto_conf()}")
    other = make_tls_files(tmp_path / "other-ca")

    def source(url: str, opts: str) -> MqttSource:
        cfg = load_config_text(
            engine_toml(tmp_path / "s", url).replace("heartbeat_s = 1\n", "heartbeat_s = 1\n" + opts)
        )
        return MqttSource("plant", cfg.sources["plant"].options, cfg)

    ok, _ = await _connects(source(f"mqtts://127.0.0.1:{tls_port}", f'tls_ca = "{tls_files.ca}"\n'))
    wrong, why_ca = await _connects(source(f"mqtts://127.0.0.1:{tls_port}", f'tls_ca = "{other.ca}"\n'))
    plain, why_plain = await _connects(source(f"mqtt://127.0.0.1:{tls_port}", ""), timeout=12.0)
    assert ok == 1, "the right CA connects"
    assert wrong == 0 and why_ca and any("certif" in w.lower() or "ssl" in w.lower() for w in why_ca), why_ca
    assert plain == 0 and why_plain, "plaintext to the TLS listener never connects"
    assert broker.running
    print(
        f"\nTLS: right CA connects; wrong CA refused ({why_ca[0][:60]}); "
        f"plaintext refused ({why_plain[0][:60]})"
    )


# ----------------------------------------------------------------------------- model files


class _Boom:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (self.marker,))


def test_pickle_and_tampered_model_refused_before_anything_runs(run_process: Any, tmp_path: Path) -> None:
    """A learned model on disk is replaced by a pickle that would create a folder if unpickled."""
    state = tmp_path / "state"
    text = f"""
[engine]
site = "m"
state_dir = "{state}"
summary_interval_s = 1.0
{OVENS}
[sources.sim]
kind = "simulator"
seed = 3
speedup = "max"
duration_s = 240.0
start_ns = {T0}
"""
    cfg = write(tmp_path / "engine.toml", text)
    first = run_process([MW, "run", str(cfg)], name="learn")  # learns (150 windows) and stores
    assert first.wait(60) == 0, first.log_tail()
    model = state / "models" / "oven1" / "current.npz"
    assert model.exists()
    marker = tmp_path / "PWNED"
    good = model.read_bytes()
    model.write_bytes(pickle.dumps(_Boom(str(marker))))
    eng = run_process([MW, "run", str(cfg)], name="engine")
    code_pickle = eng.wait(60)
    log = eng.log_text().split("=== start")[-1]
    assert not marker.exists(), "the pickle ran"
    assert code_pickle != 0 and "oven1" in log and "pickle" in log, log
    assert "Traceback" not in log
    # a tampered model: one byte of oven1's arrays flipped (sha256 mismatch with the manifest)
    raw = bytearray(good)
    raw[len(raw) // 2] ^= 0xFF
    model.write_bytes(bytes(raw))
    eng.start()
    code_tamper = eng.wait(60)
    log2 = eng.log_text().split("=== start")[-1]
    assert code_tamper != 0 and "oven1" in log2 and ("sha256" in log2 or "hash" in log2), log2
    assert "Traceback" not in log2
    print(
        f"\nmodels: pickle refused (exit {code_pickle}), tampered npz refused (exit {code_tamper}); "
        f"nothing unpickled; {log2.strip().splitlines()[-1][:160]}"
    )


# ----------------------------------------------------------------------------- wall clock jumps


LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


# The full-suite failure of session 2 (2 of 240 chunks missing, one STALE) was the engine saying
# "online" before its data subscription existed: the first vib+temp pair went to no subscriber and
# the wait for all of them ran out (the STALE was that wait's silence); fixed,
# tests/engine/test_status_online.py. Under libfaketime, CPython's GIL hand-over
# (pthread_cond_timedwait, which libfaketime 0.9.10 intercepts) takes ~150 ms instead of ~5 ms on a
# loaded box, so while the warm-up thread loads the kernels the engine's loop crawls (warm-up
# 15-50 s instead of ~1 s); false STALEs from those stalls are fixed (tests/engine/test_silence.py),
# and the test now publishes only once the hot path runs ("hot path running" in the log).
async def test_wall_clock_jumps_with_libfaketime(
    mosquitto_factory: Any, run_process: Any, tmp_path: Path
) -> None:
    if not os.path.exists(LIBFAKETIME):
        pytest.skip("libfaketime not installed (apt-get install faketime)")
    broker = mosquitto_factory()
    state = tmp_path / "state"
    cfg = write(tmp_path / "engine.toml", engine_toml(state, broker.url, latching=False, stale_after_s=5.0))
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    env = {
        "LD_PRELOAD": LIBFAKETIME,
        "FAKETIME_TIMESTAMP_FILE": str(offset),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    sent = {"good": 0, "absurd": 0}
    async with watch(broker.port) as w:
        eng = run_process([MW, "run", str(cfg)], name="engine", env=env)
        await until(lambda: w.status().count(b"online") >= 1, 60, "engine online")
        await until(lambda: "hot path running" in eng.log_text(), 120, "kernels warm")
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="rel-clock") as c:
            seq = 0
            t_start = time.time_ns()

            async def good(n: int) -> None:
                nonlocal seq
                for _ in range(n):  # 1 s of p1 vibration (real time) + one temperature reading
                    t = t_start + seq * 160_000_000  # contiguous 4096-sample frames, paced in real time
                    v = np.random.default_rng(seq).normal(0, 1, 4096).astype(np.float32)
                    await c.publish("machinewatch/rel/p1/vib", encode_frame(v, t, seq, 25600.0), qos=1)
                    await c.publish(
                        "machinewatch/rel/t1/temp",
                        encode_json([40.0 + 0.1 * float(np.sin(seq))], t_start + seq * 100_000_000, seq),
                        qos=1,
                    )
                    seq += 1
                    sent["good"] += 2
                    await asyncio.sleep(0.16)

            await good(40)
            c0 = counters(state)
            for jump in ("+3600", "-7200", "+0"):  # forwards 1 h, backwards 2 h, back to true time
                offset.write_text(f"{jump}\n")
                await good(25)
            # absurd timestamps: 1990, 2200, and 3 days ahead of the true clock
            for t in (631_152_000 * 10**9, 7_258_118_400 * 10**9, time.time_ns() + 3 * 86_400 * 10**9):
                for _ in range(10):
                    v = np.ones(4096, np.float32)
                    await c.publish("machinewatch/rel/p1/vib", encode_frame(v, t, seq, 25600.0), qos=1)
                    seq += 1
                    sent["absurd"] += 1
            await good(5)
        await until(
            lambda: (
                counters(state).get("chunks_in", 0) + counters(state).get("rejected_bad_timestamp", 0)
                >= sum(sent.values())
            ),
            60,
            "all accounted for",
        )
        eng.stop()
    c = final_counters(eng.log_text())
    assert c["rejected_bad_timestamp"] == sent["absurd"], c
    assert c["chunks_in"] == sent["good"]
    assert c.get("quality_stale", 0) == 0, (
        "a clock jump is not silence: the watchdog runs on the monotonic clock"
    )
    assert c.get("buffer_gaps_time", 0) == 0 and c["windows_scored"] > c0.get("windows_scored", 0) + 100
    assert c.get("actuations", 0) == 0 and not w.energised("p1")
    print(
        f"\nclock: jumps +1 h, -2 h, back; {sent['good']} good messages all ingested, "
        f"{sent['absurd']} absurd timestamps rejected and counted, 0 STALE, 0 time gaps, 0 actuations"
    )


# ----------------------------------------------------------------------------- damaged spool


@pytest.mark.parametrize("damage", ["truncated", "garbage_pages"])
def test_damaged_spool_is_quarantined_and_the_rest_delivered(
    damage: str, victoria: Any, run_process: Any, tmp_path: Path
) -> None:
    site = "sp" + uuid.uuid4().hex[:6]
    state = tmp_path / "state"

    def cfg(url: str, start_ns: int, dur: float) -> Path:
        return write(
            tmp_path / f"engine-{start_ns}.toml",
            f"""
[engine]
site = "{site}"
state_dir = "{state}"
summary_interval_s = 1.0
{OVENS}
[sources.sim]
kind = "simulator"
seed = 3
speedup = "max"
duration_s = {dur}
start_ns = {start_ns}
[sinks.influx]
kind = "influxdb"
url = "{url}"
bucket = "machinewatch"
timeout_s = 1.0
""",
        )

    first = run_process([MW, "run", str(cfg(f"http://127.0.0.1:{free_port()}", T0, 600.0))], name="down")
    assert first.wait(120) == 0, first.log_tail()
    spool = state / "spool.db"
    with sqlite3.connect(spool) as db:
        before = db.execute("SELECT COUNT(*) FROM records WHERE kind = 's'").fetchone()[0]
    size = spool.stat().st_size
    raw = bytearray(spool.read_bytes())
    if damage == "truncated":
        raw = raw[: size * 2 // 3]
    else:
        page = 4096
        for p in range(3, size // page, 7):  # every 7th page from the 4th on: garbage
            raw[p * page : (p + 1) * page] = os.urandom(page)
    spool.write_bytes(bytes(raw))
    second = run_process([MW, "run", str(cfg(victoria.url, T0 + 10**12, 30.0))], name="up")
    assert second.wait(120) == 0, second.log_tail()
    log = second.log_text()
    assert "is damaged" in log and list(state.glob("spool.db.corrupt-*"))
    salvaged = int(log.split(" record(s) salvaged")[0].rsplit("; ", 1)[1])
    c = final_counters(log)
    got = db_summaries(victoria, site)
    old = sum(1 for ts in got.values() for t in ts if t < (T0 + 10**12) // 10**6)
    assert 0 < old <= before and c["spool_records_left"] == 0
    assert salvaged >= old
    assert "Traceback" not in log
    print(
        f"\nspool {damage}: {before} summaries spooled, file damaged, quarantined; "
        f"{salvaged} records salvaged, "
        f"{old} old summaries delivered, {before - old} lost with the damaged pages; new run unaffected "
        f"({c['summaries']} summaries)"
    )
