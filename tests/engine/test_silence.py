"""STALE is measured in time the engine ran: its own stalls are nobody's silence (manual clock).

Regression: in the libfaketime clock test under CPU load the engine's loop stood still 9-11 s
(a GIL convoy with the kernel-compiling warm-up thread); the watchdog, first to run on the
resumed loop, saw "no data for 9.3 s" and flagged p1 STALE, and the data waiting in the socket
was read 0.2 s later ("STALE -> OK (data resumed)").
"""

from __future__ import annotations

import pytest

from machinewatch.engine.silence import SilenceClock


def test_on_time_ticks_count_silence_as_is() -> None:
    s = SilenceClock(tick_s=0.5, now=100.0)
    s.heard("a", 100.0)
    for k in range(1, 13):  # 6 s of on-time ticks (with 50 ms jitter): 6 s of silence
        assert s.tick(100.0 + 0.55 * k) == 0.0
    assert s.silent_s("a", 106.6) == pytest.approx(6.6)
    assert s.silent_s("never", 106.6) == pytest.approx(6.6)  # silent since the start


def test_a_stall_is_not_silence_but_what_follows_is() -> None:
    s = SilenceClock(tick_s=0.5, now=0.0)
    s.heard("a", 0.2)
    assert s.tick(0.5) == 0.0
    assert s.tick(10.0) == pytest.approx(9.0)  # the loop stood still 9 s
    assert s.silent_s("a", 10.0) == pytest.approx(0.8)  # 0.3 s before the stall + 0.5 s tick
    assert s.silent_s("never", 10.0) == pytest.approx(1.0)
    s.heard("b", 10.0)  # what arrived during the stall is read right after it
    assert s.silent_s("b", 10.0) == 0.0
    for k in range(1, 11):  # then a real 5 s silence of "a" while the engine runs
        s.tick(10.0 + 0.5 * k)
    assert s.silent_s("a", 15.0) == pytest.approx(5.8) and s.stalled_s == pytest.approx(9.0)


def test_jitter_within_grace_is_not_a_stall() -> None:
    s = SilenceClock(tick_s=0.5, now=0.0, grace_s=0.1)
    assert s.tick(0.59) == 0.0
    assert s.tick(0.59 + 0.75) == pytest.approx(0.25)
