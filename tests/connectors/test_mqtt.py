"""MQTT source: topic mapping, sequence rules, rejections; real Mosquitto: delivery, persistent
session, reconnect, password auth and TLS."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pytest

from machinewatch.connectors.base import Rejected
from machinewatch.connectors.sources.mqtt import MqttSource, SeqTracker, TopicMap, read_in_bursts
from machinewatch.engine.codecs import encode_frame
from machinewatch.engine.config import Config, load_config_text
from machinewatch.engine.errors import ConfigError
from machinewatch.engine.types import Chunk

T0 = 1_700_000_000 * 10**9


def config(url: str = "mqtt://127.0.0.1:1883", extra: str = "") -> Config:
    return load_config_text(f'''
[engine]
site = "s1"
[assets.p1.machine]
shaft_hz = 25.0
[assets.p1.streams.vib]
kind = "vibration"
rate_hz = 1000
window_samples = 64
[assets.p1.streams.temp]
kind = "temperature"
rate_hz = 1
window_samples = 4
[sources.m]
kind = "mqtt"
url = "{url}"
reconnect_max_s = 0.5
{extra}
[actuators.relay]
kind = "mqtt"
url = "{url}"
''')


def source(cfg: Config) -> MqttSource:
    return MqttSource("m", cfg.sources["m"].options, cfg)


def test_topic_map_and_own_topics() -> None:
    cfg = config()
    tm = TopicMap("plant/<site>/<asset>/<stream>", cfg)
    assert tm.subscription == "plant/+/+/+"
    assert tm.stream_id("plant/s1/p1/vib") == "p1/vib"
    assert tm.stream_id("plant/s2/p1/vib") is None  # wrong site
    src = source(cfg)
    assert src.decode("machinewatch/s1/p1/command", b"ON") is None
    assert src.decode("machinewatch/s1/_engine/heartbeat", b"{}") is None
    r = src.decode("machinewatch/s1/p9/vib", b"1")
    assert isinstance(r, Rejected) and r.reason == "unknown_topic"


def test_decode_rules() -> None:
    src = source(config())
    x = np.arange(8, dtype=np.float32)
    c = src.decode("machinewatch/s1/p1/vib", encode_frame(x, T0, 10, 1000.0), now_ns=T0)
    assert isinstance(c, Chunk) and c.seq == 0 and c.t0_ns == T0 and c.stream_id == "p1/vib"
    reasons = [
        src.decode("machinewatch/s1/p1/vib", encode_frame(x, T0, 10, 1000.0), now_ns=T0),  # dup
        src.decode("machinewatch/s1/p1/vib", encode_frame(x, T0 - 1, 9, 1000.0), now_ns=T0),  # backwards
        src.decode("machinewatch/s1/p1/vib", encode_frame(x, T0, 11, 500.0), now_ns=T0),  # wrong rate
        src.decode("machinewatch/s1/p1/vib", encode_frame(x, T0 + 10**15, 11, 1000.0), now_ns=T0),  # future
        src.decode("machinewatch/s1/p1/vib", encode_frame(x, T0, 11, 1000.0, channels=2), now_ns=T0),
        src.decode("machinewatch/s1/p1/vib", b"{bad", now_ns=T0),
    ]
    assert [r.reason for r in reasons if isinstance(r, Rejected)] == [
        "duplicate_seq",
        "backwards_seq",
        "rate_mismatch",
        "bad_timestamp",
        "bad_channels",
        "bad_json",
    ]
    # a plain number on a scalar stream is stamped with the receive time
    c = src.decode("machinewatch/s1/p1/temp", b"41.5", now_ns=T0)
    assert isinstance(c, Chunk) and c.t0_ns == T0 and c.values.tolist() == [41.5]


def test_seq_tracker_keeps_gaps_and_restarts() -> None:
    s = SeqTracker()
    assert [s.accept(q, t) for q, t in ((0, 1), (1, 2), (5, 3))] == [0, 1, 5]
    assert s.accept(0, 4) == 7  # restarted publisher: accepted behind a gap


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError) as ei:
        config(extra='qos = 2\ntopic_template = "a/+/b"\nbogus = 1\npassword = "x"')
    text = str(ei.value)
    for key in ("sources.m.qos", "sources.m.topic_template", "sources.m.bogus", "sources.m.password"):
        assert key in text


async def _publish(port: int, msgs: list[tuple[str, bytes]], qos: int = 1, **kw: Any) -> None:
    async with aiomqtt.Client("127.0.0.1", port, **kw) as c:
        for topic, payload in msgs:
            await c.publish(topic, payload, qos=qos)


@contextlib.asynccontextmanager
async def _running(src: MqttSource) -> AsyncIterator[list[Chunk | Rejected]]:
    got: list[Chunk | Rejected] = []

    async def run() -> None:
        async for item in src.chunks():
            got.append(item)

    task = asyncio.create_task(run())
    try:
        yield got
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _until(cond: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.02)


async def test_receives_frames_from_a_real_broker(mosquitto: Any) -> None:
    src = source(config(mosquitto.url, 'client_id = "t-recv"\nclean_session = true'))
    async with _running(src) as got:
        await _until(lambda: src.connects == 1)
        x = np.linspace(-1, 1, 256, dtype=np.float32)
        await _publish(
            mosquitto.port,
            [("machinewatch/s1/p1/vib", encode_frame(x, T0, i, 1000.0)) for i in range(3)]
            + [("machinewatch/s1/p1/temp", b"40.5")],
        )
        await _until(lambda: len(got) >= 4)
    chunks = [g for g in got if isinstance(g, Chunk)]
    assert [c.seq for c in chunks[:3]] == [0, 1, 2]
    np.testing.assert_array_equal(chunks[0].values, x)
    assert chunks[3].stream_id == "p1/temp"


async def test_persistent_session_gets_qos1_sent_while_away(mosquitto: Any) -> None:
    cfg = config(mosquitto.url, 'client_id = "t-persist"')
    src = source(cfg)
    async with _running(src):
        await _until(lambda: src.connects == 1)  # the broker now holds our session + subscription
    x = np.ones(64, np.float32)
    await _publish(
        mosquitto.port, [("machinewatch/s1/p1/vib", encode_frame(x, T0, i, 1000.0)) for i in range(5)]
    )
    src2 = source(cfg)
    async with _running(src2) as got:
        await _until(lambda: len(got) >= 5)
    assert [c.seq for c in got if isinstance(c, Chunk)] == [0, 1, 2, 3, 4]


async def test_reconnects_after_broker_restart(mosquitto_factory: Any) -> None:
    broker = mosquitto_factory()
    src = source(config(broker.url, 'client_id = "t-reconnect"'))
    async with _running(src) as got:
        await _until(lambda: src.connects == 1)
        broker.stop()
        await _until(lambda: any(isinstance(g, Rejected) and g.reason == "disconnected" for g in got))
        broker.start()
        loop = asyncio.get_running_loop()
        t = loop.time()
        await _until(lambda: src.connects == 2)
        assert loop.time() - t < 5.0
        await _publish(broker.port, [("machinewatch/s1/p1/temp", b"1.0")])
        await _until(lambda: any(isinstance(g, Chunk) for g in got))


async def test_password_auth(mosquitto_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "engine", "s3cret"], check=True)
    broker = mosquitto_factory(f"password_file {pw}\nallow_anonymous false")
    monkeypatch.setenv("MW_TEST_PW", "s3cret")
    src = source(config(broker.url, 'username = "engine"\npassword_env = "MW_TEST_PW"\nclient_id = "t-auth"'))
    async with _running(src) as got:
        await _until(lambda: src.connects == 1)
        await _publish(
            broker.port, [("machinewatch/s1/p1/temp", b"2.0")], username="engine", password="s3cret"
        )
        await _until(lambda: any(isinstance(g, Chunk) for g in got))
    monkeypatch.setenv("MW_TEST_PW", "wrong")
    bad = source(
        config(broker.url, 'username = "engine"\npassword_env = "MW_TEST_PW"\nclient_id = "t-auth2"')
    )
    async with _running(bad) as got2:
        await _until(lambda: any(isinstance(g, Rejected) and g.reason == "disconnected" for g in got2))
    assert bad.connects == 0


def _certs(d: Path) -> None:
    def ossl(*a: str) -> None:
        subprocess.run(["openssl", *a], check=True, capture_output=True)

    ossl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        str(d / "ca.key"),
        "-out",
        str(d / "ca.crt"),
    )
    for name, cn in (("server", "127.0.0.1"), ("client", "engine")):
        ossl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={cn}",
            "-keyout",
            str(d / f"{name}.key"),
            "-out",
            str(d / f"{name}.csr"),
        )
        ext = d / f"{name}.ext"
        ext.write_text(
            "subjectAltName=IP:127.0.0.1\n" if name == "server" else "extendedKeyUsage=clientAuth\n"
        )
        ossl(
            "x509",
            "-req",
            "-in",
            str(d / f"{name}.csr"),
            "-CA",
            str(d / "ca.crt"),
            "-CAkey",
            str(d / "ca.key"),
            "-CAcreateserial",
            "-days",
            "1",
            "-out",
            str(d / f"{name}.crt"),
            "-extfile",
            str(ext),
        )


async def test_mutual_tls(mosquitto_factory: Any, tmp_path: Path) -> None:
    _certs(tmp_path)
    from servers import free_port

    tls_port = free_port()
    broker = mosquitto_factory(
        f"listener {tls_port} 127.0.0.1\ncafile {tmp_path / 'ca.crt'}\ncertfile {tmp_path / 'server.crt'}\n"
        f"keyfile {tmp_path / 'server.key'}\nrequire_certificate true\n"
    )
    opts = (
        f'tls_ca = "{tmp_path / "ca.crt"}"\ntls_cert = "{tmp_path / "client.crt"}"\n'
        f'tls_key = "{tmp_path / "client.key"}"\nclient_id = "t-tls"'
    )
    src = source(config(f"mqtts://127.0.0.1:{tls_port}", opts))
    async with _running(src) as got:
        await _until(lambda: src.connects == 1)
        await _publish(broker.port, [("machinewatch/s1/p1/temp", b"3.0")])  # plain listener, same broker
        await _until(lambda: any(isinstance(g, Chunk) for g in got))


async def test_sample_acl_lets_only_the_engine_publish_commands(
    mosquitto_factory: Any, tmp_path: Path
) -> None:
    root = Path(__file__).resolve().parents[2]
    pw = tmp_path / "passwd"
    for i, user in enumerate(("engine", "operator", "sensor-gw")):
        subprocess.run(
            ["mosquitto_passwd", *(["-c"] if i == 0 else []), "-b", str(pw), user, "pw"], check=True
        )
    acl = root / "configs" / "mosquitto" / "machinewatch.acl"
    broker = mosquitto_factory(f"password_file {pw}\nacl_file {acl}\nallow_anonymous false")
    topic = "machinewatch/s1/p1/command"
    got: list[bytes] = []
    async with aiomqtt.Client("127.0.0.1", broker.port, username="operator", password="pw") as watcher:
        await watcher.subscribe("machinewatch/#", qos=1)
        for user in ("operator", "sensor-gw", "engine"):
            await _publish(broker.port, [(topic, user.encode())], username=user, password="pw")
        await _publish(
            broker.port, [("machinewatch/s1/_engine/ack", b"p1")], username="operator", password="pw"
        )

        async def read() -> None:
            async for m in watcher.messages:
                got.append(bytes(m.payload))  # type: ignore[arg-type]
                if m.payload == b"p1":
                    return

        await asyncio.wait_for(read(), 10)
    assert got == [b"engine", b"p1"]  # operator and sensor gateway may not command the plant


async def _loop_reads_for(port: int, topic: str, burst: bool, n: int = 300) -> tuple[int, list[bytes]]:
    """Receive ``n`` QoS 0 messages that wait in the socket together; return how many
    ``loop_read`` calls (readable events) took them, and the payloads in arrival order."""
    got: list[bytes] = []
    async with aiomqtt.Client("127.0.0.1", port) as sub:
        await sub.subscribe(topic, qos=0)
        if burst:
            assert read_in_bursts(sub)
        paho = sub._client
        inner = paho.loop_read
        calls = 0

        def counted(max_packets: int = 1) -> Any:
            nonlocal calls
            calls += 1
            return inner(max_packets)

        paho.loop_read = counted
        async with aiomqtt.Client("127.0.0.1", port) as pub:
            for i in range(n):
                await pub.publish(topic, str(i).encode(), qos=0)
            await asyncio.sleep(0.05)
            time.sleep(0.3)  # the loop is busy: the broker's deliveries pile up in the socket
        async with asyncio.timeout(10):
            async for msg in sub.messages:
                got.append(bytes(msg.payload))  # type: ignore[arg-type]
                if len(got) == n:
                    break
    return calls, got


async def test_packets_waiting_in_the_socket_are_read_in_one_burst(mosquitto: Any) -> None:
    """paho reads one packet per readable event when nothing is in flight: 300 messages waiting
    in the socket took ~300 event-loop turns and reached the engine one by one. Read in bursts
    they take a handful, arrive complete and in order (the MQTT source does this)."""
    plain, got_plain = await _loop_reads_for(mosquitto.port, "t/plain", burst=False)
    burst, got_burst = await _loop_reads_for(mosquitto.port, "t/burst", burst=True)
    expected = [str(i).encode() for i in range(300)]
    assert got_plain == expected and got_burst == expected
    print(f"\n300 messages waiting: {plain} loop_read calls (stock paho), {burst} in bursts")
    assert plain >= 250, plain  # stock paho: about one call per message
    assert burst <= 30, burst  # 64 packets per call
    assert not read_in_bursts(object()), "an unknown client is left as it is"
