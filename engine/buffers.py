"""Per-stream ring buffers that cut gap-free windows (pure, no I/O, no clock).

A :class:`StreamBuffer` takes chunks in arrival order and returns the windows they complete.
It never stitches across a gap: a sequence jump or a time jump larger than the stream's
tolerance discards the partial window (counted in ``windows_dropped_gap``) and starts afresh.
Duplicates (a sequence number already seen) and out-of-order chunks (older than the last one)
are dropped and counted; nothing is reordered, because a late chunk on a gateway almost always
means a retransmission of data already covered.
"""

from __future__ import annotations

__all__ = ["BufferCounters", "StreamBuffer"]

from dataclasses import dataclass

import numpy as np

from machinewatch.engine.types import Chunk, Window


@dataclass(slots=True)
class BufferCounters:
    """What a buffer saw, for the health report and the ledgers of the tests."""

    chunks: int = 0
    frames: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    gaps_seq: int = 0
    gaps_time: int = 0
    bad_shape: int = 0
    windows: int = 0
    windows_dropped_gap: int = 0


class StreamBuffer:
    """A preallocated buffer for one stream that cuts ``window`` frames every ``hop`` frames.

    Parameters
    ----------
    stream_id : str
        ``"<asset>/<stream>"``.
    rate_hz : float
        Nominal sample rate; sets the time of every frame after a reset.
    window, hop : int
        Window length and hop in frames (``hop > window`` leaves frames out between windows).
    channels : int
        Interleaved channels per frame.
    gap_tolerance_samples : int
        How far (in sample periods) a chunk's ``t0_ns`` may stray from the expected time.

    Examples
    --------
    >>> import numpy as np
    >>> b = StreamBuffer("m/v", 100.0, window=4, hop=2)
    >>> ws = b.push(Chunk("m/v", 0, 100.0, 0, np.arange(6, dtype=np.float32)))
    >>> [w.values.tolist() for w in ws]
    [[0.0, 1.0, 2.0, 3.0], [2.0, 3.0, 4.0, 5.0]]
    """

    def __init__(
        self,
        stream_id: str,
        rate_hz: float,
        window: int,
        hop: int,
        channels: int = 1,
        gap_tolerance_samples: int = 2,
    ) -> None:
        if window < 1 or hop < 1 or channels < 1 or rate_hz <= 0:
            raise ValueError("window, hop, channels and rate_hz must be positive")
        self.stream_id = stream_id
        self.rate_hz = float(rate_hz)
        self.window = window
        self.hop = hop
        self.channels = channels
        self.period_ns = 1e9 / self.rate_hz
        self.tolerance_ns = max(1, gap_tolerance_samples) * self.period_ns
        self.counters = BufferCounters()
        self._buf = np.zeros((2 * window + 1024, channels), dtype=np.float32)
        self._lo = 0  # absolute index (since reset) of _buf[0]
        self._count = 0  # absolute frames received since reset
        self._next_start = 0  # absolute index of the next window's first frame
        self._t_reset_ns = 0
        self._last_seq: int | None = None

    @property
    def pending_frames(self) -> int:
        """Frames held towards the next window."""
        return max(0, self._count - self._next_start)

    def expected_t_ns(self) -> int:
        """Time the next frame should carry."""
        return self._t_reset_ns + round(self._count * self.period_ns)

    def push(self, chunk: Chunk) -> list[Window]:
        """Take one chunk; return the windows it completes (possibly none)."""
        c = self.counters
        values = np.asarray(chunk.values, dtype=np.float32).reshape(-1)
        if values.size == 0 or values.size % self.channels:
            c.bad_shape += 1
            return []
        if self._last_seq is not None:
            if chunk.seq == self._last_seq:
                c.duplicates += 1
                return []
            if chunk.seq < self._last_seq:
                c.out_of_order += 1
                return []
            if chunk.seq > self._last_seq + 1:
                c.gaps_seq += 1
                self._reset(chunk.t0_ns)
            elif abs(chunk.t0_ns - self.expected_t_ns()) > self.tolerance_ns:
                c.gaps_time += 1
                self._reset(chunk.t0_ns)
        else:
            self._reset(chunk.t0_ns)
        self._last_seq = chunk.seq
        c.chunks += 1
        frames = values.reshape(-1, self.channels)
        c.frames += len(frames)
        return self._write(frames)

    def reset(self) -> None:
        """Forget the partial window (used when the stream is known to have stopped)."""
        if self._last_seq is not None:
            self._reset(self.expected_t_ns())

    def _reset(self, t0_ns: int) -> None:
        if self._count > self._next_start:
            self.counters.windows_dropped_gap += 1
        self._lo = self._count = self._next_start = 0
        self._t_reset_ns = int(t0_ns)

    def _write(self, frames: np.ndarray) -> list[Window]:
        out: list[Window] = []
        cap = len(self._buf)
        i = 0
        while i < len(frames):
            if self._count < self._next_start:  # hop > window: skip frames no window needs
                skip = min(self._next_start - self._count, len(frames) - i)
                i += skip
                self._count += skip
                self._lo = self._count
                continue
            keep_from = min(self._next_start, self._count)
            if keep_from > self._lo:  # compact: drop frames no future window needs
                held = self._count - keep_from
                self._buf[:held] = self._buf[keep_from - self._lo : self._count - self._lo]
                self._lo = keep_from
            take = min(cap - (self._count - self._lo), len(frames) - i)
            at = self._count - self._lo
            self._buf[at : at + take] = frames[i : i + take]
            self._count += take
            i += take
            while self._count >= self._next_start + self.window:
                out.append(self._cut())
                self._next_start += self.hop
        return out

    def _cut(self) -> Window:
        a = self._next_start - self._lo
        vals = self._buf[a : a + self.window]
        values = vals[:, 0].copy() if self.channels == 1 else vals.copy()
        t0 = self._t_reset_ns + round(self._next_start * self.period_ns)
        self.counters.windows += 1
        return Window(self.stream_id, t0, t0 + round(self.window * self.period_ns), self.rate_hz, values)
