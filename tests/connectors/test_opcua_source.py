"""The OPC UA source against a real asyncua server on loopback.

The server's standard address space takes seconds to build, so one server serves the whole module:
it runs on its own event loop in a thread (as a PLC would, apart from our loop), with a plain and a
Basic256Sha256 SignAndEncrypt endpoint, and is stopped and started again in place for the
reconnect tests. Certificates are made here with ``cryptography``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import math
import socket
import sqlite3
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeAlias, TypeVar, cast

import numpy as np
import pytest
from asyncua import Server, ua
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from servers import free_port

from machinewatch.connectors.base import Rejected, StreamDown
from machinewatch.connectors.sinks.local import read_summaries
from machinewatch.connectors.sources.opcua import HeldStream, OpcuaSource
from machinewatch.engine.config import Config, load_config_text
from machinewatch.engine.errors import ConfigError
from machinewatch.engine.pipeline import Engine
from machinewatch.engine.types import Chunk

T = TypeVar("T")
Item: TypeAlias = Chunk | Rejected | StreamDown
VARS = {"Temperature": 0.0, "Current": ua.Variant(0, ua.VariantType.Int16), "Label": "idle"}


def make_cert(folder: Path, name: str, uri: str) -> tuple[Path, Path]:
    """A self-signed OPC UA application certificate (DER) and its key (PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    usage = x509.KeyUsage(True, True, True, True, False, False, False, False, False)
    sans = [
        x509.UniformResourceIdentifier(uri),
        x509.DNSName("localhost"),
        x509.DNSName(socket.gethostname()),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    crt, pem = folder / f"{name}.der", folder / f"{name}.pem"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return crt, pem


class OpcServer:
    """An asyncua server on its own loop in a thread; ``call`` runs a coroutine there."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"opc.tcp://127.0.0.1:{self.port}/mw/"
        self.server_cert, self.server_key = make_cert(folder, "server", "urn:mw:test-server")
        self.client_cert, self.client_key = make_cert(folder, "client", "urn:machinewatch:client")
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="opcua-server", daemon=True)
        self.vars: dict[str, Any] = {}

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def start(self) -> None:
        self.thread.start()
        self.run(self._init())

    async def _init(self) -> None:
        srv = self.server = Server()
        await srv.init()
        srv.set_endpoint(self.url)
        await srv.set_application_uri("urn:mw:test-server")
        srv.set_security_policy(
            [ua.SecurityPolicyType.NoSecurity, ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt]
        )
        await srv.load_certificate(str(self.server_cert))
        await srv.load_private_key(str(self.server_key))
        idx = await srv.register_namespace("urn:mw:test")
        obj = await srv.nodes.objects.add_object(idx, "Pump1")
        for name, init in VARS.items():
            self.vars[name] = await obj.add_variable(ua.NodeId(f"Pump1.{name}", idx), name, init)
        await srv.start()

    async def write(
        self,
        name: str,
        value: Any,
        status: int = ua.StatusCodes.Good,
        source_time: dt.datetime | None = None,
    ) -> None:
        """Write one value (as the variable's type) with a status and a source timestamp."""
        var = self.vars[name]
        vtype = ua.VariantType.Int16 if name == "Current" else None
        dv = ua.DataValue(
            ua.Variant(value, vtype) if vtype else ua.Variant(value),
            StatusCode=ua.StatusCode(status),
            SourceTimestamp=source_time or dt.datetime.now(dt.UTC),
            ServerTimestamp=dt.datetime.now(dt.UTC),
        )
        await self.call(var.write_value(dv))

    async def stop_endpoint(self) -> None:
        await self.call(self.server.stop())

    async def start_endpoint(self) -> None:
        await self.call(self.server.start())

    def close(self) -> None:
        try:
            self.run(self.server.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture(scope="module")
def opc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpcServer]:
    srv = OpcServer(tmp_path_factory.mktemp("opcua"))
    srv.start()
    try:
        yield srv
    finally:
        srv.close()


def config_text(opc: OpcServer, state: Path, source_extra: str = "", rate_hz: float = 20.0) -> str:
    return f"""
[engine]
state_dir = "{state}"
summary_interval_s = 1.0
[model]
learn_windows = 10
[assets.pump1]
primary_stream = "temp"
[assets.pump1.streams.temp]
kind = "temperature"
rate_hz = {rate_hz}
window_samples = 10
hop_samples = 5
flatline_p2p = 0.0
[assets.pump1.streams.current]
kind = "scalar"
rate_hz = {rate_hz}
window_samples = 10
hop_samples = 5
flatline_p2p = 0.0
[assets.pump1.streams.label]
kind = "scalar"
rate_hz = {rate_hz}
window_samples = 10
hop_samples = 5
[sources.plc]
kind = "opcua"
url = "{opc.url}"
publishing_interval_ms = 50
watchdog_interval_s = 0.3
timeout_s = 1.0
reconnect_min_s = 0.05
reconnect_max_s = 0.2
{source_extra}
[[sources.plc.nodes]]
node_id = "ns=2;s=Pump1.Temperature"
stream = "pump1/temp"
[[sources.plc.nodes]]
node_id = "ns=2;s=Pump1.Current"
stream = "pump1/current"
scale = 0.1
offset = 1.0
[[sources.plc.nodes]]
node_id = "ns=2;s=Pump1.Label"
stream = "pump1/label"
[sinks.local]
kind = "local"
"""


def make_source(opc: OpcServer, tmp_path: Path, extra: str = "hold_last_value = false") -> OpcuaSource:
    cfg = load_config_text(config_text(opc, tmp_path, extra))
    return OpcuaSource("plc", cfg.sources["plc"].options, cfg)


async def until(it: AsyncIterator[Item], done: Callable[[Item], bool], timeout: float = 10.0) -> list[Item]:
    """Items up to and including the first one ``done`` accepts (fails after ``timeout``)."""
    out: list[Item] = []
    try:
        async with asyncio.timeout(timeout):
            async for item in it:
                out.append(item)
                if done(item):
                    return out
    except TimeoutError:
        raise AssertionError(f"no such item within {timeout} s; got {out[-20:]}") from None
    raise AssertionError(f"source ended without the item; got {out[-20:]}")


def chunk_of(sid: str, value: float | None = None) -> Callable[[Item], bool]:
    def ok(i: Item) -> bool:
        return isinstance(i, Chunk) and i.stream_id == sid and (value is None or float(i.values[-1]) == value)

    return ok


async def started(src: OpcuaSource, opc: OpcServer) -> AsyncGenerator[Item, None]:
    """The source's iterator once the temperature delivered its first value (the server's values
    are reset first: tests share the server)."""
    await opc.write("Temperature", 20.0)
    await opc.write("Current", 0)
    it = cast(AsyncGenerator[Item, None], aiter(src.chunks()))
    await until(it, chunk_of("pump1/temp"))
    return it


async def test_values_arrive_scaled_with_their_source_time(opc: OpcServer, tmp_path: Path) -> None:
    src = make_source(opc, tmp_path)
    async with src:
        it = await started(src, opc)
        try:
            when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
            await opc.write("Temperature", 21.5, source_time=when)
            got = await until(it, chunk_of("pump1/temp", 21.5))
            c = got[-1]
            assert isinstance(c, Chunk) and c.values.dtype == np.float32 and c.values.shape == (1,)
            assert c.t0_ns == int(when.timestamp()) * 10**9 + when.microsecond * 1000
            assert c.rate_hz == 20.0
            await opc.write("Current", 123)
            c = (await until(it, chunk_of("pump1/current", float(np.float32(13.3)))))[-1]
            assert isinstance(c, Chunk) and c.values[0] == np.float32(123 * 0.1 + 1.0)
            await opc.write("Label", "running")
            rej = (await until(it, lambda i: isinstance(i, Rejected) and i.where == "pump1/label"))[-1]
            assert isinstance(rej, Rejected) and (rej.reason, rej.detail) == ("non_numeric", "str")
            await opc.write("Temperature", math.nan)
            rej = (await until(it, lambda i: isinstance(i, Rejected) and i.reason == "not_finite"))[-1]
            assert isinstance(rej, Rejected) and rej.where == "pump1/temp"
            await opc.write("Temperature", 22.0, source_time=dt.datetime(2090, 1, 1, tzinfo=dt.UTC))
            rej = (await until(it, lambda i: isinstance(i, Rejected) and i.reason == "bad_timestamp"))[-1]
            assert isinstance(rej, Rejected) and rej.where == "pump1/temp"
        finally:
            await it.aclose()


async def test_bad_status_is_stream_down_then_data_resumes_after_a_gap(
    opc: OpcServer, tmp_path: Path
) -> None:
    src = make_source(opc, tmp_path)
    async with src:
        it = await started(src, opc)
        try:
            await opc.write("Temperature", 30.0)
            before = (await until(it, chunk_of("pump1/temp", 30.0)))[-1]
            await opc.write("Temperature", 31.0, status=ua.StatusCodes.BadSensorFailure)
            down = (await until(it, lambda i: isinstance(i, StreamDown)))[-1]
            assert down == StreamDown("pump1/temp", "bad_status", "BadSensorFailure")
            await opc.write("Temperature", 32.0)
            after = (await until(it, chunk_of("pump1/temp", 32.0)))[-1]
            assert isinstance(before, Chunk) and isinstance(after, Chunk)
            assert after.seq >= before.seq + 2  # a new run: the engine's buffer never stitches across it
        finally:
            await it.aclose()


async def test_server_stop_is_stream_down_for_every_stream_and_restart_resumes(
    opc: OpcServer, tmp_path: Path
) -> None:
    src = make_source(opc, tmp_path)
    async with src:
        it = await started(src, opc)
        try:
            await opc.stop_endpoint()
            downs = await until(it, lambda i: isinstance(i, StreamDown) and i.stream_id == "pump1/label")
            down = [i for i in downs if isinstance(i, StreamDown)]
            assert [d.stream_id for d in down] == ["pump1/temp", "pump1/current", "pump1/label"]
            assert {d.reason for d in down} == {"disconnected"}
            await opc.start_endpoint()
            await opc.write("Temperature", 40.0)
            await until(it, chunk_of("pump1/temp", 40.0))
            assert src.connects == 2
        finally:
            await it.aclose()


async def test_a_frozen_server_is_noticed_by_the_watchdog(opc: OpcServer, tmp_path: Path) -> None:
    src = make_source(opc, tmp_path)
    release = threading.Event()
    async with src:
        it = await started(src, opc)
        try:
            # the server's loop hangs (a frozen PLC: socket open, nothing answers) until released
            opc.loop.call_soon_threadsafe(release.wait, 20.0)
            try:
                down = (await until(it, lambda i: isinstance(i, StreamDown), timeout=8.0))[-1]
            finally:
                release.set()
            assert isinstance(down, StreamDown) and down.reason == "disconnected"
            await until(it, chunk_of("pump1/temp"))  # back once the server answers again
        finally:
            await it.aclose()


async def test_held_values_fill_the_stream_grid(opc: OpcServer, tmp_path: Path) -> None:
    src = make_source(opc, tmp_path, extra="hold_last_value = true")
    async with src:
        it = await started(src, opc)
        try:
            await opc.write("Temperature", 50.0)
            await until(it, chunk_of("pump1/temp", 50.0))
            temp: list[Chunk] = []

            def enough(i: Item) -> bool:
                if isinstance(i, Chunk) and i.stream_id == "pump1/temp":
                    temp.append(i)
                return sum(c.values.size for c in temp) >= 10

            await until(it, enough)
            assert all(np.all(c.values == 50.0) for c in temp)  # nothing changed: the value is held
            for a, b in itertools.pairwise(temp):
                assert b.seq == a.seq + 1
                assert b.t0_ns == a.t0_ns + a.values.size * 50_000_000  # on the 20 Hz grid, no gap
        finally:
            await it.aclose()


async def test_signed_and_encrypted_connection(opc: OpcServer, tmp_path: Path) -> None:
    secure = f"""
security_policy = "Basic256Sha256"
security_mode = "SignAndEncrypt"
certificate_file = "{opc.client_cert}"
private_key_file = "{opc.client_key}"
server_certificate_file = "{opc.server_cert}"
hold_last_value = false
"""
    src = make_source(opc, tmp_path, secure)
    async with src:
        it = await started(src, opc)
        try:
            await opc.write("Temperature", 60.0)
            await until(it, chunk_of("pump1/temp", 60.0))
        finally:
            await it.aclose()
    # pinned to the wrong server certificate: no connection, every stream down
    src = make_source(opc, tmp_path, secure.replace(f'"{opc.server_cert}"', f'"{opc.client_cert}"'))
    async with src:
        it = cast(AsyncGenerator[Item, None], aiter(src.chunks()))
        try:
            down = (await until(it, lambda i: isinstance(i, StreamDown)))[-1]
            assert isinstance(down, StreamDown) and down.reason == "disconnected"
            assert src.connects == 0
        finally:
            await it.aclose()


@pytest.mark.parametrize(
    ("extra", "path", "why"),
    [
        ('security_policy = "Basic128"', "sources.plc.security_policy", "must be one of"),
        ('security_mode = "Sign"', "sources.plc.security_mode", "must be None with security_policy None"),
        ('security_policy = "Basic256Sha256"', "sources.plc.security_mode", "must be Sign or SignAndEncrypt"),
        (
            'security_policy = "Basic256Sha256"\nsecurity_mode = "Sign"',
            "sources.plc.certificate_file",
            "is required",
        ),
        ('username = "mw"', "sources.plc.password_env", "needs password_env or password_file"),
        ('password = "hunter2"', "sources.plc.password", "never inline"),
        ("sampling_interval_ms = -5", "sources.plc.sampling_interval_ms", "> 0"),
        ("max_queued_notifications = 0", "sources.plc.max_queued_notifications", ">= 1"),
        ("hold_last_value = 1", "sources.plc.hold_last_value", "true or false"),
        ("sampling_rate = 3", "sources.plc.sampling_rate", "unknown key"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, extra: str, path: str, why: str) -> None:
    fake = type("S", (), {"url": "opc.tcp://127.0.0.1:4841"})()
    with pytest.raises(ConfigError) as err:
        load_config_text(config_text(fake, tmp_path, extra))
    assert any(p.path == path and why in p.reason for p in err.value.problems), err.value.problems


@pytest.mark.parametrize(
    ("old", "new", "path", "why"),
    [
        ('url = "opc.tcp://127.0.0.1:4841"', 'url = "http://x"', "sources.plc.url", "opc.tcp://"),
        ('"ns=2;s=Pump1.Temperature"', '"Pump1.Temperature"', "sources.plc.nodes[0].node_id", "node id"),
        ('"ns=2;s=Pump1.Current"', '"ns=2;s=Pump1.Temperature"', "sources.plc.nodes[1].node_id", "twice"),
        (
            'stream = "pump1/current"',
            'stream = "pump1/nosuch"',
            "sources.plc.nodes[1].stream",
            "names no stream",
        ),
        ("scale = 0.1", "scale = 0", "sources.plc.nodes[1].scale", "not be 0"),
        ("offset = 1.0", 'offset = "1"', "sources.plc.nodes[1].offset", "finite number"),
        ("offset = 1.0", "gain = 2.0", "sources.plc.nodes[1].gain", "unknown key"),
    ],
)
def test_node_errors_name_the_key(tmp_path: Path, old: str, new: str, path: str, why: str) -> None:
    fake = type("S", (), {"url": "opc.tcp://127.0.0.1:4841"})()
    text = config_text(fake, tmp_path)
    assert old in text
    with pytest.raises(ConfigError) as err:
        load_config_text(text.replace(old, new, 1))
    assert any(p.path == path and why in p.reason for p in err.value.problems), err.value.problems


def test_held_stream_places_late_and_jittered_samples_and_restarts_runs() -> None:
    s = 10**9
    h = HeldStream("p/t", 1.0, hold_max_s=5)
    (c,) = h.snapshot(1.0, 10 * s, 100 * s)  # an old value re-sent on subscribing: it is current now
    assert (c.t0_ns, c.seq) == (100 * s, 0)
    (c,) = h.sample(2.0, 101 * s + 400_000_000, 101 * s + 400_000_000)  # jitter: nearest slot
    assert (c.t0_ns, c.values.tolist()) == (101 * s, [2.0])
    (c,) = h.sample(3.0, 101 * s + 600_000_000, 101 * s + 600_000_000)  # same slot: the next one
    assert (c.t0_ns, c.values.tolist()) == (102 * s, [3.0])
    assert h.fill(102 * s + 900_000_000, lag_ns=0) is None  # nothing due yet
    (r,) = h.sample(9.0, 101 * s + 600_000_000, 103 * s)
    assert isinstance(r, Rejected) and r.reason == "duplicate_timestamp"
    c = h.fill(200 * s, lag_ns=0)  # held at most hold_max_s past the last notification
    assert c is not None and (c.t0_ns, c.values.size) == (103 * s, 5)
    assert h.fill(300 * s, lag_ns=0) is None
    (c,) = h.sample(4.0, 300 * s, 300 * s)  # too long without news: a new run, a seq gap
    assert (c.t0_ns, c.seq) == (300 * s, 5)
    assert h.stop() and not h.stop()  # down once
    (c,) = h.snapshot(4.0, 300 * s, 300 * s)  # unchanged after the outage: never back in time
    assert c.t0_ns == 301 * s and c.seq == 7


def test_engine_runs_from_config_with_the_opcua_source(opc: OpcServer, tmp_path: Path) -> None:
    cfg: Config = load_config_text(config_text(opc, tmp_path, "hold_last_value = true"))
    rng = np.random.default_rng(3)

    async def main() -> dict[str, int]:
        engine = Engine(cfg, install_signals=False)
        task = asyncio.create_task(engine.run())
        # a sensor: a new reading whenever the last one came through the engine
        while engine.counters["chunks_in"] < 120:
            seen = engine.counters["chunks_in"]
            await opc.write("Temperature", float(40.0 + rng.normal(0, 0.5)))
            await opc.write("Current", int(rng.integers(100, 110)))
            async with asyncio.timeout(10):
                while engine.counters["chunks_in"] == seen:
                    await asyncio.sleep(0.01)
        engine.stop()
        report = await asyncio.wait_for(task, 30)
        return dict(report.counters)

    c = asyncio.run(main())
    assert c["chunks_in"] >= 120
    db = sqlite3.connect(tmp_path / "machinewatch.db")
    temp = read_summaries(db, "pump1", stream="temp")
    current = read_summaries(db, "pump1", stream="current")
    assert sum(s["windows"] for s in temp) > 0 and sum(s["windows"] for s in current) > 0
    levels = [s[k] for s in temp for k in s if k.endswith("_mean") and "level" in k]
    assert levels and all(35.0 < v < 45.0 for v in levels), temp[-1]


def test_a_shared_fleet_file_subscribes_only_this_gateways_nodes() -> None:
    """Nodes of assets another gateway runs are skipped, not "names no stream" at start-up."""
    from machinewatch.engine.fleet import filter_config

    text = """
[engine]
state_dir = "/tmp/unused"
[assets.p1]
gateway = "gwA"
[assets.p1.streams.temp]
kind = "temperature"
rate_hz = 10
window_samples = 10
[assets.p2]
gateway = "gwB"
[assets.p2.streams.temp]
kind = "temperature"
rate_hz = 10
window_samples = 10
[sources.plc]
kind = "opcua"
url = "opc.tcp://127.0.0.1:4840"
[[sources.plc.nodes]]
node_id = "ns=2;s=P1.Temperature"
stream = "p1/temp"
[[sources.plc.nodes]]
node_id = "ns=2;s=P2.Temperature"
stream = "p2/temp"
"""
    cfg = load_config_text(text)
    for gw, mine in (("gwA", ["p1/temp"]), ("gwB", ["p2/temp"])):
        own = filter_config(cfg, gateway_id=gw)
        src = OpcuaSource("plc", own.sources["plc"].options, own)
        assert [n.stream_id for n in src.nodes] == mine
        assert list(src.streams) == mine
