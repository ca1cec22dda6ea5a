"""The contracts every source, sink and actuator implements.

Connectors are dumb (STYLE.md): a connector connects, reads or writes, closes. The engine owns
buffering, batching, retries, counters and the spool. A connector's constructor validates its
options and touches no network; ``__aenter__`` connects, ``__aexit__`` releases.
"""

from __future__ import annotations

__all__ = ["Actuator", "Rejected", "Sink", "Source", "StreamDown"]

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
    """Sensors in: yields chunks (and rejected records) until the source ends or is cancelled."""

    def chunks(self) -> AsyncIterator[Chunk | Rejected | StreamDown]:
        """The stream of chunks; ends when the source has no more data (replay, timed runs)."""
        raise NotImplementedError


class Sink(_Connector):
    """Summaries and alarm events out. ``write`` raises ``ConnectorError`` on failure."""

    async def write(self, summaries: Sequence[Summary], events: Sequence[AlarmEvent]) -> None:
        """Write one batch; the whole batch is retried by the engine if this raises."""
        raise NotImplementedError


class Actuator(_Connector):
    """Plant out: told to energise or release an output on alarm transitions only."""

    async def set(self, asset: str, energised: bool, event: AlarmEvent | None) -> None:
        """Drive the output for ``asset``; ``event`` is the transition that caused it."""
        raise NotImplementedError

    async def safe_state(self) -> None:
        """Put every output in its configured safe state (shutdown, lost data)."""
        return None
