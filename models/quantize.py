"""``quantize(model) -> int8 model`` with the same interface, and the size/agreement report."""

from __future__ import annotations

__all__ = ["decision_agreement", "model_nbytes", "quantize"]

import numpy as np
import numpy.typing as npt

from machinewatch.models.base import AnomalyModel


def quantize(model: AnomalyModel) -> AnomalyModel:
    """The int8 form of a fitted float model (an int8 model is returned as is).

    int8 weights with per-output-channel scales, int32 accumulation, float only at the ends
    (see :mod:`machinewatch.models.kernels`).
    """
    if model.quantized:
        return model
    return model.quantize()


def model_nbytes(model: AnomalyModel) -> int:
    """Bytes of the model's learned arrays (what its model file stores, before compression)."""
    return int(sum(np.asarray(a).nbytes for a in model.get_arrays().values()))


def decision_agreement(
    float_scores: npt.ArrayLike, float_threshold: float, int8_scores: npt.ArrayLike, int8_threshold: float
) -> float:
    """Fraction of rows on which the float and int8 models decide alike (each by its own threshold).

    >>> decision_agreement([1, 3], 2.0, [10, 30], 20.0)
    1.0
    """
    a = np.asarray(float_scores) > float_threshold
    b = np.asarray(int8_scores) > int8_threshold
    return float(np.mean(a == b)) if a.size else 1.0
