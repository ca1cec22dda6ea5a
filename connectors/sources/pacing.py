"""Pacing shared by the built-in file and simulation sources.

A source that produces data faster than the real world (a simulator, a file replay) keeps pace with
a *speed-up*: simulated seconds per wall second. A chunk is due when its last frame has been
"measured": ``due = (t_end - t_start) / speedup`` wall seconds after the source started. With
``speedup = "max"`` (or 0) nothing waits, but the source still hands control back to the event
loop after every chunk so the rest of the engine keeps running.

The schedule (:meth:`Pacer.due_s`) is pure; :meth:`Pacer.wait` is the only part that sleeps, and
its clock and sleep are injectable so tests check the pacing without waiting.
"""

from __future__ import annotations

__all__ = ["Pacer", "check_pacing_options", "check_speedup", "pacing_options", "parse_speedup"]

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from machinewatch.engine.config import _Checker


def check_speedup(value: Any) -> str | None:
    """Why ``value`` is not a valid ``speedup`` option, or ``None`` when it is."""
    if isinstance(value, str):
        return None if value == "max" else f'must be a number > 0, 0 or "max"; got {value!r}'
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f'must be a number > 0, 0 or "max"; got {type(value).__name__}'
    if not math.isfinite(value) or value < 0:
        return 'must be > 0 (0 or "max" = as fast as possible)'
    return None


def parse_speedup(value: Any) -> float | None:
    """The speed-up as a float, ``None`` for as fast as possible (0 or ``"max"``)."""
    if value is None:
        return 1.0
    if value == "max" or value == 0:
        return None
    return float(value)


def _chunk_samples(v: int) -> str | None:
    return None if 1 <= v <= 1 << 20 else "must be 1-1048576"


def _non_negative(v: int) -> str | None:
    return None if v >= 0 else "must be >= 0"


def check_pacing_options(c: _Checker, options: Mapping[str, Any], path: str) -> None:
    """Record in ``c`` the problems with the options both built-in sources share.

    Those are ``speedup`` (see :func:`check_speedup`), ``chunk_samples`` (1 to 2^20, default
    1024) and ``start_ns`` (>= 0, default the wall clock at start).
    """
    if "speedup" in options:
        reason = check_speedup(options["speedup"])
        if reason:
            c.bad(f"{path}.speedup", reason)
    c.get(options, "chunk_samples", path, int, 1024, check=_chunk_samples)
    c.get(options, "start_ns", path, int, None, check=_non_negative)


def pacing_options(options: Mapping[str, Any]) -> tuple[float | None, int, int | None]:
    """``(speedup, chunk_samples, start_ns)`` of a checked option table (see :func:`parse_speedup`)."""
    start_ns = int(options["start_ns"]) if "start_ns" in options else None
    return parse_speedup(options.get("speedup", 1.0)), int(options.get("chunk_samples", 1024)), start_ns


class Pacer:
    """Keeps a producer of timed chunks in step with the wall clock.

    Parameters
    ----------
    speedup
        Simulated seconds per wall second; ``None`` = as fast as possible.
    clock
        Monotonic wall clock in seconds (injectable for tests).
    sleep
        Coroutine function that waits a number of seconds (injectable for tests).
    """

    def __init__(
        self,
        speedup: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.speedup = speedup
        self._clock = clock
        self._sleep = sleep
        self._wall0: float | None = None
        self.slept_s = 0.0

    def due_s(self, sim_elapsed_s: float) -> float:
        """Wall seconds after the start at which data ``sim_elapsed_s`` into the run is due."""
        if self.speedup is None:
            return 0.0
        return sim_elapsed_s / self.speedup

    def start(self) -> None:
        """Fix the wall-clock origin (done by the first :meth:`wait` otherwise)."""
        self._wall0 = self._clock()

    async def wait(self, sim_elapsed_s: float) -> None:
        """Wait until data ``sim_elapsed_s`` into the run is due; always yields to the loop."""
        if self._wall0 is None:
            self.start()
        assert self._wall0 is not None
        delay = self._wall0 + self.due_s(sim_elapsed_s) - self._clock()
        if delay > 0.0:
            self.slept_s += delay
            await self._sleep(delay)
        else:
            # behind schedule or unpaced: still let the consumer and other tasks run
            await asyncio.sleep(0)
