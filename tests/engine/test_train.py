"""``machinewatch train``: fit from recorded files, store the model, report size and agreement."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from machinewatch.engine import scoring
from machinewatch.engine.cli import main
from machinewatch.engine.commands.train import expected_chunks
from machinewatch.engine.config import load_config
from machinewatch.engine.registry import registry

ROWS = 600

CONFIG = """
[engine]
state_dir = "{state}"
[model]
kind = "mahalanobis"
[assets.m1]
primary_stream = "t"
[assets.m1.streams.t]
kind = "temperature"
rate_hz = 1
window_samples = 10
hop_samples = 1
[assets.m1.streams.p]
kind = "scalar"
rate_hz = 1
window_samples = 5
hop_samples = 1
[sources.rec]
kind = "replay"
speedup = "max"
start_ns = 0
[[sources.rec.files]]
path = "temp.csv"
stream = "m1/t"
column = "temp"
[[sources.rec.files]]
path = "pressure.npy"
stream = "m1/p"
"""


def recorded(tmp_path: Path) -> Path:
    """A healthy recording: a CSV (with header) and a .npy file, and a config that replays them."""
    rng = np.random.default_rng(7)
    temp = 40.0 + 0.1 * np.cumsum(rng.normal(0, 0.05, ROWS)) + rng.normal(0, 0.2, ROWS)
    lines = ["time,temp", *(f"{i},{v:.4f}" for i, v in enumerate(temp))]
    (tmp_path / "temp.csv").write_text("\n".join(lines) + "\n")
    np.save(tmp_path / "pressure.npy", 3.0 + 0.5 * (temp - 40.0) + rng.normal(0, 0.05, ROWS))
    cfg = tmp_path / "train.toml"
    cfg.write_text(CONFIG.format(state=tmp_path / "state"))
    return cfg


def test_the_chunk_total_is_known_up_front_for_replay(tmp_path: Path) -> None:
    cfg = load_config(recorded(tmp_path))
    pc = cfg.sources["rec"]
    src = registry.get("sources", pc.kind)(pc.name, pc.options, cfg)
    assert expected_chunks([src]) == 2 * ROWS  # one reading per chunk on scalar streams
    assert expected_chunks([object()]) is None  # another source kind: counts only


def test_train_stores_the_model_and_reports_size_and_agreement(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", str(recorded(tmp_path))]) == 0
    out, err = capsys.readouterr()
    d = tmp_path / "state" / "models" / "m1"
    assert (d / "current.npz").exists() and (d / "current.json").exists()
    man = json.loads((d / "current.json").read_text())
    assert man["quantized"] is True and man["kind"] == "mahalanobis"
    assert man["training_rows"] > 500  # every window of the recording (none is withheld)
    assert 4 * man["int8_bytes"] <= man["float_bytes"]  # mahalanobis: int8 weights, float32 scales
    assert 0.99 <= man["agreement"] <= 1.0
    assert list(man["quantization_scales"]) == ["w1s"]
    # what it prints is what it stored
    line = next(x for x in out.splitlines() if x.startswith("asset m1:"))
    got = re.search(
        r"fitted on (\d+) vectors.*int8 (\d+) B vs float (\d+) B, float/int8 agreement ([\d.]+)", line
    )
    assert got is not None, line
    assert [int(g) for g in got.groups()[:3]] == [man["training_rows"], man["int8_bytes"], man["float_bytes"]]
    assert float(got.group(4)) == pytest.approx(man["agreement"], abs=1e-4)
    assert str(d / "current.json") in line
    # a progress bar with the total, known before the first chunk is read
    lines = err.split("\r")
    assert any(x.startswith("train [#####.....") and f" 200/{2 * ROWS} chunks" in x for x in lines)
    assert lines[-1].startswith(f"train [{'#' * 30}] 100% {2 * ROWS}/{2 * ROWS} chunks, ")
    assert lines[-1].endswith("asset vectors. done\n")


def test_train_says_when_the_int8_form_failed_validation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scoring, "decision_agreement", lambda *a: 0.5)
    assert main(["train", str(recorded(tmp_path)), "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "agreement 0.5000 < model.min_agreement 0.99: int8 rejected, float model stored" in out
    assert err == ""  # --no-progress
    man = json.loads((tmp_path / "state" / "models" / "m1" / "current.json").read_text())
    assert man["quantized"] is False and man["int8_rejected"] is True


def test_the_chunk_total_matches_the_chunks_of_npz_and_mat_recordings(tmp_path: Path) -> None:
    import asyncio

    from scipy import io

    from machinewatch.engine.config import load_config_text
    from machinewatch.engine.types import Chunk

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "a.npz", other=np.zeros(3), DE_time=rng.normal(size=5000))
    io.savemat(tmp_path / "b.mat", {"X097_DE_time": rng.normal(size=(1, 4001))})  # one row
    text = """
[assets.m1.machine]
shaft_hz = 25.0
[assets.m1.streams.vib]
kind = "vibration"
rate_hz = 1000
window_samples = 256
[assets.m1.streams.v2]
kind = "vibration"
rate_hz = 1000
window_samples = 256
[sources.rec]
kind = "replay"
speedup = "max"
chunk_samples = 300
[[sources.rec.files]]
path = "{d}/a.npz"
stream = "m1/vib"
variable = "DE_time"
[[sources.rec.files]]
path = "{d}/b.mat"
stream = "m1/v2"
variable = "DE_time"
decimate = 2
"""
    cfg = load_config_text(text.replace("{d}", str(tmp_path)))
    src = registry.get("sources", "replay")("rec", cfg.sources["rec"].options, cfg)

    async def count() -> int:
        return sum([isinstance(c, Chunk) async for c in src.chunks()])

    assert expected_chunks([src]) == -(-5000 // 300) + -(-2001 // 300) == asyncio.run(count())
