"""The demo as a user runs it: a subprocess, JSON outcome, then `trends` on its data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MW = [sys.executable, "-m", "machinewatch.engine.cli"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    state = tmp_path_factory.mktemp("demo") / "state"
    proc = subprocess.run(
        [*MW, "demo", "--seconds", "10", "--json", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout), state


def test_faulted_machine_alarms_after_the_fault_and_healthy_ones_never(demo: tuple[dict, Path]) -> None:
    out, _ = demo
    assets = {a["asset"]: a for a in out["assets"]}
    assert set(assets) == {"pump1", "fan1", "compressor1"}
    pump = assets["pump1"]
    assert pump["fault_injected"] and pump["alarmed"]
    assert pump["first_alarm_s"] > pump["fault_start_s"]
    assert any(f.startswith("vib.") for f in pump["top_features"])
    for healthy in ("fan1", "compressor1"):
        assert not assets[healthy]["fault_injected"]
        assert not assets[healthy]["alarmed"], assets[healthy]
    assert out["counters"].get("windows_scored", 0) > 1000
    assert Path(out["database"]).exists()


def test_trends_reads_the_demo_data(demo: tuple[dict, Path]) -> None:
    out, _ = demo
    proc = subprocess.run(
        [*MW, "trends", "pump1", "--db", out["database"]], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "== pump1" in proc.stdout and "ALARM" in proc.stdout
    assert "score_max" in proc.stdout


def test_check_prints_the_plan() -> None:
    proc = subprocess.run(
        [*MW, "check", str(ROOT / "configs" / "demo.toml")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "3 assets, 8 streams" in proc.stdout
    assert "stream vib: vibration, 25600 Hz" in proc.stdout


def test_check_lists_every_problem(tmp_path: Path) -> None:
    bad = (ROOT / "configs" / "demo.toml").read_text().replace("rate_hz = 25600", "rate_hz = 0", 1)
    bad = bad.replace('kind = "log"', 'kind = "relay9000"')
    p = tmp_path / "bad.toml"
    p.write_text(bad)
    proc = subprocess.run([*MW, "check", str(p)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "assets.pump1.streams.vib.rate_hz: must be > 0" in proc.stderr
    assert "actuators.panel.kind: unknown actuator kind 'relay9000'" in proc.stderr
