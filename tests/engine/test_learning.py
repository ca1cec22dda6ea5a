"""Learned models persist in state_dir, load at start (monitoring at once), roll back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from machinewatch.engine.config import load_config_text
from machinewatch.engine.errors import ModelError
from machinewatch.engine.hotpath import HotPath, model_factory
from machinewatch.engine.learning import ModelStore, restore_models, save_learned
from machinewatch.engine.scoring import fit_baseline

CFG = """
[engine]
state_dir = "{state}"
[assets.pump]
primary_stream = "t"
[assets.pump.streams.t]
kind = "temperature"
rate_hz = 1
window_samples = 5
hop_samples = 1
[assets.pump.model]
kind = "pca"
[sources.sim]
kind = "simulator"
"""


def _learned(names: tuple[str, ...], seed: int):  # type: ignore[no-untyped-def]
    x = np.random.default_rng(seed).normal(size=(120, len(names)))
    return fit_baseline(x, names, model_factory("pca", {}), 0.995, 1.25, quantized=True)


def test_save_load_rollback_and_restore(tmp_path: Path) -> None:
    cfg = load_config_text(CFG.format(state=tmp_path))
    hot = HotPath(cfg)
    names = hot.scorers["pump"].names
    store = ModelStore(tmp_path)
    assert store.load("pump", names) is None
    first, second = _learned(names, 0), _learned(names, 1)
    store.save("pump", first)
    store.save("pump", second)
    got = store.load("pump", names)
    assert got is not None and got.threshold == pytest.approx(second.threshold) and got.model.quantized
    store.rollback("pump")
    got = store.load("pump", names)
    assert got is not None and got.threshold == pytest.approx(first.threshold)
    # a restarted hot path monitors at once with the stored model
    hot2 = HotPath(cfg)
    assert hot2.alarms["pump"].state == "LEARNING"
    assert restore_models(hot2, store) == ["pump"]
    assert not hot2.scorers["pump"].learning and hot2.alarms["pump"].state == "NORMAL"
    hot2.scorers["pump"].learned = second
    save_learned(hot2, store, ["pump"])
    assert store.load("pump", names).threshold == pytest.approx(second.threshold)  # type: ignore[union-attr]


def test_torn_current_falls_back_to_previous_and_feature_change_is_refused(tmp_path: Path) -> None:
    cfg = load_config_text(CFG.format(state=tmp_path))
    names = HotPath(cfg).scorers["pump"].names
    store = ModelStore(tmp_path)
    first, second = _learned(names, 0), _learned(names, 1)
    store.save("pump", first)
    store.save("pump", second)
    npz = store.asset_dir("pump") / "current.npz"
    npz.write_bytes(npz.read_bytes()[:-10])  # torn write / damaged file
    got = store.load("pump", names)
    assert got is not None and got.threshold == pytest.approx(first.threshold)
    with pytest.raises(ModelError, match="features differ"):
        store.load("pump", (*names[:-1], "t.other"))
