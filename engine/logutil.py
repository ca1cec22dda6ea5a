"""Rate-limited logging: a bad record is logged at most once a minute per key."""

from __future__ import annotations

__all__ = ["RateLimitedLog"]

import logging
import time
from collections.abc import Callable


class RateLimitedLog:
    """Logs a message per key at most once every ``period_s`` (monotonic clock), counting the rest.

    >>> rl = RateLimitedLog(logging.getLogger("x"), period_s=60.0, clock=lambda: 0.0)
    >>> rl.warning("k", "bad %s", 1), rl.warning("k", "bad %s", 2)
    (True, False)
    """

    def __init__(
        self, logger: logging.Logger, period_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.logger = logger
        self.period_s = period_s
        self.clock = clock
        self._last: dict[str, float] = {}
        self.suppressed: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: object) -> bool:
        """Log ``msg`` unless ``key`` was logged within the period; return whether it logged."""
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.period_s:
            self.suppressed[key] = self.suppressed.get(key, 0) + 1
            return False
        n = self.suppressed.pop(key, 0)
        self._last[key] = now
        suffix = f" ({n} more suppressed in the last {self.period_s:g} s)" if n else ""
        self.logger.warning(msg + suffix, *args)
        return True
