"""Asset scoring: stack each asset's latest stream features, learn a baseline, score.

An :class:`AssetScorer` keeps the latest :class:`FeatureFrame` of each of its streams and,
when the primary stream closes a window, stacks them in a fixed, named order
(``"<stream>.<feature>"``). During ``learn`` it collects these vectors; then it calibrates the
threshold on out-of-fold scores (blocked cross-fitting: every learning window is scored by a
model fitted on the other blocks, so the threshold is not optimistic and sees the whole learning
period, not only its last third), fits the model on every vector, and monitors.
"""

from __future__ import annotations

__all__ = [
    "THRESHOLD_FOLDS",
    "AssetScorer",
    "LearnedModel",
    "fit_baseline",
    "fit_for",
    "out_of_fold_scores",
    "select_features",
]

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from itertools import pairwise

import numpy as np

from machinewatch.engine.config import AssetConfig, ModelConfig
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
#: blocks of the learning windows for the threshold's out-of-fold scores; 3 keeps each fit on
#: two thirds of the rows (the earlier single split was this scheme's last fold alone)
THRESHOLD_FOLDS = 3


@dataclass(frozen=True, slots=True)
class LearnedModel:
    """A fitted model with its threshold, ready to score."""

    model: AnomalyModel
    threshold: float
    #: how it was made (training rows and hash, float-vs-int8 agreement ...), for the model file
    info: Mapping[str, object] = field(default_factory=dict)


def _blocks(n: int, folds: int) -> list[slice]:
    """``folds`` contiguous, nearly equal blocks covering ``range(n)`` in order."""
    edges = np.linspace(0, n, folds + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in pairwise(edges.tolist())]


def out_of_fold_scores(
    x: np.ndarray,
    names: tuple[str, ...],
    factory: ModelFactory,
    folds: int = THRESHOLD_FOLDS,
    quantized: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Score every row with a model fitted on the other contiguous blocks (blocked cross-fitting).

    The rows are cut, in time order, into ``folds`` blocks; block ``k`` is scored by a model
    fitted on the rest. Blocks (not shuffled rows) keep neighbouring, correlated windows out of
    the fit that scores them, and every block counts: a learning period whose start differs
    from its end (running in, a slow drift) widens the threshold whichever end it is, where a
    single held-out last third sees only the end. ``folds = 1`` is that former scheme (a model
    fitted on the first two thirds scores the last third; only those rows are returned).
    Returns the float scores and, with ``quantized``, the int8 form's scores of the same fold
    models (``None`` otherwise).

    >>> from machinewatch.engine.hotpath import model_factory
    >>> x = np.random.default_rng(0).normal(size=(30, 3))
    >>> f, q = out_of_fold_scores(x, ("a", "b", "c"), model_factory("mahalanobis", {}))
    >>> f.shape, q is None
    ((30,), True)
    """
    n = len(x)
    if folds == 1:  # the former single split: fit on the first two thirds, score the last third
        cut = max(3, (2 * n) // 3)
        if n - cut < 1:
            raise ModelError(f"need at least 4 healthy vectors for a held-out third, got {n}")
        first = factory().fit(x[:cut], names)
        return first.score(x[cut:]), (quantize(first).score(x[cut:]) if quantized else None)
    if folds < 1 or n < 2 * folds:
        raise ModelError(f"need at least {2 * folds} healthy vectors for {folds} folds, got {n}")
    f_scores = np.empty(n)
    q_scores = np.empty(n) if quantized else None
    for block in _blocks(n, folds):
        rest = np.ones(n, dtype=bool)
        rest[block] = False
        model = factory().fit(x[rest], names)
        f_scores[block] = model.score(x[block])
        if q_scores is not None:
            q_scores[block] = quantize(model).score(x[block])
    return f_scores, q_scores


def fit_baseline(
    x: np.ndarray,
    names: tuple[str, ...],
    factory: ModelFactory,
    quantile: float,
    margin: float,
    quantized: bool = False,
    folds: int = THRESHOLD_FOLDS,
    min_agreement: float = 0.0,
) -> LearnedModel:
    """Calibrate the threshold on out-of-fold healthy scores, then fit on every row.

    The threshold comes from :func:`out_of_fold_scores` (every healthy row scored by a model
    that did not see it), then the model is refitted on every row (so no healthy data is
    wasted); the refit changes scores by little because the scale is set by the same healthy
    distribution. With ``quantized`` the int8 form scores, and its threshold is calibrated on
    its own out-of-fold scores (int8 and float scores rank alike but differ in level);
    ``info["agreement"]`` is the float-vs-int8 decision agreement over the healthy rows, each
    with its own threshold. ``folds`` as in :func:`out_of_fold_scores` (``[model]
    threshold_folds``; 1 = the single held-out last third).

    Validation: when the int8 form's agreement is below ``min_agreement`` (``[model]
    min_agreement``), the int8 form is not returned: the float model scores instead, with its
    own threshold, and ``info["int8_rejected"]`` is True (the engine logs and counts it, see
    :meth:`machinewatch.engine.hotpath.HotPath.install`). The float form runs through the same
    ``score_row`` path, slower but with the decisions the int8 form failed to match.
    """
    n = len(x)
    if n < 6:
        raise ModelError(f"need at least 6 healthy vectors to learn a baseline, got {n}")
    folds = min(folds, n // 2)
    f_oof, q_oof = out_of_fold_scores(x, names, factory, folds, quantized)
    f_thr = calibrate_threshold(f_oof, quantile, margin)
    info: dict[str, object] = {
        "training_rows": n,
        "training_sha256": array_hash(x),
        "quantile": quantile,
        "margin": margin,
        "threshold_folds": folds,
    }
    full = factory().fit(x, names)
    if q_oof is None:
        return LearnedModel(full, f_thr, info)
    q_thr = calibrate_threshold(q_oof, quantile, margin)
    q = quantize(full)
    agreement = decision_agreement(full.score(x), f_thr, q.score(x), q_thr)
    info |= {
        "float_threshold": f_thr,
        "agreement": agreement,
        "min_agreement": min_agreement,
        "float_bytes": model_nbytes(full),
        "int8_bytes": model_nbytes(q),
    }
    if agreement < min_agreement:
        return LearnedModel(full, f_thr, info | {"int8_rejected": True, "int8_threshold": q_thr})
    return LearnedModel(q, q_thr, info)


def fit_for(model: ModelConfig, names: tuple[str, ...], factory: ModelFactory, x: np.ndarray) -> LearnedModel:
    """Fit an asset's baseline as its ``[model]`` config says: the one place config meets
    :func:`fit_baseline` (used in the engine's fit worker, ``train`` and the evaluations alike)."""
    return fit_baseline(
        x,
        names,
        factory,
        model.threshold_quantile,
        model.threshold_margin,
        quantized=model.quantized,
        folds=model.threshold_folds,
        min_agreement=model.min_agreement,
    )


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

    def collect(self, vector: F64) -> np.ndarray | None:
        """Add a healthy vector; the learning rows once the learning phase is complete.

        Returning the rows starts the collection over, so a failed fit learns again from fresh
        windows. The engine fits them in a child process (:mod:`machinewatch.engine.fitworker`);
        :meth:`learn` fits them here.
        """
        self._learn.append(vector)
        m = self.asset.model
        if len(self._learn) < m.learn_windows or min(self._learn_seen.values()) < MIN_STREAM_WINDOWS:
            return None
        x = np.vstack(self._learn)
        self._learn = []
        self._learn_seen = dict.fromkeys(self.streams, 0)
        return x

    def learn(self, vector: F64) -> bool:
        """Add a healthy vector; return True when the model was just fitted (in this process)."""
        x = self.collect(vector)
        if x is None:
            return False
        self.learned = fit_for(self.asset.model, self.names, self.factory, x)
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
