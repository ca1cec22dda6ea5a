"""The alarm core: on-delay, off-delay, deadband, warning, latching."""

from __future__ import annotations

import pytest

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


# -- ISA-18.2: acknowledge, latching, shelving, re-alarm, persistence, data quality ------------

from pathlib import Path  # noqa: E402

from machinewatch.engine.alarm import AlarmStore, QualityAlarm  # noqa: E402


class ManualClock:
    def __init__(self, t: float = 1_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_alarm_starts_unacked_and_ack_keeps_it_while_active() -> None:
    m = AlarmMachine(AlarmConfig(on_delay_windows=1, off_delay_windows=1), "NORMAL")
    assert run(m, [2]) == ["ALARM"] and not m.acked
    d = m.acknowledge("op")
    assert d is not None and (d.from_state, d.to_state) == ("ALARM", "ALARM") and m.acked
    assert m.acknowledge() is None  # idempotent
    assert run(m, [0.0]) == ["NORMAL"]


def test_latched_alarm_clears_only_after_ack() -> None:
    m = AlarmMachine(AlarmConfig(on_delay_windows=1, off_delay_windows=1, latching=True), "NORMAL")
    assert run(m, [2, 0.0, 0.0]) == ["ALARM", "", ""]
    d = m.acknowledge()
    assert d is not None and d.to_state == "NORMAL" and m.state == "NORMAL"


def test_latched_alarm_acked_while_active_clears_with_condition() -> None:
    m = AlarmMachine(AlarmConfig(on_delay_windows=1, off_delay_windows=2, latching=True), "NORMAL")
    run(m, [2])
    assert m.acknowledge() is not None and m.state == "ALARM"
    assert run(m, [0.0, 0.0]) == ["", "NORMAL"]


def test_shelving_suppresses_and_expiry_realarms() -> None:
    clk = ManualClock()
    cfg = AlarmConfig(on_delay_windows=1, off_delay_windows=1, max_shelve_s=100)
    m = AlarmMachine(cfg, "NORMAL", clock=clk)
    d = m.shelve(1000, "op")
    assert d is not None and d.to_state == "SHELVED" and m.shelved_until == clk.t + 100  # capped
    assert run(m, [2, 2]) == ["", ""]  # suppressed while shelved
    clk.t += 100
    d = m.poll()
    assert d is not None and (d.from_state, d.to_state) == ("SHELVED", "ALARM") and "re-alarm" in d.reason
    assert not m.acked


def test_unshelve_with_clear_condition_returns_to_normal() -> None:
    m = AlarmMachine(AlarmConfig(on_delay_windows=1, off_delay_windows=1), "NORMAL", clock=ManualClock())
    run(m, [2])
    assert m.shelve(10) is not None
    run(m, [0.0])
    d = m.unshelve()
    assert d is not None and d.to_state == "NORMAL"


def test_realarm_after_ack_when_still_active() -> None:
    clk = ManualClock()
    m = AlarmMachine(AlarmConfig(on_delay_windows=1, off_delay_windows=1, realarm_s=60), "NORMAL", clock=clk)
    run(m, [2])
    m.acknowledge()
    clk.t += 59
    assert run(m, [2]) == [""]
    clk.t += 1
    d = m.update(2, 1.0)
    assert d is not None and d.to_state == "ALARM" and "re-alarm" in d.reason and not m.acked


def test_latched_alarm_survives_restart_and_waits_for_data(tmp_path: Path) -> None:
    cfg = AlarmConfig(on_delay_windows=1, off_delay_windows=1, latching=True)
    m = AlarmMachine(cfg, "NORMAL")
    run(m, [2, 0.0])
    store = AlarmStore(tmp_path)
    assert store.save({"p1": m}) and not store.save({"p1": m})  # unchanged: no rewrite
    m2 = AlarmMachine(cfg, "LEARNING")
    m2.restore(AlarmStore(tmp_path).load()["p1"])
    assert m2.state == "ALARM" and not m2.acked
    # model relearnt after the restart: the latched alarm is kept
    assert m2.start_monitoring().to_state == "ALARM"
    assert m2.acknowledge() is not None and m2.state == "NORMAL"


def test_restored_alarm_reasserted_by_first_window(tmp_path: Path) -> None:
    cfg = AlarmConfig(on_delay_windows=1, off_delay_windows=1, latching=True)
    m = AlarmMachine(cfg, "NORMAL")
    run(m, [2])
    m2 = AlarmMachine(cfg, "NORMAL")
    m2.restore(m.snapshot())
    d = m2.update(0.0, 1.0)
    assert d is not None and (d.from_state, d.to_state) == ("RESTORED", "ALARM") and "restored" in d.reason
    assert m2.update(0.0, 1.0) is None and m2.state == "ALARM"


def test_non_latched_or_acked_state_is_not_restored() -> None:
    m = AlarmMachine(AlarmConfig(on_delay_windows=1), "NORMAL")
    m.restore({"state": "ALARM", "acked": False})
    assert m.state == "NORMAL"


def test_corrupt_store_starts_afresh(tmp_path: Path) -> None:
    (tmp_path / "alarms.json").write_text("{half")
    assert AlarmStore(tmp_path).load() == {}


def test_quality_alarm_delays_and_stale() -> None:
    q = QualityAlarm(on_delay=2, off_delay=2)
    assert q.update("nan") is None
    d = q.update("nan")
    assert d is not None and d.to_state == "NAN"
    assert q.update(None) is None
    d = q.update(None)
    assert d is not None and d.to_state == "OK"
    d = q.stale(12.0)
    assert d is not None and d.to_state == "STALE" and q.stale(13.0) is None
    d = q.data()
    assert d is not None and d.to_state == "OK"


def test_quality_alarm_never_moves_machine_alarm() -> None:
    m = AlarmMachine(AlarmConfig(on_delay_windows=1), "NORMAL")
    q = QualityAlarm(1, 1)
    q.update("flatline")
    q.stale(100.0)
    assert m.state == "NORMAL"


def test_atomic_write_on_a_full_disk_keeps_the_last_good_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A short write then ENOSPC (a nearly full disk): the old file stays whole, no temp file left."""
    import errno
    import json
    import os
    from typing import Any

    from machinewatch.engine import alarm as alarm_mod

    store = AlarmStore(tmp_path)
    m = AlarmMachine(AlarmConfig(on_delay_windows=1, off_delay_windows=1, latching=True), "NORMAL")
    run(m, [2, 0.0])
    assert store.save({"p1": m})
    good = store.path.read_bytes()
    real_write = os.write
    calls = {"n": 0}

    def full_write(fd: int, data: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))  # the disk takes half of it
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(alarm_mod.os, "write", full_write)
    m.acknowledge("op")
    try:
        store.save({"p1": m})
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    else:
        raise AssertionError("a failed write must raise (the engine counts it)")
    monkeypatch.undo()
    assert calls["n"] == 2, "the rest of a short write is written, not dropped"
    assert store.path.read_bytes() == good and json.loads(good)["assets"]["p1"]["state"] == "ALARM"
    assert [p.name for p in tmp_path.iterdir()] == ["alarms.json"], "no temp file left behind"
    assert store.load()["p1"]["acked"] is False
