"""Mahalanobis distance on robustly standardised features (float)."""

from __future__ import annotations

__all__ = ["MahalanobisModel"]

import numpy as np
from machinewatch.models.base import F64, AnomalyModel
from sklearn.covariance import LedoitWolf


class MahalanobisModel(AnomalyModel):
    """Squared Mahalanobis distance per feature, with a shrunk covariance (Ledoit-Wolf).

    Features are standardised by the healthy median and a robust scale (IQR / 1.349, floored)
    so that one wild training window does not set the scale. The score is ``d^2 / f`` (about 1
    for healthy data whatever the feature count); contribution ``i`` is ``z_i (P z)_i / f``,
    which sums to the score.
    """

    kind = "mahalanobis"

    def _fit(self, x: F64) -> None:
        self.center_ = np.median(x, axis=0)
        q75, q25 = np.percentile(x, [75, 25], axis=0)
        scale = (q75 - q25) / 1.349
        std = x.std(axis=0)
        floor = 1e-6 * np.maximum(np.abs(self.center_), 1.0)
        self.scale_ = np.maximum(np.maximum(scale, 0.5 * std), floor)
        z = (x - self.center_) / self.scale_
        self.precision_ = LedoitWolf().fit(z).get_precision()

    def _z(self, x: F64) -> F64:
        return np.asarray((x - self.center_) / self.scale_, dtype=np.float64)

    def _contributions(self, x: F64) -> F64:
        z = self._z(x)
        c = z * (z @ self.precision_) / z.shape[1]
        return np.asarray(np.maximum(c, 0.0), dtype=np.float64)

    def _score(self, x: F64) -> F64:
        z = self._z(x)
        return np.asarray(np.einsum("ij,ij->i", z @ self.precision_, z) / z.shape[1], dtype=np.float64)
