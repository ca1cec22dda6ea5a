"""Asset scoring: stack each asset's latest stream features, learn a baseline, score.

An :class:`AssetScorer` keeps the latest :class:`FeatureFrame` of each of its streams and,
when the primary stream closes a window, stacks them in a fixed, named order
(``"<stream>.<feature>"``). During ``learn`` it collects these vectors; then it fits the model
on the first two thirds and calibrates the threshold on the held-out last third (scores of
windows the model did not see, so the threshold is not optimistic), and monitors.
"""

from __future__ import annotations

__all__ = ["AssetScorer", "LearnedModel", "fit_baseline", "select_features"]

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

import numpy as np

from machinewatch.engine.config import AssetConfig
from machinewatch.engine.errors import ModelError
from machinewatch.engine.types import F64, FeatureFrame, Score
from machinewatch.models.base import AnomalyModel
from machinewatch.models.quantize import decision_agreement, model_nbytes, quantize
from machinewatch.models.store import array_hash
from machinewatch.models.threshold import calibrate_threshold

ModelFactory = Callable[[], AnomalyModel]
#: learning also waits until every stream delivered this many windows, so a slow stream
#: (temperature every 10 s) is not learned from a handful of values
MIN_STREAM_WINDOWS = 20


@dataclass(frozen=True, slots=True)
class LearnedModel:
    """A fitted model with its threshold, ready to score."""

    model: AnomalyModel
    threshold: float
    #: how it was made (training rows and hash, float-vs-int8 agreement ...), for the model file
    info: Mapping[str, object] = field(default_factory=dict)


def fit_baseline(
    x: np.ndarray,
    names: tuple[str, ...],
    factory: ModelFactory,
    quantile: float,
    margin: float,
    quantized: bool = False,
) -> LearnedModel:
    """Fit on the first 2/3 of healthy rows, calibrate on the last 1/3, refit on all.

    The threshold comes from held-out healthy scores, then the model is refitted on every
    row (so no healthy data is wasted); the refit changes scores by little because the scale is
    set by the same healthy distribution. With ``quantized`` the int8 form scores, and its
    threshold is calibrated on its own held-out scores (int8 and float scores rank alike but
    differ in level); ``info["agreement"]`` is the float-vs-int8 decision agreement over the
    healthy rows, each with its own threshold.
    """
    n = len(x)
    if n < 6:
        raise ModelError(f"need at least 6 healthy vectors to learn a baseline, got {n}")
    cut = max(3, (2 * n) // 3)
    first = factory().fit(x[:cut], names)
    f_thr = calibrate_threshold(first.score(x[cut:]), quantile, margin)
    info: dict[str, object] = {
        "training_rows": n,
        "training_sha256": array_hash(x),
        "quantile": quantile,
        "margin": margin,
    }
    if not quantized:
        return LearnedModel(factory().fit(x, names), f_thr, info)
    q_thr = calibrate_threshold(quantize(first).score(x[cut:]), quantile, margin)
    full = factory().fit(x, names)
    q = quantize(full)
    info |= {
        "float_threshold": f_thr,
        "agreement": decision_agreement(full.score(x), f_thr, q.score(x), q_thr),
        "float_bytes": model_nbytes(full),
        "int8_bytes": model_nbytes(q),
    }
    return LearnedModel(q, q_thr, info)


def select_features(names: tuple[str, ...], patterns: tuple[str, ...]) -> np.ndarray:
    """Indices of the ``names`` matching any fnmatch pattern (every index when none given).

    >>> select_features(("a.level", "a.slope", "b.level"), ("*.level",)).tolist()
    [0, 2]
    """
    if not patterns:
        return np.arange(len(names))
    idx = [i for i, n in enumerate(names) if any(fnmatchcase(n, p) for p in patterns)]
    if not idx:
        raise ModelError(f"model.features {list(patterns)} match none of the features {list(names)}")
    return np.asarray(idx, dtype=np.intp)


class AssetScorer:
    """Stacks one asset's stream features and scores them (learning first when needed)."""

    def __init__(
        self,
        asset: AssetConfig,
        stream_names: Mapping[str, tuple[str, ...]],
        factory: ModelFactory,
        learned: LearnedModel | None = None,
    ) -> None:
        self.asset = asset
        self.factory = factory
        self.streams = tuple(stream_names)
        every = tuple(f"{s}.{f}" for s in self.streams for f in stream_names[s])
        self._select = select_features(every, tuple(getattr(asset.model, "features", ()) or ()))
        #: the model's features in order (all of them, or those matching ``model.features``)
        self.names = tuple(every[i] for i in self._select)
        self._slices: dict[str, slice] = {}
        at = 0
        for s in self.streams:
            self._slices[s] = slice(at, at + len(stream_names[s]))
            at += len(stream_names[s])
        self._vector = np.full(at, np.nan)
        self._t_ns = dict.fromkeys(self.streams, -1)
        self._max_age_ns = {
            s: int(3e9 * max(c.window_samples, c.hop_samples) / c.rate_hz) + 2_000_000_000
            for s, c in asset.streams.items()
        }
        self._learn: list[np.ndarray] = []
        self._learn_seen = dict.fromkeys(self.streams, 0)
        self.learned = learned
        self.incomplete = 0

    @property
    def learning(self) -> bool:
        """True until a model is in place."""
        return self.learned is None

    @property
    def learn_progress(self) -> float:
        """Fraction of the learning phase done (1.0 once monitoring)."""
        if self.learned:
            return 1.0
        slow = min(self._learn_seen.values()) / MIN_STREAM_WINDOWS
        return min(1.0, len(self._learn) / self.asset.model.learn_windows, slow)

    def update(self, frame: FeatureFrame, stream: str) -> tuple[F64, int] | None:
        """Take a stream's features; return ``(vector, t_ns)`` when the asset is due to score."""
        self._vector[self._slices[stream]] = frame.values
        self._t_ns[stream] = frame.t_ns
        if self.learned is None:
            self._learn_seen[stream] += 1
        if stream != self.asset.primary_stream:
            return None
        for s in self.streams:
            if frame.t_ns - self._t_ns[s] > self._max_age_ns[s] or self._t_ns[s] < 0:
                self.incomplete += 1
                return None
        return self._vector[self._select], frame.t_ns  # fancy indexing: a copy

    def invalidate(self, stream: str) -> None:
        """Forget a stream's features (its window was unfit to score)."""
        self._t_ns[stream] = -1

    def learn(self, vector: F64) -> bool:
        """Add a healthy vector; return True when the model was just fitted."""
        self._learn.append(vector)
        m = self.asset.model
        if len(self._learn) < m.learn_windows or min(self._learn_seen.values()) < MIN_STREAM_WINDOWS:
            return False
        x = np.vstack(self._learn)
        self._learn = []  # on failure learning starts over with fresh windows
        self._learn_seen = dict.fromkeys(self.streams, 0)
        self.learned = fit_baseline(
            x, self.names, self.factory, m.threshold_quantile, m.threshold_margin, quantized=m.quantized
        )
        return True

    def score(self, vector: F64, t_ns: int) -> Score:
        """Score one vector with the learned model."""
        if self.learned is None:
            raise ModelError(f"asset {self.asset.name}: no model learned yet")
        c = np.empty(vector.shape[0])
        s = self.learned.model.score_row(vector, c)  # int8 models: one kernel call
        return Score(self.asset.name, t_ns, s, self.learned.threshold, c, vector)

    def top_features(self, contributions: F64, k: int = 3) -> tuple[str, ...]:
        """Names of the ``k`` features that contributed most."""
        idx = np.argsort(contributions)[::-1][:k]
        return tuple(self.names[i] for i in idx)
