"""``mqtt``: sensor streams from an MQTT broker (aiomqtt), decoded by :mod:`machinewatch.engine.codecs`.

Options
-------
::

    [sources.plant]
    kind = "mqtt"
    url = "mqtt://127.0.0.1:1883"
    topic_template = "machinewatch/<site>/<asset>/<stream>"   # <site> <asset> <stream> placeholders
    qos = 1                        # 0 or 1
    # client_id = "machinewatch-<site>-<gateway>"   fixed, so the broker keeps our session across
    #                                               restarts; unique per gateway (engine.fleet)
    # clean_session = false        # persistent session: QoS 1 messages wait for us at the broker
    # max_queued_messages = 20000  # received and not yet taken by the engine (bounded; excess counted)
    # max_payload_bytes = 4194344
    # max_future_s = 86400         # a chunk further than this in the future is rejected
    # rate_tolerance = 0.01        # a frame's rate_hz may differ this much (relative) from the config
    # status = true                # engine status/heartbeat/ack topics on this broker (see engine.status)
    # heartbeat_s = 10
    # plus url/TLS/credential/backoff options: see machinewatch.connectors.mqttcommon

Every message becomes a :class:`~machinewatch.engine.types.Chunk` or a
:class:`~machinewatch.connectors.base.Rejected` with a stable reason (the codec reasons plus
``unknown_topic``, ``duplicate_seq``, ``backwards_seq``, ``rate_mismatch``, ``bad_channels``,
``bad_timestamp``, ``queue_overflow``); the engine counts them and rate-limits their logs. In a
fleet (:mod:`machinewatch.engine.fleet`) the source subscribes only to the topics of the assets
this gateway runs; a message of another gateway's asset that still arrives is ``not_owned``,
which the engine counts apart from the rejections and does not log. The
source renumbers sequence numbers per stream so gaps are kept and a restarted publisher (seq back
to 0 with a newer time) starts a fresh gap-separated run instead of being dropped forever.
"""

from __future__ import annotations

__all__ = ["CountingQueue", "MqttSource", "SeqTracker", "TopicMap"]

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt

from machinewatch.connectors.base import Rejected, Source
from machinewatch.connectors.mqttcommon import COMMON_KEYS, Backoff, client_kwargs, validate_common
from machinewatch.engine.codecs import MAX_PAYLOAD_BYTES, Decoded, decode_payload
from machinewatch.engine.config import Config, StreamConfig
from machinewatch.engine.errors import ConfigProblem, PayloadError
from machinewatch.engine.fleet import mqtt_client_id
from machinewatch.engine.logutil import RateLimitedLog
from machinewatch.engine.types import Chunk

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "machinewatch/<site>/<asset>/<stream>"
_KEYS = COMMON_KEYS | {
    "topic_template",
    "qos",
    "clean_session",
    "max_queued_messages",
    "max_payload_bytes",
    "max_future_s",
    "rate_tolerance",
    "status",
    "heartbeat_s",
}
_PLACEHOLDERS = ("<site>", "<asset>", "<stream>")


class TopicMap:
    """Topic template <-> stream ids (pure).

    >>> from machinewatch.engine.config import load_config_text
    >>> cfg = load_config_text('''
    ... [assets.p1.streams.t]
    ... kind = "scalar"
    ... rate_hz = 1
    ... [sources.x]
    ... kind = "mqtt"
    ... url = "mqtt://127.0.0.1:1883"
    ... ''')
    >>> tm = TopicMap(DEFAULT_TEMPLATE, cfg)
    >>> tm.subscription, tm.stream_id("machinewatch/site1/p1/t"), tm.stream_id("machinewatch/site1/p1/x")
    ('machinewatch/+/+/+', 'p1/t', None)
    >>> tm.topic("p1/t")
    'machinewatch/site1/p1/t'
    """

    def __init__(self, template: str, config: Config) -> None:
        self.template = template
        self.levels = template.split("/")
        self.subscription = "/".join("+" if lv in _PLACEHOLDERS else lv for lv in self.levels)
        #: what the source subscribes to: the template's wildcard, or in a fleet one filter per
        #: owned asset, so other gateways' data never reaches this one
        self.subscriptions = [self.subscription]
        self.unowned = frozenset(config.unowned_assets)
        self._asset_level = self.levels.index("<asset>") if "<asset>" in self.levels else -1
        if self.unowned:
            subs: dict[str, None] = {}
            for a in config.assets.values():
                fill = {"<site>": a.site, "<asset>": a.name, "<stream>": "+"}
                subs["/".join(fill.get(lv, lv) for lv in self.levels)] = None
            self.subscriptions = list(subs)
        self._by_topic: dict[str, str] = {}
        for a in config.assets.values():
            for s in a.streams:
                self._by_topic[self.topic_for(a.site, a.name, s)] = a.stream_id(s)
        # what the engine itself publishes under the same tree is not input, and not an error
        self.own_prefix = f"machinewatch/{config.engine.site}/_engine/"
        self.own: set[str] = set()
        for p in config.actuators.values():
            if p.kind == "mqtt":
                tpl = str(p.options.get("topic_template", "machinewatch/<site>/<asset>/command"))
                for a in config.assets.values():
                    self.own.add(tpl.replace("<site>", a.site).replace("<asset>", a.name))

    def is_own(self, topic: str) -> bool:
        """True for the engine's own status, heartbeat, command and actuator topics."""
        return topic.startswith(self.own_prefix) or topic in self.own

    def is_not_owned(self, topic: str) -> bool:
        """True for a topic of an asset that another gateway of the fleet runs."""
        levels = topic.split("/")
        return (
            bool(self.unowned)
            and len(levels) == len(self.levels)
            and 0 <= self._asset_level
            and levels[self._asset_level] in self.unowned
        )

    def topic_for(self, site: str, asset: str, stream: str) -> str:
        """The topic one stream is published on."""
        return self.template.replace("<site>", site).replace("<asset>", asset).replace("<stream>", stream)

    def topic(self, stream_id: str) -> str:
        """The topic of ``"<asset>/<stream>"`` (``KeyError`` if unknown)."""
        for t, sid in self._by_topic.items():
            if sid == stream_id:
                return t
        raise KeyError(stream_id)

    def stream_id(self, topic: str) -> str | None:
        """The stream a topic carries, or ``None`` for a topic no configured stream uses."""
        return self._by_topic.get(topic)


class SeqTracker:
    """Per-stream sequence bookkeeping: rejects duplicates and stale replays, keeps gaps (pure).

    ``accept(seq, t0_ns)`` returns the engine-side sequence number, or a rejection reason.

    >>> s = SeqTracker()
    >>> [s.accept(q, t) for q, t in ((5, 10), (6, 20), (6, 20), (4, 5), (9, 50), (0, 60))]
    [0, 1, 'duplicate_seq', 'backwards_seq', 4, 6]
    """

    def __init__(self) -> None:
        self.last_seq: int | None = None
        self.last_t0 = 0
        self.out = -1

    def accept(self, seq: int | None, t0_ns: int) -> int | str:
        if seq is None:  # the payload has none: count ours
            self.out += 1
        elif self.last_seq is None:
            self.out += 1
        elif seq > self.last_seq:
            self.out += min(seq - self.last_seq, 1 << 20)
        elif seq == self.last_seq:
            return "duplicate_seq"
        elif t0_ns > self.last_t0:  # publisher restarted: a new run, separated by a gap
            self.out += 2
        else:
            return "backwards_seq"
        if seq is not None:
            self.last_seq = seq
        self.last_t0 = t0_ns
        return self.out


class CountingQueue(asyncio.Queue[Any]):
    """aiomqtt's incoming queue, bounded, counting what it had to discard when full."""

    dropped = 0
    #: the queue aiomqtt made last (the source reads it directly, see MqttSource.chunks)
    last: CountingQueue | None = None

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        type(self).last = self

    def put_nowait(self, item: Any) -> None:
        try:
            super().put_nowait(item)
        except asyncio.QueueFull:
            type(self).dropped += 1  # aiomqtt makes the queue itself: count on the class
            raise


#: packets read from the socket per readable event (paho reads one when nothing is in flight)
READ_BURST = 64


def read_in_bursts(client: Any) -> bool:
    """Make the client read up to :data:`READ_BURST` packets per readable socket event.

    paho's ``loop_read`` reads a single packet when no QoS 1/2 message is in flight, so every
    message cost an event-loop turn (epoll, the callback) and reached the engine alone: the hot
    path then computed one window per call. Read in bursts, the packets already in the socket
    buffer arrive together and the engine batches them. Returns False (and changes nothing)
    when the client is not the aiomqtt/paho pair this knows.
    """
    paho = getattr(client, "_client", None)
    read = getattr(paho, "_packet_read", None)
    handle = getattr(paho, "_loop_rc_handle", None)
    if paho is None or read is None or handle is None or not hasattr(paho, "_sock"):
        return False

    def loop_read(max_packets: int = 1) -> int:
        for _ in range(max(max_packets, READ_BURST)):
            if paho._sock is None:
                return int(mqtt.MQTT_ERR_NO_CONN)
            rc = read()
            if rc > 0:
                return int(handle(rc))
            if rc == mqtt.MQTT_ERR_AGAIN:
                break
        return int(mqtt.MQTT_ERR_SUCCESS)

    paho.loop_read = loop_read
    return True


class MqttSource(Source):
    """Subscribe to the topic template and yield chunks (see the module docstring).

    Parameters
    ----------
    name, options, config
        As for every connector.
    client_factory
        Makes the ``aiomqtt.Client``-like client from keyword arguments (tests may pass a fake).
    """

    def __init__(
        self,
        name: str,
        options: Mapping[str, Any],
        config: Config,
        client_factory: Callable[..., Any] = aiomqtt.Client,
    ) -> None:
        super().__init__(name, options, config)
        o = self.options
        self.path = f"sources.{name}"
        self.topics = TopicMap(str(o.get("topic_template", DEFAULT_TEMPLATE)), config)
        self.qos = int(o.get("qos", 1))
        self.client_id = mqtt_client_id(o, config, f"machinewatch-{config.engine.site}")
        self.clean_session = bool(o.get("clean_session", False))
        self.max_queued = int(o.get("max_queued_messages", 20000))
        self.max_payload = int(o.get("max_payload_bytes", MAX_PAYLOAD_BYTES))
        self.max_future_ns = int(float(o.get("max_future_s", 86400.0)) * 1e9)
        self.rate_tol = float(o.get("rate_tolerance", 0.01))
        self.backoff = Backoff(float(o.get("reconnect_min_s", 0.1)), float(o.get("reconnect_max_s", 2.0)))
        self.client_factory = client_factory
        self.seq: dict[str, SeqTracker] = {}
        self.connects = 0
        self._rl = RateLimitedLog(log)
        self._queue_cls = type("Queue", (CountingQueue,), {"dropped": 0})
        self._dropped_seen = 0
        #: set while the subscriptions are acknowledged by the broker (cleared on a disconnect)
        self.subscribed = asyncio.Event()

    @classmethod
    def validate_options(cls, options: Mapping[str, Any], path: str) -> list[ConfigProblem]:
        probs = [ConfigProblem(f"{path}.{k}", "unknown key") for k in options if k not in _KEYS]
        probs += validate_common(options, path)
        tpl = options.get("topic_template", DEFAULT_TEMPLATE)
        if not isinstance(tpl, str) or "<asset>" not in tpl or "<stream>" not in tpl:
            why = "must be a string with <asset> and <stream>"
            probs.append(ConfigProblem(f"{path}.topic_template", why))
        elif any(w in tpl for w in ("+", "#")):
            probs.append(ConfigProblem(f"{path}.topic_template", "use <site>/<asset>/<stream>, not + or #"))
        if options.get("qos", 1) not in (0, 1):
            probs.append(ConfigProblem(f"{path}.qos", "must be 0 or 1"))
        mq = options.get("max_queued_messages", 20000)
        if isinstance(mq, bool) or not isinstance(mq, int) or mq < 1:
            probs.append(ConfigProblem(f"{path}.max_queued_messages", "must be an integer >= 1"))
        return probs

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the client (credentials resolved here, never logged)."""
        kw: dict[str, Any] = client_kwargs(self.options, self.path)
        kw.update(
            identifier=self.client_id,
            clean_session=self.clean_session,
            max_queued_incoming_messages=self.max_queued,
            queue_type=self._queue_cls,
        )
        return kw

    async def ready(self) -> None:
        """Return once the broker has acknowledged the subscriptions (see :meth:`Source.ready`).

        Until then a message published to a new session's topics is not routed to it at all:
        the broker drops it (the first start with a fresh ``client_id`` or ``clean_session``).
        """
        await self.subscribed.wait()

    def decode(self, topic: str, payload: bytes, now_ns: int | None = None) -> Chunk | Rejected | None:
        """One message -> a chunk, a rejection, or ``None`` for the engine's own topics.

        Pure apart from the per-stream sequence state.
        """
        sid = self.topics.stream_id(topic)
        if sid is None:
            if self.topics.is_own(topic):
                return None
            if self.topics.is_not_owned(topic):
                return Rejected("fleet", "not_owned", topic[:120])
            return Rejected("unknown", "unknown_topic", topic[:120])
        try:
            d = decode_payload(payload, self.max_payload)
        except PayloadError as exc:
            return Rejected(sid, exc.reason, exc.detail)
        now = time.time_ns() if now_ns is None else now_ns
        _, s = self.config.stream(sid)
        why = self._check(d, s, now)
        if why:
            return Rejected(sid, why[0], why[1])
        frames = d.values.size // s.channels
        t0 = d.t0_ns if d.t0_ns is not None else now - round((frames - 1) * 1e9 / s.rate_hz)
        tr = self.seq.get(sid)
        if tr is None:
            tr = self.seq[sid] = SeqTracker()
        seq = tr.accept(d.seq, t0)
        if isinstance(seq, str):
            return Rejected(sid, seq, f"seq {d.seq}")
        return Chunk(sid, t0, s.rate_hz, seq, d.values)

    def _check(self, d: Decoded, s: StreamConfig, now_ns: int) -> tuple[str, str] | None:
        if d.rate_hz is not None and abs(d.rate_hz - s.rate_hz) > self.rate_tol * s.rate_hz:
            return "rate_mismatch", f"{d.rate_hz:g} Hz, configured {s.rate_hz:g} Hz"
        if d.channels != s.channels and d.kind == "frame":
            return "bad_channels", f"{d.channels} channels, configured {s.channels}"
        if d.values.size % s.channels:
            return "bad_channels", f"{d.values.size} values for {s.channels} channels"
        if d.t0_ns is not None and d.t0_ns > now_ns + self.max_future_ns:
            return "bad_timestamp", f"{(d.t0_ns - now_ns) / 1e9:.0f} s in the future"
        return None

    def _overflow(self) -> int:
        n = self._queue_cls.dropped - self._dropped_seen  # type: ignore[attr-defined]
        self._dropped_seen += n
        return int(n)

    async def chunks(self) -> AsyncIterator[Chunk | Rejected]:
        """Connect, subscribe, decode; reconnect with capped jittered backoff, forever."""
        kw = self.client_kwargs()
        while True:
            try:
                async with self.client_factory(**kw) as client:
                    for sub in self.topics.subscriptions:
                        await client.subscribe(sub, qos=self.qos)  # returns on the SUBACK
                    self.subscribed.set()
                    self.connects += 1
                    self.backoff.reset()
                    log.info(
                        "mqtt source %s: connected to %s:%s (%s, qos %d)",
                        self.name,
                        kw["hostname"],
                        kw["port"],
                        " ".join(self.topics.subscriptions),
                        self.qos,
                    )
                    queue = self._queue_cls.last  # type: ignore[attr-defined]
                    read_in_bursts(client)
                    messages = aiter(client.messages)
                    while True:
                        # Messages already queued are taken directly: aiomqtt's iterator makes a
                        # task and an asyncio.wait per message (extra loop turns for every
                        # chunk behind a burst). It is awaited (and reports a disconnect) only
                        # when the queue is empty.
                        if queue is not None and not queue.empty():
                            msg = queue.get_nowait()
                        else:
                            msg = await anext(messages)
                        payload = msg.payload
                        if not isinstance(payload, bytes | bytearray):
                            payload = b"" if payload is None else str(payload).encode()
                        item = self.decode(str(msg.topic), payload)
                        if item is not None:
                            yield item
                        for _ in range(self._overflow()):
                            yield Rejected("mqtt", "queue_overflow", "incoming queue full")
            except aiomqtt.MqttError as exc:
                self.subscribed.clear()
                delay = self.backoff.next()
                self._rl.warning(
                    f"mqtt:{self.name}", "mqtt source %s: %s; reconnecting in %.2f s", self.name, exc, delay
                )
                yield Rejected("mqtt", "disconnected", str(exc)[:120])
                await asyncio.sleep(delay)
