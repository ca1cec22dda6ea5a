"""Isolation forest flattened into arrays (float and int8), scored by a numba tree walker."""

from __future__ import annotations

__all__ = ["IsolationForestModel", "QuantizedIsolationForest"]

from typing import Any

import numpy as np
import numpy.typing as npt

from machinewatch.models.base import F32, F64, AnomalyModel, QuantizedModel, robust_scale
from machinewatch.models.kernels import QMAX, iforest_depths

#: leaf path lengths are stored in int8 form as uint8 multiples of this
_VALUE_STEP = 1.0 / 8.0


def _avg_path(n: F64) -> F64:
    """Average path length of an unsuccessful BST search among ``n`` points (Liu et al. 2008)."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    big = n > 2
    out[n == 2] = 1.0
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


def _scores(depth: F64, norm: F64) -> F64:
    """The anomaly score ``2 ** (-E[h] / c(psi))`` of mean path lengths ``depth``."""
    return np.asarray(2.0 ** (-depth / norm[0]), dtype=np.float64)


def _shares(depth: F64, counts: F64, norm: F64) -> F64:
    """Each row's score split over the features by their share of the isolating splits."""
    s = _scores(depth, norm)
    return np.asarray(
        s[:, None] * counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0), dtype=np.float64
    )


class IsolationForestModel(AnomalyModel):
    """scikit-learn ``IsolationForest`` on standardised features, its trees flattened.

    Score ``2 ** (-E[h] / c(psi))`` (the paper's anomaly score: near 1 anomalous, about 0.5 or
    less normal), equal to ``-IsolationForest.score_samples``. Contribution ``i``: the score
    times the share of the trees in which feature ``i`` made the row's isolating (last) split.

    Parameters
    ----------
    n_estimators, max_samples, seed : int
        Passed to scikit-learn (``max_samples`` capped at the row count).
    """

    kind = "iforest"
    array_names = (
        "center",
        "scale",
        "feature",
        "threshold",
        "left",
        "right",
        "value",
        "roots",
        "norm",
        "qscale",
    )

    def __init__(self, n_estimators: int = 100, max_samples: int = 256, seed: int = 0, **params: Any) -> None:
        super().__init__(n_estimators=n_estimators, max_samples=max_samples, seed=seed, **params)
        self.n_estimators = int(n_estimators)
        self.max_samples = int(max_samples)
        self.seed = int(seed)

    def _fit(self, x: F64) -> None:
        self.center_, self.scale_ = robust_scale(x)
        z = (x - self.center_) / self.scale_
        psi = min(self.max_samples, len(z))
        from sklearn.ensemble import IsolationForest  # only when fitting (start-up time)

        forest = IsolationForest(n_estimators=self.n_estimators, max_samples=psi, random_state=self.seed).fit(
            z
        )
        feats, thr, left, right, value, roots = [], [], [], [], [], []
        at = 0
        for est, cols in zip(forest.estimators_, forest.estimators_features_, strict=True):
            t = est.tree_
            leaf = t.children_left < 0
            depth = np.zeros(t.node_count)
            for node in range(t.node_count):  # children always come after their parent
                if not leaf[node]:
                    depth[t.children_left[node]] = depth[node] + 1
                    depth[t.children_right[node]] = depth[node] + 1
            roots.append(at)
            feats.append(np.where(leaf, 0, np.asarray(cols)[np.maximum(t.feature, 0)]))
            thr.append(np.where(leaf, 0.0, t.threshold))
            left.append(t.children_left)
            right.append(t.children_right)
            value.append(np.where(leaf, depth + _avg_path(t.n_node_samples.astype(np.float64)), 0.0))
            at += t.node_count
        self.feature_ = np.concatenate(feats).astype(np.int64)
        self.threshold_ = np.concatenate(thr).astype(np.float64)
        self.left_ = np.concatenate(left).astype(np.int64)
        self.right_ = np.concatenate(right).astype(np.int64)
        self.value_ = np.concatenate(value).astype(np.float64)
        self.roots_ = np.array(roots, dtype=np.int64)
        self.norm_ = np.array([_avg_path(np.array([float(psi)]))[0]])
        # int8 grid per feature: training range maps onto +-127 (beyond it every split agrees)
        self.qscale_ = np.maximum(np.max(np.abs(z), axis=0), 1e-9) / QMAX

    def _walk(self, x: F64) -> tuple[F64, F64]:
        z = (x - self.center_) / self.scale_
        arrays = {
            n: getattr(self, n + "_") for n in ("feature", "threshold", "left", "right", "value", "roots")
        }
        depth, counts = iforest_depths(z, arrays)
        return depth, counts

    def _score(self, x: F64) -> F64:
        depth, _ = self._walk(x)
        return _scores(depth, self.norm_)

    def _contributions(self, x: F64) -> F64:
        depth, counts = self._walk(x)
        return _shares(depth, counts, self.norm_)

    def quantize(self) -> QuantizedIsolationForest:
        """int8 form: inputs and thresholds on a per-feature int8 grid, compact node arrays."""
        self._check_fitted()
        q = QuantizedIsolationForest(**self.params)
        q.center_, q.scale_ = self.center_.astype(np.float32), self.scale_.astype(np.float32)
        q.norm_, q.qscale_ = self.norm_.copy(), self.qscale_.astype(np.float32)
        q.roots_ = self.roots_.astype(np.int32)
        leaf = self.left_ < 0
        q.feature_ = self.feature_.astype(np.uint8 if len(self.center_) < 256 else np.int16)
        t = np.floor(self.threshold_ / self.qscale_[self.feature_])
        q.threshold_ = np.clip(t, -128, 127).astype(np.int8)
        q.left_ = self.left_.astype(np.int16)
        q.right_ = self.right_.astype(np.int16)
        q.value_ = np.where(leaf, np.clip(np.rint(self.value_ / _VALUE_STEP), 0, 255), 0).astype(np.uint8)
        q.feature_names_ = self.feature_names_
        return q


class QuantizedIsolationForest(QuantizedModel):
    """int8 isolation forest: int8 inputs compared with int8 thresholds, uint8 leaf depths."""

    kind = "iforest"
    array_names = IsolationForestModel.array_names
    scale_arrays = ("qscale",)
    float_class = IsolationForestModel
    center_: F32
    scale_: F32
    norm_: F64
    qscale_: F32
    roots_: npt.NDArray[np.int32]
    feature_: npt.NDArray[np.integer[Any]]
    threshold_: npt.NDArray[np.int8]
    left_: npt.NDArray[np.int16]
    right_: npt.NDArray[np.int16]
    value_: npt.NDArray[np.uint8]

    def _walk(self, x: F64) -> tuple[F64, F64]:
        z = (x - self.center_) / self.scale_
        xq = np.clip(np.rint(z / self.qscale_), -QMAX, QMAX).astype(np.int8)
        arrays = {
            n: getattr(self, n + "_") for n in ("feature", "threshold", "left", "right", "value", "roots")
        }
        depth, counts = iforest_depths(xq, arrays, _VALUE_STEP)
        return depth, counts

    def _score(self, x: F64) -> F64:
        depth, _ = self._walk(x)
        return _scores(depth, self.norm_)

    def _contributions(self, x: F64) -> F64:
        depth, counts = self._walk(x)
        return _shares(depth, counts, self.norm_)


IsolationForestModel.quantized_class = QuantizedIsolationForest
