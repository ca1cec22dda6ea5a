"""The fused vibration kernel (numba-compiled FFTs) gives the scipy-driven path's numbers to rounding."""

from __future__ import annotations

import numpy as np
import pytest

from machinewatch.engine.config import BearingGeometry, MachineConfig, StreamConfig
from machinewatch.engine.features.vibration import HAVE_NUMBA_FFT, VibrationExtractor


@pytest.mark.skipif(not HAVE_NUMBA_FFT, reason="rocket-fft not installed")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bearing", [None, BearingGeometry(9, 0.3126, 1.537)])
def test_fused_equals_scipy_path(dtype: type, bearing: BearingGeometry | None) -> None:
    rng = np.random.default_rng(3)
    ex = VibrationExtractor(
        StreamConfig("v", "vibration", 25600.0, 4096, 4096), MachineConfig(shaft_hz=29.95, bearing=bearing)
    )
    ex.chunk = 8  # several sub-batches, the last one short
    x = rng.standard_normal((19, 4096)).astype(dtype)
    x[4, 100] = np.nan  # a broken window stays broken
    shaft = np.full(19, 29.95)
    shaft[7] = np.nan  # unknown speed
    a = np.empty((19, len(ex.names)))
    b = np.empty_like(a)
    assert ex.fused
    ok_a = ex.compute_batch(x, shaft, a)
    ex.fused = False
    ok_b = ex.compute_batch(x, shaft, b)
    np.testing.assert_array_equal(ok_a, ok_b)
    assert not ok_a[4]
    # NaN where NaN; elsewhere equal to the last bits (the same pocketfft, in place or not)
    rtol = 5e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(a, b, rtol=rtol, atol=0)
