"""PCA with Hotelling's T-squared and the squared prediction error (SPE, Q) (float and int8)."""

from __future__ import annotations

__all__ = ["PCAModel", "QuantizedPCA"]

from typing import Any

import numpy as np
import numpy.typing as npt

from machinewatch.models.base import F32, F64, AnomalyModel, QuantizedModel, robust_scale
from machinewatch.models.kernels import qlinear, qpca_row, quantize_columns


def _n_components(eigvals: F64, variance: float) -> int:
    """Fewest components explaining ``variance`` of the total, kept in ``[1, f - 1]``."""
    ratio = np.cumsum(eigvals) / max(float(np.sum(eigvals)), 1e-300)
    k = int(np.searchsorted(ratio, variance) + 1)
    return max(1, min(k, len(eigvals) - 1))


class PCAModel(AnomalyModel):
    """T-squared in the principal subspace plus SPE in its complement.

    On standardised features ``z`` (healthy mean removed, robust scale), with loadings ``P``
    (``f x k``, the ``k`` components that explain ``variance`` of the healthy variance) and
    eigenvalues ``lambda``: ``T^2 = sum (z P)^2 / lambda`` and ``SPE = |z (I - P P^T)|^2``. The
    score is ``T^2 / k + SPE / SPE_ref`` (``SPE_ref`` the mean healthy SPE), about 2 on
    healthy data. Contributions: ``z_i (z A A^T)_i / k + r_i^2 / SPE_ref`` with ``A = P / sqrt
    lambda``, ``r`` the residual; they sum to the score.

    Parameters
    ----------
    variance : float
        Fraction of the healthy variance the principal subspace keeps (default 0.9).
    """

    kind = "pca"
    array_names = ("center", "scale", "whiten", "residual", "spe_ref")

    def __init__(self, variance: float = 0.9, **params: Any) -> None:
        super().__init__(variance=variance, **params)
        self.variance = float(variance)

    def _fit(self, x: F64) -> None:
        center, scale = robust_scale(x)
        z0 = (x - center) / scale
        mu = z0.mean(axis=0)
        self.center_ = center + mu * scale
        self.scale_ = scale
        z = z0 - mu
        _, sv, vt = np.linalg.svd(z, full_matrices=False)
        eig = sv**2 / max(len(z) - 1, 1)
        f = x.shape[1]
        eig_full = np.zeros(f)
        eig_full[: len(eig)] = eig
        k = _n_components(eig_full, self.variance)
        p = vt[:k].T
        lam = np.maximum(eig_full[:k], 1e-12 * max(float(eig_full[0]), 1e-12))
        self.whiten_ = p / np.sqrt(lam)
        self.residual_ = np.eye(f) - p @ p.T
        r = z @ self.residual_
        self.spe_ref_ = np.array([max(float(np.mean(np.sum(r * r, axis=1))), 1e-6)])

    def _parts(self, x: F64) -> tuple[F64, F64, F64]:
        z = (x - self.center_) / self.scale_
        return z, z @ self.whiten_, z @ self.residual_

    def _score(self, x: F64) -> F64:
        _, u, r = self._parts(x)
        k = self.whiten_.shape[1]
        return np.asarray(
            np.sum(u * u, axis=1) / k + np.sum(r * r, axis=1) / self.spe_ref_[0], dtype=np.float64
        )

    def _contributions(self, x: F64) -> F64:
        z, u, r = self._parts(x)
        k = self.whiten_.shape[1]
        c = z * (u @ self.whiten_.T) / k + r * r / self.spe_ref_[0]
        return np.asarray(np.maximum(c, 0.0), dtype=np.float64)

    def quantize(self) -> QuantizedPCA:
        """int8 form: the whitening loadings, their transpose and the residual projector."""
        self._check_fitted()
        q = QuantizedPCA(**self.params)
        q.center_, q.scale_ = self.center_.astype(np.float32), self.scale_.astype(np.float32)
        q.spe_ref_ = self.spe_ref_.copy()
        w1, w1s = quantize_columns(self.whiten_)
        wr, wrs = quantize_columns(self.residual_)
        q.w1_, q.w1s_, q.wr_, q.wrs_ = w1, w1s.astype(np.float32), wr, wrs.astype(np.float32)
        q.feature_names_ = self.feature_names_
        return q


class QuantizedPCA(QuantizedModel):
    """int8 PCA: the same score as :class:`PCAModel`, every matrix product int8 x int8 -> int32.

    Two int8 matrices: the whitening loadings ``A`` (also used transposed for the T-squared
    contributions) and the residual projector ``I - P P^T``.
    """

    kind = "pca"
    array_names = ("center", "scale", "spe_ref", "w1", "w1s", "wr", "wrs")
    scale_arrays = ("w1s", "wrs")
    float_class = PCAModel
    center_: F32
    scale_: F32
    spe_ref_: F64
    w1_: npt.NDArray[np.int8]
    w1s_: F32
    wr_: npt.NDArray[np.int8]
    wrs_: F32

    def _parts(self, x: F64) -> tuple[F64, F64, F64]:
        z = (x - self.center_) / self.scale_
        return (
            z,
            qlinear(z, self.w1_, self.w1s_.astype(np.float64)),
            qlinear(z, self.wr_, self.wrs_.astype(np.float64)),
        )

    def _score(self, x: F64) -> F64:
        _, u, r = self._parts(x)
        k = self.w1_.shape[1]
        return np.asarray(
            np.sum(u * u, axis=1) / k + np.sum(r * r, axis=1) / self.spe_ref_[0], dtype=np.float64
        )

    def score_row(self, x: F64, contrib: F64) -> float:
        """One row in one int8 kernel call (see :meth:`AnomalyModel.score_row`)."""
        cs, w1, w1s, wr, wrs, spe, b, q, f = self._row_state(
            lambda: (
                np.ascontiguousarray(self.wr_, dtype=np.int8),
                np.ascontiguousarray(self.wrs_, dtype=np.float64),
                float(self.spe_ref_[0]),
            )
        )
        a = self._row_input(x, contrib, f)
        return float(qpca_row(a, cs, w1, w1s, wr, wrs, spe, b, q, contrib))

    def _contributions(self, x: F64) -> F64:
        z, u, r = self._parts(x)
        k = self.w1_.shape[1]
        # A^T reuses A's int8 matrix transposed; A's column scales fold into u (per input)
        back = qlinear(u * self.w1s_, self.w1_.T, np.ones(z.shape[1]))
        c = z * back / k + r * r / self.spe_ref_[0]
        return np.asarray(np.maximum(c, 0.0), dtype=np.float64)


PCAModel.quantized_class = QuantizedPCA
