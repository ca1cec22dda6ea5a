"""The one actuator policy, wrapped around every actuator by the engine (no actuator repeats it).

Options, accepted by every actuator kind next to its own::

    min_on_s = 0.0             # an energised output stays on at least this long
    min_off_s = 0.0            # a released output stays off at least this long
    max_changes_per_min = 30   # per asset; changes beyond it wait (the latest wish wins)
    safe_state = false         # the output state on shutdown and lost data (false = released)

The policy makes every actuator idempotent (a wish equal to the output's state is not sent),
defers a change that would break a minimum time or the rate limit until it is allowed (only the
latest wish is kept), and takes the safe state on shutdown. :class:`PolicyCore` is the pure,
clock-injected part; :class:`PolicedActuator` is the async wrapper the pipeline uses.
"""

from __future__ import annotations

__all__ = ["POLICY_KEYS", "PolicedActuator", "PolicyCore", "policy_problems"]

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from machinewatch.connectors.base import Actuator
from machinewatch.engine.errors import ConfigProblem, ConnectorError
from machinewatch.engine.types import AlarmEvent

log = logging.getLogger(__name__)

POLICY_KEYS = frozenset({"min_on_s", "min_off_s", "max_changes_per_min", "safe_state"})


def policy_problems(options: Mapping[str, Any], path: str) -> list[ConfigProblem]:
    """Problems with the policy options of one actuator."""
    probs = []
    for k in ("min_on_s", "min_off_s"):
        v = options.get(k, 0.0)
        if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
            probs.append(ConfigProblem(f"{path}.{k}", "must be a number >= 0"))
    v = options.get("max_changes_per_min", 30)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        probs.append(ConfigProblem(f"{path}.max_changes_per_min", "must be an integer >= 1"))
    if not isinstance(options.get("safe_state", False), bool):
        probs.append(ConfigProblem(f"{path}.safe_state", "must be true or false"))
    return probs


@dataclass(slots=True)
class _Output:
    on: bool | None = None  # None: never driven since start
    since: float = -1e18
    changes: deque[float] = field(default_factory=deque)


class PolicyCore:
    """Decides, per asset, whether a wished output state may be sent now (pure, clock injected).

    >>> p = PolicyCore(min_on_s=10.0)
    >>> p.decide("a", True, 0.0), p.decide("a", False, 5.0), p.decide("a", False, 10.0)
    ('send', 10.0, 'send')
    """

    def __init__(self, min_on_s: float = 0.0, min_off_s: float = 0.0, max_changes_per_min: int = 30) -> None:
        self.min_on_s = min_on_s
        self.min_off_s = min_off_s
        self.max_changes = max_changes_per_min
        self.outputs: dict[str, _Output] = {}

    def decide(self, asset: str, on: bool, now: float) -> str | float:
        """``"send"`` (and record it), ``"same"`` (nothing to do) or the time it may be sent."""
        o = self.outputs.setdefault(asset, _Output())
        if o.on == on:
            return "same"
        if o.on is not None:
            hold = self.min_on_s if o.on else self.min_off_s
            if now < o.since + hold:
                return o.since + hold
        while o.changes and o.changes[0] <= now - 60.0:
            o.changes.popleft()
        if len(o.changes) >= self.max_changes:
            return o.changes[0] + 60.0
        o.on, o.since = on, now
        o.changes.append(now)
        return "send"

    def force(self, asset: str, on: bool, now: float) -> None:
        """Record a state taken regardless of the policy (the safe state)."""
        o = self.outputs.setdefault(asset, _Output())
        if o.on != on:
            o.on, o.since = on, now


class PolicedActuator:
    """An actuator behind the policy: idempotent, minimum times, rate limit, safe state.

    Parameters
    ----------
    inner : Actuator
        The connector that talks to the plant.
    clock : callable
        Monotonic seconds (injectable).
    """

    def __init__(self, inner: Actuator, clock: Callable[[], float] = time.monotonic) -> None:
        o = inner.options
        self.inner = inner
        self.name = inner.name
        self.core = PolicyCore(
            float(o.get("min_on_s", 0.0)),
            float(o.get("min_off_s", 0.0)),
            int(o.get("max_changes_per_min", 30)),
        )
        self.safe_on = bool(o.get("safe_state", False))
        self.clock = clock
        self.sent = 0
        self.deferred = 0
        self._pending: dict[str, tuple[bool, AlarmEvent | None]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def set(self, asset: str, energised: bool, event: AlarmEvent | None) -> bool:
        """Wish ``energised`` for ``asset``; True when it was sent now."""
        if self._closed:
            return False
        self._pending.pop(asset, None)
        t = self._timers.pop(asset, None)
        if t is not None:
            t.cancel()
        verdict = self.core.decide(asset, energised, self.clock())
        if verdict == "same":
            return False
        if verdict == "send":
            await self.inner.set(asset, energised, event)
            self.sent += 1
            return True
        assert isinstance(verdict, float)
        self.deferred += 1
        self._pending[asset] = (energised, event)
        loop = asyncio.get_running_loop()
        self._timers[asset] = loop.call_later(max(0.0, verdict - self.clock()), self._retry, asset)
        return False

    def _retry(self, asset: str) -> None:
        self._timers.pop(asset, None)
        wish = self._pending.pop(asset, None)
        if wish is None or self._closed:
            return
        task = asyncio.get_running_loop().create_task(self._send_later(asset, *wish))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_later(self, asset: str, on: bool, event: AlarmEvent | None) -> None:
        try:
            await self.set(asset, on, event)
        except ConnectorError as exc:
            log.warning("actuator %s: deferred change for %s failed: %s", self.name, asset, exc)

    async def safe_state(self) -> None:
        """Cancel deferred changes, drive every output to the safe state, stop accepting wishes."""
        self._closed = True
        for t in self._timers.values():
            t.cancel()
        self._timers.clear()
        self._pending.clear()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectorError):
                await task
        now = self.clock()
        for asset in list(self.core.outputs):
            self.core.force(asset, self.safe_on, now)
        await self.inner.safe_state()
