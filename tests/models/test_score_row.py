"""The single-row fast path gives the numbers of score() and contributions() for every model."""

from __future__ import annotations

import numpy as np
import pytest

from machinewatch.engine.errors import ModelError
from machinewatch.engine.registry import registry


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    mix = rng.standard_normal((12, 12))
    x = rng.standard_normal((300, 12)) @ mix
    test = np.vstack([x[:20], 6.0 * rng.standard_normal((20, 12)) @ mix, np.zeros((1, 12))])
    return x, test


@pytest.mark.parametrize("kind", sorted(registry.names("models")))
@pytest.mark.parametrize("quantized", [False, True])
def test_score_row_matches_batch(kind: str, quantized: bool) -> None:
    x, test = _data()
    model = registry.get("models", kind)().fit(x)
    if quantized:
        if type(model).quantized_class is None:
            pytest.skip(f"{kind} has no int8 form")
        model = model.quantize()
    scores = model.score(test)
    contrib = model.contributions(test)
    c = np.empty(test.shape[1])
    for i in range(len(test)):
        s = model.score_row(test[i], c)
        assert s == pytest.approx(scores[i], rel=1e-12, abs=1e-300)
        np.testing.assert_allclose(c, contrib[i], rtol=1e-12, atol=1e-14)


def test_score_row_rejects_wrong_width() -> None:
    x, _ = _data()
    model = registry.get("models", "mahalanobis")().fit(x).quantize()
    with pytest.raises(ModelError, match="12 features"):
        model.score_row(np.zeros(11), np.empty(11))
