"""Actuators: the shared policy (pure and wrapped), MQTT (retained command, Last Will, safe state)
on a real Mosquitto, Modbus TCP against pymodbus's own server, webhook against a local aiohttp
server."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiomqtt
import pytest
from aiohttp import web
from servers import free_port

from machinewatch.connectors.actuators.modbus import ModbusActuator
from machinewatch.connectors.actuators.mqtt import MqttActuator
from machinewatch.connectors.actuators.policy import PolicedActuator, PolicyCore
from machinewatch.connectors.actuators.webhook import WebhookActuator
from machinewatch.connectors.base import Actuator
from machinewatch.engine.config import Config, load_config_text
from machinewatch.engine.errors import ConfigError, ConnectorError
from machinewatch.engine.registry import registry
from machinewatch.engine.types import AlarmEvent

EV = AlarmEvent("s1", "p1", 1, "NORMAL", "ALARM", "score 9 vs threshold 1", score=9.0, threshold=1.0)


def config(act: str) -> Config:
    return load_config_text(f"""
[engine]
site = "s1"
[alarm]
actuators = ["out"]
[assets.p1.streams.t]
kind = "scalar"
rate_hz = 1
[assets.p2.streams.t]
kind = "scalar"
rate_hz = 1
[sources.x]
kind = "mqtt"
url = "mqtt://127.0.0.1:1"
[actuators.out]
{act}
""")


# -- policy -------------------------------------------------------------------------------------


def test_policy_idempotent_min_times_rate_limit() -> None:
    p = PolicyCore(min_on_s=10, min_off_s=5, max_changes_per_min=3)
    assert p.decide("a", True, 0.0) == "send"
    assert p.decide("a", True, 1.0) == "same"
    assert p.decide("a", False, 4.0) == 10.0  # held on for min_on_s
    assert p.decide("a", False, 10.0) == "send"
    assert p.decide("a", True, 12.0) == 15.0  # held off for min_off_s
    assert p.decide("a", True, 15.0) == "send"
    assert p.decide("a", False, 25.0) == 60.0  # a 4th change within a minute waits
    assert p.decide("b", True, 25.0) == "send"  # per asset


class Recorder(Actuator):
    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__("rec", options or {}, None)  # type: ignore[arg-type]
        self.calls: list[tuple[str, bool]] = []
        self.safe = 0

    async def set(self, asset: str, energised: bool, event: AlarmEvent | None) -> None:
        self.calls.append((asset, energised))

    async def safe_state(self) -> None:
        self.safe += 1


async def test_policed_actuator_defers_latest_wish_and_goes_safe() -> None:
    now = [0.0]
    inner = Recorder({"min_on_s": 10.0})
    act = PolicedActuator(inner, clock=lambda: now[0])
    assert await act.set("p1", True, EV) is True
    assert await act.set("p1", True, EV) is False  # idempotent
    assert await act.set("p1", False, None) is False  # deferred by min_on_s
    assert act.deferred == 1 and inner.calls == [("p1", True)]
    now[0] = 10.0
    act._retry("p1")  # what the loop timer does at t = 10 s
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert inner.calls == [("p1", True), ("p1", False)]
    await act.safe_state()
    assert inner.safe == 1 and await act.set("p1", True, EV) is False  # closed


def test_every_actuator_accepts_the_policy_keys() -> None:
    pol = "min_on_s = 1.0\nmin_off_s = 1.0\nmax_changes_per_min = 5\nsafe_state = false"
    config(f'kind = "mqtt"\nurl = "mqtt://127.0.0.1:1"\n{pol}')
    config(f'kind = "modbus"\nhost = "127.0.0.1"\noutputs = {{p1 = 0}}\n{pol}')
    config(f'kind = "webhook"\nurl = "http://127.0.0.1:1/x"\n{pol}')
    with pytest.raises(ConfigError, match="min_on_s"):
        config('kind = "webhook"\nurl = "http://127.0.0.1:1/x"\nmin_on_s = -1')
    assert {"mqtt", "modbus", "webhook", "log"} <= set(registry.names("actuators"))


# -- mqtt ---------------------------------------------------------------------------------------


async def _retained(port: int, topic: str) -> dict[str, Any]:
    async with aiomqtt.Client("127.0.0.1", port) as c:
        await c.subscribe(topic, qos=1)
        async with asyncio.timeout(5):
            async for m in c.messages:
                assert m.retain
                return dict(json.loads(bytes(m.payload)))  # type: ignore[arg-type]
    raise AssertionError("unreachable")


async def test_mqtt_actuator_retained_command_safe_state_and_last_will(mosquitto_factory: Any) -> None:
    broker = mosquitto_factory()
    cfg = config(f'kind = "mqtt"\nurl = "{broker.url}"')
    act = MqttActuator("out", cfg.actuators["out"].options, cfg)
    async with act:
        await act.set("p1", True, EV)
        got = await _retained(broker.port, "machinewatch/s1/p1/command")
        assert got["energised"] is True and got["to"] == "ALARM" and got["score"] == 9.0
        await act.safe_state()
        assert (await _retained(broker.port, "machinewatch/s1/p1/command"))["energised"] is False
        await act.set("p2", True, EV)
        # the engine dies: its socket closes without DISCONNECT, and the broker sends the Will
        import socket

        act._clients["p2"]._client.socket().shutdown(socket.SHUT_RDWR)
        async with asyncio.timeout(10):
            while (await _retained(broker.port, "machinewatch/s1/p2/command"))["energised"]:
                await asyncio.sleep(0.05)
        assert "last will" in (await _retained(broker.port, "machinewatch/s1/p2/command"))["reason"]
        act._clients.pop("p2", None)
        await act.set("p2", True, EV)  # reconnects on demand
        assert (await _retained(broker.port, "machinewatch/s1/p2/command"))["energised"] is True


async def test_mqtt_actuator_unreachable_broker_is_connector_error() -> None:
    cfg = config(f'kind = "mqtt"\nurl = "mqtt://127.0.0.1:{free_port()}"')
    act = MqttActuator("out", cfg.actuators["out"].options, cfg)
    async with act:
        with pytest.raises(ConnectorError):
            await act.set("p1", True, EV)


# -- modbus -------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def modbus_server(port: int) -> Any:
    from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
    from pymodbus.server import ModbusTcpServer

    # pymodbus >= 3.10 data blocks start at address 1 (protocol address 0 = block address 1)
    dev = ModbusDeviceContext(
        co=ModbusSequentialDataBlock(1, [False] * 16), hr=ModbusSequentialDataBlock(1, [0] * 16)
    )
    server = ModbusTcpServer(ModbusServerContext(devices={1: dev}, single=False), address=("127.0.0.1", port))
    task = asyncio.create_task(server.serve_forever())
    try:
        async with asyncio.timeout(5):
            while not server.is_active():
                await asyncio.sleep(0.01)
        yield dev
    finally:
        await server.shutdown()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def _read(port: int, kind: str, addr: int, n: int) -> list[Any]:
    from pymodbus.client import AsyncModbusTcpClient

    c = AsyncModbusTcpClient("127.0.0.1", port=port)
    await c.connect()
    try:
        if kind == "coil":
            return list((await c.read_coils(addr, count=n)).bits[:n])
        return list((await c.read_holding_registers(addr, count=n)).registers)
    finally:
        c.close()


async def test_modbus_coil_and_register(tmp_path: Any) -> None:
    port = free_port()
    async with modbus_server(port):
        cfg = config(f'kind = "modbus"\nhost = "127.0.0.1"\nport = {port}\noutputs = {{p1 = 3, p2 = 4}}')
        act = ModbusActuator("out", cfg.actuators["out"].options, cfg)
        async with act:
            await act.set("p1", True, EV)
            assert await _read(port, "coil", 3, 2) == [True, False]
            await act.safe_state()
            assert await _read(port, "coil", 3, 2) == [False, False]
        cfg = config(
            f'kind = "modbus"\nhost = "127.0.0.1"\nport = {port}\noutputs = {{p1 = 5}}\n'
            'mode = "register"\non_value = 77'
        )
        act = ModbusActuator("out", cfg.actuators["out"].options, cfg)
        async with act:
            await act.set("p1", True, EV)
            assert await _read(port, "reg", 5, 1) == [77]
            with pytest.raises(ConnectorError, match="no output address"):
                await act.set("p2", True, EV)


async def test_modbus_unreachable_is_connector_error() -> None:
    cfg = config(
        f'kind = "modbus"\nhost = "127.0.0.1"\nport = {free_port()}\noutputs = {{p1 = 0}}\ntimeout_s = 0.5'
    )
    act = ModbusActuator("out", cfg.actuators["out"].options, cfg)
    async with act:
        with pytest.raises(ConnectorError):
            await act.set("p1", True, EV)


# -- webhook ------------------------------------------------------------------------------------


async def test_webhook_posts_event_json_and_safe_state() -> None:
    got: list[dict[str, Any]] = []
    status = [200]

    async def hook(req: web.Request) -> web.Response:
        got.append(await req.json())
        assert req.headers.get("Authorization") is None
        return web.Response(status=status[0])

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        cfg = config(f'kind = "webhook"\nurl = "http://127.0.0.1:{port}/hook"')
        async with WebhookActuator("out", cfg.actuators["out"].options, cfg) as act:
            await act.set("p1", True, EV)
            assert got[-1]["asset"] == "p1" and got[-1]["energised"] is True and got[-1]["to"] == "ALARM"
            await act.safe_state()
            assert got[-1] == {"asset": "p1", "energised": False, "site": "s1", "reason": "safe state"}
            assert len(got) == 2  # p2 never driven: nothing sent for it
            status[0] = 500
            with pytest.raises(ConnectorError, match="HTTP 500"):
                await act.set("p1", True, EV)
    finally:
        await runner.cleanup()
