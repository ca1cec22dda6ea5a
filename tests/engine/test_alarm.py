"""The alarm core: on-delay, off-delay, deadband, warning, latching."""

from __future__ import annotations

from machinewatch.engine.alarm import AlarmMachine
from machinewatch.engine.config import AlarmConfig


def run(m: AlarmMachine, scores: list[float], thr: float = 1.0) -> list[str]:
    out = []
    for s in scores:
        d = m.update(s, thr)
        out.append(d.to_state if d else "")
    return out


def test_learning_never_alarms() -> None:
    m = AlarmMachine(AlarmConfig(on_delay_windows=1))
    assert run(m, [100.0] * 5) == [""] * 5
    assert m.state == "LEARNING"


def test_on_delay_counts_consecutive_windows() -> None:
    m = AlarmMachine(AlarmConfig(on_delay_windows=3, warning_ratio=1.0), "NORMAL")
    assert run(m, [2, 2, 0.1, 2, 2, 2]) == ["", "", "", "", "", "ALARM"]


def test_warning_before_alarm() -> None:
    m = AlarmMachine(AlarmConfig(on_delay_windows=2, warning_ratio=0.5), "NORMAL")
    assert run(m, [0.7, 0.7, 1.5, 1.5]) == ["", "WARNING", "", "ALARM"]


def test_deadband_and_off_delay() -> None:
    m = AlarmMachine(AlarmConfig(on_delay_windows=1, off_delay_windows=2, clear_ratio=0.5), "NORMAL")
    # 0.9 is under the threshold but inside the deadband: the alarm holds
    assert run(m, [2, 0.9, 0.9, 0.9, 0.4, 0.4]) == ["ALARM", "", "", "", "", "NORMAL"]


def test_latching_holds_alarm() -> None:
    m = AlarmMachine(AlarmConfig(on_delay_windows=1, off_delay_windows=1, latching=True), "NORMAL")
    assert run(m, [2, 0.0, 0.0]) == ["ALARM", "", ""]
    assert m.state == "ALARM"
