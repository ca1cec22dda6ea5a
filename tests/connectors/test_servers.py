"""Smoke tests: the real servers started by tests/servers.py work for what the connectors need.

Each test does a real round trip through a server (MQTT publish/subscribe, InfluxDB v2 write API
into VictoriaMetrics read back through ``/api/v1/export``, InfluxQL write + query) and checks the
exact values, so a broken fixture fails here first instead of somewhere in the e2e tests.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.domain.write_precision import WritePrecision
from servers import (
    REQUIRE_SERVERS_ENV,
    InfluxDB1,
    Mosquitto,
    MosquittoFactory,
    RunProcess,
    TLSFiles,
    VictoriaMetrics,
    find_binary,
    free_port,
    missing_reason,
    mqtt_probe,
)

# A fixed, recent instant (2024-06-01T00:00:00Z) in ns; VM keeps it under the 100 y retention.
T0_NS = 1_717_200_000_000_000_000


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def _wait_for(predicate: object, timeout: float = 5.0) -> bool:
    """Poll ``predicate()`` (a condition on another process) until true or ``timeout``."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


# ----------------------------------------------------------------------------- Mosquitto


async def _round_trip(broker: Mosquitto, topic: str, payload: bytes, retain: bool = False) -> bytes:
    """Subscribe, publish, and return the payload that came back (5 s limit)."""
    async with aiomqtt.Client(broker.host, port=broker.port, identifier=_unique("rt")) as client:
        await client.subscribe(topic, qos=1)
        await client.publish(topic, payload, qos=1, retain=retain)
        async with asyncio.timeout(5):
            async for message in client.messages:
                assert message.topic.matches(topic)
                assert isinstance(message.payload, bytes)
                return message.payload
    raise AssertionError("no message")


async def test_mosquitto_publish_subscribe_round_trip(mosquitto: Mosquitto) -> None:
    topic = f"machinewatch/test/{_unique('asset')}/vib"
    payload = bytes(range(256))  # binary frames must pass unchanged
    assert await _round_trip(mosquitto, topic, payload) == payload


async def test_mosquitto_restart_on_same_port_keeps_retained_messages(mosquitto: Mosquitto) -> None:
    port = mosquitto.port
    topic = f"machinewatch/test/{_unique('retained')}"
    async with aiomqtt.Client(mosquitto.host, port=port) as client:
        await client.publish(topic, b"kept", qos=1, retain=True)
    mosquitto.stop()
    assert not mosquitto.running
    assert mqtt_probe(mosquitto.host, port) is None
    mosquitto.start()
    assert mosquitto.port == port
    async with aiomqtt.Client(mosquitto.host, port=port) as client:
        await client.subscribe(topic, qos=1)
        async with asyncio.timeout(5):
            message = await anext(aiter(client.messages))
    assert message.payload == b"kept"
    assert message.retain


def test_mosquitto_pause_stops_answers_until_resume(mosquitto: Mosquitto) -> None:
    mosquitto.pause()
    try:
        assert mosquitto.running and mosquitto.paused
        assert mqtt_probe(mosquitto.host, mosquitto.port, timeout=0.3) is None
    finally:
        mosquitto.resume()
    assert mqtt_probe(mosquitto.host, mosquitto.port) == 0


def test_mosquitto_factory_applies_extra_config(
    mosquitto_factory: MosquittoFactory, mosquitto: Mosquitto
) -> None:
    locked = mosquitto_factory("allow_anonymous false\n")
    assert locked.port != mosquitto.port
    assert "allow_anonymous false" in locked.conf_path.read_text()
    assert mqtt_probe(locked.host, locked.port) == 5  # CONNACK 5: not authorised
    assert mqtt_probe(mosquitto.host, mosquitto.port) == 0  # the shared broker is untouched


async def test_mosquitto_factory_tls_listener_round_trip(
    mosquitto_factory: MosquittoFactory, tls_files: TLSFiles
) -> None:
    tls = tls_files
    broker = mosquitto_factory(tls.mosquitto_conf())
    assert mqtt_probe(broker.host, broker.port) is None  # plain MQTT gets no CONNACK
    topic = f"machinewatch/test/{_unique('tls')}"
    params = aiomqtt.TLSParameters(ca_certs=str(tls.ca))
    async with aiomqtt.Client(broker.host, port=broker.port, tls_params=params) as client:
        await client.subscribe(topic, qos=1)
        await client.publish(topic, b"secret", qos=1)
        async with asyncio.timeout(5):
            message = await anext(aiter(client.messages))
    assert message.payload == b"secret"


# ----------------------------------------------------------------------------- VictoriaMetrics


async def test_victoria_influx_v2_write_reads_back_exact_values(victoria: VictoriaMetrics) -> None:
    measurement = _unique("mw_smoke")
    records = [
        f"{measurement},site=s1,asset=pump1 rms=1.25,peak=3.5 {T0_NS}",
        f"{measurement},site=s1,asset=pump1 rms=-0.0625,peak=4.0 {T0_NS + 10_000_000_000}",
    ]
    async with InfluxDBClientAsync(url=victoria.url, token="unused", org="unused") as client:
        # influxdb-client annotates the WritePrecision class but its members are plain str.
        precision: Any = WritePrecision.NS
        ok = await client.write_api().write(bucket="machinewatch", record=records, write_precision=precision)
    assert ok
    # VM answers 204 even for lines it drops, so only reading back proves the write.
    series = {s["metric"]["__name__"]: s for s in victoria.export(f'{{__name__=~"{measurement}_.*"}}')}
    assert sorted(series) == [f"{measurement}_peak", f"{measurement}_rms"]
    rms = series[f"{measurement}_rms"]
    assert rms["metric"]["asset"] == "pump1" and rms["metric"]["site"] == "s1"
    assert rms["values"] == [1.25, -0.0625]
    assert rms["timestamps"] == [T0_NS // 1_000_000, T0_NS // 1_000_000 + 10_000]
    assert series[f"{measurement}_peak"]["values"] == [3.5, 4.0]


def test_victoria_restart_on_same_port_keeps_data(victoria: VictoriaMetrics) -> None:
    name = _unique("mw_restart")
    victoria.write(f"{name} v=7 {T0_NS}")
    victoria.flush()
    port = victoria.port
    victoria.restart()
    assert victoria.port == port
    [series] = victoria.export(f"{name}_v")
    assert series["values"] == [7.0]


# ----------------------------------------------------------------------------- InfluxDB 1.x


def test_influxdb1_write_and_influxql_query(influxdb1: InfluxDB1) -> None:
    db = _unique("mw")
    influxdb1.create_database(db)
    influxdb1.write(
        [
            f'machinewatch_summary,site=s1,asset=pump1,stream=vib score=0.5,state="NORMAL" {T0_NS}',
            f'machinewatch_summary,site=s1,asset=pump1,stream=vib score=2.5,state="ALARM" '
            f"{T0_NS + 10_000_000_000}",
        ],
        db,
    )
    rows = influxdb1.points('SELECT score, state FROM machinewatch_summary GROUP BY "asset"', db)
    assert rows == [
        {"asset": "pump1", "time": T0_NS, "score": 0.5, "state": "NORMAL"},
        {"asset": "pump1", "time": T0_NS + 10_000_000_000, "score": 2.5, "state": "ALARM"},
    ]
    [result] = influxdb1.query("SELECT max(score) FROM machinewatch_summary", db)
    assert result["series"][0]["values"][0][1] == 2.5


def test_influxdb1_reports_query_errors(influxdb1: InfluxDB1) -> None:
    with pytest.raises(Exception, match="database not found"):
        influxdb1.query("SELECT * FROM nothing", db=_unique("absent"))


# ----------------------------------------------------------------------------- helpers


def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    assert 1024 <= port <= 65535


def test_missing_binary_gives_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MACHINEWATCH_BIN_MOSQUITTO", "/nonexistent/mosquitto")
    assert find_binary("mosquitto") is None
    assert missing_reason(Mosquitto) == "mosquitto not installed: run scripts/test"
    assert REQUIRE_SERVERS_ENV == "MACHINEWATCH_REQUIRE_SERVERS"


def test_run_process_logs_and_kills_a_process_that_ignores_sigterm(
    run_process: RunProcess, tmp_path: Path
) -> None:
    proc = run_process(
        ["bash", "-c", "trap '' TERM; printf 'up%s\\n' 1; while :; do sleep 0.1; done"],
        name="stubborn",
    )
    assert proc.log_path == tmp_path / "stubborn.log"
    assert _wait_for(lambda: "up1" in proc.log_text())  # the trap is set once this is printed
    assert proc.stop(timeout=0.5) == -signal.SIGKILL
    assert not proc.running
