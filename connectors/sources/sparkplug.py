"""``sparkplug``: metrics of Sparkplug B edge nodes (SCADA and PLC gateways) over MQTT (aiomqtt).

Options
-------
::

    [sources.scada]
    kind = "sparkplug"
    url = "mqtt://127.0.0.1:1883"
    group_id = "Plant1"                 # the Sparkplug group; "+" = every group
    metrics = [
      # a device metric (DBIRTH/DDATA of spBv1.0/Plant1/.../gw1/plc7) -> one scalar stream
      { edge_node = "gw1", device = "plc7", metric = "Pump1/Temperature", stream = "pump1/temp" },
      # a node metric (NBIRTH/NDATA), with a linear conversion: value * scale + offset
      { edge_node = "gw1", metric = "Line/Speed_rpm", stream = "pump1/speed", scale = 0.016667 },
    ]
    # qos = 1
    # rebirth = false            # ask the edge node for its BIRTH (NCMD "Node Control/Rebirth") when
    #                            # DATA comes before a BIRTH or names an unknown alias
    # rebirth_interval_s = 10    # at most one rebirth request per edge node within this
    # client_id = "machinewatch-<site>-<source name>-<gateway>"   unique per gateway (engine.fleet)
    # max_queued_messages = 20000
    # max_payload_bytes = 4194304
    # max_metrics = 100000       # metrics in one payload
    # max_future_s = 86400       # a metric time further than this in the future is rejected
    # plus url/TLS/credential/backoff options: see machinewatch.connectors.mqttcommon

Behaviour
---------
The source subscribes to the BIRTH, DATA and DEATH topics of the group
(``spBv1.0/<group>/<NBIRTH|NDATA|NDEATH|DBIRTH|DDATA|DDEATH>/<edge_node>[/<device>]``) and decodes
each payload with :mod:`machinewatch.engine.sparkplug` (no protobuf runtime needed).

- **BIRTH** (NBIRTH per edge node, DBIRTH per device) teaches the metric names, aliases and
  datatypes, and its values are readings too. An NBIRTH forgets the node's devices until they
  are born again.
- **DATA** metrics are found by name or by alias. Mapped metrics of a numeric datatype (Int8 ..
  UInt64, Float, Double; Boolean as 0/1) become one-sample float32 chunks stamped with the metric's
  timestamp (else the payload's, else the receive time). Historical metrics are taken as long as
  each stream's times go forward.
- **DEATH**: an NDEATH whose ``bdSeq`` matches the node's NBIRTH (or of a node not seen born)
  and a DDEATH yield :class:`~machinewatch.connectors.base.StreamDown` (reason ``sparkplug_death``)
  for every mapped stream of that node or device: the engine raises STALE at once.

Rejections (counted by the engine as ``rejected_<reason>``): the payload reasons of
:data:`machinewatch.engine.sparkplug.REASONS`, plus ``no_birth`` (DATA of a node or device not
born since the source connected), ``unknown_alias``, ``no_name`` (a metric with neither name nor
alias), ``seq_gap`` (the payload ``seq``, 0..255 per edge node, skipped: messages were lost; the
data is still used and the node's streams get a sequence gap so no window is stitched across
it), ``out_of_order``, ``bad_timestamp``, ``stale_death`` (an NDEATH of an older session),
``queue_overflow`` and ``disconnected``.

After every (re)connect the source forgets all births (it may have missed some), so with
``rebirth = false`` data is rejected as ``no_birth`` until each node is born again; with
``rebirth = true`` it asks for the births.
"""

from __future__ import annotations

__all__ = ["MetricMap", "SparkplugSource"]

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import numpy as np

from machinewatch.connectors.base import Rejected, Source, StreamDown
from machinewatch.connectors.mqttcommon import COMMON_KEYS, Backoff, client_kwargs, validate_common
from machinewatch.connectors.sources.mqtt import CountingQueue
from machinewatch.engine.codecs import T_MAX_NS, T_MIN_NS
from machinewatch.engine.config import Config, _Checker
from machinewatch.engine.errors import ConfigError, ConfigProblem, PayloadError
from machinewatch.engine.fleet import mqtt_client_id
from machinewatch.engine.logutil import RateLimitedLog
from machinewatch.engine.sparkplug import (
    MAX_METRICS,
    MAX_PAYLOAD_BYTES,
    NAMESPACE,
    Metric,
    Payload,
    SparkplugTopic,
    decode_payload,
    metric_number,
    parse_topic,
    rebirth_payload,
)
from machinewatch.engine.types import Chunk

log = logging.getLogger(__name__)

_KEYS = COMMON_KEYS | {
    "group_id",
    "metrics",
    "qos",
    "rebirth",
    "rebirth_interval_s",
    "max_queued_messages",
    "max_payload_bytes",
    "max_metrics",
    "max_future_s",
}
_METRIC_KEYS = {"edge_node", "device", "metric", "stream", "scale", "offset"}
#: the message types the source subscribes to (never NCMD/DCMD: its own rebirth requests)
_SUBSCRIBED = ("NBIRTH", "NDATA", "NDEATH", "DBIRTH", "DDATA", "DDEATH")
DEATH = "sparkplug_death"


@dataclass(frozen=True, slots=True)
class MetricMap:
    """Where one Sparkplug metric goes: ``value * scale + offset`` into ``stream_id``."""

    stream_id: str
    scale: float = 1.0
    offset: float = 0.0


@dataclass(slots=True)
class _Birth:
    """What one BIRTH certificate taught: alias -> name and name -> datatype."""

    aliases: dict[int, str] = field(default_factory=dict)
    datatypes: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Node:
    bd_seq: int | None = None
    next_seq: int | None = None
    birth: _Birth | None = None
    devices: dict[str, _Birth] = field(default_factory=dict)


@dataclass(slots=True)
class _StreamState:
    seq: int = -1
    last_t_ns: int = -1


def _level(v: str) -> str | None:
    """A topic level given in config (group, edge node, device) cannot hold MQTT specials."""
    if not v or any(ch in v for ch in "/+#"):
        return "must be a non-empty topic level without '/', '+' or '#'"
    return None


def _at_least(low: int) -> Callable[[int], str | None]:
    return lambda v: None if v >= low else f"must be >= {low}"


def _bd_seq(p: Payload) -> int | None:
    for m in p.metrics:
        if m.name == "bdSeq" and isinstance(m.value, int) and not isinstance(m.value, bool):
            return m.value
    return None


def _learn(p: Payload) -> _Birth:
    b = _Birth()
    for m in p.metrics:
        if m.name is None:
            continue
        b.datatypes[m.name] = m.datatype
        if m.alias is not None:
            b.aliases[m.alias] = m.name
    return b


class SparkplugSource(Source):
    """Sparkplug B metrics -> scalar chunks (see the module docstring).

    Parameters
    ----------
    name, options, config
        As for every connector. A ``stream`` the config does not have, or one with more than one
        channel, is a :class:`ConfigError` naming its key path (:meth:`validate_config`). Metrics
        of assets another gateway of the fleet runs are left out.
    client_factory
        Makes the ``aiomqtt.Client``-like client from keyword arguments (tests may pass a fake).
    clock
        Monotonic seconds, for the rebirth rate limit.
    """

    def __init__(
        self,
        name: str,
        options: Mapping[str, Any],
        config: Config,
        client_factory: Callable[..., Any] = aiomqtt.Client,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name, options, config)
        o = self.options
        self.path = f"sources.{name}"
        self.group = str(o.get("group_id", "+"))
        self.qos = int(o.get("qos", 1))
        self.rebirth = bool(o.get("rebirth", False))
        self.rebirth_interval_s = float(o.get("rebirth_interval_s", 10.0))
        self.client_id = mqtt_client_id(o, config, f"machinewatch-{config.engine.site}-{name}")
        self.max_queued = int(o.get("max_queued_messages", 20000))
        self.max_payload = int(o.get("max_payload_bytes", MAX_PAYLOAD_BYTES))
        self.max_metrics = int(o.get("max_metrics", MAX_METRICS))
        self.max_future_ns = int(float(o.get("max_future_s", 86400.0)) * 1e9)
        self.backoff = Backoff(float(o.get("reconnect_min_s", 0.1)), float(o.get("reconnect_max_s", 2.0)))
        self.client_factory = client_factory
        self.clock = clock
        probs = self.validate_config(o, self.path, config)
        if probs:
            raise ConfigError(probs)
        #: (edge_node, device or None, metric name) -> where it goes (this gateway's assets only)
        self.map: dict[tuple[str, str | None, str], MetricMap] = {}
        self._rates: dict[str, float] = {}
        for t in o.get("metrics", []):
            sid = str(t["stream"])
            if config.elsewhere(sid):
                continue  # another gateway of the fleet runs that asset
            key = (str(t["edge_node"]), t.get("device"), str(t["metric"]))
            self.map[key] = MetricMap(sid, float(t.get("scale", 1.0)), float(t.get("offset", 0.0)))
            self._rates[sid] = config.stream(sid)[1].rate_hz
        self.nodes: dict[tuple[str, str], _Node] = {}
        self.streams: dict[str, _StreamState] = {sid: _StreamState() for sid in self._rates}
        #: NCMD topics waiting to be sent a rebirth request
        self.pending_rebirths: list[str] = []
        self._rebirth_at: dict[tuple[str, str], float] = {}
        self.rebirths_sent = 0
        self.connects = 0
        self._rl = RateLimitedLog(log)
        self._queue_cls = type("Queue", (CountingQueue,), {"dropped": 0})
        self._dropped_seen = 0

    @classmethod
    def validate_options(cls, options: Mapping[str, Any], path: str) -> list[ConfigProblem]:
        c = _Checker()
        c.unknown(options, _KEYS, path)
        c.problems += validate_common(options, path)
        c.get(options, "group_id", path, str, "+", check=lambda v: None if v == "+" else _level(v))
        c.get(options, "qos", path, int, 1, check=lambda v: None if v in (0, 1) else "must be 0 or 1")
        c.get(options, "rebirth", path, bool, False)
        for k in ("rebirth_interval_s", "max_future_s"):
            c.get(options, k, path, float, None, check=lambda v: None if v > 0 else "must be > 0")
        for k, low in (("max_queued_messages", 1), ("max_payload_bytes", 64), ("max_metrics", 1)):
            c.get(options, k, path, int, None, check=_at_least(low))
        metrics = c.get(options, "metrics", path, list, None, required=True)
        if metrics is not None and not metrics:
            c.bad(f"{path}.metrics", "must map at least one metric to a stream")
        seen: dict[tuple[object, ...], str] = {}
        fed: dict[str, str] = {}
        for i, t in enumerate(metrics or []):
            p = f"{path}.metrics[{i}]"
            if not isinstance(t, dict):
                c.bad(p, "must be a table {edge_node, [device], metric, stream, [scale], [offset]}")
                continue
            c.unknown(t, _METRIC_KEYS, p)
            node = c.get(t, "edge_node", p, str, None, required=True, check=_level)
            dev = c.get(t, "device", p, str, None, check=_level)
            name = c.get(t, "metric", p, str, None, required=True, check=lambda v: None if v else "is empty")
            sid = c.get(
                t,
                "stream",
                p,
                str,
                None,
                required=True,
                check=lambda v: (
                    None if v.count("/") == 1 and all(v.split("/")) else 'must be "<asset>/<stream>"'
                ),
            )
            c.get(t, "scale", p, float, 1.0, check=lambda v: None if v != 0 else "must not be 0")
            c.get(t, "offset", p, float, 0.0)
            if node is None or name is None or sid is None:
                continue
            key = (node, dev, name)
            if key in seen:
                c.bad(p, f"maps the same metric as {seen[key]}")
            seen[key] = p
            if sid in fed:
                c.bad(f"{p}.stream", f"{sid!r} is already fed by {fed[sid]}")
            fed[sid] = p
        return c.problems

    @classmethod
    def validate_config(cls, options: Mapping[str, Any], path: str, config: Config) -> list[ConfigProblem]:
        """Each mapped stream exists and is a one-channel stream (assets another gateway of the
        fleet runs are skipped)."""
        probs: list[ConfigProblem] = []
        for i, t in enumerate(options.get("metrics", [])):
            sid = str(t.get("stream", "")) if isinstance(t, dict) else ""
            if config.elsewhere(sid):
                continue
            try:
                _, s = config.stream(sid)
            except KeyError:
                probs.append(ConfigProblem(f"{path}.metrics[{i}].stream", f"names no stream ({sid!r})"))
                continue
            if s.channels != 1:
                why = f"Sparkplug metrics are scalars; {sid!r} has {s.channels} channels"
                probs.append(ConfigProblem(f"{path}.metrics[{i}].stream", why))
        return probs

    @property
    def subscriptions(self) -> list[tuple[str, int]]:
        """The topic filters (and QoS) the source subscribes to."""
        return [(f"{NAMESPACE}/{self.group}/{mt}/#", self.qos) for mt in _SUBSCRIBED]

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the client (credentials resolved here, never logged)."""
        kw: dict[str, Any] = client_kwargs(self.options, self.path)
        kw.update(
            identifier=self.client_id,
            clean_session=True,  # births are forgotten on every connect anyway (see the docstring)
            max_queued_incoming_messages=self.max_queued,
            queue_type=self._queue_cls,
        )
        return kw

    def forget_births(self) -> None:
        """Forget every node and device (on connect: births may have been missed)."""
        self.nodes.clear()

    # ------------------------------------------------------------------ pure message handling

    def handle(
        self, topic: str, payload: bytes, now_ns: int | None = None
    ) -> list[Chunk | Rejected | StreamDown]:
        """One message -> what the engine gets. Pure apart from the session state; rebirth
        requests it wants sent are appended to :attr:`pending_rebirths`."""
        t = parse_topic(topic)
        if t is None or t.message_type not in _SUBSCRIBED:
            return [Rejected("sparkplug", "unknown_topic", topic[:120])]
        try:
            p = decode_payload(payload, self.max_payload, self.max_metrics)
        except PayloadError as exc:
            return [Rejected(topic, exc.reason, exc.detail)]
        now = time.time_ns() if now_ns is None else now_ns
        key = (t.group, t.edge_node)
        mt = t.message_type
        if mt == "NDEATH":
            return self._node_death(t, p)
        if mt == "NBIRTH":
            learned = _learn(p)
            self.nodes[key] = _Node(_bd_seq(p), None if p.seq is None else (p.seq + 1) % 256, learned)
            return self._values(t, p, learned, now, is_birth=True)
        node = self.nodes.get(key)
        if mt == "DDEATH":  # down even when its birth was missed (e.g. before a reconnect)
            assert t.device is not None
            out = [] if node is None else self._check_seq(t, p, node)
            if node is not None:
                node.devices.pop(t.device, None)
            return out + self._down(t, t.device)
        if node is None or node.birth is None:
            self._want_rebirth(t)
            return [Rejected(topic, "no_birth", f"edge node {t.edge_node} has not been born")]
        out = self._check_seq(t, p, node)
        if mt == "NDATA":
            return out + self._values(t, p, node.birth, now, is_birth=False)
        assert t.device is not None
        if mt == "DBIRTH":
            b = node.devices[t.device] = _learn(p)
            return out + self._values(t, p, b, now, is_birth=True)
        b2 = node.devices.get(t.device)
        if b2 is None:
            self._want_rebirth(t)
            return [*out, Rejected(topic, "no_birth", f"device {t.edge_node}/{t.device} has not been born")]
        return out + self._values(t, p, b2, now, is_birth=False)

    def _node_death(self, t: SparkplugTopic, p: Payload) -> list[Chunk | Rejected | StreamDown]:
        node = self.nodes.get((t.group, t.edge_node))
        bd = _bd_seq(p)
        if node is not None and node.bd_seq is not None and bd is not None and bd != node.bd_seq:
            return [
                Rejected(f"{t.group}/{t.edge_node}", "stale_death", f"bdSeq {bd}, born with {node.bd_seq}")
            ]
        self.nodes.pop((t.group, t.edge_node), None)
        return self._down(t, None)

    def _down(self, t: SparkplugTopic, device: str | None) -> list[Chunk | Rejected | StreamDown]:
        """StreamDown for the mapped streams of a device, or of a node and all its devices."""
        where = f"{t.group}/{t.edge_node}" + (f"/{device}" if device else "")
        out: list[Chunk | Rejected | StreamDown] = []
        for (node, dev, _), mm in self.map.items():
            if node == t.edge_node and (device is None or dev == device):
                out.append(StreamDown(mm.stream_id, DEATH, f"{t.message_type} {where}"))
        return out

    def _check_seq(self, t: SparkplugTopic, p: Payload, node: _Node) -> list[Chunk | Rejected | StreamDown]:
        if p.seq is None:
            return []
        want, node.next_seq = node.next_seq, (p.seq + 1) % 256
        if want is None or p.seq % 256 == want:
            return []
        for (n, _, _), mm in self.map.items():
            if n == t.edge_node:  # messages were lost: never stitch a window across them
                self.streams[mm.stream_id].seq += 1
        return [Rejected(f"{t.group}/{t.edge_node}", "seq_gap", f"expected seq {want}, got {p.seq}")]

    def _want_rebirth(self, t: SparkplugTopic) -> None:
        if not self.rebirth:
            return
        key = (t.group, t.edge_node)
        now = self.clock()
        last = self._rebirth_at.get(key)
        if last is not None and now - last < self.rebirth_interval_s:
            return
        self._rebirth_at[key] = now
        self.pending_rebirths.append(t.node_topic("NCMD"))

    def _values(
        self, t: SparkplugTopic, p: Payload, learned: _Birth, now_ns: int, *, is_birth: bool
    ) -> list[Chunk | Rejected | StreamDown]:
        topic = f"{NAMESPACE}/{t.group}/{t.message_type}/{t.edge_node}" + (f"/{t.device}" if t.device else "")
        out: list[Chunk | Rejected | StreamDown] = []
        for m in p.metrics:
            name = m.name
            if name is None:
                if m.alias is None:
                    out.append(Rejected(topic, "no_name", "metric with neither name nor alias"))
                    continue
                name = learned.aliases.get(m.alias)
                if name is None:
                    self._want_rebirth(t)
                    out.append(Rejected(topic, "unknown_alias", f"alias {m.alias} is not in the BIRTH"))
                    continue
            mm = self.map.get((t.edge_node, t.device, name))
            if mm is not None:
                item = self._chunk(mm, name, m, p, learned, now_ns, is_birth)
                if item is not None:
                    out.append(item)
        return out

    def _chunk(
        self, mm: MetricMap, name: str, m: Metric, p: Payload, learned: _Birth, now_ns: int, is_birth: bool
    ) -> Chunk | Rejected | None:
        sid = mm.stream_id
        try:
            v = metric_number(m, m.datatype or learned.datatypes.get(name, 0))
        except PayloadError as exc:
            return Rejected(sid, exc.reason, f"{name}: {exc.detail}")
        ts_ms = m.timestamp_ms if m.timestamp_ms is not None else p.timestamp_ms
        t_ns = now_ns if ts_ms is None else ts_ms * 1_000_000
        if not T_MIN_NS <= t_ns < T_MAX_NS or t_ns > now_ns + self.max_future_ns:
            return Rejected(sid, "bad_timestamp", f"{name}: {ts_ms} ms")
        x = np.array([v * mm.scale + mm.offset], dtype=np.float32)
        if not math.isfinite(float(x[0])):
            return Rejected(sid, "non_finite", f"{name}: {v!r} * {mm.scale:g} + {mm.offset:g}")
        st = self.streams[sid]
        if t_ns <= st.last_t_ns:
            # a BIRTH repeats the current values (after a rebirth request, the ones already taken)
            return (
                None if is_birth else Rejected(sid, "out_of_order", f"{name}: {ts_ms} ms not after the last")
            )
        st.seq += 1
        st.last_t_ns = t_ns
        return Chunk(sid, t_ns, self._rates[sid], st.seq, x)

    def _overflow(self) -> int:
        n = int(self._queue_cls.dropped) - self._dropped_seen  # type: ignore[attr-defined]
        self._dropped_seen += n
        return n

    # ------------------------------------------------------------------ I/O

    async def chunks(self) -> AsyncIterator[Chunk | Rejected | StreamDown]:
        """Connect, subscribe, decode, ask for rebirths; reconnect with capped jittered backoff."""
        kw = self.client_kwargs()
        while True:
            try:
                async with self.client_factory(**kw) as client:
                    self.forget_births()
                    await client.subscribe(self.subscriptions)
                    self.connects += 1
                    self.backoff.reset()
                    log.info(
                        "sparkplug source %s: connected to %s:%s (group %s, %d metrics mapped)",
                        self.name,
                        kw["hostname"],
                        kw["port"],
                        self.group,
                        len(self.map),
                    )
                    async for msg in client.messages:
                        payload = msg.payload
                        if not isinstance(payload, bytes | bytearray):
                            payload = b"" if payload is None else str(payload).encode()
                        for item in self.handle(str(msg.topic), bytes(payload)):
                            yield item
                        for _ in range(self._overflow()):
                            yield Rejected("sparkplug", "queue_overflow", "incoming queue full")
                        while self.pending_rebirths:
                            topic = self.pending_rebirths.pop(0)
                            await client.publish(topic, rebirth_payload(time.time_ns() // 1_000_000), qos=0)
                            self.rebirths_sent += 1
                            log.info("sparkplug source %s: asked for a rebirth on %s", self.name, topic)
            except aiomqtt.MqttError as exc:
                delay = self.backoff.next()
                self._rl.warning(
                    f"sparkplug:{self.name}",
                    "sparkplug source %s: %s; reconnecting in %.2f s",
                    self.name,
                    exc,
                    delay,
                )
                yield Rejected("sparkplug", "disconnected", str(exc)[:120])
                await asyncio.sleep(delay)
