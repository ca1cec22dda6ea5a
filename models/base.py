"""The anomaly-model contract, written once.

Scores run one way everywhere: **higher means more anomalous**. A model is fitted on healthy
feature vectors (``fit`` returns self; learned attributes end in ``_``); scoring before fitting
raises :class:`~machinewatch.engine.errors.NotFittedError`. ``contributions`` splits a score
over the features so an alarm can say which sensor and feature drove it. Thresholding is
separate from scoring (:mod:`machinewatch.models.threshold`).

Writing a model plug-in
-----------------------
Subclass :class:`AnomalyModel`, set ``kind`` to the entry point's name (stored models are loaded
by kind) and register it in the ``machinewatch.models`` entry point group; a config then says
``[model] kind = "my-model"`` and ``[model.options]`` become the constructor's keyword arguments
(``cls(**options)``; ``cls()`` must work, with sensible defaults).

- Implement ``_fit(x)``, ``_score(x)`` and ``_contributions(x)`` on a float64 matrix
  ``(rows, features)``; the public ``fit``/``score``/``contributions`` check shapes, NaN and the
  fitted state, so the private ones need not. Learned arrays are attributes ending in ``_`` and
  listed in ``array_names``: that is what :mod:`machinewatch.models.store` saves (``.npz``
  without pickle plus a JSON manifest; ``params`` must be JSON-able).
- Raise :class:`~machinewatch.engine.errors.ModelError` for what cannot be fitted (too few rows,
  degenerate data); never for one bad row at scoring time, which the engine keeps away (a
  vector with NaN or inf is not scored).
- The engine owns the rest: collecting ``learn_windows`` healthy vectors, calibrating the
  threshold on out-of-fold scores, refitting, saving, swapping models atomically, thresholds and
  alarms. ``fit`` runs once per learning phase and may run on the event loop, so it should take
  seconds, not minutes; ``score_row`` runs once per window on the hot path and should not
  allocate (override it with a kernel call on preallocated buffers where it matters). Models are
  used by one thread at a time; keep no global mutable state.
- An int8 form is optional: subclass :class:`QuantizedModel`, point ``quantized_class`` at it and
  override :meth:`AnomalyModel.quantize`; name its per-channel scales in ``scale_arrays`` (the
  model file's manifest summarises them). Without one, a config must say ``[model] quantized =
  false`` (the default, ``true``, asks for the int8 form and learning fails with a ModelError).

:func:`machinewatch.engine.plugins.check_class` checks every registered model against this
contract (``machinewatch plugins --check``).
"""

from __future__ import annotations

__all__ = ["AnomalyModel", "QuantizedModel", "as_matrix", "robust_scale"]

from abc import ABC, abstractmethod
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt

from machinewatch.engine.errors import ModelError, NotFittedError
from machinewatch.models.kernels import RowScratch

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]


def as_matrix(x: npt.ArrayLike, n_features: int | None = None) -> F64:
    """``x`` as a C-contiguous float64 matrix ``(n, f)``; a 1-D row becomes ``(1, f)``."""
    a = np.ascontiguousarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a.reshape(1, -1)
    if a.ndim != 2:
        raise ModelError(f"feature matrix must be 2-D, got shape {a.shape}")
    if n_features is not None and a.shape[1] != n_features:
        raise ModelError(f"expected {n_features} features, got {a.shape[1]}")
    return a


def robust_scale(x: F64) -> tuple[F64, F64]:
    """Healthy centre (median) and a robust scale (IQR / 1.349, at least half the std, floored).

    One wild training window does not set the scale, and a constant feature gets a small
    positive scale instead of a division by zero.
    """
    center = np.median(x, axis=0)
    q75, q25 = np.percentile(x, [75, 25], axis=0)
    floor = 1e-6 * np.maximum(np.abs(center), 1.0)
    scale = np.maximum(np.maximum((q75 - q25) / 1.349, 0.5 * x.std(axis=0)), floor)
    return np.asarray(center, dtype=np.float64), np.asarray(scale, dtype=np.float64)


class AnomalyModel(ABC):
    """Base of every anomaly model (float and int8).

    Persistence without pickle: a model's learned state is the arrays named in
    ``array_names`` (attributes ``<name>_``), plus JSON-able ``params``; see
    :mod:`machinewatch.models.store`. A float model names its int8 counterpart in
    ``quantized_class`` and builds it in :meth:`quantize`.
    """

    kind: ClassVar[str] = ""
    #: True for the int8 form of a model
    quantized: ClassVar[bool] = False
    #: learned arrays (attribute ``<name>_``) that make up the model's state
    array_names: ClassVar[tuple[str, ...]] = ()
    #: the int8 class of a float model (None: the model has no int8 form)
    quantized_class: ClassVar[type[AnomalyModel] | None] = None
    #: the quantisation scales among ``array_names`` (int8 forms), summarised in the manifest
    scale_arrays: ClassVar[tuple[str, ...]] = ()
    feature_names_: tuple[str, ...]

    def __init__(self, **params: Any) -> None:
        self.params = dict(params)

    @property
    def is_fitted(self) -> bool:
        """True once :meth:`fit` has run (or the model was loaded)."""
        return hasattr(self, "feature_names_")

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit() on healthy data first")

    def fit(self, x: npt.ArrayLike, feature_names: tuple[str, ...] | None = None) -> Self:
        """Learn the healthy baseline from rows of ``x``; return self."""
        a = as_matrix(x)
        if a.shape[0] < 2:
            raise ModelError(f"need at least 2 healthy rows to fit, got {a.shape[0]}")
        if not np.isfinite(a).all():
            raise ModelError("healthy training rows contain NaN or inf")
        names = feature_names or tuple(f"f{i}" for i in range(a.shape[1]))
        if len(names) != a.shape[1]:
            raise ModelError(f"{len(names)} feature names for {a.shape[1]} features")
        self._fit(a)
        self.feature_names_ = tuple(names)
        return self

    def _one_sided(self, x: F64) -> F64:
        """Rows with the ``upper`` features raised to at least the healthy centre.

        Parameter ``upper`` (fnmatch patterns over feature names, default none): features whose
        *decrease* is not a fault (vibration energy after running in). ``max(x, centre)`` makes
        their standardised value ``max(z, 0)``, so only a rise above the healthy centre scores.
        Needs a model with a ``center_`` array (pca, mahalanobis).
        """
        pats = self.params.get("upper") or ()
        if not pats:
            return x
        mask = getattr(self, "_upper_mask", None)
        if mask is None or len(mask) != x.shape[1]:
            names = self.feature_names_
            mask = np.array([any(fnmatchcase(n, p) for p in pats) for n in names], dtype=bool)
            self._upper_mask = mask
        center = getattr(self, "center_", None)
        if center is None:
            raise ModelError(f"{self.kind} model has no healthy centre: option 'upper' is not supported")
        return np.where(mask, np.maximum(x, np.asarray(center, dtype=np.float64)), x)

    def score(self, x: npt.ArrayLike) -> F64:
        """Anomaly score of each row (higher = more anomalous)."""
        self._check_fitted()
        return self._score(self._one_sided(as_matrix(x, len(self.feature_names_))))

    def contributions(self, x: npt.ArrayLike) -> F64:
        """Per-feature share of each row's score, shape ``(n, f)`` (non-negative)."""
        self._check_fitted()
        return self._contributions(self._one_sided(as_matrix(x, len(self.feature_names_))))

    def score_row(self, x: F64, contrib: F64) -> float:
        """Score of one row ``x`` (1-D) with its contributions written into ``contrib``.

        The same numbers as :meth:`score` and :meth:`contributions` of ``x[None]``; int8 models
        override it with a single kernel call on preallocated buffers (the engine scores one
        row per window, where Python overhead would otherwise dominate).
        """
        self._check_fitted()
        a = self._one_sided(as_matrix(x, len(self.feature_names_)))
        contrib[:] = self._contributions(a)[0]
        return float(self._score(a)[0])

    def get_arrays(self) -> dict[str, np.ndarray]:
        """The learned arrays by name (for :func:`machinewatch.models.store.save_model`)."""
        self._check_fitted()
        return {n: np.asarray(getattr(self, n + "_")) for n in self.array_names}

    def set_arrays(self, arrays: dict[str, np.ndarray], feature_names: tuple[str, ...]) -> Self:
        """Restore the learned state from :meth:`get_arrays` output; return self."""
        missing = [n for n in self.array_names if n not in arrays]
        if missing:
            raise ModelError(f"{self.kind} model file lacks arrays: {', '.join(missing)}")
        for n in self.array_names:
            setattr(self, n + "_", np.asarray(arrays[n]))
        self.feature_names_ = tuple(feature_names)
        return self

    def quantize(self) -> AnomalyModel:
        """The int8 form of this fitted model (same interface, same feature order)."""
        self._check_fitted()
        raise ModelError(f"{type(self).__name__} has no int8 form")

    @abstractmethod
    def _fit(self, x: F64) -> None: ...

    @abstractmethod
    def _score(self, x: F64) -> F64: ...

    @abstractmethod
    def _contributions(self, x: F64) -> F64: ...


class QuantizedModel(AnomalyModel):
    """Base of the int8 models: fitting fits the float model ``float_class`` and quantises it.

    The learned arrays are copied from the quantised float model, so an int8 model fitted
    directly equals ``float_class(**params).fit(x).quantize()``.
    """

    quantized: ClassVar[bool] = True
    #: the float model this int8 form is made from
    float_class: ClassVar[type[AnomalyModel]]

    def _fit(self, x: F64) -> None:
        m = self.float_class(**self.params).fit(x).quantize()
        for n in self.array_names:
            setattr(self, n + "_", getattr(m, n + "_"))

    def _row_state(self, extra: Callable[[], tuple[Any, ...]]) -> tuple[Any, ...]:
        """The arrays an int8 row kernel takes, built once per fitted model and cached.

        Returns ``(center and scale stacked, w1 int8, w1 scales, *extra(), float64 scratch rows,
        int8 scratch, f)``; rebuilt when the model's ``w1_`` changed (a refit or a load). The
        cache check is two dictionary lookups: this runs once per scored window.
        """
        st: tuple[Any, ...] | None = self.__dict__.get("_row")
        w1 = self.__dict__.get("w1_")
        if st is None or st[0] is not w1:
            self._check_fitted()
            f = len(self.feature_names_)
            center, scale, w1s = (getattr(self, n) for n in ("center_", "scale_", "w1s_"))
            scratch = RowScratch(f, f)
            st = (
                w1,
                np.ascontiguousarray(np.stack([center, scale]), dtype=np.float64),
                np.ascontiguousarray(w1, dtype=np.int8),
                np.ascontiguousarray(w1s, dtype=np.float64),
                *extra(),
                scratch.f64,
                scratch.i8,
                f,
            )
            self._row = st
        return st[1:]

    def _row_input(self, x: F64, contrib: F64, f: int) -> F64:
        """``x`` as the contiguous float64 row an int8 row kernel takes (``upper`` applied).

        Raises :class:`~machinewatch.engine.errors.ModelError` unless ``x`` and ``contrib``
        both have shape ``(f,)``.
        """
        a = np.ascontiguousarray(x, dtype=np.float64)
        if self.params.get("upper") and a.shape == contrib.shape == (len(self.feature_names_),):
            a = np.ascontiguousarray(self._one_sided(a[None, :])[0])
        if a.shape != (f,) or contrib.shape != (f,):
            raise ModelError(f"expected one row of {f} features, got shape {a.shape}")
        return a
