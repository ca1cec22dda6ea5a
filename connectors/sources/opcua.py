"""``opcua``: scalar sensor streams from an OPC UA server, by subscription (asyncua).

Options
-------
::

    [sources.plc]
    kind = "opcua"
    url = "opc.tcp://127.0.0.1:4840"
    # sampling_interval_ms = 1000/rate_hz of each node's stream   how often the server samples
    # publishing_interval_ms = 1000   how often the server sends what it sampled (one message)
    # security_policy = "None"        None | Basic256Sha256 | Aes128Sha256RsaOaep | Aes256Sha256RsaPss
    # security_mode = "None"          None | Sign | SignAndEncrypt (None only with policy None)
    # certificate_file = "/etc/machinewatch/opcua-client.der"   our application certificate (PEM or DER)
    # private_key_file = "/etc/machinewatch/opcua-client.pem"   its key
    # private_key_password_env = "MW_OPCUA_KEY_PASSWORD"        if the key is encrypted (or _file)
    # server_certificate_file = "/etc/machinewatch/plc.der"     pin the server; unset = take it from
    #                                                           the server's endpoint list (trust on use)
    # application_uri = "urn:machinewatch:client"   must match the URI in certificate_file
    # username = "machinewatch"                     with password_env = "VAR" or password_file = "/path"
    # timeout_s = 4.0                 per request
    # watchdog_interval_s = 1.0       the server is probed this often: a dead one is noticed in ~2x
    # reconnect_min_s = 0.1           capped, jittered exponential backoff between attempts
    # reconnect_max_s = 5.0
    # max_queued_notifications = 10000   received and not yet taken by the engine (excess counted)
    # max_future_s = 86400            a timestamp further than this in the future is rejected
    # hold_last_value = true          report-by-exception -> a regular stream (see below)
    # hold_max_s = 3600               never hold a value longer than this without a notification

    [[sources.plc.nodes]]
    node_id = "ns=2;s=Pump1.Temperature"
    stream = "pump1/temp"             # "<asset>/<stream>"; a one-channel stream of the config
    # scale = 1.0                     value = raw * scale + offset
    # offset = 0.0
    # sampling_interval_ms = ...      this node only

Every data-change notification becomes a one-sample float32
:class:`~machinewatch.engine.types.Chunk` stamped with its ``SourceTimestamp`` (else
``ServerTimestamp``, else the time it was received), or a :class:`~machinewatch.connectors.base.Rejected`
(``non_numeric``, ``not_finite``, ``bad_timestamp``, ``duplicate_timestamp``, ``backwards_timestamp``,
``queue_overflow``). A ``Bad`` status code gives ``StreamDown(stream, "bad_status", "<code name>")``, a
lost connection ``StreamDown(stream, "disconnected", why)`` for every stream, a node the server does
not know ``StreamDown(stream, "bad_node", "<code name>")``; the source reconnects and subscribes again.

OPC UA reports by exception: a value that does not change sends nothing, while the engine cuts
windows from regularly spaced samples. With ``hold_last_value`` (the default) the source places
samples on the stream's ``rate_hz`` grid and repeats the last value for the slots no notification
came for, which is exactly what a subscription means ("unchanged") as long as the connection is
alive. Held slots are emitted when the next notification arrives and, between notifications, once
the slot is older than two publishing intervals (so a late change is not overtaken). A value held
steady for a whole window is a flat line to the data-quality check; set the stream's
``flatline_p2p = -1`` (negative: off) for set-points and other legitimately constant values. Turn hold off for
nodes that change every sample anyway.
"""

from __future__ import annotations

__all__ = ["HeldStream", "NodeSpec", "OpcuaSource", "numeric", "parse_nodes", "timestamp_ns"]

import asyncio
import collections
import contextlib
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from machinewatch.connectors.base import Rejected, Source, StreamDown
from machinewatch.connectors.mqttcommon import Backoff
from machinewatch.engine.config import Config, resolve_secret
from machinewatch.engine.errors import ConfigError, ConfigProblem
from machinewatch.engine.logutil import RateLimitedLog
from machinewatch.engine.types import Chunk

log = logging.getLogger(__name__)

POLICIES = ("None", "Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss")
MODES = ("None", "Sign", "SignAndEncrypt")
_KEYS = {
    "url",
    "nodes",
    "sampling_interval_ms",
    "publishing_interval_ms",
    "security_policy",
    "security_mode",
    "certificate_file",
    "private_key_file",
    "private_key_password_env",
    "private_key_password_file",
    "server_certificate_file",
    "application_uri",
    "username",
    "password_env",
    "password_file",
    "timeout_s",
    "watchdog_interval_s",
    "reconnect_min_s",
    "reconnect_max_s",
    "max_queued_notifications",
    "max_future_s",
    "hold_last_value",
    "hold_max_s",
}
_NODE_KEYS = {"node_id", "stream", "scale", "offset", "sampling_interval_ms"}
_GUID = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
_NODE_ID_RE = re.compile(rf"^(?:ns=\d+;)?(?:i=\d+|s=.+|g={_GUID}|b=[A-Za-z0-9+/=]+)$", re.S)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: OPC UA's "no time" is 1601-01-01; anything before 2000 is no real reading either
_MIN_VALID_NS = 946_684_800 * 10**9
_BAD = 0x80000000  # severity bits 10 (Bad) and 11 (reserved, also bad)


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One subscribed node: where it goes and how its raw value is scaled."""

    node_id: str
    stream_id: str
    scale: float = 1.0
    offset: float = 0.0
    sampling_interval_ms: float | None = None


def parse_nodes(options: Mapping[str, Any]) -> list[NodeSpec]:
    """The ``nodes`` array of (already validated) options.

    >>> parse_nodes({"nodes": [{"node_id": "ns=2;i=7", "stream": "p/t", "scale": 0.1}]})
    [NodeSpec(node_id='ns=2;i=7', stream_id='p/t', scale=0.1, offset=0.0, sampling_interval_ms=None)]
    """
    out = []
    for n in options.get("nodes", []):
        si = n.get("sampling_interval_ms", options.get("sampling_interval_ms"))
        out.append(
            NodeSpec(
                str(n["node_id"]),
                str(n["stream"]),
                float(n.get("scale", 1.0)),
                float(n.get("offset", 0.0)),
                None if si is None else float(si),
            )
        )
    return out


def timestamp_ns(dt: datetime | None) -> int | None:
    """An OPC UA ``DateTime`` as ns since the Unix epoch; ``None`` for a missing or null (1601) one.

    Naive datetimes are UTC (asyncua's convention before 1.1).

    >>> timestamp_ns(datetime(2024, 1, 1, 0, 0, 0, 5)), timestamp_ns(datetime(1601, 1, 1)), timestamp_ns(None)
    (1704067200000005000, None, None)
    """
    if dt is None or dt.year <= 1601:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return ((dt - _EPOCH) // timedelta(microseconds=1)) * 1000


def numeric(raw: object) -> float | None:
    """A notification's value as a float, ``None`` when it is not a real number.

    >>> numeric(3), numeric(True), numeric(2.5), numeric("7"), numeric([1.0]), numeric(None)
    (3.0, 1.0, 2.5, None, None, None)
    """
    if isinstance(raw, bool | int | float | np.integer | np.floating):
        return float(raw)
    return None


def is_bad(status: int) -> bool:
    """True for an OPC UA status code of severity Bad.

    >>> is_bad(0), is_bad(0x40000000), is_bad(0x808B0000)
    (False, False, True)
    """
    return bool(status & _BAD)


class HeldStream:
    """One scalar stream placed on its ``rate_hz`` grid, holding the last value between
    notifications (pure: every method is given the time).

    A *run* is a stretch of gap-free slots; a new run starts (sequence number +2, so the engine's
    buffer sees a gap) after the stream was down, after ``hold_max_s`` without a notification, and
    when the server's clock jumps back. Within a run a notification goes to the slot nearest its
    timestamp, or to the next free slot when that one is taken (jitter, a late notification).

    >>> h = HeldStream("p/t", 1.0, hold_max_s=60)
    >>> [(c.t0_ns // 10**9, c.seq, c.values.tolist()) for c in h.sample(1.0, 100 * 10**9, 100 * 10**9)]
    [(100, 0, [1.0])]
    >>> [(c.t0_ns // 10**9, c.seq, c.values.tolist()) for c in h.sample(2.0, 103 * 10**9, 103 * 10**9)]
    [(101, 1, [1.0, 1.0, 2.0])]
    >>> c = h.fill(110 * 10**9, lag_ns=2 * 10**9); (c.t0_ns // 10**9, c.seq, c.values.tolist())
    (104, 2, [2.0, 2.0, 2.0, 2.0, 2.0])
    """

    def __init__(self, stream_id: str, rate_hz: float, hold_max_s: float = 3600.0, hold: bool = True) -> None:
        self.stream_id = stream_id
        self.rate_hz = float(rate_hz)
        self.period_ns = 1e9 / self.rate_hz
        self.hold = hold
        self.hold_slots = max(1, int(hold_max_s * self.rate_hz))
        self.t_run0: int | None = None
        self.k = -1  # last slot emitted in this run
        self.k_real = -1  # slot of the last notification in this run
        self.value = math.nan
        self.last_src_ns: int | None = None
        self.offset_ns = 0  # receive clock - server clock, from the last live notification
        self.seq = -1
        self.down = False
        self.last_out_ns: int | None = None

    def slot_ns(self, k: int) -> int:
        assert self.t_run0 is not None
        return self.t_run0 + round(k * self.period_ns)

    def stop(self) -> bool:
        """The stream has no valid data now; True if it was not already down."""
        was = self.down
        self.down = True
        self.t_run0 = None
        return not was

    def _new_run(self, t0_ns: int) -> None:
        self.t_run0 = t0_ns
        self.k = self.k_real = -1
        if self.seq >= 0:
            self.seq += 1  # skip one: the engine's buffer sees a gap, never stitches runs

    def _emit(self, k_from: int, values: list[float]) -> Chunk:
        self.seq += 1
        self.k = k_from + len(values) - 1
        self.down = False
        self.last_out_ns = self.slot_ns(self.k)
        return Chunk(
            self.stream_id, self.slot_ns(k_from), self.rate_hz, self.seq, np.asarray(values, np.float32)
        )

    def snapshot(self, value: float, t0_ns: int, recv_ns: int) -> list[Chunk]:
        """The first notification after subscribing: the current value, whatever its timestamp.

        It starts a run now (on the server's clock as last seen), not at its possibly old
        timestamp: an unchanged value is still the value.
        """
        self.value = value
        if self.last_src_ns is None or t0_ns > self.last_src_ns:
            self.last_src_ns = t0_ns
        start = recv_ns - self.offset_ns
        if not self.hold:
            start = max(start, t0_ns)
        if self.last_out_ns is not None and start <= self.last_out_ns:  # never back in time
            start = self.last_out_ns + round(self.period_ns)
        self._new_run(start)
        self.k_real = 0
        return [self._emit(0, [value])]

    def sample(self, value: float, t0_ns: int, recv_ns: int) -> list[Chunk | Rejected]:
        """A live notification (a change) stamped ``t0_ns``, received at ``recv_ns``."""
        last = self.last_src_ns
        if last is not None and t0_ns <= last:
            why = "duplicate_timestamp" if t0_ns == last else "backwards_timestamp"
            return [Rejected(self.stream_id, why, f"{(last - t0_ns) / 1e9:.3f} s before the last")]
        self.last_src_ns = t0_ns
        self.offset_ns = recv_ns - t0_ns
        prev, self.value = self.value, value
        if not self.hold:  # every notification its own chunk at its own time; the buffer judges gaps
            self.t_run0 = t0_ns
            self.k = self.k_real = -1
            return [self._emit(0, [value])]
        if self.t_run0 is None:
            self._new_run(t0_ns)
        k = round((t0_ns - self.slot_ns(0)) / self.period_ns)
        if k <= self.k:
            if self.slot_ns(self.k) - t0_ns > max(2e9, 3 * self.period_ns):  # the server's clock went back
                self._new_run(t0_ns)
                k = 0
            else:
                k = self.k + 1
        if k - self.k_real > self.hold_slots:  # too long without news to vouch for the slots between
            self._new_run(t0_ns)
            k = 0
        held = [prev] * (k - self.k - 1)
        self.k_real = k
        return [self._emit(self.k + 1, [*held, value])]

    def fill(self, now_ns: int, lag_ns: int) -> Chunk | None:
        """Held slots up to ``now_ns - lag_ns`` on the server's clock (``None`` when there are none)."""
        if not self.hold or self.t_run0 is None or self.k < 0:
            return None
        k_lim = math.floor((now_ns - self.offset_ns - lag_ns - self.slot_ns(0)) / self.period_ns)
        k_lim = min(k_lim, self.k_real + self.hold_slots)
        if k_lim <= self.k:
            return None
        return self._emit(self.k + 1, [self.value] * (k_lim - self.k))


class _Handler:
    """asyncua's subscription callbacks: record into a bounded queue, wake the source (no work)."""

    def __init__(self, src: OpcuaSource) -> None:
        self.src = src

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        recv = time.time_ns()
        src = self.src
        spec = src._by_nodeid.get(node.nodeid)
        if spec is None:
            return
        if len(src._queue) >= src.max_queued:
            src._overflow[spec.stream_id] = src._overflow.get(spec.stream_id, 0) + 1
        else:
            src._queue.append((spec, val, data.monitored_item.Value, recv))
        src._wake.set()

    def status_change_notification(self, status: Any) -> None:
        code = getattr(status, "Status", status)
        if is_bad(int(getattr(code, "value", 0))):
            self.src._lost = f"subscription status {getattr(code, 'name', code)}"
            self.src._wake.set()

    def event_notification(self, event: Any) -> None:  # no event subscriptions are made
        return None


_MAX_TICK_S = 0.25


class OpcuaSource(Source):
    """Subscribe to the configured nodes and yield chunks (see the module docstring).

    Parameters
    ----------
    name, options, config
        As for every connector.
    client_factory
        Makes the ``asyncua.Client``-like client from ``url``, ``timeout`` and
        ``watchdog_intervall`` keyword arguments (tests may pass a fake); asyncua's by default,
        imported only when the source connects.
    """

    def __init__(
        self,
        name: str,
        options: Mapping[str, Any],
        config: Config,
        client_factory: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__(name, options, config)
        o = self.options
        self.path = f"sources.{name}"
        self.url = str(o["url"])
        self.nodes = [spec for spec in parse_nodes(o) if not config.elsewhere(spec.stream_id)]
        self.publishing_ms = float(o.get("publishing_interval_ms", 1000.0))
        self.policy = str(o.get("security_policy", "None"))
        self.mode = str(o.get("security_mode", "None"))
        self.application_uri = str(o.get("application_uri", "urn:machinewatch:client"))
        self.timeout_s = float(o.get("timeout_s", 4.0))
        self.watchdog_s = float(o.get("watchdog_interval_s", 1.0))
        self.max_queued = int(o.get("max_queued_notifications", 10000))
        self.max_future_ns = int(float(o.get("max_future_s", 86400.0)) * 1e9)
        self.backoff = Backoff(float(o.get("reconnect_min_s", 0.1)), float(o.get("reconnect_max_s", 5.0)))
        self.client_factory = client_factory
        hold = bool(o.get("hold_last_value", True))
        hold_max = float(o.get("hold_max_s", 3600.0))
        self.streams: dict[str, HeldStream] = {}
        for spec in self.nodes:
            _, s = config.stream(spec.stream_id)
            self.streams[spec.stream_id] = HeldStream(spec.stream_id, s.rate_hz, hold_max, hold)
        self.lag_ns = int(2 * self.publishing_ms * 1e6)
        self.tick_s = min(
            _MAX_TICK_S, max(0.01, min((1.0 / h.rate_hz for h in self.streams.values()), default=1))
        )
        self.connects = 0
        self._rl = RateLimitedLog(log)
        self._by_nodeid: dict[Any, NodeSpec] = {}
        self._queue: collections.deque[tuple[NodeSpec, Any, Any, int]] = collections.deque()
        self._overflow: dict[str, int] = {}
        self._fresh: set[str] = set()  # streams whose next notification is the subscription's snapshot
        self._lost: str | None = None
        self._wake = asyncio.Event()
        self._bad_nodes: list[StreamDown] = []

    # -- config ---------------------------------------------------------------------------------

    @classmethod
    def validate_options(cls, options: Mapping[str, Any], path: str) -> list[ConfigProblem]:
        probs = [ConfigProblem(f"{path}.{k}", "unknown key") for k in options if k not in _KEYS]
        url = options.get("url")
        if not isinstance(url, str) or not re.match(r"^opc\.tcp://[^/:]+(:\d+)?(/.*)?$", url):
            probs.append(ConfigProblem(f"{path}.url", "is required: opc.tcp://host[:port][/path]"))
        probs += _numbers(options, path, ("sampling_interval_ms", "publishing_interval_ms", "timeout_s"))
        probs += _numbers(options, path, ("watchdog_interval_s", "reconnect_min_s", "reconnect_max_s"))
        probs += _numbers(options, path, ("max_future_s", "hold_max_s"))
        mq = options.get("max_queued_notifications", 10000)
        if isinstance(mq, bool) or not isinstance(mq, int) or mq < 1:
            probs.append(ConfigProblem(f"{path}.max_queued_notifications", "must be an integer >= 1"))
        if not isinstance(options.get("hold_last_value", True), bool):
            probs.append(ConfigProblem(f"{path}.hold_last_value", "must be true or false"))
        for k in (
            "certificate_file",
            "private_key_file",
            "private_key_password_env",
            "private_key_password_file",
            "server_certificate_file",
            "application_uri",
            "username",
            "password_env",
            "password_file",
        ):
            if k in options and not isinstance(options[k], str):
                probs.append(ConfigProblem(f"{path}.{k}", "must be a string"))
        probs += _security_problems(options, path)
        probs += _node_problems(options, path)
        return probs

    @classmethod
    def validate_config(cls, options: Mapping[str, Any], path: str, config: Config) -> list[ConfigProblem]:
        """Every node's stream exists in the config and has one channel."""
        probs = []
        for i, n in enumerate(options.get("nodes", [])):
            sid = str(n.get("stream", ""))
            if config.elsewhere(sid):
                continue  # another gateway of the fleet runs that asset
            try:
                _, s = config.stream(sid)
            except (KeyError, ValueError):
                probs.append(
                    ConfigProblem(f"{path}.nodes[{i}].stream", f"names no stream of the config ({sid!r})")
                )
                continue
            if s.channels != 1:
                probs.append(
                    ConfigProblem(f"{path}.nodes[{i}].stream", f"{sid} has {s.channels} channels, not 1")
                )
        return probs

    # -- decoding (pure apart from per-stream state) ----------------------------------------------

    def decode(
        self,
        spec: NodeSpec,
        raw: Any,
        status: int,
        status_name: str,
        src_ns: int | None,
        srv_ns: int | None,
        recv_ns: int,
    ) -> list[Chunk | Rejected | StreamDown]:
        """One notification -> what the engine gets."""
        h = self.streams[spec.stream_id]
        sid = spec.stream_id
        if is_bad(status):
            self._fresh.add(sid)  # the next good value restarts the stream
            return [StreamDown(sid, "bad_status", status_name)] if h.stop() else []
        t0 = src_ns if src_ns is not None else srv_ns if srv_ns is not None else recv_ns
        if t0 < _MIN_VALID_NS or t0 > recv_ns + self.max_future_ns:
            return [Rejected(sid, "bad_timestamp", f"{t0} ns")]
        v = numeric(raw)
        if v is None:
            return [Rejected(sid, "non_numeric", type(raw).__name__)]
        with np.errstate(over="ignore", invalid="ignore"):
            x = float(np.float32(v * spec.scale + spec.offset))
        if not math.isfinite(x):
            return [Rejected(sid, "not_finite", f"{v!r} * {spec.scale:g} + {spec.offset:g}")]
        if sid in self._fresh:
            self._fresh.discard(sid)
            return list(h.snapshot(x, t0, recv_ns))
        return list(h.sample(x, t0, recv_ns))

    def _drain(self) -> list[Chunk | Rejected | StreamDown]:
        out: list[Chunk | Rejected | StreamDown] = []
        while self._queue:
            spec, val, dv, recv = self._queue.popleft()
            code = getattr(dv, "StatusCode", None)
            status = int(getattr(code, "value", 0)) if code is not None else 0
            name = str(getattr(code, "name", status))
            src_ns = timestamp_ns(getattr(dv, "SourceTimestamp", None))
            srv_ns = timestamp_ns(getattr(dv, "ServerTimestamp", None))
            out += self.decode(spec, val, status, name, src_ns, srv_ns, recv)
        for sid, n in self._overflow.items():
            out += [Rejected(sid, "queue_overflow", "notification queue full")] * n
        self._overflow.clear()
        return out

    def _fill(self, now_ns: int) -> list[Chunk]:
        out = []
        for h in self.streams.values():
            c = h.fill(now_ns, self.lag_ns)
            if c is not None:
                out.append(c)
        return out

    def _all_down(self, why: str) -> list[StreamDown]:
        self._fresh = set(self.streams)
        return [StreamDown(sid, "disconnected", why) for sid, h in self.streams.items() if h.stop()]

    # -- I/O ------------------------------------------------------------------------------------

    async def _open(self) -> Any:
        """A connected client with our subscription on every node (raises on failure)."""
        from asyncua import ua
        from asyncua.client.client import Client
        from asyncua.crypto import security_policies

        factory = self.client_factory or Client
        client = factory(url=self.url, timeout=self.timeout_s, watchdog_intervall=self.watchdog_s)
        client.session_timeout = 60_000  # a session we lose is freed by the server within a minute
        client.application_uri = self.application_uri
        client.name = client.description = "machinewatch"
        o = self.options
        if o.get("username"):
            client.set_user(str(o["username"]))
            client.set_password(resolve_secret(o, "password", self.path) or "")
        if self.policy != "None":
            # paths, not bytes: asyncua tells PEM from DER by the file name's ending
            files = {k: _readable(o, k, self.path) for k in ("certificate_file", "private_key_file")}
            pinned = o.get("server_certificate_file")
            server_cert = _readable(o, "server_certificate_file", self.path) if pinned else None
            await client.set_security(
                getattr(security_policies, f"SecurityPolicy{self.policy}"),
                certificate=files["certificate_file"],
                private_key=files["private_key_file"],
                private_key_password=resolve_secret(o, "private_key_password", self.path),
                server_certificate=server_cert,
                mode=getattr(ua.MessageSecurityMode, self.mode),
            )
        lost = getattr(client, "connection_lost_callback", False)
        if lost is None:  # asyncua >= 2: told at once, besides the subscription status

            async def on_lost(exc: Exception) -> None:
                self._lost = f"connection lost: {exc!r}"[:160]
                self._wake.set()

            client.connection_lost_callback = on_lost
        await asyncio.wait_for(client.connect(), 3 * self.timeout_s)
        try:
            await self._subscribe(client, ua)
        except BaseException:
            await self._close(client)
            raise
        return client

    async def _subscribe(self, client: Any, ua: Any) -> list[StreamDown]:
        self._by_nodeid.clear()
        self._queue.clear()
        self._lost = None
        sub = await client.create_subscription(self.publishing_ms, _Handler(self))
        groups: dict[float, list[tuple[NodeSpec, Any]]] = {}
        for spec in self.nodes:
            node = client.get_node(spec.node_id)
            self._by_nodeid[node.nodeid] = spec
            si = spec.sampling_interval_ms
            if si is None:
                si = 1000.0 / self.streams[spec.stream_id].rate_hz
            groups.setdefault(si, []).append((spec, node))
        self._bad_nodes = []
        for si, items in groups.items():
            # the server samples every si ms and publishes every publishing_ms: queue what lies between
            qsize = max(1, math.ceil(self.publishing_ms / si) + 1)
            res = await sub.subscribe_data_change(
                [n for _, n in items], sampling_interval=si, queuesize=qsize
            )
            for (spec, _), r in zip(items, res, strict=True):
                if isinstance(r, ua.StatusCode):
                    del self._by_nodeid[client.get_node(spec.node_id).nodeid]
                    log.warning("opcua source %s: cannot subscribe %s: %s", self.name, spec.node_id, r.name)
                    self._bad_nodes.append(StreamDown(spec.stream_id, "bad_node", str(r.name)))
        return self._bad_nodes

    async def _close(self, client: Any) -> None:
        try:
            await asyncio.wait_for(client.disconnect(), self.timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the server is gone anyway; drop the socket
            log.debug("opcua source %s: disconnect: %r", self.name, exc)
            with contextlib.suppress(Exception):
                client.disconnect_socket()

    async def _wait(self, client: Any) -> str | None:
        """Until notifications or the next fill tick; the reason if the connection is lost."""
        try:
            await asyncio.wait_for(self._wake.wait(), self.tick_s)
        except TimeoutError:
            pass
        self._wake.clear()
        if self._lost is None:
            check = getattr(client, "check_connection", None)
            if check is not None:
                await check()  # raises once asyncua's watchdog has found the server dead
        return self._lost

    async def chunks(self) -> AsyncIterator[Chunk | Rejected | StreamDown]:
        """Connect, subscribe, yield; on any loss report every stream down and reconnect, forever."""
        if not self.nodes:
            await self.idle("every node names an asset another gateway runs")
            return
        from asyncua.ua.uaerrors import UaError

        errors = (OSError, TimeoutError, ConnectionError, UaError)
        self._fresh = set(self.streams)
        while True:
            why = ""
            try:
                client = await self._open()
            except errors as exc:
                why = _describe(exc)
            else:
                self.connects += 1
                self.backoff.reset()
                log.info("opcua source %s: connected to %s, %d node(s)", self.name, self.url, len(self.nodes))
                try:
                    for item in self._bad_nodes:
                        self.streams[item.stream_id].stop()
                        yield item
                    while True:
                        lost = await self._wait(client)
                        for it in self._drain():
                            yield it
                        for c in self._fill(time.time_ns()):
                            yield c
                        if lost:
                            why = lost
                            break
                except errors as exc:
                    why = _describe(exc)
                finally:
                    await self._close(client)
            for down in self._all_down(why):
                yield down
            delay = self.backoff.next()
            self._rl.warning(
                f"opcua:{self.name}", "opcua source %s: %s; reconnecting in %.2f s", self.name, why, delay
            )
            await asyncio.sleep(delay)


def _describe(exc: BaseException) -> str:
    return (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)[:160]


def _readable(options: Mapping[str, Any], key: str, path: str) -> str:
    """A certificate or key file's path, checked readable; a :class:`ConfigError` naming the key if not."""
    try:
        with Path(str(options[key])).open("rb"):
            return str(options[key])
    except OSError as exc:
        raise ConfigError([ConfigProblem(f"{path}.{key}", f"cannot read {options[key]!r}: {exc}")]) from exc


def _numbers(options: Mapping[str, Any], path: str, keys: tuple[str, ...]) -> list[ConfigProblem]:
    probs = []
    for k in keys:
        v = options.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not v > 0):
            probs.append(ConfigProblem(f"{path}.{k}", "must be a number > 0"))
    return probs


def _security_problems(options: Mapping[str, Any], path: str) -> list[ConfigProblem]:
    probs = []
    policy = options.get("security_policy", "None")
    mode = options.get("security_mode", "None")
    if policy not in POLICIES:
        probs.append(ConfigProblem(f"{path}.security_policy", f"must be one of {', '.join(POLICIES)}"))
    if mode not in MODES:
        probs.append(ConfigProblem(f"{path}.security_mode", f"must be one of {', '.join(MODES)}"))
    if policy in POLICIES and mode in MODES and (policy == "None") != (mode == "None"):
        why = (
            "must be None with security_policy None" if policy == "None" else "must be Sign or SignAndEncrypt"
        )
        probs.append(ConfigProblem(f"{path}.security_mode", why))
    if policy != "None":
        for k in ("certificate_file", "private_key_file"):
            if k not in options:
                probs.append(ConfigProblem(f"{path}.{k}", f"is required with security_policy {policy}"))
    if "username" in options and not ("password_env" in options or "password_file" in options):
        probs.append(ConfigProblem(f"{path}.password_env", "username needs password_env or password_file"))
    for name in ("password", "private_key_password"):
        if f"{name}_env" in options and f"{name}_file" in options:
            probs.append(ConfigProblem(f"{path}.{name}_file", f"give {name}_env or {name}_file, not both"))
    return probs


def _node_problems(options: Mapping[str, Any], path: str) -> list[ConfigProblem]:
    nodes = options.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        return [ConfigProblem(f"{path}.nodes", "is required: an array of {node_id, stream} tables")]
    probs: list[ConfigProblem] = []
    seen_ids: set[str] = set()
    seen_streams: set[str] = set()
    for i, n in enumerate(nodes):
        p = f"{path}.nodes[{i}]"
        if not isinstance(n, dict):
            probs.append(ConfigProblem(p, "must be a table {node_id, stream}"))
            continue
        probs += [ConfigProblem(f"{p}.{k}", "unknown key") for k in n if k not in _NODE_KEYS]
        nid = n.get("node_id")
        if not isinstance(nid, str) or not _NODE_ID_RE.match(nid):
            probs.append(
                ConfigProblem(f"{p}.node_id", 'must be an OPC UA node id like "ns=2;s=Pump1.Temperature"')
            )
        elif nid in seen_ids:
            probs.append(ConfigProblem(f"{p}.node_id", f"{nid} is subscribed twice"))
        else:
            seen_ids.add(nid)
        sid = n.get("stream")
        if not isinstance(sid, str) or sid.count("/") != 1:
            probs.append(ConfigProblem(f"{p}.stream", 'is required: "<asset>/<stream>"'))
        elif sid in seen_streams:
            probs.append(ConfigProblem(f"{p}.stream", f"{sid} is fed by two nodes"))
        else:
            seen_streams.add(sid)
        for k in ("scale", "offset"):
            v = n.get(k)
            if v is not None and (
                isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)
            ):
                probs.append(ConfigProblem(f"{p}.{k}", "must be a finite number"))
        if n.get("scale") == 0:
            probs.append(ConfigProblem(f"{p}.scale", "must not be 0"))
        probs += _numbers(n, p, ("sampling_interval_ms",))
    return probs
