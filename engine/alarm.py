"""Alarm decisions per asset: pure, clock-free (driven by scored windows).

States: ``LEARNING`` (no model yet), ``NORMAL``, ``WARNING`` and ``ALARM``. A state is entered
after ``on_delay_windows`` consecutive windows above its level and left after
``off_delay_windows`` consecutive windows below the deadband (``clear_ratio`` x threshold).
"""

from __future__ import annotations

__all__ = ["STATE_CODES", "AlarmMachine", "Decision"]

from dataclasses import dataclass

from machinewatch.engine.config import AlarmConfig

#: numeric state for dashboards: LEARNING -1, NORMAL 0, WARNING 1, ALARM 2
STATE_CODES = {"LEARNING": -1, "NORMAL": 0, "WARNING": 1, "ALARM": 2}


@dataclass(frozen=True, slots=True)
class Decision:
    """A state change: from, to and why."""

    from_state: str
    to_state: str
    reason: str


class AlarmMachine:
    """On-delay, off-delay and deadband over a score and its threshold.

    >>> m = AlarmMachine(AlarmConfig(on_delay_windows=2, off_delay_windows=1), state="NORMAL")
    >>> [m.update(s, 1.0) for s in (2.0, 2.0)][-1].to_state
    'ALARM'
    >>> m.update(0.1, 1.0).to_state
    'NORMAL'
    """

    def __init__(self, cfg: AlarmConfig, state: str = "LEARNING") -> None:
        self.cfg = cfg
        self.state = state
        self._above_alarm = 0
        self._above_warn = 0
        self._below = 0

    def start_monitoring(self) -> Decision:
        """Leave LEARNING once a model is in place."""
        old, self.state = self.state, "NORMAL"
        return Decision(old, "NORMAL", "baseline learned")

    def update(self, score: float, threshold: float) -> Decision | None:
        """Feed one scored window; return the transition it causes, if any."""
        if self.state == "LEARNING":
            return None
        c = self.cfg
        alarm = score > threshold
        warn = score > threshold * c.warning_ratio
        clear = score < threshold * c.clear_ratio
        self._above_alarm = self._above_alarm + 1 if alarm else 0
        self._above_warn = self._above_warn + 1 if warn else 0
        self._below = self._below + 1 if clear else 0
        ratio = f"score {score:.3g} vs threshold {threshold:.3g}"
        if self.state != "ALARM" and self._above_alarm >= c.on_delay_windows:
            return self._go("ALARM", f"{ratio} for {self._above_alarm} windows")
        if self.state == "NORMAL" and self._above_warn >= c.on_delay_windows:
            return self._go("WARNING", f"{ratio} above {c.warning_ratio:g} x threshold")
        if self.state in ("WARNING", "ALARM") and self._below >= c.off_delay_windows:
            if self.state == "ALARM" and c.latching:
                return None
            return self._go("NORMAL", f"{ratio} below {c.clear_ratio:g} x threshold")
        return None

    def _go(self, to: str, reason: str) -> Decision:
        old, self.state = self.state, to
        return Decision(old, to, reason)
