"""The contracts every source, sink and actuator implements (read this to write a plug-in).

Connectors are dumb (STYLE.md): a connector connects, reads or writes, closes. The engine owns
buffering, batching, retries of failed writes, backoff, drop and reject counters, rate-limited
logging of bad records, the durable spool, the actuator policy (minimum on/off times, rate
limit, idempotence, safe state on shutdown) and the data-quality alarms. A connector does none of
that again. A worked example is ``examples/plugin-sensor`` in the repository.

Registering
    One entry point per class, in the group of its kind: ``machinewatch.sources``,
    ``machinewatch.sinks``, ``machinewatch.actuators`` (models: ``machinewatch.models``, see
    :mod:`machinewatch.models.base`). The entry point's name is the ``kind`` a config uses.

Lifecycle, in order
    1. ``validate_options(options, path)`` (classmethod) at config load and in
       ``machinewatch check``: return every problem as ``ConfigProblem(f"{path}.{key}", why)``;
       never raise, whatever the options hold (any TOML value). Report unknown keys. Secrets never
       arrive inline: read ``<name>_env``/``<name>_file`` with
       :func:`machinewatch.engine.config.resolve_secret`.
    2. ``validate_config(options, path, config)`` (classmethod, optional), only once the whole
       config is otherwise valid: problems only the whole config shows (a stream named that does
       not exist, rates or units that disagree).
    3. ``__init__(name, options, config)`` on the engine's event loop: parse the options, keep
       what you need, touch no network and open nothing. Raise
       :class:`~machinewatch.engine.errors.ConfigError` for what the config cannot satisfy; the
       engine then stops at start-up with the key path.
    4. ``async with connector``: ``__aenter__`` connects or opens and returns self;
       ``__aexit__`` releases, always, also after an error or a cancellation.
    5. The work: a source's :meth:`Source.chunks` is iterated by one task
       (``source.<kind>[<name>]``); a sink's :meth:`Sink.write` is called with batches from the
       spool; an actuator's :meth:`Actuator.set` on alarm transitions, then
       :meth:`Actuator.safe_state` at shutdown.

What to raise
    :class:`~machinewatch.engine.errors.ConnectorError` (``raise ... from exc``) when the outside
    world fails: a sink's failed batch is retried whole by the engine with capped exponential
    backoff (an attribute ``retry_after_s`` on the error sets the delay) and stays in the spool
    meanwhile; an actuator's failed command is counted (``actuator_errors``) and logged; an error
    from ``__aenter__`` stops the start-up. A source handles a lost connection itself:
    reconnect inside ``chunks()`` with capped, jittered backoff, and yield :class:`StreamDown`
    for the streams that have no data meanwhile. An exception that escapes ``chunks()`` stops
    the engine. One bad input record is never an exception: yield :class:`Rejected`.

Async and threads
    Everything runs on one asyncio loop that also runs the hot path: never block it. Blocking
    I/O and client libraries without asyncio go to ``asyncio.to_thread`` (or the library's own
    thread). Never swallow ``asyncio.CancelledError``; cleanup that awaits runs under a timeout.
    Accept a client or a client factory as an option or argument where a test may need a fake.

Counters and logging
    ``logging.getLogger(__name__)``; quiet at INFO, per-message detail at DEBUG, never a secret.
    The engine counts chunks, rejects (by ``Rejected.reason``), stream-downs, write errors and
    actuations, and exports them on ``/metrics``: a connector keeps no counters of its own.

The same contract is checked, for every registered plug-in, by
:func:`machinewatch.engine.plugins.check_class` (``machinewatch plugins --check``).
"""

from __future__ import annotations

__all__ = ["Actuator", "Rejected", "Sink", "Source", "StreamDown"]

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from machinewatch.engine.config import Config
from machinewatch.engine.errors import ConfigProblem
from machinewatch.engine.types import AlarmEvent, Chunk, Summary


@dataclass(frozen=True, slots=True)
class Rejected:
    """An input record a source could not turn into a chunk; the engine counts it by reason.

    ``where`` is the stream id when known, else the topic or file it came from.
    """

    where: str
    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class StreamDown:
    """A source knows a stream has no valid data now: a failed poll, a bad OPC UA status, a
    Sparkplug DEATH. The engine raises the stream's ``STALE`` data-quality alarm at once (with
    ``reason`` and ``detail`` in its text), never stitches a window across it, and clears it with
    the stream's next chunk. It never moves a machine alarm. ``stream_id`` is ``"<asset>/<stream>"``.
    """

    stream_id: str
    reason: str
    detail: str = ""


class _Connector:
    """Shared lifecycle: constructed from options, used as an async context manager."""

    def __init__(self, name: str, options: Mapping[str, Any], config: Config) -> None:
        self.name = name
        self.options = dict(options)
        self.config = config

    @classmethod
    def validate_options(cls, options: Mapping[str, Any], path: str) -> list[ConfigProblem]:
        """Every problem with ``options`` (``path`` is their key path in the config)."""
        return []

    @classmethod
    def validate_config(cls, options: Mapping[str, Any], path: str, config: Config) -> list[ConfigProblem]:
        """Problems only the whole config shows (streams named that do not exist, units that
        disagree); asked by the config loader once the rest of the config is valid."""
        return []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


class Source(_Connector):
    """Sensors in: yields chunks (and rejected records) until the source ends or is cancelled.

    Implement :meth:`chunks` as an async generator. Each :class:`~machinewatch.engine.types.Chunk`
    names its stream ``"<asset>/<stream>"`` of the config, its data time ``t0_ns`` (ns since the
    epoch) and ``rate_hz``, a per-stream ``seq`` that grows by one per chunk (a jump is a gap the
    engine never stitches a window across) and 1-D float32 ``values`` (channels interleaved).
    NaN or inf values are passed on, not filtered: the engine flags them.
    """

    def chunks(self) -> AsyncIterator[Chunk | Rejected | StreamDown]:
        """The stream of chunks; ends when the source has no more data (replay, timed runs).

        A live source never ends on its own: the engine stops it by cancelling the pending
        ``anext`` and closing the generator (``aclose``, 5 s), then leaves the ``async with``.
        When every source has ended, ``machinewatch run`` drains the hot path, flushes the
        summaries and exits 0. Items are consumed one at a time, so a chunk waits for room in
        the engine's bounded queue (back-pressure); do not buffer ahead.
        """
        raise NotImplementedError

    async def idle(self, why: str) -> None:
        """Wait until the engine stops: a live source with nothing to read on this gateway
        (every stream it maps belongs to another gateway of the fleet). Logs ``why`` once."""
        logging.getLogger(type(self).__module__).info("source %s: %s: idle", self.name, why)
        await asyncio.Event().wait()

    async def ready(self) -> None:
        """Return once data published from now on reaches this source (subscribed, listening).

        The engine announces itself ``online`` (:mod:`machinewatch.engine.status`) only after
        every source is ready, so a publisher that waits for ``online`` loses nothing. The
        default is ready at once: a source that reads (polls, replays) rather than subscribes
        misses nothing by starting later. A broker subscription is not in place when the
        connection is: override this where the difference can drop data.
        """
        return None


class Sink(_Connector):
    """Summaries and alarm events out. ``write`` raises ``ConnectorError`` on failure.

    Records reach a sink from the durable spool and leave it only when ``write`` returned, so a
    write must be idempotent: the same batch may come again after a crash or a retry. Write each
    record under its own timestamp and keys (``t_ns``, site, asset, stream) so a repeat
    overwrites. A sink with ``accepts_health = True`` is called with ``health=`` engine
    self-metrics too.
    """

    async def write(self, summaries: Sequence[Summary], events: Sequence[AlarmEvent]) -> None:
        """Write one batch (up to a few hundred records); the whole batch is retried if this raises."""
        raise NotImplementedError


class Actuator(_Connector):
    """Plant out: told to energise or release an output on alarm transitions only.

    The engine wraps every actuator in one policy
    (:class:`~machinewatch.connectors.actuators.policy.PolicedActuator`): it sends only changes,
    enforces ``min_on_s``/``min_off_s``/``max_changes_per_min`` and drives the configured
    ``safe_state`` on shutdown and lost data. ``validate_options`` must therefore accept those
    option names (``POLICY_KEYS``, checked with ``policy_problems``). One output's commands
    arrive in order; with the class attribute ``concurrent_assets = True`` different assets'
    commands may overlap.
    """

    async def set(self, asset: str, energised: bool, event: AlarmEvent | None) -> None:
        """Drive the output for ``asset``; ``event`` is the transition that caused it."""
        raise NotImplementedError

    async def safe_state(self) -> None:
        """Put every output in its configured safe state (shutdown, lost data)."""
        return None
