"""``example-lines``: a sensor that prints one line of ``key=value`` readings per sample.

Many small devices talk like this: a microcontroller on a serial port, a data logger writing a
file, a vendor tool piping into a FIFO::

    temp=41.2 current=3.10
    temp=41.3 current=3.12
    temp=ERR current=3.11        <- the device says its temperature probe failed

Each non-blank line is one sample period of the device; each mapped key feeds one stream.

Options
-------
::

    [sources.oven_logger]
    kind = "example-lines"
    path = "oven.log"                  # a file, a FIFO, or a serial port set up with stty
    streams = { temp = "oven1/temp" }  # line key -> "<asset>/<stream>" of the config
    # follow = false                   # at the end of the file: stop (false) or wait for lines
    # poll_s = 0.5                     # with follow: how often to look for new lines
    # start_ns = 0                     # time of the first line (default: when reading starts)

Behaviour
---------
- Line ``i`` is stamped ``start_ns + i / rate_hz`` and carries ``seq = i``: the device samples on
  its own clock at the streams' configured ``rate_hz`` (every mapped stream must share one rate).
- A value that is not a number: ``Rejected(stream_id, "bad_value", ...)``. The stream skips that
  ``seq``, so the engine sees the hole and never stitches a window across it.
- A token without ``=``: ``Rejected(path, "bad_line", ...)``.
- The value ``ERR``: ``StreamDown(stream_id, "sensor_error", ...)``; the engine raises the
  stream's STALE alarm at once and clears it with the next good reading.
- Keys that no stream maps are ignored (devices often print more than you watch); blank lines
  and ``#`` comments are skipped.
"""

from __future__ import annotations

__all__ = ["ERROR_VALUE", "LineSensorSource", "parse_line"]

import asyncio
import math
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from machinewatch.connectors.base import Rejected, Source, StreamDown
from machinewatch.engine.config import Config
from machinewatch.engine.errors import ConfigError, ConfigProblem, ConnectorError, PayloadError
from machinewatch.engine.types import Chunk

#: the value a device prints when its probe has failed
ERROR_VALUE = "ERR"
_KEYS = ("path", "streams", "follow", "poll_s", "start_ns")
#: bytes read per worker-thread call (a few hundred lines)
_READ_HINT = 16384


def parse_line(text: str) -> dict[str, str]:
    """The ``key=value`` tokens of one line (separated by blanks or commas), values unparsed.

    >>> parse_line("temp=41.2, current=3.1")
    {'temp': '41.2', 'current': '3.1'}

    Raises :class:`~machinewatch.engine.errors.PayloadError` (reason ``bad_line``) on a token
    without ``=``.
    """
    out: dict[str, str] = {}
    for token in text.replace(",", " ").split():
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise PayloadError("bad_line", f"token {token!r} is not key=value")
        out[key] = value
    return out


class LineSensorSource(Source):
    """Reads ``key=value`` lines from a file, FIFO or serial device and yields one chunk per reading.

    The constructor checks the options and the streams they name and opens nothing;
    ``async with`` opens the file (in a worker thread: opening a FIFO waits for its writer).
    """

    def __init__(self, name: str, options: Mapping[str, Any], config: Config) -> None:
        super().__init__(name, options, config)
        where = f"sources.{name}"
        # the engine has run both checks already; repeating them keeps direct use (tests) safe
        problems = self.validate_options(options, where)
        if not problems:
            problems = self.validate_config(options, where, config)
        if problems:
            raise ConfigError(problems)
        self.path = Path(options["path"])
        self.streams: dict[str, str] = dict(options["streams"])
        self.follow = bool(options.get("follow", False))
        self.poll_s = float(options.get("poll_s", 0.5))
        self.start_ns: int | None = options.get("start_ns")
        self.rate_hz = config.stream(next(iter(self.streams.values())))[1].rate_hz
        self._file: IO[str] | None = None

    @classmethod
    def validate_options(cls, options: Mapping[str, Any], path: str) -> list[ConfigProblem]:
        """Every problem with ``options``, by key path; never raises."""
        probs = [ConfigProblem(f"{path}.{k}", "unknown key") for k in options if k not in _KEYS]
        if not isinstance(options.get("path"), str) or not options.get("path"):
            probs.append(ConfigProblem(f"{path}.path", "is required (a file, FIFO or serial device)"))
        streams = options.get("streams")
        if not isinstance(streams, Mapping) or not streams:
            probs.append(ConfigProblem(f"{path}.streams", 'is required: { line_key = "asset/stream" }'))
        else:
            for key, sid in streams.items():
                if not isinstance(sid, str) or sid.count("/") != 1:
                    probs.append(ConfigProblem(f"{path}.streams.{key}", 'must be "<asset>/<stream>"'))
        if not isinstance(options.get("follow", False), bool):
            probs.append(ConfigProblem(f"{path}.follow", "must be true or false"))
        poll = options.get("poll_s", 0.5)
        if isinstance(poll, bool) or not isinstance(poll, int | float) or not 0 < poll < math.inf:
            probs.append(ConfigProblem(f"{path}.poll_s", "must be a number of seconds > 0"))
        start = options.get("start_ns")
        if start is not None and (isinstance(start, bool) or not isinstance(start, int) or start < 0):
            probs.append(ConfigProblem(f"{path}.start_ns", "must be an integer >= 0 (ns since the epoch)"))
        return probs

    @classmethod
    def validate_config(cls, options: Mapping[str, Any], path: str, config: Config) -> list[ConfigProblem]:
        """Problems against the rest of the config: the streams exist and share one rate."""
        probs: list[ConfigProblem] = []
        rates: dict[str, float] = {}
        for key, stream_id in options["streams"].items():
            try:
                rates[key] = config.stream(stream_id)[1].rate_hz
            except KeyError:
                probs.append(ConfigProblem(f"{path}.streams.{key}", f"names no stream ({stream_id!r})"))
        if len(set(rates.values())) > 1:
            probs.append(ConfigProblem(f"{path}.streams", f"streams must share one rate_hz: {rates}"))
        return probs

    async def __aenter__(self) -> LineSensorSource:
        try:  # blocking calls never run on the event loop
            self._file = await asyncio.to_thread(self.path.open, encoding="utf-8", errors="replace")
        except OSError as exc:
            raise ConnectorError(f"source {self.name}: cannot open {self.path}: {exc}") from exc
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    async def chunks(self) -> AsyncIterator[Chunk | Rejected | StreamDown]:
        """One chunk per mapped reading; ends at the end of the file unless ``follow``."""
        f = self._file
        if f is None:
            raise ConnectorError(f"source {self.name}: not open (use 'async with')")
        start = time.time_ns() if self.start_ns is None else self.start_ns
        period_ns = 1e9 / self.rate_hz
        seq = lineno = 0
        partial = ""
        while True:
            lines = await asyncio.to_thread(f.readlines, _READ_HINT)
            if not lines:
                if not self.follow:
                    return
                await asyncio.sleep(self.poll_s)
                continue
            lines[0] = partial + lines[0]
            partial = ""
            if self.follow and not lines[-1].endswith("\n"):
                partial = lines.pop()  # the writer is mid-line: finish it on the next read
            for line in lines:
                lineno += 1
                text = line.split("#", 1)[0].strip()
                if not text:
                    continue
                where = f"{self.path.name} line {lineno}"
                try:
                    fields = parse_line(text)
                except PayloadError as exc:
                    yield Rejected(str(self.path), exc.reason, f"{where}: {exc.detail}")
                    fields = {}
                t_ns = start + round(seq * period_ns)
                for key, raw in fields.items():
                    stream_id = self.streams.get(key)
                    if stream_id is None:
                        continue
                    if raw == ERROR_VALUE:
                        yield StreamDown(stream_id, "sensor_error", f"{where}: the device reports {raw}")
                        continue
                    try:
                        value = float(raw)
                    except ValueError:
                        yield Rejected(stream_id, "bad_value", f"{where}: {raw!r} is not a number")
                        continue
                    yield Chunk(stream_id, t_ns, self.rate_hz, seq, np.array([value], dtype=np.float32))
                seq += 1
