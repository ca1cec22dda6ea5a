"""Every FFT backend of the vibration features gives the scipy-driven path's numbers to rounding,
and the backend is chosen (or forced) as documented."""

from __future__ import annotations

import numpy as np
import pytest

from machinewatch.engine.config import BearingGeometry, MachineConfig, StreamConfig
from machinewatch.engine.features import vibration
from machinewatch.engine.features.vibration import FFT_ENV, VibrationExtractor, fft_backend

HAVE_MKL = vibration._load_mkl() is not None
INSTALLED = [b for b, have in (("mkl", HAVE_MKL), ("ducc0", vibration.HAVE_NUMBA_FFT)) if have]


def _extractor(bearing: BearingGeometry | None) -> VibrationExtractor:
    return VibrationExtractor(
        StreamConfig("v", "vibration", 25600.0, 4096, 4096), MachineConfig(shaft_hz=29.95, bearing=bearing)
    )


@pytest.mark.parametrize("backend", INSTALLED)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bearing", [None, BearingGeometry(9, 0.3126, 1.537)])
def test_backend_equals_scipy_path(backend: str, dtype: type, bearing: BearingGeometry | None) -> None:
    rng = np.random.default_rng(3)
    ex = _extractor(bearing)
    ex.chunk = 8  # several sub-batches, the last one short
    x = rng.standard_normal((19, 4096)).astype(dtype)
    x[4, 100] = np.nan  # a broken window stays broken
    shaft = np.full(19, 29.95)
    shaft[7] = np.nan  # unknown speed
    a = np.empty((19, len(ex.names)))
    b = np.empty_like(a)
    ex.backend = backend
    ok_a = ex.compute_batch(x, shaft, a)
    ex.backend = "scipy"
    ok_b = ex.compute_batch(x, shaft, b)
    np.testing.assert_array_equal(ok_a, ok_b)
    assert not ok_a[4] and ok_a.sum() == 18
    assert np.isnan(a[4]).all() and np.isnan(a[7, len(vibration.TIME_NAMES) + 9 :]).all()
    # NaN where NaN; elsewhere equal to rounding (DUCC0 is scipy's pocketfft; MKL differs in
    # the last float32 bits, like any two FFT libraries)
    rtol = 5e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-9 if backend == "mkl" else 0)


def test_read_only_windows_are_copied_not_recompiled() -> None:
    ex = _extractor(BearingGeometry(9, 0.3126, 1.537))
    x = np.random.default_rng(1).standard_normal((3, 4096)).astype(np.float32)
    a = np.empty((3, len(ex.names)))
    b = np.empty_like(a)
    ex.compute_batch(x, None, a)
    x.flags.writeable = False
    ex.compute_batch(x, None, b)
    np.testing.assert_array_equal(a, b)


def test_fastest_installed_backend_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FFT_ENV, raising=False)
    monkeypatch.setattr(vibration, "_measured", None)  # before any warm-up measured them
    for intel in (True, False):
        monkeypatch.setattr(vibration, "_intel_cpu", lambda intel=intel: intel)
        assert fft_backend() == ("mkl" if HAVE_MKL and intel else "ducc0")
    assert _extractor(None).backend == fft_backend()


@pytest.mark.parametrize("name", ["scipy", "ducc0", " DUCC0 "])
def test_a_backend_can_be_forced(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(FFT_ENV, name)
    assert fft_backend() == name.strip().lower()


def test_unknown_or_missing_forced_backend_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FFT_ENV, "fftw")
    with pytest.raises(ValueError, match=r"MACHINEWATCH_FFT='fftw': expected one of mkl, ducc0, scipy"):
        fft_backend()
    monkeypatch.setenv(FFT_ENV, "mkl")
    monkeypatch.setattr(vibration, "_load_mkl", lambda: None)
    with pytest.raises(ValueError, match=r"mkl_fft is not installed"):
        fft_backend()


def test_the_faster_backend_is_measured_at_warm_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """With MKL and DUCC0 both installed, warm-up times both and the faster becomes the default;
    a forced backend is never overridden, and a hot path's extractors and batch keys follow."""
    from machinewatch.engine import features
    from machinewatch.engine.config import load_config_text
    from machinewatch.engine.hotpath import HotPath

    monkeypatch.delenv(FFT_ENV, raising=False)
    monkeypatch.setattr(vibration, "_measured", None)
    stream = StreamConfig("vib", "vibration", 25600.0, 4096, 4096)
    machine = MachineConfig(shaft_hz=29.95)
    monkeypatch.setattr(vibration, "_intel_cpu", lambda: False)
    assert vibration.measure_fft_backends(stream, machine) == {}, "MKL is considered on Intel CPUs only"
    assert fft_backend() == "ducc0"
    monkeypatch.setattr(vibration, "_intel_cpu", lambda: True)
    if not HAVE_MKL:
        assert vibration.measure_fft_backends(stream, machine) == {}, "one backend: nothing to measure"
        return
    times = vibration.measure_fft_backends(stream, machine, rows=16, rounds=2)
    assert set(times) == {"mkl", "ducc0"} and all(0 < t < 1e5 for t in times.values())
    assert fft_backend() == min(times, key=times.__getitem__)
    # a hot path built before the measurement takes the winner at warm-up, batch keys too
    monkeypatch.setattr(vibration, "_measured", "ducc0")
    cfg = load_config_text(
        '[engine]\nstate_dir = "/tmp/unused"\n[assets.p.streams.vib]\nkind = "vibration"\n'
        "rate_hz = 25600\nwindow_samples = 4096\n[assets.p.machine]\nshaft_hz = 29.95\n"
        '[sources.s]\nkind = "simulator"\n'
    )
    hot = HotPath(cfg)
    assert hot.extractors["p/vib"].backend == "ducc0"
    before = hot._batch_keys["p/vib"]

    def mkl_wins(*args: object, **kw: object) -> dict[str, float]:
        vibration._measured = "mkl"
        return {"mkl": 1.0, "ducc0": 2.0}

    monkeypatch.setattr(features, "measure_fft_backends", mkl_wins)
    hot.warmup()
    ex = hot.extractors["p/vib"]
    assert ex.backend == "mkl" and hot._batch_keys["p/vib"] == ex.batch_key() != before
    # forced: never measured, never overridden
    monkeypatch.setenv(FFT_ENV, "ducc0")
    assert vibration.measure_fft_backends(stream, machine) == {} and fft_backend() == "ducc0"
