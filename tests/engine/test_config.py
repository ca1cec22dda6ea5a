"""Config loading: typed values, every problem listed by key path, secrets never inline."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from machinewatch.engine.config import BearingGeometry, load_config, load_config_text, resolve_secret
from machinewatch.engine.errors import ConfigError

GOOD = """
[engine]
site = "plant1"
state_dir = "state"
[assets.pump1]
primary_stream = "vib"
[assets.pump1.machine]
shaft_rpm = 1797
[assets.pump1.machine.bearing]
balls = 9
ball_diameter_in = 0.3126
pitch_diameter_in = 1.537
[assets.pump1.streams.vib]
kind = "vibration"
rate_hz = 12000
window_samples = 4096
hop_samples = 2048
[assets.pump1.streams.temp]
kind = "temperature"
rate_hz = 1
window_samples = 30
[sources.sim]
kind = "simulator"
[sinks.local]
kind = "local"
"""


def paths(exc: ConfigError) -> dict[str, str]:
    return {p.path: p.reason for p in exc.problems}


def test_good_config_is_typed(tmp_path: Path) -> None:
    cfg = load_config_text(GOOD, tmp_path)
    a = cfg.assets["pump1"]
    assert a.site == "plant1"
    assert a.machine.shaft_hz == pytest.approx(1797 / 60)
    s = a.streams["vib"]
    assert (s.rate_hz, s.window_samples, s.hop_samples) == (12000.0, 4096, 2048)
    assert a.streams["temp"].hop_samples == 30  # defaults to the window
    assert cfg.engine.state_dir == tmp_path / "state"
    assert a.machine.bearing is not None
    assert a.machine.bearing.ball_diameter_mm == pytest.approx(0.3126 * 25.4)


def test_bearing_orders_match_cwru_published_values() -> None:
    g = BearingGeometry(9, 0.3126 * 25.4, 1.537 * 25.4, 0.0)
    o = g.orders()
    assert o["bpfi"] == pytest.approx(5.4152, abs=1e-3)
    assert o["bpfo"] == pytest.approx(3.5848, abs=1e-3)
    assert o["ftf"] == pytest.approx(0.39828, abs=1e-4)
    assert o["bsf"] == pytest.approx(2.357, abs=2e-3)


def test_every_problem_is_listed_with_its_path() -> None:
    bad = GOOD.replace("rate_hz = 12000", "rate_hz = -5").replace('kind = "temperature"', 'kind = "temp"')
    bad = bad.replace("balls = 9", "balls = 1").replace(
        'site = "plant1"', 'site = "plant1"\nsumary_interval_s = 3'
    )
    with pytest.raises(ConfigError) as ei:
        load_config_text(bad)
    p = paths(ei.value)
    assert p["assets.pump1.streams.vib.rate_hz"] == "must be > 0"
    assert "must be one of" in p["assets.pump1.streams.temp.kind"]
    assert p["assets.pump1.machine.bearing.balls"] == "must be >= 3"
    assert "did you mean 'summary_interval_s'" in p["engine.sumary_interval_s"]
    assert len(ei.value.problems) == 4
    assert "assets.pump1.streams.vib.rate_hz: must be > 0" in str(ei.value)


def test_wrong_types_and_missing_keys() -> None:
    bad = GOOD.replace("window_samples = 4096", 'window_samples = "big"').replace("shaft_rpm = 1797", "")
    with pytest.raises(ConfigError) as ei:
        load_config_text(bad)
    p = paths(ei.value)
    assert "must be an integer" in p["assets.pump1.streams.vib.window_samples"]
    assert "needs shaft_hz" in p["assets.pump1.machine"]


def test_unknown_plugin_and_dangling_references() -> None:
    bad = GOOD.replace('kind = "local"', 'kind = "nosuch"') + '\n[alarm]\nactuators = ["relay9"]\n'
    with pytest.raises(ConfigError) as ei:
        load_config_text(bad)
    p = paths(ei.value)
    assert "unknown sink kind 'nosuch'" in p["sinks.local.kind"]
    assert "names no actuator" in p["assets.pump1.alarm.actuators[0]"]


def test_inline_secret_is_refused() -> None:
    bad = GOOD + '\n[sinks.db]\nkind = "local"\ntoken = "hunter2"\n'
    with pytest.raises(ConfigError) as ei:
        load_config_text(bad)
    reasons = [p.reason for p in ei.value.problems if p.path == "sinks.db.token"]
    assert any("never inline" in r and "token_env" in r for r in reasons)
    assert "hunter2" not in str(ei.value)


def test_not_toml_and_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config_text("[engine\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_no_nan_or_bool_where_numbers_go() -> None:
    bad = GOOD.replace("rate_hz = 12000", "rate_hz = nan").replace("hop_samples = 2048", "hop_samples = true")
    with pytest.raises(ConfigError) as ei:
        load_config_text(bad)
    p = paths(ei.value)
    assert p["assets.pump1.streams.vib.rate_hz"] == "must be a finite number"
    assert "boolean" in p["assets.pump1.streams.vib.hop_samples"]
    assert math.isnan(float("nan"))


def test_resolve_secret_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MW_TOKEN", "s3cret")
    assert resolve_secret({"token_env": "MW_TOKEN"}, "token") == "s3cret"
    f = tmp_path / "tok"
    f.write_text("filetoken\n")
    assert resolve_secret({"token_file": str(f)}, "token") == "filetoken"
    assert resolve_secret({}, "token") is None
    with pytest.raises(ConfigError, match="MW_UNSET"):
        resolve_secret({"token_env": "MW_UNSET"}, "token", "sinks.db")


def test_model_threshold_folds_default_set_and_checked(tmp_path: Path) -> None:
    assert load_config_text(GOOD, tmp_path).assets["pump1"].model.threshold_folds == 3
    one = GOOD + "[assets.pump1.model]\nthreshold_folds = 1\n"
    assert load_config_text(one, tmp_path).assets["pump1"].model.threshold_folds == 1
    with pytest.raises(ConfigError) as ei:
        load_config_text(GOOD + "[assets.pump1.model]\nthreshold_folds = 0\n", tmp_path)
    assert paths(ei.value)["assets.pump1.model.threshold_folds"] == "must be in [1, 10]"


def test_learn_s_is_counted_in_windows_of_the_primary_stream() -> None:
    # pump1's vectors come with its primary stream's windows: one per hop, 2048 / 12000 s
    cfg = load_config_text(GOOD + "[assets.pump1.model]\nlearn_s = 60\n")
    m = cfg.assets["pump1"].model
    assert (m.learn_s, m.learn_windows) == (60.0, math.ceil(60 * 12000 / 2048))  # 352
    # [model] learn_s applies to every asset; an asset's own learn_windows overrides it
    top = GOOD.replace("[assets.pump1]\n", "[model]\nlearn_s = 30\n[assets.pump1]\n")
    assert load_config_text(top).assets["pump1"].model.learn_windows == math.ceil(30 * 12000 / 2048)
    own = load_config_text(top + "[assets.pump1.model]\nlearn_windows = 150\n").assets["pump1"].model
    assert (own.learn_s, own.learn_windows) == (None, 150)
    assert load_config_text(GOOD).assets["pump1"].model.learn_windows == 200  # default unchanged


def test_learn_s_problems_name_the_key() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config_text(GOOD + "[assets.pump1.model]\nlearn_s = 60\nlearn_windows = 100\n")
    assert paths(exc.value) == {"assets.pump1.model.learn_s": "give learn_windows or learn_s, not both"}
    with pytest.raises(ConfigError) as exc:
        load_config_text(GOOD + "[assets.pump1.model]\nlearn_s = 1\n")
    reason = paths(exc.value)["assets.pump1.model.learn_s"]
    assert "6 window(s) of assets.pump1.streams.vib" in reason and ">= 10" in reason
    with pytest.raises(ConfigError) as exc:  # from [model]: the problem is at [model]'s key
        load_config_text(GOOD.replace("[assets.pump1]\n", "[model]\nlearn_s = 1\n[assets.pump1]\n"))
    assert "assets.pump1.streams.vib" in paths(exc.value)["model.learn_s"]
    with pytest.raises(ConfigError) as exc:
        load_config_text(GOOD + "[assets.pump1.model]\nlearn_s = 0\nmin_agreement = 1.5\n")
    assert paths(exc.value) == {
        "assets.pump1.model.learn_s": "must be > 0",
        "assets.pump1.model.min_agreement": "must be in [0, 1]",
    }


def test_min_agreement_default_and_override() -> None:
    assert load_config_text(GOOD).assets["pump1"].model.min_agreement == 0.99
    cfg = load_config_text(GOOD + "[assets.pump1.model]\nmin_agreement = 0.95\n")
    assert cfg.assets["pump1"].model.min_agreement == 0.95


def test_check_shows_the_resolved_learn_count() -> None:
    from machinewatch.engine.commands.check import plan, warnings

    cfg = load_config_text(GOOD + "[assets.pump1.model]\nlearn_s = 60\n")
    assert "(learn 60 s = 352 windows of stream 'vib')" in plan(cfg)
    short = load_config_text(GOOD + "[assets.pump1.model]\nlearn_s = 10\n")  # 59 windows
    assert any(w.startswith("assets.pump1.model.learn_s = 10 (59 windows): ") for w in warnings(short))
    assert "(learn 200 windows)" in plan(load_config_text(GOOD))
