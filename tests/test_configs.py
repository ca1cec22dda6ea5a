"""Every config shipped under configs/ loads and validates; demo.toml is what the demo runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from machinewatch.engine.commands.check import plan, warnings
from machinewatch.engine.commands.demo import demo_config_path
from machinewatch.engine.config import load_config

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").rglob("*.toml"))


def test_there_are_configs() -> None:
    assert any(p.name == "demo.toml" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_config_loads_and_plans(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("MQTT_PASSWORD", "INFLUX_TOKEN", "MACHINEWATCH_INFLUX_TOKEN", "MACHINEWATCH_MQTT_PASSWORD"):
        monkeypatch.setenv(var, "x")
    cfg = load_config(path)
    text = plan(cfg)
    assert f"{len(cfg.assets)} assets" in text


def test_packaged_demo_is_configs_demo() -> None:
    assert demo_config_path().read_bytes() == (ROOT / "configs" / "demo.toml").read_bytes()


def test_systemd_unit_runs_the_engine_as_a_dedicated_user() -> None:
    unit = (ROOT / "configs" / "systemd" / "machinewatch.service").read_text()
    assert "ExecStart=" in unit and "machinewatch run" in unit
    assert "User=machinewatch" in unit
    assert "Restart=on-failure" in unit


def test_demo_has_no_warnings_and_weak_settings_are_named() -> None:
    demo = load_config(ROOT / "configs" / "demo.toml")
    assert warnings(demo) == []
    text = (ROOT / "configs" / "demo.toml").read_text()
    weak = text.replace("window_samples = 25600 ", "window_samples = 2560 ").replace(
        "learn_windows = 600 ", "learn_windows = 60 "
    )
    p = ROOT / "configs" / "_weak.toml.tmp"
    try:
        p.write_text(weak)
        w = warnings(load_config(p))
    finally:
        p.unlink()
    assert any(x.startswith("assets.pump1.model.learn_windows = 60") for x in w)
    assert any(x.startswith("assets.pump1.streams.current.window_samples = 2560") and "NaN" in x for x in w)
    assert not any("fan1.streams" in x for x in w)  # fan1 has no current stream
