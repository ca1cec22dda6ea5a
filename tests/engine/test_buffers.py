"""StreamBuffer: windows, hops, gaps, duplicates, out-of-order, multi-channel."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from machinewatch.engine.buffers import StreamBuffer
from machinewatch.engine.types import Chunk

RATE = 1000.0
PERIOD_NS = 1_000_000


def chunk(seq: int, start: int, n: int, ch: int = 1, t_shift_ns: int = 0) -> Chunk:
    vals = np.arange(start * ch, (start + n) * ch, dtype=np.float32)
    return Chunk("a/s", start * PERIOD_NS + t_shift_ns, RATE, seq, vals)


def feed(buf: StreamBuffer, sizes: list[int], ch: int = 1) -> list[np.ndarray]:
    out, at = [], 0
    for seq, n in enumerate(sizes):
        out += [w.values for w in buf.push(chunk(seq, at, n, ch))]
        at += n
    return out


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 700), min_size=1, max_size=30),
    window=st.integers(1, 300),
    hop=st.integers(1, 400),
)
def test_windows_match_slicing_whatever_the_chunking(sizes: list[int], window: int, hop: int) -> None:
    buf = StreamBuffer("a/s", RATE, window, hop)
    got = feed(buf, sizes)
    total = sum(sizes)
    data = np.arange(total, dtype=np.float32)
    want = [data[s : s + window] for s in range(0, total - window + 1, hop)]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    assert buf.counters.windows == len(want)
    assert buf.counters.frames == total


def test_window_timestamps_follow_the_sample_clock() -> None:
    buf = StreamBuffer("a/s", RATE, 100, 50)
    ws = buf.push(chunk(0, 0, 250))
    assert [w.t0_ns for w in ws] == [0, 50 * PERIOD_NS, 100 * PERIOD_NS, 150 * PERIOD_NS]
    assert ws[0].t_end_ns == 100 * PERIOD_NS


def test_sequence_gap_drops_the_partial_window_and_never_stitches() -> None:
    buf = StreamBuffer("a/s", RATE, 100, 100)
    assert buf.push(chunk(0, 0, 60)) == []
    ws = buf.push(chunk(2, 120, 100))  # seq 1 (60..119) lost
    assert buf.counters.gaps_seq == 1
    assert buf.counters.windows_dropped_gap == 1
    assert len(ws) == 1
    np.testing.assert_array_equal(ws[0].values, np.arange(120, 220, dtype=np.float32))
    assert ws[0].t0_ns == 120 * PERIOD_NS


def test_time_gap_with_continuous_sequence_is_a_gap() -> None:
    buf = StreamBuffer("a/s", RATE, 100, 100, gap_tolerance_samples=2)
    buf.push(chunk(0, 0, 60))
    ws = buf.push(chunk(1, 60, 100, t_shift_ns=10 * PERIOD_NS))
    assert buf.counters.gaps_time == 1
    assert len(ws) == 1 and ws[0].t0_ns == 70 * PERIOD_NS


def test_small_time_jitter_is_not_a_gap() -> None:
    buf = StreamBuffer("a/s", RATE, 100, 100, gap_tolerance_samples=2)
    buf.push(chunk(0, 0, 60))
    ws = buf.push(chunk(1, 60, 60, t_shift_ns=PERIOD_NS))
    assert buf.counters.gaps_time == 0 and len(ws) == 1


def test_duplicates_and_out_of_order_are_dropped_and_counted() -> None:
    buf = StreamBuffer("a/s", RATE, 10, 10)
    buf.push(chunk(0, 0, 5))
    buf.push(chunk(1, 5, 5))
    assert buf.push(chunk(1, 5, 5)) == []
    assert buf.push(chunk(0, 0, 5)) == []
    assert buf.counters.duplicates == 1
    assert buf.counters.out_of_order == 1
    assert buf.counters.windows == 1


def test_bad_shape_is_counted() -> None:
    buf = StreamBuffer("a/s", RATE, 4, 4, channels=3)
    assert buf.push(Chunk("a/s", 0, RATE, 0, np.zeros(4, np.float32))) == []
    assert buf.push(Chunk("a/s", 0, RATE, 0, np.zeros(0, np.float32))) == []
    assert buf.counters.bad_shape == 2


def test_multichannel_frames_stay_together() -> None:
    buf = StreamBuffer("a/s", RATE, 4, 4, channels=3)
    ws = feed(buf, [3, 3, 2], ch=3)
    assert len(ws) == 2
    assert ws[0].shape == (4, 3)
    np.testing.assert_array_equal(ws[1][0], [12, 13, 14])


def test_large_chunk_larger_than_the_ring() -> None:
    buf = StreamBuffer("a/s", RATE, 64, 64)
    ws = feed(buf, [64 * 100 + 3])
    assert len(ws) == 100
    np.testing.assert_array_equal(ws[-1], np.arange(99 * 64, 100 * 64, dtype=np.float32))
