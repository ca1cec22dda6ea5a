"""Per-asset, per-interval summaries (pure; data time).

Intervals are aligned to multiples of ``interval_s`` in data time, so a replay of the same data
produces the same summary timestamps and a re-sent write overwrites instead of duplicating.
"""

from __future__ import annotations

__all__ = ["AssetSummariser"]

from collections import Counter

import numpy as np

from machinewatch.engine.alarm import STATE_CODES
from machinewatch.engine.types import Summary


class _Stats:
    """Running min / sum / max of a fixed-length vector (NaN-ignoring)."""

    def __init__(self, n: int) -> None:
        self.n = 0
        self.lo = np.full(n, np.inf)
        self.hi = np.full(n, -np.inf)
        self.sum = np.zeros(n)
        self.cnt = np.zeros(n)

    def add(self, v: np.ndarray) -> None:
        ok = np.isfinite(v)
        self.n += 1
        if ok.all():  # the common case, without fancy indexing (~4x faster per window)
            np.minimum(self.lo, v, out=self.lo)
            np.maximum(self.hi, v, out=self.hi)
            self.sum += v
            self.cnt += 1.0
            return
        self.lo[ok] = np.minimum(self.lo[ok], v[ok])
        self.hi[ok] = np.maximum(self.hi[ok], v[ok])
        self.sum[ok] += v[ok]
        self.cnt[ok] += 1

    def fields(self, names: tuple[str, ...]) -> dict[str, float]:
        out: dict[str, float] = {}
        for i, name in enumerate(names):
            if self.cnt[i]:
                out[f"{name}_min"] = float(self.lo[i])
                out[f"{name}_mean"] = float(self.sum[i] / self.cnt[i])
                out[f"{name}_max"] = float(self.hi[i])
        return out


class AssetSummariser:
    """Aggregates one asset's features, scores and counts into :class:`Summary` records."""

    def __init__(
        self, site: str, asset: str, stream_features: dict[str, tuple[str, ...]], interval_s: float
    ) -> None:
        self.site = site
        self.asset = asset
        self.names = stream_features
        self.interval_ns = int(interval_s * 1e9)
        self.interval_s = interval_s
        self._bucket: int | None = None
        self._reset()

    def _reset(self) -> None:
        self._feats = {s: _Stats(len(n)) for s, n in self.names.items()}
        self._scores: list[float] = []
        self._threshold = float("nan")
        self._counts: Counter[str] = Counter()
        self._stream_counts: dict[str, Counter[str]] = {s: Counter() for s in self.names}

    def _roll(self, t_ns: int, state: str) -> Summary | None:
        b = t_ns // self.interval_ns
        if self._bucket is None:
            self._bucket = b
            return None
        if b <= self._bucket:
            return None
        out = self._emit(state)
        self._bucket = b
        return out

    def add_frame(self, stream: str, t_ns: int, values: np.ndarray, state: str) -> Summary | None:
        """Count one stream window's features; return the previous interval's summary if it closed."""
        out = self._roll(t_ns, state)
        self._feats[stream].add(values)
        self._stream_counts[stream]["windows"] += 1
        return out

    def add_quality(self, stream: str, t_ns: int, flag: str, state: str) -> Summary | None:
        """Count a window that was unfit to score (data quality)."""
        out = self._roll(t_ns, state)
        self._stream_counts[stream][f"dq_{flag}"] += 1
        return out

    def add_score(self, score: float, threshold: float) -> None:
        """Count one scored asset vector (same interval as the primary frame just added)."""
        self._scores.append(score)
        self._threshold = threshold
        self._counts["windows_scored"] += 1

    def count(self, key: str, n: int = 1) -> None:
        """Add to an asset-level counter (``windows_incomplete``, ``windows_learned`` ...)."""
        self._counts[key] += n

    def flush(self, state: str) -> Summary | None:
        """Emit the open interval (at stop)."""
        if self._bucket is None:
            return None
        out = self._emit(state)
        self._bucket = None
        return out

    def _emit(self, state: str) -> Summary:
        assert self._bucket is not None
        fields: dict[str, float] = {k: float(v) for k, v in self._counts.items()}
        if self._scores:
            s = np.asarray(self._scores)
            fields.update(score_min=float(s.min()), score_mean=float(s.mean()), score_max=float(s.max()))
        if np.isfinite(self._threshold):
            fields["threshold"] = self._threshold
        fields["state_code"] = float(STATE_CODES.get(state, -1))
        streams: dict[str, dict[str, float]] = {}
        for sid, st in self._feats.items():
            f = st.fields(self.names[sid])
            f.update({k: float(v) for k, v in self._stream_counts[sid].items()})
            if f:
                streams[sid] = f
        out = Summary(
            self.site,
            self.asset,
            int((self._bucket + 1) * self.interval_ns),
            self.interval_s,
            state,
            fields,
            streams,
        )
        self._reset()
        return out
