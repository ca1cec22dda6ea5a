"""Alarm decisions (ISA-18.2 semantics): pure, with the clock injected.

Machine alarms, one :class:`AlarmMachine` per asset, driven by scored windows:

- states ``LEARNING`` (no model yet), ``NORMAL``, ``WARNING``, ``ALARM`` and ``SHELVED``;
- **on-delay**: a level is entered after ``on_delay_windows`` consecutive windows above it;
- **deadband** and **off-delay**: an alarm clears only after ``off_delay_windows`` consecutive
  windows below ``clear_ratio x threshold``;
- **acknowledge**: every ``ALARM`` starts unacknowledged; :meth:`AlarmMachine.acknowledge`;
- **latching**: a latched alarm stays ``ALARM`` after its condition clears, until acknowledged;
- **shelving**: :meth:`AlarmMachine.shelve` suppresses the alarm (outputs released) until it is
  unshelved or the shelf expires (at most ``max_shelve_s``);
- **re-alarm**: when a shelf expires, or an acknowledged alarm is still active after
  ``realarm_s``, the alarm annunciates again, unacknowledged.

Data-quality alarms (:class:`QualityAlarm`, one per stream) are separate and never move a machine
alarm: ``STALE`` (no data for ``stale_after_s``), ``FLATLINE``, ``CLIPPING``, ``NAN``.

:class:`AlarmStore` keeps the alarm state in the state directory (JSON written atomically), so a
latched alarm survives a crash; a restored alarm energises nothing until data arrives.
"""

from __future__ import annotations

__all__ = [
    "QUALITY_STATES",
    "STATE_CODES",
    "AlarmMachine",
    "AlarmStore",
    "Decision",
    "QualityAlarm",
    "atomic_write_json",
]

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from machinewatch.engine.config import AlarmConfig

log = logging.getLogger(__name__)

#: numeric state for dashboards: LEARNING -1, NORMAL 0, WARNING 1, ALARM 2, SHELVED 3
STATE_CODES = {"LEARNING": -1, "NORMAL": 0, "WARNING": 1, "ALARM": 2, "SHELVED": 3}
#: data-quality states of a stream (``OK`` or the problem)
QUALITY_STATES = ("OK", "STALE", "FLATLINE", "CLIPPING", "NAN")

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Decision:
    """A state change: from, to and why. ``from_state == to_state`` for a re-annunciation."""

    from_state: str
    to_state: str
    reason: str


class AlarmMachine:
    """The ISA-18.2 alarm of one asset over a score and its threshold.

    Parameters
    ----------
    cfg : AlarmConfig
        Delays, ratios, latching, re-alarm and shelving limits.
    state : str
        Initial state (``LEARNING`` until a model exists).
    clock : callable
        Wall-clock seconds (shelving expiry and re-alarm survive restarts, so not monotonic).

    Examples
    --------
    >>> m = AlarmMachine(AlarmConfig(on_delay_windows=2, off_delay_windows=1), state="NORMAL")
    >>> [m.update(s, 1.0) for s in (2.0, 2.0)][-1].to_state
    'ALARM'
    >>> m.update(0.1, 1.0).to_state
    'NORMAL'
    """

    def __init__(self, cfg: AlarmConfig, state: str = "LEARNING", clock: Clock = time.time) -> None:
        self.cfg = cfg
        self.state = state
        self.clock = clock
        self.acked = True
        self.alarm_since: float | None = None
        self.acked_at: float | None = None
        self.shelved_until: float | None = None
        self.condition = "NORMAL"  # what the score says, after delays, regardless of latch/shelf
        self._restored = False
        self._above_alarm = 0
        self._above_warn = 0
        self._below = 0

    # -- operator actions ---------------------------------------------------------------------

    def start_monitoring(self) -> Decision:
        """Leave LEARNING once a model is in place (a restored latched alarm is kept)."""
        if self.state in ("ALARM", "SHELVED"):
            self._restored = False
            return Decision(self.state, self.state, "baseline learned; restored alarm state kept")
        old, self.state = self.state, "NORMAL"
        return Decision(old, "NORMAL", "baseline learned")

    def acknowledge(self, who: str = "") -> Decision | None:
        """Acknowledge the alarm; a latched alarm whose condition cleared returns to NORMAL."""
        if self.state != "ALARM" or self.acked:
            return None
        self.acked = True
        self.acked_at = self.clock()
        by = f" by {who}" if who else ""
        if self.condition != "ALARM":
            return self._go(self.condition, f"acknowledged{by}; condition already clear")
        return Decision("ALARM", "ALARM", f"acknowledged{by}")

    def shelve(self, duration_s: float, who: str = "") -> Decision | None:
        """Shelve (suppress) the alarm for ``duration_s`` (capped at ``max_shelve_s``)."""
        if self.state == "LEARNING" or duration_s <= 0:
            return None
        d = min(duration_s, self.cfg.max_shelve_s)
        self.shelved_until = self.clock() + d
        if self.state == "SHELVED":
            return None
        by = f" by {who}" if who else ""
        return self._go("SHELVED", f"shelved{by} for {d:g} s")

    def unshelve(self, why: str = "unshelved") -> Decision | None:
        """End shelving now; the alarm takes the state its condition has (re-alarm if active)."""
        if self.state != "SHELVED":
            return None
        self.shelved_until = None
        if self.condition == "ALARM":
            self.acked = False
            self.alarm_since = self.clock()
            return self._go("ALARM", f"re-alarm: {why} while the condition is active")
        return self._go(self.condition, why)

    def poll(self) -> Decision | None:
        """Time-driven transitions (shelf expiry, re-alarm) without a new window."""
        now = self.clock()
        if self.state == "SHELVED" and self.shelved_until is not None and now >= self.shelved_until:
            return self.unshelve("shelf expired")
        c = self.cfg
        if (
            self.state == "ALARM"
            and self.acked
            and c.realarm_s > 0
            and self.condition == "ALARM"
            and self.acked_at is not None
            and now - self.acked_at >= c.realarm_s
        ):
            self.acked = False
            self.alarm_since = now
            return Decision("ALARM", "ALARM", f"re-alarm: still active {c.realarm_s:g} s after acknowledge")
        return None

    # -- data ---------------------------------------------------------------------------------

    def update(self, score: float, threshold: float) -> Decision | None:
        """Feed one scored window; return the transition it causes, if any."""
        if self.state == "LEARNING":
            return None
        timed = self.poll()
        if timed is not None:
            return timed
        c = self.cfg
        alarm = score > threshold
        warn = score > threshold * c.warning_ratio
        clear = score < threshold * c.clear_ratio
        self._above_alarm = self._above_alarm + 1 if alarm else 0
        self._above_warn = self._above_warn + 1 if warn else 0
        self._below = self._below + 1 if clear else 0
        ratio = f"score {score:.3g} vs threshold {threshold:.3g}"
        cond = self.condition
        why = ""
        if cond != "ALARM" and self._above_alarm >= c.on_delay_windows:
            cond, why = "ALARM", f"{ratio} for {self._above_alarm} windows"
        elif cond == "NORMAL" and self._above_warn >= c.on_delay_windows:
            cond, why = "WARNING", f"{ratio} above {c.warning_ratio:g} x threshold"
        elif cond in ("WARNING", "ALARM") and self._below >= c.off_delay_windows:
            cond, why = "NORMAL", f"{ratio} below {c.clear_ratio:g} x threshold"
        changed = cond != self.condition
        self.condition = cond
        if self._restored:  # first data after a restart: re-assert a restored alarm
            self._restored = False
            if self.state == "ALARM":
                # from RESTORED: the pipeline energises on entering ALARM, and at boot nothing was
                return Decision("RESTORED", "ALARM", "restored latched alarm, first data after restart")
        if not changed or self.state == "SHELVED":
            return None
        if cond == "ALARM":
            self.acked = False
            self.alarm_since = self.clock()
            self.acked_at = None
            return self._go("ALARM", why)
        if self.state == "ALARM" and c.latching and not self.acked:
            return None  # latched: stays ALARM until acknowledged
        return self._go(cond, why)

    def _go(self, to: str, reason: str) -> Decision:
        old, self.state = self.state, to
        return Decision(old, to, reason)

    # -- persistence --------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The state worth keeping across a restart (JSON-able)."""
        return {
            "state": self.state,
            "condition": self.condition,
            "acked": self.acked,
            "alarm_since": self.alarm_since,
            "acked_at": self.acked_at,
            "shelved_until": self.shelved_until,
        }

    def restore(self, snap: Mapping[str, Any]) -> None:
        """Take back a snapshot: a latched unacknowledged ALARM and an unexpired shelf survive.

        Everything else starts afresh (its condition is re-learnt from data). A restored alarm
        energises nothing until the first scored window arrives.
        """
        state = snap.get("state")
        until = snap.get("shelved_until")
        if state == "SHELVED" and isinstance(until, int | float) and until > self.clock():
            self.state, self.shelved_until = "SHELVED", float(until)
            self.condition = str(snap.get("condition", "NORMAL"))
        elif state == "ALARM" and self.cfg.latching and not snap.get("acked", True):
            cond = snap.get("condition")
            self.state, self.acked = "ALARM", False
            self.condition = cond if cond in ("NORMAL", "WARNING", "ALARM") else "ALARM"
            since = snap.get("alarm_since")
            self.alarm_since = float(since) if isinstance(since, int | float) else None
            self._restored = True
        else:
            return
        log.info("restored alarm state %s", self.state)


class QualityAlarm:
    """The data-quality alarm of one stream: ``OK``, ``STALE``, ``FLATLINE``, ``CLIPPING``, ``NAN``.

    A window flag (``"nan"``, ``"flatline"``, ``"clipping"``) raises its alarm after
    ``on_delay`` consecutive flagged windows; ``off_delay`` consecutive good windows clear it.
    ``STALE`` is raised by :meth:`stale` and cleared by the next data.

    >>> q = QualityAlarm(on_delay=1, off_delay=1)
    >>> q.update("flatline").to_state, q.update(None).to_state
    ('FLATLINE', 'OK')
    """

    def __init__(self, on_delay: int = 1, off_delay: int = 1) -> None:
        self.on_delay = on_delay
        self.off_delay = off_delay
        self.state = "OK"
        self._flag: str | None = None
        self._bad = 0
        self._good = 0

    def update(self, flag: str | None) -> Decision | None:
        """Feed one window's quality flag (``None`` = fit to score)."""
        if self.state == "STALE":
            self.state = "OK"  # data again: leave STALE, then judge this window
            d = Decision("STALE", "OK", "data resumed")
            nxt = self.update(flag)
            return Decision("STALE", nxt.to_state, nxt.reason) if nxt else d
        if flag is None:
            self._bad, self._flag = 0, None
            self._good += 1
            if self.state != "OK" and self._good >= self.off_delay:
                return self._go("OK", f"{self._good} good windows")
            return None
        self._good = 0
        self._bad = self._bad + 1 if flag == self._flag else 1
        self._flag = flag
        to = flag.upper()
        if self.state != to and self._bad >= self.on_delay:
            return self._go(to, f"{flag} in {self._bad} windows")
        return None

    def data(self) -> Decision | None:
        """A chunk arrived: clears ``STALE``."""
        if self.state == "STALE":
            return self._go("OK", "data resumed")
        return None

    def stale(self, silent_s: float, reason: str = "") -> Decision | None:
        """No data for ``silent_s`` (or the source said why: ``reason``): raise ``STALE`` (once)."""
        if self.state == "STALE":
            return None
        self._bad = self._good = 0
        return self._go("STALE", reason or f"no data for {silent_s:.1f} s")

    def _go(self, to: str, reason: str) -> Decision:
        old, self.state = self.state, to
        return Decision(old, to, reason)


def atomic_write_json(path: Path, obj: Any, fsync: bool = True) -> None:
    """Write JSON so a crash leaves the old file or the new one, never half of one.

    tmp file in the same directory, fsync, rename over the target, fsync the directory
    (``fsync=False`` skips both fsyncs, for files that are only informative).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = memoryview(json.dumps(obj, sort_keys=True).encode())
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            while data:  # os.write may write part of it (a nearly full disk): the rest raises ENOSPC
                data = data[os.write(fd, data) :]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        # a full disk: the old file stays as it was, and no half-written temp file keeps eating it
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if not fsync:
        return
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class AlarmStore:
    """Alarm snapshots of every asset in ``<state_dir>/alarms.json``."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / "alarms.json"
        self._last: dict[str, Any] | None = None

    def load(self) -> dict[str, dict[str, Any]]:
        """Snapshots by asset; empty when there is no (readable) file."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("alarm state %s unreadable, starting afresh: %s", self.path, exc)
            return {}
        assets = raw.get("assets") if isinstance(raw, dict) else None
        return {k: v for k, v in assets.items() if isinstance(v, dict)} if isinstance(assets, dict) else {}

    def save(self, machines: Mapping[str, AlarmMachine]) -> bool:
        """Write the snapshots if they changed since the last save; return whether it wrote."""
        return self.save_snapshots({name: m.snapshot() for name, m in machines.items()})

    def save_snapshots(self, snapshots: Mapping[str, Any]) -> bool:
        """Write snapshots taken earlier (``AlarmMachine.snapshot()``) if they changed."""
        obj = {"assets": dict(snapshots)}
        if obj == self._last:
            return False
        atomic_write_json(self.path, obj)
        self._last = obj
        return True
