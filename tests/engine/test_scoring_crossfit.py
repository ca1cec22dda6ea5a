"""Threshold calibration by blocked cross-fitting (``out_of_fold_scores``, ``fit_baseline``)."""

from __future__ import annotations

import numpy as np
import pytest

from machinewatch.engine.errors import ModelError
from machinewatch.engine.hotpath import model_factory
from machinewatch.engine.scoring import _blocks, fit_baseline, out_of_fold_scores
from machinewatch.models.threshold import calibrate_threshold

NAMES = ("a", "b", "c", "d")


def _healthy(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, len(NAMES)))


@pytest.mark.parametrize(("n", "folds"), [(6, 3), (7, 3), (36, 3), (381, 3), (10, 5)])
def test_blocks_cover_every_row_once_in_order(n: int, folds: int) -> None:
    blocks = _blocks(n, folds)
    assert len(blocks) == folds
    assert np.array_equal(np.concatenate([np.arange(n)[b] for b in blocks]), np.arange(n))
    sizes = [b.stop - b.start for b in blocks]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 2


def test_each_block_is_scored_by_a_model_that_did_not_see_it() -> None:
    x = _healthy(30)
    factory = model_factory("mahalanobis", {})
    f, q = out_of_fold_scores(x, NAMES, factory, folds=3)
    assert q is None
    for block in _blocks(30, 3):
        rest = np.ones(30, dtype=bool)
        rest[block] = False
        np.testing.assert_allclose(f[block], factory().fit(x[rest], NAMES).score(x[block]))


def test_the_last_fold_is_the_former_single_split() -> None:
    # the earlier calibration (fit on the first 2/3, score the last 1/3) is the last fold
    x = _healthy(60, 1)
    factory = model_factory("pca", {})
    f, _ = out_of_fold_scores(x, NAMES, factory)
    np.testing.assert_allclose(f[40:], factory().fit(x[:40], NAMES).score(x[40:]))


def test_a_transient_at_the_start_of_learning_widens_the_threshold() -> None:
    # running in: the first windows vibrate harder; a held-out last third never sees them,
    # so a single split sets a threshold the machine's own start-up already exceeds
    x = _healthy(60, 2)
    x[:8] += 4.0
    factory = model_factory("mahalanobis", {})
    lm = fit_baseline(x, NAMES, factory, 0.999, 2.0)
    last_third = calibrate_threshold(factory().fit(x[:40], NAMES).score(x[40:]), 0.999, 2.0)
    assert lm.threshold > 3 * last_third
    assert lm.info["threshold_folds"] == 3
    assert np.all(lm.model.score(x[:8]) < lm.threshold)


def test_stationary_data_gives_a_similar_threshold_to_the_single_split() -> None:
    x = _healthy(300, 3)
    factory = model_factory("mahalanobis", {})
    lm = fit_baseline(x, NAMES, factory, 0.99, 1.5)
    last_third = calibrate_threshold(factory().fit(x[:200], NAMES).score(x[200:]), 0.99, 1.5)
    assert lm.threshold == pytest.approx(last_third, rel=0.5)


def test_too_few_rows_for_the_folds_raise() -> None:
    with pytest.raises(ModelError, match="6 healthy vectors for 3 folds"):
        out_of_fold_scores(_healthy(5), NAMES, model_factory("mahalanobis", {}), folds=3)
    with pytest.raises(ModelError, match="folds"):
        out_of_fold_scores(_healthy(20), NAMES, model_factory("mahalanobis", {}), folds=0)
    with pytest.raises(ModelError, match="held-out third"):
        out_of_fold_scores(_healthy(3), NAMES, model_factory("mahalanobis", {}), folds=1)


def test_one_fold_is_the_former_single_held_out_third() -> None:
    x = _healthy(60, 1)
    factory = model_factory("pca", {})
    f, q = out_of_fold_scores(x, NAMES, factory, folds=1, quantized=True)
    first = factory().fit(x[:40], NAMES)
    np.testing.assert_allclose(f, first.score(x[40:]))
    assert q is not None and q.shape == (20,)
    lm = fit_baseline(x, NAMES, factory, 0.99, 1.5, folds=1)
    assert lm.info["threshold_folds"] == 1
    assert lm.threshold == pytest.approx(1.5 * np.quantile(first.score(x[40:]), 0.99))


def test_fit_for_passes_the_configured_threshold_folds() -> None:
    from machinewatch.engine.config import ModelConfig
    from machinewatch.engine.scoring import fit_for

    x = _healthy(60, 1)
    factory = model_factory("mahalanobis", {})
    for folds in (1, 2, 3):
        lm = fit_for(ModelConfig(quantized=False, threshold_folds=folds), NAMES, factory, x)
        assert lm.info["threshold_folds"] == folds


def test_fit_baseline_with_few_rows_uses_fewer_folds() -> None:
    # 6 rows -> 3 folds of 2 rows; fit_baseline never asks for more folds than n // 2
    lm = fit_baseline(_healthy(7), NAMES, model_factory("mahalanobis", {}), 0.99, 1.5, folds=5)
    assert lm.info["threshold_folds"] == 3 and np.isfinite(lm.threshold)
