"""Fitting in a child process: same model as in-process, clear failures, backlog scored, no sklearn."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from machinewatch.engine.config import ModelConfig
from machinewatch.engine.errors import ModelError
from machinewatch.engine.fitworker import fit_in_child, fit_many_in_child, read_job, write_job
from machinewatch.engine.hotpath import model_factory
from machinewatch.engine.scoring import fit_for

NAMES = ("a.x", "a.y", "b.z")


def rows(n: int = 120) -> np.ndarray:
    rng = np.random.default_rng(3)
    base = rng.normal(size=(n, 3))
    base[:, 2] += 0.5 * base[:, 0]
    return base


def test_job_round_trip(tmp_path: Path) -> None:
    m = ModelConfig(kind="pca", threshold_margin=1.5, options={"components": 2}, features=("a.*",))
    write_job(tmp_path / "j", "p1", m, NAMES, rows())
    asset, m2, names, x = read_job(tmp_path / "j")
    assert (asset, names) == ("p1", NAMES)
    assert m2 == m
    assert np.array_equal(x, rows())


@pytest.mark.parametrize("quantized", [True, False])
def test_child_fit_equals_in_process_fit(tmp_path: Path, quantized: bool) -> None:
    m = ModelConfig(kind="mahalanobis", quantized=quantized)
    x = rows()
    child = asyncio.run(fit_in_child("p1", m, NAMES, x, tmp_path))
    here = fit_for(m, NAMES, model_factory(m.kind, {}), x)
    assert child.threshold == pytest.approx(here.threshold, rel=1e-12)
    assert child.model.quantized == quantized
    probe = np.vstack([x[:5], x[:5] + 4.0])
    assert np.allclose(child.model.score(probe), here.model.score(probe), rtol=1e-9)
    assert child.info["training_rows"] == len(x)
    assert list(tmp_path.iterdir()) == []  # the job folder is removed


def test_child_fit_failure_is_a_model_error_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"p1: fitting failed: need at least 6 healthy vectors"):
        asyncio.run(fit_in_child("p1", ModelConfig(), NAMES, rows(3), tmp_path))
    with pytest.raises(ModelError, match=r"fitting failed: PluginError: unknown model kind .nosuchmodel."):
        asyncio.run(fit_in_child("p1", ModelConfig(kind="nosuchmodel"), NAMES, rows(), tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_many_jobs_in_one_child_a_bad_one_costs_the_others_nothing(tmp_path: Path) -> None:
    good = ModelConfig(kind="pca")
    jobs = [
        ("p1", good, NAMES, rows()),
        ("p2", ModelConfig(), NAMES, rows(3)),  # too few rows
        ("p3", ModelConfig(kind="iforest"), NAMES, rows()),
    ]
    res = asyncio.run(fit_many_in_child(jobs, tmp_path))
    assert isinstance(res["p2"], ModelError) and "need at least 6" in str(res["p2"])
    for a in ("p1", "p3"):
        r = res[a]
        assert not isinstance(r, ModelError)
        assert r.model.score(rows()[:3]).shape == (3,)
    assert list(tmp_path.iterdir()) == []


def test_failed_fit_keeps_learning_with_the_waiting_vectors() -> None:
    from collections import deque

    from machinewatch.engine.config import load_config_text
    from machinewatch.engine.hotpath import HotPath

    cfg = load_config_text("""
[assets.m1.streams.t]
kind = "scalar"
rate_hz = 1
window_samples = 10
[sources.s]
kind = "simulator"
""")
    hot = HotPath(cfg)
    hot.defer_fits = True
    n = len(hot.scorers["m1"].names)
    hot.backlog["m1"] = deque([(np.zeros(n), i) for i in range(5)])
    out = hot.install("m1", None, 0)
    assert hot.counters["learn_failed"] == 1
    assert "m1" not in hot.backlog and out.fits == [] and out.events == []
    assert hot.scorers["m1"].learning and hot.alarms["m1"].state == "LEARNING"
    assert len(hot.scorers["m1"]._learn) == 5  # the waiting vectors count towards the next fit


ENGINE = r"""
import asyncio, json, sys
import numpy as np
from machinewatch.connectors.base import Source
from machinewatch.engine.config import load_config_text
from machinewatch.engine.pipeline import Engine
from machinewatch.engine.registry import registry
from machinewatch.engine.types import Chunk

class Noise(Source):
    async def chunks(self):
        rng = np.random.default_rng(0)
        for i in range(400):
            x = rng.normal(0, 1.0, 512).astype(np.float32)
            if i >= 300:
                x += 8.0 * np.sin(2 * np.pi * 25.0 * np.arange(512) / 4096.0).astype(np.float32)
            yield Chunk("m1/vib", int(i * 512 / 4096 * 1e9), 4096.0, i, x)
            if i % 32 == 0:
                await asyncio.sleep(0)

registry.add("sources", "noise", Noise)
cfg = load_config_text('''
[engine]
state_dir = "STATE"
summary_interval_s = 1.0
[model]
learn_windows = 100
[assets.m1.machine]
shaft_hz = 25.0
[assets.m1.streams.vib]
kind = "vibration"
rate_hz = 4096
window_samples = 512
[sources.s]
kind = "noise"
[sinks.local]
kind = "local"
''')
r = asyncio.run(Engine(cfg, install_signals=False).run())
print(json.dumps({"sklearn": "sklearn" in sys.modules, "scored": r.counters.get("windows_scored", 0),
                  "alarm": r.counters.get("alarm_events", 0)}))
"""


def test_engine_learns_in_a_child_and_scores_every_window(tmp_path: Path) -> None:
    import json

    out = subprocess.run(
        [sys.executable, "-c", ENGINE.replace("STATE", str(tmp_path))],
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["sklearn"] is False  # scikit-learn never loaded into the engine
    assert res["scored"] == 300  # 400 windows, 100 learned: the ones that waited for the fit too
    assert res["alarm"] >= 2  # LEARNING -> NORMAL, then the fault
    assert (tmp_path / "models" / "m1" / "current.json").exists()  # persisted for a restart
