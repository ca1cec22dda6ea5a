"""The engine says ``online`` only once its data subscription is in place.

Regression: under load the status link published the retained ``online`` before the MQTT
source's SUBSCRIBE reached the broker; a publisher that waited for ``online`` (the libfaketime
clock test) lost its first two QoS 1 messages, which the broker had no subscription to route to
(mosquitto log: ``Received PUBLISH from rel-clock (m1 ...)`` before ``Received SUBSCRIBE from
machinewatch-rel-vm``). Recording fakes, no broker: the order is checked, not the timing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from machinewatch.connectors.sources.mqtt import MqttSource
from machinewatch.engine.config import load_config_text
from machinewatch.engine.status import EngineStatus

CFG = """
[assets.p1.streams.t]
kind = "scalar"
rate_hz = 1
[sources.plant]
kind = "mqtt"
url = "mqtt://127.0.0.1:1883"
"""


class FakeClient:
    """An ``aiomqtt.Client`` stand-in: records calls; ``suback`` gates every ``subscribe``."""

    def __init__(self, log: list[tuple[str, str]], suback: asyncio.Event, **kw: Any) -> None:
        self.log = log
        self.suback = suback

    async def __aenter__(self) -> FakeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def subscribe(self, topic: str, qos: int = 0) -> None:
        await self.suback.wait()
        self.log.append(("subscribe", topic))

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        self.log.append(("publish", payload.decode() if topic.endswith("/status") else topic))

    @property
    def messages(self) -> AsyncIterator[Any]:
        async def never() -> AsyncIterator[Any]:
            await asyncio.Event().wait()
            yield None  # pragma: no cover

        return never()


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_mqtt_source_is_ready_only_after_the_suback() -> None:
    log: list[tuple[str, str]] = []
    suback = asyncio.Event()
    src = MqttSource(
        "plant", {"url": "mqtt://127.0.0.1:1883"}, load_config_text(CFG), lambda **kw: FakeClient(log, suback)
    )
    it = aiter(src.chunks())
    reading = asyncio.ensure_future(anext(it))
    ready = asyncio.ensure_future(src.ready())
    await _settle()
    assert not ready.done() and log == []  # connected, SUBSCRIBE sent, no SUBACK yet
    suback.set()
    await asyncio.wait_for(ready, 1.0)
    assert log == [("subscribe", "machinewatch/+/+/+")]
    reading.cancel()
    await asyncio.gather(reading, return_exceptions=True)


async def test_online_waits_for_the_sources_and_commands_flow_meanwhile() -> None:
    log: list[tuple[str, str]] = []
    sources_ready = asyncio.Event()
    suback = asyncio.Event()
    suback.set()
    st = EngineStatus(
        {"url": "mqtt://127.0.0.1:1883"},
        "s1",
        "sources.plant",
        dict,
        print,
        heartbeat_s=60.0,
        client_factory=lambda **kw: FakeClient(log, suback),
        ready=sources_ready.wait,
    )
    stop = asyncio.Event()
    run = asyncio.create_task(st.run(stop))
    await _settle()
    # the command topics are subscribed (an operator can ack), but nobody is told "online"
    assert ("subscribe", "machinewatch/s1/_engine/ack") in log
    assert ("publish", "online") not in log
    sources_ready.set()
    await _settle()
    assert log.index(("publish", "online")) > log.index(("subscribe", "machinewatch/s1/_engine/shelve"))
    stop.set()
    await asyncio.wait_for(run, 2.0)
    assert log[-1] == ("publish", "offline")


async def test_engine_status_link_waits_for_every_source() -> None:
    from machinewatch.engine.pipeline import Engine

    log: list[tuple[str, str]] = []
    suback = asyncio.Event()
    cfg = load_config_text(CFG)
    src = MqttSource("plant", {"url": "mqtt://127.0.0.1:1883"}, cfg, lambda **kw: FakeClient(log, suback))
    link = Engine(cfg, install_signals=False)._status_link([src])
    assert link is not None and link.ready is not None
    waiting = asyncio.ensure_future(link.ready())
    await _settle()
    assert not waiting.done()
    src.subscribed.set()
    await asyncio.wait_for(waiting, 1.0)
