"""Numba options in one place: every kernel is compiled with these."""

from __future__ import annotations

__all__ = ["NJIT", "NJIT_REDUCE"]

from typing import Any

#: cache to disk (fast second start), release the GIL (kernels may run in a worker thread),
#: no fastmath (NaN must stay detectable and results must match the references).
NJIT: dict[str, Any] = {"cache": True, "nogil": True, "fastmath": False, "error_model": "numpy"}

#: the same, plus re-association for long float sums (lets LLVM vectorise a reduction). NaN and
#: inf still propagate (no ``nnan``/``ninf``); only the rounding of a sum changes, well inside
#: the tolerance of the reference tests. Used by the feature kernels' reduction passes.
NJIT_REDUCE: dict[str, Any] = {**NJIT, "fastmath": {"reassoc", "contract"}}
