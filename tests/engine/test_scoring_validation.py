"""Float-vs-int8 validation before the swap: an int8 form that decides unlike the float one on
too many healthy windows is not swapped in; the asset scores with the float form, loudly."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from machinewatch.engine import scoring
from machinewatch.engine.config import ModelConfig, load_config_text
from machinewatch.engine.fitworker import fit_in_child
from machinewatch.engine.hotpath import HotPath, model_factory
from machinewatch.engine.learning import ModelStore
from machinewatch.engine.scoring import fit_baseline
from machinewatch.engine.types import Chunk

NAMES = ("a.x", "a.y", "b.z")

CFG = """
[engine]
fit_in_subprocess = false
[model]
kind = "pca"
learn_windows = 10
[assets.m1.streams.t]
kind = "scalar"
rate_hz = 1
window_samples = 5
hop_samples = 1
[sources.s]
kind = "simulator"
"""


def rows(n: int = 120) -> np.ndarray:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, 3))
    x[:, 2] += 0.5 * x[:, 0]
    return x


def test_int8_below_min_agreement_falls_back_to_the_float_form() -> None:
    factory = model_factory("pca", {})
    ok = fit_baseline(rows(), NAMES, factory, 0.995, 1.25, quantized=True, min_agreement=0.99)
    assert ok.model.quantized and "int8_rejected" not in ok.info
    assert ok.info["agreement"] >= 0.99 and ok.info["min_agreement"] == 0.99
    # agreement is at most 1: a limit above it forces the failure
    bad = fit_baseline(rows(), NAMES, factory, 0.995, 1.25, quantized=True, min_agreement=1.01)
    assert not bad.model.quantized  # the float form, never the unvalidated int8 one
    assert bad.info["int8_rejected"] is True
    assert bad.threshold == pytest.approx(bad.info["float_threshold"])  # float scores, float threshold
    assert bad.info["int8_threshold"] == pytest.approx(ok.threshold)
    assert bad.info["agreement"] == ok.info["agreement"] and bad.info["min_agreement"] == 1.01
    probe = np.vstack([rows()[:5], rows()[:5] + 5.0])
    c = np.empty(3)
    assert [bad.model.score_row(r, c) for r in probe] == pytest.approx(bad.model.score(probe).tolist())


def _feed(hot: HotPath, n: int) -> None:
    x = np.random.default_rng(1).normal(20.0, 0.5, n).astype(np.float32)
    hot.apply(hot.features(hot.ingest(Chunk("m1/t", 0, 1.0, 0, x))))


def test_in_process_fit_that_fails_validation_scores_float_warns_and_counts(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(scoring, "decision_agreement", lambda *a: 0.9)
    hot = HotPath(load_config_text(CFG))
    with caplog.at_level(logging.WARNING, logger="machinewatch.engine.hotpath"):
        _feed(hot, 60)
    learned = hot.scorers["m1"].learned
    assert learned is not None and not learned.model.quantized
    assert hot.counters["models_agreement_failed"] == 1
    assert hot.counters["windows_scored"] > 0 and hot.alarms["m1"].state != "LEARNING"
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert "asset m1" in msg and "agreement 0.9000 < model.min_agreement 0.9900" in msg


def test_in_process_fit_that_passes_validation_is_int8_and_not_counted() -> None:
    hot = HotPath(load_config_text(CFG))
    _feed(hot, 60)
    learned = hot.scorers["m1"].learned
    assert learned is not None and learned.model.quantized
    assert hot.counters["models_agreement_failed"] == 0


def test_child_fit_that_fails_validation_is_installed_as_float_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    m = ModelConfig(kind="pca", min_agreement=1.01)
    learned = asyncio.run(fit_in_child("m1", m, NAMES, rows(), tmp_path / "jobs"))
    assert not learned.model.quantized and learned.info["int8_rejected"] is True
    assert learned.info["min_agreement"] == 1.01 and 0.0 < float(learned.info["agreement"]) <= 1.0  # type: ignore[arg-type]
    # the engine's hot path takes it the way the fit runner hands it over
    hot = HotPath(load_config_text(CFG.replace("fit_in_subprocess = false", "")))
    hot.defer_fits = True
    with caplog.at_level(logging.WARNING, logger="machinewatch.engine.hotpath"):
        hot.install("m1", learned, 0)
    assert hot.counters["models_agreement_failed"] == 1
    assert "asset m1: int8 model failed validation" in caplog.text
    # stored as what it is: a float model whose manifest says why
    store = ModelStore(tmp_path)
    store.save("m1", learned)
    man = json.loads((store.asset_dir("m1") / "current.json").read_text())
    assert man["quantized"] is False and man["int8_rejected"] is True and man["min_agreement"] == 1.01
    back = store.load("m1", NAMES)
    assert back is not None and not back.model.quantized and back.info["int8_rejected"] is True
