"""The InfluxDB sink and the spool path, against a real VictoriaMetrics (``/api/v2/write``).

VictoriaMetrics answers 204 even when it drops a line, so every test reads back through
``/api/v1/export`` and counts. VM turns ``measurement field=v`` into the series
``measurement_field`` with the tags as labels (string fields become 0); each test uses its own
``site`` so tests never see each other's data.
"""

from __future__ import annotations

import asyncio
import math
import signal
import sqlite3
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from servers import RunProcess, VictoriaMetrics, free_port

from machinewatch.connectors.sinks.influxdb import InfluxSink, SinkBusy, parse_retry_after
from machinewatch.connectors.sinks.local import open_db
from machinewatch.engine.config import Config, load_config_text
from machinewatch.engine.errors import ConfigError, ConnectorError
from machinewatch.engine.health import HealthSample
from machinewatch.engine.lineprotocol import encode, escape_key, time_ok
from machinewatch.engine.pipeline import Engine
from machinewatch.engine.spool import Spool
from machinewatch.engine.types import AlarmEvent, Summary

T0 = 1_700_000_000_000_000_000
MACHINEWATCH = str(Path(sys.executable).parent / "machinewatch")


def engine_toml(
    state: Path,
    site: str,
    url: str,
    *,
    speedup: str = '"max"',
    duration_s: float = 300.0,
    interval_s: float = 2.0,
    spool_max_bytes: int = 64 << 20,
    http_port: int = 0,
    local: bool = False,
    fault: bool = False,
) -> str:
    text = f"""
[engine]
site = "{site}"
state_dir = "{state}"
summary_interval_s = {interval_s}
health_interval_s = 0.5
spool_max_bytes = {spool_max_bytes}
http_port = {http_port}
# these tests are about sinks, the spool, the broker and clocks: fit in-process so their timing does
# not depend on a child's start (fitting in a child: tests/engine/test_fitworker.py, test_fleet, demo)
fit_in_subprocess = false

[model]
learn_windows = 30

[alarm]
on_delay_windows = 3
off_delay_windows = 3
actuators = ["panel"]

[assets.oven1]
primary_stream = "temp"
[assets.oven1.streams.temp]
kind = "temperature"
rate_hz = 10
window_samples = 20
hop_samples = 10

[sources.sim]
kind = "simulator"
seed = 3
speedup = {speedup}
duration_s = {duration_s}
start_ns = {T0}

[sinks.influx]
kind = "influxdb"
url = "{url}"
bucket = "machinewatch"
org = "plant"
timeout_s = 2.0

[actuators.panel]
kind = "log"
"""
    if local:
        text += '\n[sinks.local]\nkind = "local"\n'
    if fault:
        text += """
[[sources.sim.faults]]
asset = "oven1"
kind = "overheating"
start_s = 150.0
ramp_s = 10.0
severity = 1.0
"""
    return text


def config(tmp_path: Path, site: str, url: str, **kw: Any) -> Config:
    return load_config_text(engine_toml(tmp_path / "state", site, url, **kw))


def series(vm: VictoriaMetrics, name: str, site: str) -> list[dict[str, Any]]:
    return vm.export(f'{{__name__="{name}",site="{site}"}}')


async def until(cond: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    """Wait for a condition the engine reaches on its own (polled, bounded)."""
    t_end = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > t_end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


# ----------------------------------------------------------------------------- line protocol


def test_line_protocol_escaping_and_dropping() -> None:
    s = Summary(
        "plant 1",
        "pump,1",
        T0,
        10.0,
        'AL"ARM',
        {"score max": 1.5, "bad": math.inf},
        {"v=b": {"rms_mean": math.nan}},
    )
    e = AlarmEvent(
        "plant 1",
        "pump,1",
        T0,
        "NORMAL",
        "ALARM",
        'score "high"\\x',
        score=2.0,
        threshold=math.nan,
        top_features=("vib.rms", "vib.kurtosis"),
    )
    enc = encode([s], [e], now_ns=T0)
    assert enc.lines == [
        "machinewatch_summary,asset=pump\\,1,site=plant\\ 1,stream=_asset score\\ max=1.5,state_code=-1.0,"
        f'state="AL\\"ARM" {T0}',
        "machinewatch_alarm,asset=pump\\,1,kind=machine,site=plant\\ 1,stream=_asset "
        "from_code=0.0,to_code=2.0,"
        'score=2.0,from_state="NORMAL",to_state="ALARM",reason="score \\"high\\"\\\\x",'
        f'top_features="vib.rms,vib.kurtosis" {T0}',
    ]
    # inf score field, NaN threshold, and the stream point whose only field was NaN
    assert (enc.dropped_fields, enc.dropped_empty) == (3, 1)
    assert escape_key("a\\") == "a\\\\"
    assert not time_ok(1_700_000_000, T0)  # seconds taken for ns
    assert not time_ok(T0 + 2 * 86_400 * 10**9, T0)
    late = encode([Summary("s", "a", 1_700_000_000_000, 1.0, "NORMAL", {"x": 1.0})], [], now_ns=T0)
    assert late.lines == [] and late.dropped_bad_time == 1


def test_retry_after_parsing() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", now_s=90.0) == 10.0


# ----------------------------------------------------------------------------- sink with a fake client


class _ApiError(Exception):
    def __init__(self, status: int, body: str = "", headers: dict[str, str] | None = None) -> None:
        super().__init__(body)
        self.status, self.body, self.headers = status, body, headers or {}


class _FakeWriteApi:
    def __init__(self, behave: Callable[[list[str]], None]) -> None:
        self.behave = behave
        self.accepted: list[str] = []
        self.calls = 0

    async def write(self, bucket: str, org: str, record: str, write_precision: str) -> bool:
        self.calls += 1
        lines = record.split("\n")
        self.behave(lines)
        self.accepted.extend(lines)
        return True


class _FakeClient:
    def __init__(self, api: _FakeWriteApi) -> None:
        self.api = api

    def write_api(self) -> _FakeWriteApi:
        return self.api

    async def close(self) -> None:
        return None


def _cfg(tmp_path: Path) -> Config:
    return config(tmp_path, "x", "http://127.0.0.1:1")


async def test_rejected_rows_go_to_dead_letter_and_the_rest_is_written(tmp_path: Path) -> None:
    def behave(lines: list[str]) -> None:
        if any("asset=bad" in ln for ln in lines):
            raise _ApiError(400, "partial write: field type conflict")

    api = _FakeWriteApi(behave)
    sink = InfluxSink(
        "influx",
        {"url": "http://db:8086", "bucket": "b"},
        _cfg(tmp_path),
        client_factory=lambda *a: _FakeClient(api),
    )
    good = [Summary("s", f"m{i}", T0 + i, 1.0, "NORMAL", {"x": 1.0}) for i in range(7)]
    bad = Summary("s", "bad", T0, 1.0, "NORMAL", {"x": 1.0})
    async with sink:
        await sink.write([*good[:3], bad, *good[3:]], [])
    gw = {"gateway": sink.config.engine.gateway_id}  # every point says which engine wrote it
    assert all(",gateway=" in ln for ln in api.accepted)
    assert sorted(api.accepted) == sorted(encode(good, [], now_ns=T0, tags=gw).lines)
    dl = (tmp_path / "state" / "deadletter-influx.lp").read_text().splitlines()
    assert dl[0].startswith("# ") and "HTTP 400" in dl[0]
    assert dl[1:] == encode([bad], [], now_ns=T0, tags=gw).lines
    assert sink.counters["dead_letter"] == 1


@pytest.mark.parametrize("status", [429, 503])
async def test_busy_server_raises_with_retry_after(tmp_path: Path, status: int) -> None:
    def behave(lines: list[str]) -> None:
        raise _ApiError(status, "slow down", {"Retry-After": "12"})

    api = _FakeWriteApi(behave)
    sink = InfluxSink(
        "influx",
        {"url": "http://db:8086", "bucket": "b"},
        _cfg(tmp_path),
        client_factory=lambda *a: _FakeClient(api),
    )
    async with sink:
        with pytest.raises(SinkBusy) as err:
            await sink.write([Summary("s", "m", T0, 1.0, "NORMAL", {"x": 1.0})], [])
    assert err.value.status == status and err.value.retry_after_s == 12.0
    assert not (tmp_path / "state" / "deadletter-influx.lp").exists()


async def test_auth_errors_are_retried_not_dead_lettered(tmp_path: Path) -> None:
    def behave(lines: list[str]) -> None:
        raise _ApiError(401, "unauthorized")

    api = _FakeWriteApi(behave)
    sink = InfluxSink(
        "influx",
        {"url": "http://db:8086", "bucket": "b"},
        _cfg(tmp_path),
        client_factory=lambda *a: _FakeClient(api),
    )
    async with sink:
        with pytest.raises(ConnectorError, match="HTTP 401"):
            await sink.write([Summary("s", "m", T0, 1.0, "NORMAL", {"x": 1.0})], [])
    assert api.calls == 1


def test_options_are_validated_and_token_comes_from_env_or_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probs = InfluxSink.validate_options({"url": "db:8086", "timeout_s": 0, "extra": 1}, "sinks.i")
    assert {p.path for p in probs} == {"sinks.i.url", "sinks.i.bucket", "sinks.i.timeout_s", "sinks.i.extra"}
    monkeypatch.setenv("MW_TEST_TOKEN", "user:password")
    s = InfluxSink("i", {"url": "http://db", "bucket": "db/rp", "token_env": "MW_TEST_TOKEN"}, _cfg(tmp_path))
    assert s.token == "user:password" and s.org == "-"
    (tmp_path / "tok").write_text("secret-token\n")
    s = InfluxSink(
        "i", {"url": "http://db", "bucket": "b", "token_file": str(tmp_path / "tok")}, _cfg(tmp_path)
    )
    assert s.token == "secret-token"
    with pytest.raises(ConfigError, match="token_env"):
        InfluxSink("i", {"url": "http://db", "bucket": "b", "token_env": "MW_UNSET_VAR_X"}, _cfg(tmp_path))
    with pytest.raises(ConfigError, match="inline"):
        load_config_text(engine_toml(tmp_path, "s", "http://db").replace('org = "plant"', 'token = "t"'))


# ----------------------------------------------------------------------------- real VictoriaMetrics


async def test_write_and_read_back_exact(victoria: VictoriaMetrics, tmp_path: Path) -> None:
    site = "rb-" + uuid.uuid4().hex[:8]
    sink = InfluxSink("influx", {"url": victoria.url, "bucket": "machinewatch", "org": "o"}, _cfg(tmp_path))
    summaries = [
        Summary(
            site,
            "pump 1",
            T0 + i * 10**10,
            10.0,
            "NORMAL" if i < 5 else "ALARM",
            {"score_max": 0.25 * i, "threshold": 1.0, "bad": math.nan},
            {"vib": {"rms_mean": 1.5 + i, "kurtosis_max": 3.0}, "temp": {"level_mean": 40.0 + i}},
        )
        for i in range(10)
    ]
    events = [
        AlarmEvent(
            site,
            "pump 1",
            T0 + 5 * 10**10,
            "NORMAL",
            "ALARM",
            "over",
            score=1.25,
            threshold=1.0,
            top_features=("vib.kurtosis",),
        )
    ]
    health = [HealthSample(site, T0, {"spool_bytes": 123.0})]
    async with sink:
        await sink.write(summaries, events, health=health)
    assert sink.counters["fields_dropped_nonfinite"] == 10
    got = {tuple(sorted(s["metric"].items())): s for s in victoria.export(f'{{site="{site}"}}')}
    by_name = Counter(dict(k)["__name__"] for k in got)
    assert by_name["machinewatch_summary_score_max"] == 1 and by_name["machinewatch_summary_rms_mean"] == 1
    assert "machinewatch_summary_bad" not in by_name
    (score,) = series(victoria, "machinewatch_summary_score_max", site)
    assert score["metric"] == {
        "__name__": "machinewatch_summary_score_max",
        "site": site,
        "asset": "pump 1",
        "stream": "_asset",
        "gateway": sink.config.engine.gateway_id,
    }
    assert score["timestamps"] == [(T0 + i * 10**10) // 10**6 for i in range(10)]
    assert score["values"] == [0.25 * i for i in range(10)]
    (code,) = series(victoria, "machinewatch_summary_state_code", site)
    assert code["values"] == [0.0] * 5 + [2.0] * 5
    (rms,) = series(victoria, "machinewatch_summary_rms_mean", site)
    assert rms["metric"]["stream"] == "vib" and rms["values"] == [1.5 + i for i in range(10)]
    (level,) = series(victoria, "machinewatch_summary_level_mean", site)
    assert level["metric"]["stream"] == "temp" and len(level["values"]) == 10
    (to,) = series(victoria, "machinewatch_alarm_to_code", site)
    assert to["values"] == [2.0] and to["metric"]["kind"] == "machine"
    (hb,) = series(victoria, "machinewatch_health_spool_bytes", site)
    assert hb["values"] == [123.0]
    # writing the same batch again overwrites: explicit timestamps, no new points
    async with sink:
        await sink.write(summaries, events)
    (again,) = series(victoria, "machinewatch_summary_score_max", site)
    assert sorted(set(again["timestamps"])) == score["timestamps"]


def _assert_exactly_once(vm: VictoriaMetrics, site: str, n_summaries: int) -> list[int]:
    (code,) = series(vm, "machinewatch_summary_state_code", site)
    ts = code["timestamps"]
    assert len(ts) == n_summaries, (len(ts), n_summaries)
    assert len(set(ts)) == len(ts), "a summary arrived twice"
    return sorted(ts)


async def test_outage_under_load_every_summary_arrives_once(
    victoria: VictoriaMetrics, tmp_path: Path
) -> None:
    site = "outage-" + uuid.uuid4().hex[:8]
    # a long run that the test stops itself: a slow database shutdown on a loaded machine must not
    # let the run end before the outage has been seen (CI once timed out here with a 320 s run)
    cfg = config(tmp_path, site, victoria.url, speedup="50.0", duration_s=36000.0, interval_s=2.0, local=True)
    eng = Engine(cfg, install_signals=False)
    run = asyncio.create_task(eng.run())
    await until(lambda: eng.counters["sink_written_influx"] >= 20, "first writes")
    await asyncio.to_thread(victoria.stop)
    down_at = eng.counters["summaries"]
    await until(
        lambda: eng.counters["sink_write_errors_influx"] >= 2 and eng.counters["summaries"] >= down_at + 20,
        "failed writes during the outage",
    )
    assert eng.spool is not None and eng.spool.pending("influx") > 0
    await asyncio.to_thread(victoria.start)
    up_at = eng.counters["summaries"]
    spool = eng.spool
    await until(
        lambda: spool.pending("influx") == 0 and eng.counters["summaries"] >= max(up_at + 20, 150),
        "the backlog to drain after the outage",
        timeout_s=60.0,
    )
    eng.stop()
    report = await asyncio.wait_for(run, 60)
    n = report.counters["summaries"]
    assert n >= 150 and report.counters["spool_records_left"] == 0
    ts = _assert_exactly_once(victoria, site, n)
    assert ts == [ts[0] + 2000 * k for k in range(len(ts))]  # every interval, no gap
    db = open_db(tmp_path / "state" / "machinewatch.db")  # the local sink, same spool path
    assert db.execute("SELECT COUNT(*) FROM machinewatch_summary WHERE stream = ''").fetchone()[0] == n
    print(
        f"\noutage: {n} summaries written, {len(ts)} read back, 0 duplicates, "
        f"{report.counters['sink_write_errors']} failed writes retried"
    )


def _metrics(port: int) -> dict[str, float]:
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


def test_kill_9_with_full_spool_then_restart_loses_nothing(
    victoria: VictoriaMetrics, run_process: RunProcess, tmp_path: Path
) -> None:
    site = "kill9-" + uuid.uuid4().hex[:8]
    port = free_port()
    cfg1 = tmp_path / "down.toml"  # database unreachable: everything stays in the spool
    cfg1.write_text(
        engine_toml(
            tmp_path / "state",
            site,
            dead_url(),
            speedup="50.0",
            duration_s=3600.0,
            interval_s=1.0,
            http_port=port,
        )
    )
    eng = run_process([MACHINEWATCH, "run", str(cfg1)], name="engine1")
    t_end = time.monotonic() + 60
    while _metrics(port).get("spool_pending_influx", 0) < 100:  # /metrics is the health endpoint
        assert eng.running and time.monotonic() < t_end, eng.log_tail()
        time.sleep(0.05)
    eng.send_signal(signal.SIGKILL)
    eng.wait(10)
    with sqlite3.connect(tmp_path / "state" / "spool.db") as db:  # what the crash left behind
        spooled = db.execute("SELECT COUNT(*) FROM records WHERE kind = 's'").fetchone()[0]
    sp = Spool(tmp_path / "state" / "spool.db", ["influx"])
    expect = sorted(r.t_ns // 10**6 for _, r in sp.peek("influx", 10**6) if isinstance(r, Summary))
    sp.close()
    assert len(expect) == spooled >= 50
    cfg2 = tmp_path / "up.toml"  # restart with the database back, and (almost) no new data
    cfg2.write_text(
        engine_toml(tmp_path / "state", site, victoria.url, speedup='"max"', duration_s=0.5, interval_s=1.0)
    )
    eng2 = run_process([MACHINEWATCH, "run", str(cfg2)], name="engine2")
    assert eng2.wait(60) == 0, eng2.log_tail()
    (code,) = series(victoria, "machinewatch_summary_state_code", site)
    got = code["timestamps"]
    assert len(set(got)) == len(got), "a summary arrived twice"
    assert set(expect) <= set(got)  # zero loss
    assert len(got) - len(expect) <= 1  # the restart's own half second may add its first interval
    print(
        f"\nkill -9: {len(expect)} summaries in the spool at the crash, "
        f"all {len(expect)} read back after restart"
    )


async def test_disk_quota_small_spool_with_database_down_keeps_monitoring(tmp_path: Path) -> None:
    limit = 65_536
    cfg = config(
        tmp_path, "quota", dead_url(), duration_s=600.0, interval_s=1.0, spool_max_bytes=limit, fault=True
    )
    eng = Engine(cfg, install_signals=False)
    report = await asyncio.wait_for(eng.run(), 120)
    c = report.counters
    assert c["summaries"] >= 590  # one per data second: monitoring never waited for the database
    assert c["windows_scored"] >= 500
    assert c["actuations"] >= 1  # the overheating fault raised the alarm and drove the output
    assert c["spool_dropped_overflow"] > 0 and c["sink_write_errors"] >= 1
    sp = Spool(tmp_path / "state" / "spool.db", ["influx"], max_bytes=limit)
    st = sp.stats()
    sp.close()
    assert st.bytes <= limit and st.dropped_overflow == c["spool_dropped_overflow"]
    assert st.records + st.dropped_overflow >= c["summaries"] + c["alarm_events"]
    print(
        f"\nquota: {c['summaries']} summaries, spool {st.bytes} B of {limit} B, "
        f"{st.dropped_overflow} oldest dropped and counted"
    )


# ----------------------------------------------------------------------------- health endpoint


async def test_health_endpoint_serves_healthz_and_prometheus_metrics() -> None:
    from machinewatch.engine.health import HealthServer

    problems: list[str] = []
    metrics = {"spool_bytes": 1234.0, "sink_lag_s_influx-main": 2.5, "spool_dropped_overflow": 0.0}

    async def get(port: int, path: str) -> tuple[int, str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        raw = (await reader.read()).decode()
        writer.close()
        head, _, body = raw.partition("\r\n\r\n")
        return int(head.split(" ")[1]), body

    async with HealthServer("127.0.0.1", 0, lambda: metrics, lambda: problems, {"site": "s1"}) as srv:
        assert srv.port > 0
        status, body = await get(srv.port, "/metrics")
        assert status == 200
        assert 'machinewatch_spool_bytes{site="s1"} 1234.0' in body.splitlines()
        assert 'machinewatch_sink_lag_s_influx_main{site="s1"} 2.5' in body.splitlines()
        assert "# TYPE machinewatch_spool_bytes gauge" in body
        status, body = await get(srv.port, "/healthz")
        assert status == 200 and '"ok"' in body
        problems.append("sink influx: oldest unwritten record is 900 s old")
        status, body = await get(srv.port, "/healthz")
        assert status == 503 and "900 s old" in body
        assert (await get(srv.port, "/nope"))[0] == 404
