"""Mahalanobis distance on robustly standardised features (float and int8)."""

from __future__ import annotations

__all__ = ["MahalanobisModel", "QuantizedMahalanobis"]

from typing import ClassVar

import numpy as np
import numpy.typing as npt

from machinewatch.models.base import F32, F64, AnomalyModel, QuantizedModel, robust_scale
from machinewatch.models.kernels import qlinear, qmahalanobis_row, quantize_columns


class MahalanobisModel(AnomalyModel):
    """Squared Mahalanobis distance per feature, with a shrunk covariance (Ledoit-Wolf).

    Features are standardised by the healthy median and a robust scale (IQR / 1.349, floored)
    so that one wild training window does not set the scale. The score is ``d^2 / f`` (about 1
    for healthy data whatever the feature count); contribution ``i`` is ``z_i (P z)_i / f``,
    which sums to the score.
    """

    kind = "mahalanobis"
    array_names = ("center", "scale", "precision")

    def _fit(self, x: F64) -> None:
        self.center_, self.scale_ = robust_scale(x)
        z = (x - self.center_) / self.scale_
        from sklearn.covariance import LedoitWolf  # only when fitting: sklearn costs ~1.4 s of start-up

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

    def quantize(self) -> QuantizedMahalanobis:
        """int8 form: ``P = L L^T`` (Cholesky), ``d^2 = |z L|^2``; ``L`` int8 per column."""
        self._check_fitted()
        p = 0.5 * (self.precision_ + self.precision_.T)
        low = np.linalg.cholesky(p)
        q = QuantizedMahalanobis(**self.params)
        q.center_, q.scale_ = self.center_.astype(np.float32), self.scale_.astype(np.float32)
        w1, w1s = quantize_columns(low)
        q.w1_, q.w1s_ = w1, w1s.astype(np.float32)
        q.feature_names_ = self.feature_names_
        return q


class QuantizedMahalanobis(QuantizedModel):
    """int8 Mahalanobis: ``y = z L`` in int8/int32, ``d^2 = sum y^2``; contributions ``z (y L^T)``.

    ``L^T`` reuses ``L``'s int8 matrix transposed: its per-column scales become per-input
    scales, folded into ``y`` before ``y`` is quantised, so one int8 matrix serves both.
    """

    kind = "mahalanobis"
    array_names: ClassVar[tuple[str, ...]] = ("center", "scale", "w1", "w1s")
    scale_arrays: ClassVar[tuple[str, ...]] = ("w1s",)
    float_class = MahalanobisModel
    center_: F32
    scale_: F32
    w1_: npt.NDArray[np.int8]
    w1s_: F32

    def _y(self, x: F64) -> tuple[F64, F64]:
        z = (x - self.center_) / self.scale_
        return z, qlinear(z, self.w1_, self.w1s_.astype(np.float64))

    def _score(self, x: F64) -> F64:
        z, y = self._y(x)
        return np.asarray(np.sum(y * y, axis=1) / z.shape[1], dtype=np.float64)

    def score_row(self, x: F64, contrib: F64) -> float:
        """One row in one int8 kernel call (see :meth:`AnomalyModel.score_row`)."""
        cs, w1, w1s, b, q, f = self._row_state(tuple)
        return float(qmahalanobis_row(self._row_input(x, contrib, f), cs, w1, w1s, b, q, contrib))

    def _contributions(self, x: F64) -> F64:
        z, y = self._y(x)
        pz = qlinear(y * self.w1s_, self.w1_.T, np.ones(y.shape[1]))
        return np.asarray(np.maximum(z * pz / z.shape[1], 0.0), dtype=np.float64)


MahalanobisModel.quantized_class = QuantizedMahalanobis
