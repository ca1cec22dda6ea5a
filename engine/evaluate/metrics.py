"""Detection metrics: pooled point-wise F1/FAR/MAR, the NAB changepoint score, ROC AUC.

Definitions follow ../shared/data/README.md (the SKAB protocol), reimplemented here:

- F1 = TP / (TP + (FN + FP) / 2); FAR = FP / (FP + TN) x 100; MAR = FN / (FN + TP) x 100,
  confusion counts pooled over every file's test part.
- NAB: each true changepoint opens a window ``[t, t + 60 s]``; the first predicted changepoint
  inside it is a hit worth ``A_fp + (A_tp - A_fp) * sigma(y) / sigma(-1)`` with
  ``sigma(y) = 2 / (1 + exp(5 y)) - 1`` (a tanh curve) and ``y`` the hit's relative position in
  the window minus 1 (``-1`` at the start, ``0`` at the end), so a hit at the start scores
  ``A_tp`` and one at the end ``A_fp``; a window without a hit scores ``A_fn``; each predicted
  changepoint outside every window scores ``A_fp``. Score ``100 (S - S_null) / (S_perfect -
  S_null)`` with ``S`` summed over files, ``S_null`` (no detections) ``= n A_fn`` and
  ``S_perfect = n A_tp``. Predicted changepoints are the 0->1 and 1->0 transitions of the
  point predictions.
"""

from __future__ import annotations

__all__ = [
    "NAB_PROFILES",
    "Confusion",
    "changepoints",
    "confusion",
    "nab_file_score",
    "nab_score",
    "roc_auc",
]

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

#: (A_tp, A_fp, A_fn) per profile
NAB_PROFILES: dict[str, tuple[float, float, float]] = {
    "standard": (1.0, -0.11, -1.0),
    "low_fp": (1.0, -0.22, -1.0),
    "low_fn": (1.0, -0.11, -2.0),
}


@dataclass(slots=True)
class Confusion:
    """Point-wise confusion counts (summable over files)."""

    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0

    def __add__(self, o: Confusion) -> Confusion:
        return Confusion(self.tp + o.tp, self.fp + o.fp, self.tn + o.tn, self.fn + o.fn)

    @property
    def f1(self) -> float:
        """TP / (TP + (FN + FP) / 2)."""
        d = self.tp + 0.5 * (self.fn + self.fp)
        return self.tp / d if d else 0.0

    @property
    def far(self) -> float:
        """False alarm rate, percent."""
        d = self.fp + self.tn
        return 100.0 * self.fp / d if d else 0.0

    @property
    def mar(self) -> float:
        """Missed alarm rate, percent."""
        d = self.fn + self.tp
        return 100.0 * self.fn / d if d else 0.0


def confusion(truth: npt.ArrayLike, pred: npt.ArrayLike) -> Confusion:
    """Confusion counts of boolean point predictions.

    >>> confusion([0, 1, 1, 0], [0, 1, 0, 1])
    Confusion(tp=1, fp=1, tn=1, fn=1)
    """
    t = np.asarray(truth).astype(bool)
    p = np.asarray(pred).astype(bool)
    return Confusion(int(np.sum(t & p)), int(np.sum(~t & p)), int(np.sum(~t & ~p)), int(np.sum(t & ~p)))


def changepoints(t_s: npt.ArrayLike, pred: npt.ArrayLike) -> np.ndarray:
    """Times of the 0->1 and 1->0 transitions of ``pred`` (the time of the first new value).

    >>> changepoints([0, 1, 2, 3], [0, 1, 1, 0]).tolist()
    [1.0, 3.0]
    """
    p = np.asarray(pred).astype(np.int8)
    t = np.asarray(t_s, dtype=np.float64)
    idx = np.flatnonzero(np.diff(p) != 0) + 1
    return t[idx]


def _sigma(y: float) -> float:
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


def nab_file_score(
    true_cp: npt.ArrayLike, pred_cp: npt.ArrayLike, profile: str = "standard", window_s: float = 60.0
) -> tuple[float, int]:
    """NAB score ``S`` of one file and its number of windows.

    >>> nab_file_score([10.0], [10.0])
    (1.0, 1)
    >>> nab_file_score([10.0], [])
    (-1.0, 1)
    """
    a_tp, a_fp, a_fn = NAB_PROFILES[profile]
    cps = np.sort(np.asarray(true_cp, dtype=np.float64))
    preds = np.sort(np.asarray(pred_cp, dtype=np.float64))
    score = 0.0
    inside = np.zeros(len(preds), dtype=bool)
    for c in cps:
        lo, hi = c, c + window_s
        hit = (preds >= lo) & (preds <= hi)
        inside |= hit
        if hit.any():
            first = preds[np.argmax(hit)]
            y = (first - lo) / window_s - 1.0
            score += a_fp + (a_tp - a_fp) * _sigma(y) / _sigma(-1.0)
        else:
            score += a_fn
    score += a_fp * int(np.sum(~inside))
    return score, len(cps)


def nab_score(
    files: list[tuple[npt.ArrayLike, npt.ArrayLike]], profile: str = "standard", window_s: float = 60.0
) -> float:
    """The NAB score over ``files`` (pairs of true and predicted changepoint times), 0..100."""
    a_tp, _, a_fn = NAB_PROFILES[profile]
    s = 0.0
    n = 0
    for true_cp, pred_cp in files:
        fs, fn = nab_file_score(true_cp, pred_cp, profile, window_s)
        s += fs
        n += fn
    if n == 0:
        return 0.0
    null, perfect = n * a_fn, n * a_tp
    return 100.0 * (s - null) / (perfect - null)


def roc_auc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve (rank statistic; ties count half).

    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from scipy.stats import rankdata

    r = rankdata(s)
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
