"""Fleets: asset ownership (config assignment, ``--shard``), and what each engine tags and subscribes."""

from __future__ import annotations

import argparse
import hashlib
from collections import Counter
from pathlib import Path

import pytest

from machinewatch.connectors.base import Rejected
from machinewatch.connectors.sources.mqtt import MqttSource
from machinewatch.engine.commands.check import fleet_plan
from machinewatch.engine.config import Config, load_config_text
from machinewatch.engine.errors import ConfigError
from machinewatch.engine.fleet import (
    Shard,
    apply_fleet_arguments,
    filter_config,
    fleet_warnings,
    mqtt_client_id,
    owned_assets,
    parse_shard,
    sanitize_gateway_id,
    shard_of,
)
from machinewatch.engine.lineprotocol import encode
from machinewatch.engine.pipeline import Engine
from machinewatch.engine.status import EngineStatus
from machinewatch.engine.types import AlarmEvent, Summary

#: golden values: the split must never change between versions or machines (learned models
#: live on the gateway that runs the asset); tests/e2e/test_fleet.py relies on it too
GOLDEN_3 = {
    "pump1": 2,
    "pump2": 1,
    "pump3": 1,
    "fan1": 3,
    "fan2": 2,
    "fan3": 3,
    "mixer1": 3,
    "kiln2": 1,
}


def _cfg(assets: dict[str, str | None], extra: str = "", gateway_id: str = "gw1") -> Config:
    text = f'[engine]\nsite = "s1"\ngateway_id = "{gateway_id}"\n'
    for name, gw in assets.items():
        text += f"[assets.{name}]\n"
        if gw is not None:
            text += f'gateway = "{gw}"\n'
        text += f'alarm.actuators = ["out_{name}", "shared"]\n'
        text += f'[assets.{name}.streams.t]\nkind = "scalar"\nrate_hz = 1\n'
        text += f'[actuators.out_{name}]\nkind = "log"\n'
    text += '[actuators.shared]\nkind = "log"\n[actuators.spare]\nkind = "log"\n'
    text += '[sources.plant]\nkind = "mqtt"\nurl = "mqtt://127.0.0.1:1883"\n' + extra
    return load_config_text(text, Path("/tmp"))


def test_shard_of_is_stable_and_uses_no_process_salt() -> None:
    assert {a: shard_of(a, 3) for a in GOLDEN_3} == GOLDEN_3
    # the definition, restated: highest SHA-256 weight of "<asset>\0<i>" wins
    for a in GOLDEN_3:
        w = [int.from_bytes(hashlib.sha256(f"{a}\x00{i}".encode()).digest()[:8], "big") for i in (1, 2, 3)]
        assert shard_of(a, 3) == 1 + w.index(max(w))
    assert shard_of("anything", 1) == 1
    with pytest.raises(ValueError):
        shard_of("x", 0)


def test_every_asset_has_exactly_one_shard_and_the_split_is_even_on_average() -> None:
    names = [f"asset{i:04d}" for i in range(3000)]
    for n in (1, 2, 3, 5, 8):
        counts = Counter(shard_of(a, n) for a in names)
        assert set(counts) == set(range(1, n + 1))
        assert sum(counts.values()) == len(names)
        mean = len(names) / n
        assert all(abs(c - mean) < 0.15 * mean for c in counts.values()), counts


def test_growing_the_fleet_moves_only_what_the_new_shard_takes() -> None:
    names = [f"m{i}" for i in range(2000)]
    for n in (2, 3, 4, 7):
        moved = [a for a in names if shard_of(a, n) != shard_of(a, n + 1)]
        assert all(shard_of(a, n + 1) == n + 1 for a in moved)
        assert 0.5 / (n + 1) < len(moved) / len(names) < 1.5 / (n + 1)


@pytest.mark.parametrize("text", ["0/3", "4/3", "1/0", "x/3", "1-3", "", "2/5000", "-1/3", "1/3/4"])
def test_bad_shards_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="--shard"):
        parse_shard(text)


def test_parse_shard() -> None:
    assert parse_shard("1/1") == Shard(1, 1)
    assert parse_shard(" 3 / 3 ") == Shard(3, 3)
    assert str(parse_shard("2/7")) == "2/7"


def test_assigned_assets_go_to_their_gateway_only_and_shards_split_the_rest() -> None:
    cfg = _cfg({"pump1": None, "pump2": None, "boiler": "gw2", "fan1": None})
    assert owned_assets(cfg, "gw1") == ["pump1", "pump2", "fan1"]  # no shard: every unassigned one
    assert owned_assets(cfg, "gw2") == ["pump1", "pump2", "boiler", "fan1"]
    owners: Counter[str] = Counter()
    for i, gw in enumerate(("gw1", "gw2", "gw3"), 1):
        owners.update(owned_assets(cfg, gw, Shard(i, 3)))
    assert owners == dict.fromkeys(["pump1", "pump2", "boiler", "fan1"], 1)  # exactly once each
    assert "boiler" in owned_assets(cfg, "gw2", Shard(1, 3))  # assignment wins over the shard
    assert "boiler" not in owned_assets(cfg, "gw1", Shard(1, 1))  # a shard never takes an assigned asset


def test_gateway_assignment_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"assets\.p\.gateway"):
        _cfg({"p": "bad gateway"})
    with pytest.raises(ConfigError, match=r"engine\.gateway_id"):
        _cfg({"p": None}, gateway_id="a/b")


def test_filter_config_keeps_owned_assets_and_their_actuators() -> None:
    cfg = _cfg({"pump1": None, "pump2": None, "boiler": "gw2"})
    mine = filter_config(cfg, Shard(GOLDEN_3["pump1"], 3), "gw-x")
    assert list(mine.assets) == [a for a in ("pump1", "pump2") if GOLDEN_3[a] == GOLDEN_3["pump1"]]
    assert mine.engine.gateway_id == "gw-x"
    assert set(mine.unowned_assets) == set(cfg.assets) - set(mine.assets)
    # its own outputs and the shared one; never another gateway's (no safe state sent to them);
    # an actuator no asset names is kept as before
    assert set(mine.actuators) == {f"out_{a}" for a in mine.assets} | {"shared", "spare"}
    with pytest.raises(ConfigError, match="owns none"):
        filter_config(_cfg({"boiler": "gw2"}), None, "gw1")
    with pytest.raises(ConfigError, match="--gateway"):
        filter_config(cfg, None, "no spaces")


def test_run_and_check_options_and_the_plan(capsys: pytest.CaptureFixture[str]) -> None:
    full = _cfg({"pump1": None, "pump3": None, "boiler": "gw2"})
    args = argparse.Namespace(shard="1/3", gateway="gw1")
    cfg, shard = apply_fleet_arguments(full, args)
    assert shard == Shard(1, 3) and list(cfg.assets) == ["pump3"]
    text = "\n".join(fleet_plan(full, cfg, shard))
    assert "gateway gw1 shard 1/3: owns 1 of 3 assets: pump3" in text
    assert "left to other gateways: pump1, boiler" in text
    assert "warning" not in text
    assert fleet_warnings(full, None) and "pump1" in fleet_warnings(full, None)[0]
    assert fleet_warnings(_cfg({"a": None}), None) == []


def test_sanitize_gateway_id() -> None:
    assert sanitize_gateway_id("plant-3.example.com") == "plant-3.example.com"
    assert sanitize_gateway_id("a" * 80) == "a" * 64
    assert sanitize_gateway_id("gw 1/ä") == "gw-1--"


def test_mqtt_client_ids_are_unique_per_gateway() -> None:
    one = _cfg({"p": None}, gateway_id="gw1")
    two = _cfg({"p": None}, gateway_id="gw2")
    assert mqtt_client_id({}, one, "machinewatch-s1") == "machinewatch-s1-gw1"
    ids = {
        MqttSource("plant", c.sources["plant"].options, c).client_id for c in (one, two)
    }  # the persistent sessions of two engines never collide
    assert ids == {"machinewatch-s1-gw1", "machinewatch-s1-gw2"}
    # an explicit id: kept outside a fleet (an existing session survives the upgrade) ...
    assert mqtt_client_id({"client_id": "fixed"}, one, "x") == "fixed"
    # ... and made unique inside one
    fleet = filter_config(_cfg({"p": None, "q": "gw9"}), None, "gw1")
    assert mqtt_client_id({"client_id": "fixed"}, fleet, "x") == "fixed-gw1"
    assert mqtt_client_id({"client_id": "mw-<gateway>-<site>"}, fleet, "x") == "mw-gw1-s1"


def test_mqtt_source_subscribes_per_owned_asset_and_ignores_others() -> None:
    full = _cfg({"pump1": None, "pump2": None, "boiler": "gw2"})
    assert MqttSource("plant", full.sources["plant"].options, full).topics.subscriptions == [
        "machinewatch/+/+/+"
    ]
    cfg = filter_config(full, None, "gw2")  # owns everything: nothing to filter
    assert cfg.unowned_assets == ()
    cfg = filter_config(full, None, "gw1")
    src = MqttSource("plant", cfg.sources["plant"].options, cfg)
    assert src.topics.subscriptions == ["machinewatch/s1/pump1/+", "machinewatch/s1/pump2/+"]
    item = src.decode("machinewatch/s1/boiler/t", b'{"value": 1.0}')
    assert isinstance(item, Rejected) and item.reason == "not_owned"
    unknown = src.decode("machinewatch/s1/ghost/t", b'{"value": 1.0}')
    assert isinstance(unknown, Rejected) and unknown.reason == "unknown_topic"
    assert src.decode("machinewatch/s1/_engine/gw2/heartbeat", b"{}") is None


def test_status_and_heartbeat_topics_are_per_gateway() -> None:
    st = EngineStatus({"url": "mqtt://127.0.0.1:1"}, "s1", "p", dict, print, gateway="gw2", client_id="c")
    assert st.prefix == "machinewatch/s1/_engine/gw2" and st.commands_prefix == "machinewatch/s1/_engine"
    assert st.client_id == "c"
    cfg = filter_config(_cfg({"pump1": None, "boiler": "gw2"}), None, "gw1")
    eng = Engine(cfg, install_signals=False)
    link = eng._status_link()
    assert link is not None
    assert link.prefix == "machinewatch/s1/_engine/gw1" and link.client_id == "machinewatch-s1-gw1-status"
    assert link.assets == ["pump1"]
    # a site-wide command for another gateway's asset is not an "unknown asset"
    assert eng.command({"cmd": "ack", "asset": "boiler"}) is False
    assert eng.command({"cmd": "ack", "asset": "ghost"}) is False
    assert eng.counters["commands_not_owned"] == 1 and eng.counters["commands_unknown_asset"] == 1


def test_every_point_can_carry_the_gateway_tag() -> None:
    t = 1_700_000_000_000_000_000
    s = Summary("s1", "p", t, 10.0, "NORMAL", {"score_max": 1.0}, {"t": {"level_mean": 2.0}})
    e = AlarmEvent("s1", "p", t, "NORMAL", "ALARM", "over")
    enc = encode([s], [e], [("s1", t, {"uptime_s": 1.0})], now_ns=t, tags={"gateway": "gw1"})
    assert len(enc.lines) == 4 and all(",gateway=gw1," in ln for ln in enc.lines)
    assert all("gateway" not in ln for ln in encode([s], [e], now_ns=t).lines)
