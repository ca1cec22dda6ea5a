"""Engine presence and operator commands over MQTT, and operator commands through the state dir.

Topics (prefix ``machinewatch/<site>/_engine``):

``.../<gateway>/status``     retained ``online`` once connected and every source is ready
                             (subscribed: data published from then on is not lost),
                             ``offline`` on a clean stop, and ``offline`` through the
                             broker's Last Will when the engine dies
``.../<gateway>/heartbeat``  every ``heartbeat_s``: JSON ``{"t_ns", "uptime_s", "gateway",
                             "assets": [...], "counters": {...}}``
``.../ack``                  operator commands in: ``{"asset": "pump1", "by": "alice"}`` (or the
                             asset name)
``.../shelve``               ``{"asset": "pump1", "duration_s": 600}`` (0 = unshelve)

Status and heartbeat are per gateway (``engine.gateway_id``), so the engines of a fleet do not
overwrite each other's retained status. Commands are per site: every gateway of the site
receives them and the one that runs the asset applies them (the others count
``commands_not_owned``), so an operator need not know which gateway runs which asset.

The broker ACL in ``configs/mosquitto/`` lets operators publish only ``ack``/``shelve`` and only
the engine publish command and status topics. Without MQTT, ``machinewatch ack`` drops a command
file into ``<state_dir>/commands/`` that the engine picks up within a second.
"""

from __future__ import annotations

__all__ = ["CommandDir", "EngineStatus", "parse_command", "status_prefix"]

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiomqtt

from machinewatch.connectors.mqttcommon import Backoff, client_kwargs

log = logging.getLogger(__name__)


def status_prefix(site: str) -> str:
    """``machinewatch/<site>/_engine``."""
    return f"machinewatch/{site}/_engine"


def parse_command(kind: str, payload: bytes) -> dict[str, Any] | None:
    """An ack/shelve payload -> ``{"cmd", "asset", ...}``; ``None`` when malformed.

    >>> parse_command("ack", b"pump1")
    {'cmd': 'ack', 'asset': 'pump1', 'by': 'mqtt'}
    >>> parse_command("shelve", b'{"asset": "p", "duration_s": 60}')["duration_s"]
    60.0
    """
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    obj: Any
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError:
            return None
        if not isinstance(obj, dict):
            return None
    else:
        obj = {"asset": text}
    asset = obj.get("asset")
    if not isinstance(asset, str) or not asset or len(asset) > 64:
        return None
    cmd: dict[str, Any] = {"cmd": kind, "asset": asset, "by": str(obj.get("by", "mqtt"))[:64]}
    if kind == "shelve":
        d = obj.get("duration_s", 0)
        if isinstance(d, bool) or not isinstance(d, int | float) or not d >= 0:
            return None
        cmd["duration_s"] = float(d)
    return cmd


class CommandDir:
    """Command files in ``<state_dir>/commands`` (written by ``machinewatch ack``)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / "commands"

    def put(self, cmd: Mapping[str, Any]) -> Path:
        """Write one command atomically (tmp + rename)."""
        self.path.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns()}-{os.getpid()}.json"
        tmp = self.path / f".{name}.tmp"
        tmp.write_text(json.dumps(dict(cmd)))
        final = self.path / name
        os.replace(tmp, final)
        return final

    def take(self) -> list[dict[str, Any]]:
        """Every pending command, oldest first; the files are removed."""
        if not self.path.is_dir():
            return []
        out = []
        for f in sorted(self.path.glob("*.json")):
            try:
                obj = json.loads(f.read_text())
            except (OSError, ValueError):
                obj = None
            f.unlink(missing_ok=True)
            if (
                isinstance(obj, dict)
                and isinstance(obj.get("asset"), str)
                and obj.get("cmd") in ("ack", "shelve", "unshelve")
            ):
                out.append(obj)
        return out


class EngineStatus:
    """Status (retained, Last Will), heartbeat and the ack/shelve topics on one MQTT connection.

    Parameters
    ----------
    options
        The options of the engine's MQTT source (broker URL, TLS, credentials).
    site
        The engine's site (topic prefix).
    counters
        Returns the counters to put in each heartbeat.
    on_command
        Called on the loop with each valid command dict.
    gateway
        This engine's gateway id (status and heartbeat topics, ``""``: none, as before fleets).
    client_id
        The MQTT client id (default ``machinewatch-<site>[-<gateway>]-status``).
    assets
        The assets this engine runs (in each heartbeat).
    ready
        Awaited before ``online`` is published: the engine's sources are subscribed. Commands
        are received meanwhile. Default: ready at once.
    """

    def __init__(
        self,
        options: Mapping[str, Any],
        site: str,
        path: str,
        counters: Callable[[], Mapping[str, int]],
        on_command: Callable[[dict[str, Any]], object],
        heartbeat_s: float = 10.0,
        client_factory: Callable[..., Any] = aiomqtt.Client,
        *,
        gateway: str = "",
        client_id: str | None = None,
        assets: Sequence[str] = (),
        ready: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.options = options
        self.commands_prefix = status_prefix(site)
        self.prefix = f"{self.commands_prefix}/{gateway}" if gateway else self.commands_prefix
        self.gateway = gateway
        self.assets = list(assets)
        self.path = path
        self.counters = counters
        self.on_command = on_command
        self.heartbeat_s = heartbeat_s
        self.client_factory = client_factory
        self.started = time.monotonic()
        gw = f"-{gateway}" if gateway else ""
        self.client_id = client_id or str(options.get("client_id", f"machinewatch-{site}{gw}")) + "-status"
        self._client: Any = None
        self.ready = ready

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until ``stop`` is set, then publish ``offline`` and disconnect."""
        kw = client_kwargs(self.options, self.path)
        will = aiomqtt.Will(f"{self.prefix}/status", b"offline", qos=1, retain=True)
        backoff = Backoff(0.1, 2.0)
        while not stop.is_set():
            try:
                async with self.client_factory(
                    **kw, identifier=self.client_id, will=will, clean_session=True
                ) as c:
                    self._client = c
                    await c.subscribe(f"{self.commands_prefix}/ack", qos=1)
                    await c.subscribe(f"{self.commands_prefix}/shelve", qos=1)
                    backoff.reset()
                    beat: asyncio.Task[Any] = asyncio.create_task(self._announce(c))
                    reader: asyncio.Task[Any] = asyncio.create_task(self._read(c))
                    stopper: asyncio.Task[Any] = asyncio.create_task(stop.wait())
                    done, _ = await asyncio.wait({beat, reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
                    for t in (beat, reader, stopper):
                        t.cancel()
                    for t in done:
                        if t is not stopper and t.exception() is not None:
                            raise t.exception()  # type: ignore[misc]
                    if stop.is_set():
                        await asyncio.wait_for(
                            c.publish(f"{self.prefix}/status", b"offline", qos=1, retain=True), 3.0
                        )
                        return
            except (aiomqtt.MqttError, TimeoutError) as exc:
                log.debug("status link: %s", exc)
            self._client = None
            try:
                await asyncio.wait_for(stop.wait(), backoff.next())
            except TimeoutError:
                pass

    async def _announce(self, c: Any) -> None:
        """``online`` once the sources are ready, then a heartbeat every ``heartbeat_s``."""
        # "online" is what a publisher or an orchestrator waits for before sending data: said
        # before the data subscription was acknowledged, the first messages of a new session
        # went nowhere (the broker routes a message only to the subscriptions it has then)
        if self.ready is not None:
            await self.ready()
        await c.publish(f"{self.prefix}/status", b"online", qos=1, retain=True)
        while True:
            body = {
                "t_ns": time.time_ns(),
                "uptime_s": round(time.monotonic() - self.started, 1),
                "gateway": self.gateway,
                "assets": self.assets,
                "counters": dict(self.counters()),
            }
            await c.publish(f"{self.prefix}/heartbeat", json.dumps(body).encode(), qos=0)
            await asyncio.sleep(self.heartbeat_s)

    async def _read(self, c: Any) -> None:
        async for msg in c.messages:
            kind = str(msg.topic).rsplit("/", 1)[-1]
            payload = msg.payload if isinstance(msg.payload, bytes | bytearray) else str(msg.payload).encode()
            cmd = parse_command(kind, bytes(payload))
            if cmd is None:
                log.warning("status link: malformed %s command ignored", kind)
                continue
            if cmd["cmd"] == "shelve" and cmd["duration_s"] == 0:
                cmd["cmd"] = "unshelve"
            self.on_command(cmd)
