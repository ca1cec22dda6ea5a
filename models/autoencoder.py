"""MLP autoencoder (scikit-learn ``MLPRegressor`` trained to reconstruct its input), float and int8."""

from __future__ import annotations

__all__ = ["AutoencoderModel", "QuantizedAutoencoder"]

import warnings
from abc import abstractmethod
from typing import Any

import numpy as np
import numpy.typing as npt

from machinewatch.models.base import F32, F64, AnomalyModel, QuantizedModel, robust_scale
from machinewatch.models.kernels import qlinear, quantize_columns

#: standardised inputs are clipped here for training only, so one outlier does not dominate
_TRAIN_CLIP = 6.0


class _ReconstructionScore(AnomalyModel):
    """Score and contributions from squared reconstruction errors (float and int8 alike).

    Errors ``(z - zhat)^2 / ref`` on standardised ``z``; the score is their mean over the
    features, contribution ``i`` error ``i`` over the feature count (they sum to the score).
    """

    center_: npt.NDArray[np.floating[Any]]
    scale_: npt.NDArray[np.floating[Any]]
    ref_: F64

    @abstractmethod
    def _reconstruct(self, z: F64) -> F64: ...

    def _errors(self, x: F64) -> F64:
        z = np.asarray((x - self.center_) / self.scale_, dtype=np.float64)
        return np.asarray((z - self._reconstruct(z)) ** 2 / self.ref_[0], dtype=np.float64)

    def _score(self, x: F64) -> F64:
        return np.asarray(self._errors(x).mean(axis=1), dtype=np.float64)

    def _contributions(self, x: F64) -> F64:
        return np.asarray(self._errors(x) / x.shape[1], dtype=np.float64)


class AutoencoderModel(_ReconstructionScore):
    """A tanh bottleneck MLP ``f -> h -> b -> h -> f`` on standardised features.

    Score: mean squared reconstruction error over the features divided by its healthy mean
    (about 1 on healthy data); contribution ``i`` is ``(z_i - zhat_i)^2 / (f ref)``.

    Parameters
    ----------
    bottleneck : int or None
        Width of the code layer (default ``max(2, f // 3)``).
    max_iter : int
        Adam iterations (default 400).
    seed : int
        Random seed (fits are reproducible).
    """

    kind = "autoencoder"
    array_names = ("center", "scale", "ref", "sizes", "flat")

    def __init__(
        self, bottleneck: int | None = None, max_iter: int = 400, seed: int = 0, **params: Any
    ) -> None:
        super().__init__(bottleneck=bottleneck, max_iter=max_iter, seed=seed, **params)
        self.bottleneck = bottleneck
        self.max_iter = int(max_iter)
        self.seed = int(seed)

    def _fit(self, x: F64) -> None:
        self.center_, self.scale_ = robust_scale(x)
        z = np.clip((x - self.center_) / self.scale_, -_TRAIN_CLIP, _TRAIN_CLIP)
        f = x.shape[1]
        b = self.bottleneck or max(2, f // 3)
        h = max(b + 1, (f + b) // 2 + 1)
        from sklearn.exceptions import ConvergenceWarning  # only when fitting (start-up time)
        from sklearn.neural_network import MLPRegressor

        mlp = MLPRegressor(
            hidden_layer_sizes=(h, b, h),
            activation="tanh",
            max_iter=self.max_iter,
            random_state=self.seed,
            alpha=1e-4,
            tol=1e-5,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            mlp.fit(z, z)
        self.sizes_ = np.array([c.shape[0] for c in mlp.coefs_] + [f], dtype=np.int64)
        self.flat_ = np.concatenate(
            [np.concatenate([w.ravel(), bb]) for w, bb in zip(mlp.coefs_, mlp.intercepts_, strict=True)]
        )
        self.ref_ = np.array([1.0])
        err = self._errors(x)
        self.ref_ = np.array([max(float(np.mean(err)), 1e-9)])

    def layers(self) -> list[tuple[F64, F64]]:
        """``(W, b)`` per layer, unpacked from the flat parameter vector."""
        out, at = [], 0
        for i in range(len(self.sizes_) - 1):
            n_in, n_out = int(self.sizes_[i]), int(self.sizes_[i + 1])
            w = self.flat_[at : at + n_in * n_out].reshape(n_in, n_out)
            at += n_in * n_out
            out.append((w, self.flat_[at : at + n_out]))
            at += n_out
        return out

    def _reconstruct(self, z: F64) -> F64:
        a = z
        ls = self.layers()
        for i, (w, b) in enumerate(ls):
            a = a @ w + b
            if i < len(ls) - 1:
                a = np.tanh(a)
        return a

    def quantize(self) -> QuantizedAutoencoder:
        """int8 form: each layer's weights int8 per output channel, biases and tanh in float."""
        self._check_fitted()
        q = QuantizedAutoencoder(**self.params)
        q.center_, q.scale_ = self.center_.astype(np.float32), self.scale_.astype(np.float32)
        q.ref_, q.sizes_ = self.ref_.copy(), self.sizes_.astype(np.int32)
        ws, ss, bs = [], [], []
        for w, b in self.layers():
            wq, sc = quantize_columns(w)
            ws.append(wq.ravel())
            ss.append(sc)
            bs.append(b)
        q.wq_ = np.concatenate(ws).astype(np.int8)
        q.ws_ = np.concatenate(ss).astype(np.float32)
        q.b_ = np.concatenate(bs).astype(np.float32)
        q.feature_names_ = self.feature_names_
        return q


class QuantizedAutoencoder(_ReconstructionScore, QuantizedModel):
    """int8 autoencoder: int8 x int8 -> int32 per layer, activations re-quantised per row."""

    kind = "autoencoder"
    array_names = ("center", "scale", "ref", "sizes", "wq", "ws", "b")
    scale_arrays = ("ws",)
    float_class = AutoencoderModel
    center_: F32
    scale_: F32
    ref_: F64
    sizes_: npt.NDArray[np.int32]
    wq_: npt.NDArray[np.int8]
    ws_: F32
    b_: F32

    def _layers(self) -> list[tuple[np.ndarray, F64, F64]]:
        out, aw, ab = [], 0, 0
        for i in range(len(self.sizes_) - 1):
            n_in, n_out = int(self.sizes_[i]), int(self.sizes_[i + 1])
            w = self.wq_[aw : aw + n_in * n_out].reshape(n_in, n_out)
            aw += n_in * n_out
            out.append(
                (w, self.ws_[ab : ab + n_out].astype(np.float64), self.b_[ab : ab + n_out].astype(np.float64))
            )
            ab += n_out
        return out

    def _reconstruct(self, z: F64) -> F64:
        a = z
        ls = self._layers()
        for i, (w, s, b) in enumerate(ls):
            a = qlinear(a, w, s, b)
            if i < len(ls) - 1:
                a = np.tanh(a)
        return a


AutoencoderModel.quantized_class = QuantizedAutoencoder
