"""``machinewatch bench``: capacity arithmetic and one short real measurement."""

from __future__ import annotations

import argparse
import json

import pytest

from machinewatch.engine.commands import bench


def test_capacity_arithmetic() -> None:
    costs = {
        "a/vib": bench.StreamCost("a/vib", "vibration", loop_s=0.001, worker_s=0.003),
        "a/temp": bench.StreamCost("a/temp", "temperature", loop_s=0.0005, worker_s=0.0),
    }
    cap = bench.capacity(costs, headroom=0.7, cpus=2)
    assert cap["vibration_channels_per_core"] == 175  # 0.7 / 0.004
    assert cap["vibration_channels_total"] == 233  # the worker thread's 0.003 is the limit
    assert cap["cpu_share_of_one_core"] == pytest.approx(0.0045)
    one = bench.capacity(costs, headroom=0.7, cpus=1)
    assert one["vibration_channels_total"] == 175
    none = bench.capacity({"a/temp": costs["a/temp"]}, 0.7, 2)
    assert none["vibration_channels_per_core"] is None


def test_bench_measures_the_typical_asset(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(config=None, seconds=2.0, repeat=1, headroom=0.7, json=True)
    assert bench.main(args) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["streams"]["typical/vib"]["worker_s_per_s"] > 0
    assert d["streams"]["typical/vib"]["loop_s_per_s"] > 0
    assert d["vibration_channels_per_core"] >= 1
    assert d["fft_backend"] in ("mkl", "ducc0", "scipy")
    assert d["vibration_channels_total"] >= d["vibration_channels_per_core"]
