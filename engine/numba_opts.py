"""Numba options in one place: every kernel is compiled with these."""

from __future__ import annotations

__all__ = ["NJIT"]

from typing import Any

#: cache to disk (fast second start), release the GIL (kernels may run in a worker thread),
#: no fastmath (NaN must stay detectable and results must match the references).
NJIT: dict[str, Any] = {"cache": True, "nogil": True, "fastmath": False, "error_model": "numpy"}
