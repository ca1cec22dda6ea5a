"""``mqtt`` actuator: a retained command per asset on a command topic, QoS 1.

Options
-------
::

    [actuators.relay]
    kind = "mqtt"
    url = "mqtt://127.0.0.1:1883"
    # topic_template = "machinewatch/<site>/<asset>/command"
    # format = "json"          # "json": {"energised": true, "asset": ..., "reason": ..., "event_t_ns": ...}
    #                          # "text": payload_on / payload_off
    # payload_on = "ON"
    # payload_off = "OFF"
    # client_id = "machinewatch-<site>-act-<name>-<gateway>"   (one connection per asset: "-<asset>" appended)
    # plus min_on_s, min_off_s, max_changes_per_min, safe_state (the engine's actuator policy)
    # and url/TLS/credential options (machinewatch.connectors.mqttcommon)

Each asset wired to this actuator gets its own connection whose **Last Will** is the safe-state
command, retained: if the engine dies without a goodbye, the broker itself puts the output in its
safe state. A clean shutdown publishes the safe state explicitly. After a reconnect the current
command is published again (the Will may have fired during the outage).
"""

from __future__ import annotations

__all__ = ["MqttActuator"]

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiomqtt

from machinewatch.connectors.actuators.policy import POLICY_KEYS, policy_problems
from machinewatch.connectors.base import Actuator
from machinewatch.connectors.mqttcommon import COMMON_KEYS, client_kwargs, validate_common
from machinewatch.engine.config import Config
from machinewatch.engine.errors import ConfigProblem, ConnectorError
from machinewatch.engine.fleet import mqtt_client_id
from machinewatch.engine.types import AlarmEvent

log = logging.getLogger(__name__)
DEFAULT_TOPIC = "machinewatch/<site>/<asset>/command"
_KEYS = COMMON_KEYS | POLICY_KEYS | {"topic_template", "format", "payload_on", "payload_off"}


class _EagerClient(aiomqtt.Client):
    """``aiomqtt.Client`` that puts a published command on the socket at once.

    aiomqtt registers paho's socket writer through ``call_soon_threadsafe`` (paho may call it
    from its connect thread), so a command reached the socket two or three loop turns after
    ``publish``, behind whatever else was ready: ~1.5 ms p50 on the busy 2-core bench box
    (bench/e2e_stages.py, "actuator set()" -> "command on the socket"). Called on the loop's
    own thread (and outside paho's callbacks, as paho itself requires) this writes right away
    and registers the writer only for what the socket did not take. It relies on aiomqtt and
    paho internals (``_on_socket_register_write``, ``_loop``, ``loop_write``, ``want_write``);
    anywhere else it falls back to aiomqtt's own path.
    """

    def _on_socket_register_write(self, client: Any, userdata: Any, sock: Any) -> None:
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if not on_loop or not client._in_callback_mutex.acquire(False):
            super()._on_socket_register_write(client, userdata, sock)
            return
        client._in_callback_mutex.release()
        try:
            client.loop_write()  # all written: paho unregisters (a no-op: never added)
        except Exception as exc:  # as aiomqtt's own writer callback: the connection is broken
            if not self._disconnected.done():
                self._disconnected.set_exception(exc)
            return
        if client.want_write():  # the socket took only part: the loop writes the rest
            super()._on_socket_register_write(client, userdata, sock)


class MqttActuator(Actuator):
    """Publishes the output state of each wired asset (see the module docstring)."""

    #: one connection per asset: the engine may send different assets' commands concurrently
    concurrent_assets = True

    def __init__(
        self,
        name: str,
        options: Mapping[str, Any],
        config: Config,
        client_factory: Callable[..., Any] = _EagerClient,
    ) -> None:
        super().__init__(name, options, config)
        o = self.options
        self.template = str(o.get("topic_template", DEFAULT_TOPIC))
        self.format = str(o.get("format", "json"))
        self.payload_on = str(o.get("payload_on", "ON"))
        self.payload_off = str(o.get("payload_off", "OFF"))
        self.safe_on = bool(o.get("safe_state", False))
        self.client_id = mqtt_client_id(o, config, f"machinewatch-{config.engine.site}-act-{name}")
        self.assets = {a.name: a.site for a in config.assets.values() if name in a.alarm.actuators}
        self.client_factory = client_factory
        self.state: dict[str, bool] = {}
        self._clients: dict[str, Any] = {}

    @classmethod
    def validate_options(cls, options: Mapping[str, Any], path: str) -> list[ConfigProblem]:
        probs = [ConfigProblem(f"{path}.{k}", "unknown key") for k in options if k not in _KEYS]
        probs += validate_common(options, path) + policy_problems(options, path)
        if options.get("format", "json") not in ("json", "text"):
            probs.append(ConfigProblem(f"{path}.format", "must be json or text"))
        tpl = options.get("topic_template", DEFAULT_TOPIC)
        if not isinstance(tpl, str) or "<asset>" not in tpl or "+" in tpl or "#" in tpl:
            probs.append(ConfigProblem(f"{path}.topic_template", "must contain <asset> and no wildcard"))
        return probs

    def topic(self, asset: str) -> str:
        """The command topic of ``asset``."""
        site = self.assets.get(asset, self.config.engine.site)
        return self.template.replace("<site>", site).replace("<asset>", asset)

    def payload(self, asset: str, on: bool, event: AlarmEvent | None, reason: str = "") -> bytes:
        """The command payload."""
        if self.format == "text":
            return (self.payload_on if on else self.payload_off).encode()
        obj: dict[str, Any] = {"asset": asset, "energised": on, "t_ns": time.time_ns()}
        if event is not None:
            obj |= {
                "event_t_ns": event.t_ns,
                "from": event.from_state,
                "to": event.to_state,
                "reason": event.reason,
                "score": event.score if event.score == event.score else None,
            }
        elif reason:
            obj["reason"] = reason
        return json.dumps(obj).encode()

    async def _client(self, asset: str) -> Any:
        c = self._clients.get(asset)
        if c is not None:
            return c
        kw = client_kwargs(self.options, f"actuators.{self.name}")
        last = self.payload(asset, self.safe_on, None, "engine offline (last will)")
        will = aiomqtt.Will(self.topic(asset), last, qos=1, retain=True)
        c = self.client_factory(**kw, identifier=f"{self.client_id}-{asset}", will=will, clean_session=True)
        try:
            await c.__aenter__()
        except aiomqtt.MqttError as exc:
            raise ConnectorError(f"mqtt actuator {self.name}: cannot connect: {exc}") from exc
        self._clients[asset] = c
        if asset in self.state:  # re-assert after a reconnect: the Will may have fired meanwhile
            await c.publish(
                self.topic(asset),
                self.payload(asset, self.state[asset], None, "reconnected"),
                qos=1,
                retain=True,
            )
        return c

    async def __aenter__(self) -> MqttActuator:
        for asset in self.assets:
            try:
                await self._client(asset)
            except ConnectorError as exc:  # the broker may come later: connect on first use
                log.warning("%s", exc)
        return self

    async def set(self, asset: str, energised: bool, event: AlarmEvent | None) -> None:
        await self._send(asset, energised, self.payload(asset, energised, event))

    async def _send(self, asset: str, energised: bool, payload: bytes) -> None:
        """Publish retained, QoS 1; a dead connection is dropped and made again once."""
        for attempt in (1, 2):
            c = await self._client(asset)
            try:
                await c.publish(self.topic(asset), payload, qos=1, retain=True)
                self.state[asset] = energised
                return
            except aiomqtt.MqttError as exc:
                await self._drop(asset)
                if attempt == 2:
                    raise ConnectorError(f"mqtt actuator {self.name}: publish failed: {exc}") from exc

    async def _drop(self, asset: str) -> None:
        c = self._clients.pop(asset, None)
        if c is not None:
            try:
                await c.__aexit__(None, None, None)
            except aiomqtt.MqttError:
                pass

    async def safe_state(self) -> None:
        for asset in self.assets:
            try:
                safe = self.payload(asset, self.safe_on, None, "engine stopping")
                await self._send(asset, self.safe_on, safe)
            except ConnectorError as exc:
                log.error("mqtt actuator %s: safe state for %s not published: %s", self.name, asset, exc)

    async def __aexit__(self, *exc: object) -> None:
        for asset in list(self._clients):
            await self._drop(asset)
