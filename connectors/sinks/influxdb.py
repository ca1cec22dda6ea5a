"""InfluxDB sink: line protocol over the v2 write API with influxdb-client's async client.

Works with InfluxDB 2.x and Cloud (``org``, ``bucket``, API token), InfluxDB 3 (its
v2-compatible ``/api/v2/write``; ``bucket`` is the database) and InfluxDB 1.8+ (token
``"user:password"``, or any string when auth is off; ``bucket`` is ``"database/retention"``
or ``"database"``; ``org`` is ignored, ``"-"``). The schema is in :mod:`machinewatch.engine.lineprotocol`.

The connector is dumb (STYLE.md): it encodes and sends one batch and raises
:class:`ConnectorError` when that fails; the engine keeps the batch in its spool and retries
with backoff. Two things only it can know are handled here:

- a 429 or 503 raises :class:`SinkBusy` carrying the server's ``Retry-After`` (seconds), which
  the engine honours;
- a 400/413/422 means the server rejected rows, which retrying cannot fix: the batch is split
  in halves until the rejected lines are isolated; each goes to a dead-letter file
  (``<state_dir>/deadletter-<sink>.lp``, with a comment line giving the status and message)
  and the rest is written. A rejected row never blocks the queue. Re-sent good rows overwrite
  themselves (explicit timestamps), so the split costs bandwidth, not correctness.

401/403/404 (bad token, unknown bucket) are not row problems: they raise and are retried, so
nothing is dead-lettered because of a misconfiguration.

Options: ``url`` (required), ``bucket`` (required), ``org`` (default ``"-"``), ``token_env`` or
``token_file`` (see :func:`machinewatch.engine.config.resolve_secret`), ``timeout_s`` (10),
``max_future_s`` (86400: points further ahead of the wall clock are dropped), ``dead_letter``
(path, default in ``state_dir``), ``gzip`` (false).
"""

from __future__ import annotations

__all__ = ["InfluxSink", "SinkBusy", "parse_retry_after"]

import asyncio
import email.utils
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from machinewatch.connectors.base import Sink
from machinewatch.engine.config import Config, resolve_secret
from machinewatch.engine.errors import ConfigError, ConfigProblem, ConnectorError
from machinewatch.engine.health import HealthSample
from machinewatch.engine.lineprotocol import MAX_FUTURE_S, encode
from machinewatch.engine.types import AlarmEvent, Summary

log = logging.getLogger(__name__)

_OPTIONS = {
    "url",
    "bucket",
    "org",
    "token_env",
    "token_file",
    "timeout_s",
    "max_future_s",
    "dead_letter",
    "gzip",
}
#: statuses that mean "these rows are bad", not "try again later"
_REJECT = frozenset({400, 413, 422})
_BUSY = frozenset({429, 503})


class SinkBusy(ConnectorError):
    """The server asked us to come back later (429/503); ``retry_after_s`` when it said when."""

    def __init__(self, message: str, status: int, retry_after_s: float | None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


def parse_retry_after(value: str | None, now_s: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date).

    >>> parse_retry_after("7")
    7.0
    >>> parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now_s=1445412480.0)
    10.0
    >>> parse_retry_after("soon") is None
    True
    """
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = time.time() if now_s is None else now_s
    return max(0.0, when.timestamp() - now)


def _status_of(exc: BaseException) -> tuple[int | None, str, Mapping[str, str]]:
    status = getattr(exc, "status", None)
    body = getattr(exc, "body", None) or getattr(exc, "reason", None) or str(exc)
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    headers = getattr(exc, "headers", None) or {}
    return (int(status) if isinstance(status, int) else None), str(body)[:500], headers


class InfluxSink(Sink):
    """Writes summaries, alarm events and health samples to InfluxDB (v2 write API).

    ``client_factory(url, token, org, timeout_ms, gzip)`` builds the async client; the default
    is influxdb-client's ``InfluxDBClientAsync``. Tests may pass a recording fake.
    """

    #: the engine sends :class:`HealthSample` records to sinks that say so
    accepts_health = True

    def __init__(
        self,
        name: str,
        options: Mapping[str, Any],
        config: Config,
        client_factory: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__(name, options, config)
        probs = self.validate_options(options, f"sinks.{name}")
        if probs:
            raise ConfigError(probs)
        self.url = str(options["url"]).rstrip("/")
        self.bucket = str(options["bucket"])
        self.org = str(options.get("org", "-"))
        self.timeout_s = float(options.get("timeout_s", 10.0))
        self.max_future_s = float(options.get("max_future_s", MAX_FUTURE_S))
        self.gzip = bool(options.get("gzip", False))
        self.dead_letter = Path(
            str(options.get("dead_letter") or config.engine.state_dir / f"deadletter-{name}.lp")
        )
        self.token = resolve_secret(options, "token", f"sinks.{name}") or ""
        self._factory = client_factory or _default_client
        self._client: Any = None
        self._write_api: Any = None
        self.counters: Counter[str] = Counter()

    @classmethod
    def validate_options(cls, options: Mapping[str, Any], path: str) -> list[ConfigProblem]:
        probs = []
        for k in options:
            if k not in _OPTIONS:
                probs.append(ConfigProblem(f"{path}.{k}", "unknown key"))
        for k in ("url", "bucket"):
            if k not in options:
                probs.append(ConfigProblem(f"{path}.{k}", "is required"))
            elif not isinstance(options[k], str) or not options[k]:
                probs.append(ConfigProblem(f"{path}.{k}", "must be a non-empty string"))
        url = options.get("url")
        if isinstance(url, str) and url and not url.startswith(("http://", "https://")):
            probs.append(ConfigProblem(f"{path}.url", f"must start with http:// or https://, got {url!r}"))
        for k in ("org", "token_env", "token_file", "dead_letter"):
            if k in options and not isinstance(options[k], str):
                probs.append(ConfigProblem(f"{path}.{k}", "must be a string"))
        for k in ("timeout_s", "max_future_s"):
            v = options.get(k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or v <= 0):
                probs.append(ConfigProblem(f"{path}.{k}", "must be a number > 0"))
        if "gzip" in options and not isinstance(options["gzip"], bool):
            probs.append(ConfigProblem(f"{path}.gzip", "must be true or false"))
        return probs

    async def __aenter__(self) -> InfluxSink:
        # No network here: the client connects on the first write, so an engine starts (and
        # spools) while the database is down.
        self._client = self._factory(self.url, self.token, self.org, int(self.timeout_s * 1000), self.gzip)
        self._write_api = self._client.write_api()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            try:
                await asyncio.wait_for(self._client.close(), 5.0)
            except Exception as e:  # closing must not mask the real exit reason
                log.debug("sink %s: close: %s", self.name, e)
            self._client = None
            self._write_api = None

    async def write(
        self,
        summaries: Sequence[Summary],
        events: Sequence[AlarmEvent],
        health: Sequence[HealthSample] = (),
    ) -> None:
        """Encode and send one batch; raise :class:`ConnectorError` if it must be retried."""
        if self._write_api is None:
            raise ConnectorError(f"sink {self.name}: not open")
        enc = encode(
            summaries,
            events,
            [(h.site, h.t_ns, h.fields) for h in health],
            max_future_s=self.max_future_s,
            tags={"gateway": self.config.engine.gateway_id},  # which fleet engine wrote it
        )
        if enc.dropped_fields:
            self.counters["fields_dropped_nonfinite"] += enc.dropped_fields
        if enc.dropped_bad_time:
            self.counters["points_dropped_bad_time"] += enc.dropped_bad_time
            log.warning(
                "sink %s: %d point(s) with an implausible timestamp dropped", self.name, enc.dropped_bad_time
            )
        if enc.dropped_empty:
            self.counters["points_dropped_empty"] += enc.dropped_empty
        if enc.lines:
            await self._send(enc.lines)
        self.counters["points_written"] += len(enc.lines)

    async def _post(self, lines: list[str]) -> None:
        try:
            await self._write_api.write(
                bucket=self.bucket, org=self.org, record="\n".join(lines), write_precision="ns"
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the client raises ApiException, aiohttp and timeout errors
            status, body, headers = _status_of(exc)
            if status is None:
                raise ConnectorError(
                    f"sink {self.name}: {self.url} unreachable: {type(exc).__name__}: {body}"
                ) from exc
            if status in _BUSY:
                ra = parse_retry_after(headers.get("Retry-After") or headers.get("retry-after"))
                raise SinkBusy(
                    f"sink {self.name}: HTTP {status} from {self.url}"
                    + (f", retry after {ra:g} s" if ra is not None else ""),
                    status,
                    ra,
                ) from exc
            if status in _REJECT:
                raise _Rejected(status, body) from exc
            raise ConnectorError(f"sink {self.name}: HTTP {status} from {self.url}: {body}") from exc

    async def _send(self, lines: list[str]) -> None:
        try:
            await self._post(lines)
        except _Rejected as rej:
            if len(lines) == 1:
                self._dead_letter(lines, rej)
                return
            mid = len(lines) // 2
            await self._send(lines[:mid])
            await self._send(lines[mid:])

    def _dead_letter(self, lines: list[str], rej: _Rejected) -> None:
        self.counters["dead_letter"] += len(lines)
        log.error(
            "sink %s: HTTP %d, %d row(s) rejected -> %s: %s",
            self.name,
            rej.status,
            len(lines),
            self.dead_letter,
            rej.body[:200],
        )
        try:
            self.dead_letter.parent.mkdir(parents=True, exist_ok=True)
            with self.dead_letter.open("a", encoding="utf-8") as f:
                stamp = datetime.now(UTC).isoformat(timespec="seconds")
                msg = rej.body.replace("\n", " ")[:300]
                f.write(f"# {stamp} HTTP {rej.status}: {msg}\n")
                f.write("\n".join(lines) + "\n")
        except OSError as exc:
            log.error("sink %s: cannot write dead-letter file %s: %s", self.name, self.dead_letter, exc)


class _Rejected(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


def _default_client(url: str, token: str, org: str, timeout_ms: int, gzip: bool) -> Any:
    from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

    return InfluxDBClientAsync(url=url, token=token, org=org, timeout=timeout_ms, enable_gzip=gzip)
