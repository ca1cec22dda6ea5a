"""How long each stream has been silent, on the monotonic clock, net of the engine's own stalls.

A stream is STALE when nothing came from it for ``stale_after_s``. "Nothing came" can only be
observed while the engine runs: when the engine itself stops (a long GIL convoy with a
compiling thread, swapping, SIGSTOP, a paused VM), the data keeps arriving at the socket and is
read right after, but the watchdog, whose timer fires first on the resumed loop, would measure
the stall as silence and flag a healthy stream STALE (resetting its buffer). The watchdog ticks
at a fixed interval; a tick that comes late by more than ``grace_s`` tells how long the engine
did not run, and that time is not counted as anyone's silence.

Pure: the caller passes ``time.monotonic()`` readings.

>>> s = SilenceClock(tick_s=0.5, now=0.0)
>>> s.heard("p1/vib", 0.0)
>>> s.tick(0.5), s.tick(1.0), s.silent_s("p1/vib", 1.0)   # on time: 1 s of silence
(0.0, 0.0, 1.0)
>>> s.tick(9.5), s.silent_s("p1/vib", 9.5)    # the engine stood still 8 s: not silence
(8.0, 1.5)
"""

from __future__ import annotations

__all__ = ["SilenceClock"]


class SilenceClock:
    """Per-key last-heard times (monotonic seconds) that skip the engine's stalls.

    Parameters
    ----------
    tick_s
        The interval the caller calls :meth:`tick` at.
    now
        The start (a key never heard is silent since then).
    grace_s
        Lateness of a tick tolerated as scheduling jitter, not counted as a stall.
    """

    def __init__(self, tick_s: float, now: float, grace_s: float = 0.1) -> None:
        self.tick_s = tick_s
        self.grace_s = grace_s
        self._start = now
        self._prev_tick = now
        self._last: dict[str, float] = {}
        #: seconds of engine stalls discounted so far
        self.stalled_s = 0.0

    def heard(self, key: str, now: float) -> None:
        """Data came from ``key``."""
        self._last[key] = now

    def tick(self, now: float) -> float:
        """The caller's periodic tick; returns the stall (s) this tick discounted (0.0 on time)."""
        late = now - self._prev_tick - self.tick_s
        self._prev_tick = now
        if late <= self.grace_s:
            return 0.0
        self._start += late
        for key in self._last:
            self._last[key] += late
        self.stalled_s += late
        return late

    def silent_s(self, key: str, now: float) -> float:
        """Seconds since ``key`` was last heard (or since the start), stalls excluded."""
        return now - self._last.get(key, self._start)
