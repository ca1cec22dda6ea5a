"""Engine self-metrics: a sample record, Prometheus text, and a tiny local HTTP endpoint.

The same numbers go two ways: periodically into the spool as ``machinewatch_health`` points
(so they reach InfluxDB next to the data, and survive an outage like any summary), and on
demand over HTTP:

``GET /healthz``
    ``200 ok`` while the engine runs and every sink wrote within ``stale_after_s`` (or has
    nothing to write); ``503`` with the reason otherwise. Body is JSON.
``GET /metrics``
    Prometheus text format 0.0.4: every metric as ``machinewatch_<name>`` (gauge), labelled
    with the site.

The server binds to ``127.0.0.1`` by default (``engine.http_host``), port ``engine.http_port``
(0 = off). It is a few lines of asyncio streams, not a web framework: two GET routes only.

Metric names (all floats): ``queue_chunks``, ``queue_windows``, ``spool_records``,
``spool_bytes``, ``spool_oldest_age_s``, ``spool_dropped_overflow``, ``spool_reserve_released``
(times a full disk took the spool's reserve), ``spool_pending_<sink>``,
``sink_lag_s_<sink>`` (age of the oldest record that sink has not written), ``sink_write_errors``,
``sink_written_<sink>``, ``sink_dead_letter_<sink>``, ``windows_shed``, ``windows_scored``,
``rejected_<reason>``, ``chunks_in``, ``summaries``, ``alarm_events``, ``uptime_s``, ``assets``
(the assets this gateway runs) and the other engine counters.
"""

from __future__ import annotations

__all__ = [
    "HealthSample",
    "HealthServer",
    "engine_metrics",
    "engine_problems",
    "prometheus_text",
    "sanitize_metric_name",
]

import asyncio
import contextlib
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

_BAD = re.compile(r"[^a-zA-Z0-9_]")


@dataclass(frozen=True, slots=True)
class HealthSample:
    """One sample of the engine's self-metrics (wall time ``t_ns``)."""

    site: str
    t_ns: int
    fields: dict[str, float] = field(default_factory=dict)


def sanitize_metric_name(name: str) -> str:
    """A valid Prometheus metric name part (letters, digits, ``_``).

    >>> sanitize_metric_name("sink_lag_s_influx-main")
    'sink_lag_s_influx_main'
    """
    out = _BAD.sub("_", name)
    return out if out and not out[0].isdigit() else "_" + out


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def prometheus_text(metrics: Mapping[str, float], labels: Mapping[str, str] | None = None) -> str:
    """Prometheus text exposition (version 0.0.4), every metric a gauge.

    >>> print(prometheus_text({"spool_bytes": 10.0}, {"site": "s1"}), end="")
    # TYPE machinewatch_spool_bytes gauge
    machinewatch_spool_bytes{site="s1"} 10.0
    """
    lab = ""
    if labels:
        esc = {k: v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for k, v in labels.items()}
        lab = "{" + ",".join(f'{k}="{v}"' for k, v in sorted(esc.items())) + "}"
    lines = []
    for name in sorted(metrics):
        m = "machinewatch_" + sanitize_metric_name(name)
        lines.append(f"# TYPE {m} gauge")
        lines.append(f"{m}{lab} {_fmt(metrics[name])}")
    return "\n".join(lines) + "\n"


class HealthServer:
    """``/healthz`` and ``/metrics`` on ``host:port`` (asyncio streams; GET only).

    ``metrics()`` returns the current numbers; ``problems()`` the reasons the engine is not
    healthy (empty when it is). Use as an async context manager; ``port`` is the bound port
    (useful with port 0 in tests).
    """

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Callable[[], Mapping[str, float]],
        problems: Callable[[], list[str]],
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.metrics = metrics
        self.problems = problems
        self.labels = dict(labels or {})
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> HealthServer:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("health endpoint on http://%s:%d/healthz and /metrics", self.host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    def respond(self, method: str, path: str) -> tuple[int, str, str]:
        """Status, content type and body for one request (pure; the socket code is around it)."""
        path = path.split("?", 1)[0]
        if method != "GET":
            return 405, "text/plain", "method not allowed\n"
        if path == "/metrics":
            text = prometheus_text(self.metrics(), self.labels)
            return 200, "text/plain; version=0.0.4; charset=utf-8", text
        if path in ("/healthz", "/health"):
            probs = self.problems()
            body = json.dumps({"status": "fail" if probs else "ok", "problems": probs}) + "\n"
            return (503 if probs else 200), "application/json", body
        return 404, "text/plain", "not found: try /healthz or /metrics\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            method, path, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            status, ctype, body = self.respond(method, path)
            data = body.encode()
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
            writer.write(
                f"HTTP/1.1 {status} {reason.get(status, '')}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)


def engine_metrics(engine: Any) -> dict[str, float]:
    """Every self-metric of a running :class:`machinewatch.engine.pipeline.Engine` (duck-typed).

    Engine and hot-path counters as they are, queue depths, the spool's size, age and drops,
    and per sink its backlog, lag and its own counters (``sink_<name>_<counter>``).
    """
    # always present (0 until something happens), so dashboards never query a missing field
    m: dict[str, float] = dict.fromkeys(
        ("chunks_in", "summaries", "alarm_events", "windows_scored", "windows_shed", "sink_write_errors"), 0.0
    )
    m.update({k: float(v) for k, v in engine.counters.items()})
    cfg = getattr(engine, "config", None)
    if cfg is not None:  # how many assets this gateway runs (the fleet dashboard sums them)
        m["assets"] = float(len(cfg.assets))
    hot = getattr(engine, "hot", None)
    if hot is not None:
        m.update({k: float(v) for k, v in hot.counters.items()})
        m.update({f"buffer_{k}": float(v) for k, v in hot.buffer_counters().items()})
    chunks = getattr(engine, "_chunks", None)
    m["queue_chunks"] = float(chunks.qsize()) if chunks is not None else 0.0
    m["queue_windows"] = float(len(getattr(engine, "_windows", ())))
    spool = getattr(engine, "spool", None)
    if spool is not None:
        st = spool.stats()
        m.update(
            spool_records=float(st.records),
            spool_bytes=float(st.bytes),
            spool_max_bytes=float(st.max_bytes),
            spool_oldest_age_s=st.oldest_age_s,
            spool_dropped_overflow=float(st.dropped_overflow),
            spool_quarantined=float(st.quarantined),
            spool_reserve_released=float(st.reserve_released),
        )
        for sink, n in st.pending.items():
            m[f"spool_pending_{sink}"] = float(n)
            m[f"sink_lag_s_{sink}"] = st.lag_s[sink]
    for sink in getattr(engine, "sinks", ()):
        for k, v in getattr(sink, "counters", {}).items():
            m[f"sink_{sink.name}_{k}"] = float(v)
    started = getattr(engine, "started_wall", None)
    if started is not None:
        m["uptime_s"] = max(0.0, time.time() - started)
    return {sanitize_metric_name(k): v for k, v in m.items()}


def engine_problems(engine: Any, stale_after_s: float) -> list[str]:
    """Why the engine is unhealthy: a sink with records older than ``stale_after_s`` unwritten."""
    out = []
    spool = getattr(engine, "spool", None)
    if spool is not None:
        for sink, lag in spool.stats().lag_s.items():
            if lag > stale_after_s:
                out.append(f"sink {sink}: oldest unwritten record is {lag:.0f} s old")
    return out
