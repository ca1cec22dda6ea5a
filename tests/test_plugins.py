"""A third-party plug-in as a user installs it: the example package, built and run from config alone.

``examples/plugin-sensor`` is built with pip (offline: no index, no build isolation) into a
temporary folder, never into the project's environment; the engine runs in a subprocess with that
folder on ``PYTHONPATH``, so ``kind = "example-lines"`` resolves through the package's installed
``.dist-info`` entry point exactly as after ``pip install``.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from machinewatch.connectors.sinks.local import read_alarms, read_summaries

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plugin-sensor"
MW = [sys.executable, "-m", "machinewatch.engine.cli"]
START_NS = 1_700_000_040_000_000_000  # a multiple of the 60 s summary interval
STEP_LINE = 900  # the oven's temperature steps from ~40 to ~60 degC here (1 line per second)
N_LINES = 1500


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    """(site folder with the built plug-in, a copy of the example's sources, subprocess env)."""
    tmp = tmp_path_factory.mktemp("plugin")
    src, site = tmp / "src", tmp / "site"
    # pip builds in the source folder (build/, *.egg-info): build a copy, keep the repo clean
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    cmd += ["--no-deps", "--no-build-isolation", "--no-index", "--target", str(site), str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (site / "mw_example_sensor.py").exists()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    env["NUMBA_NUM_THREADS"] = "1"
    return site, src, env


def _oven_log() -> str:
    rng = np.random.default_rng(7)
    lines = ["# oven1 controller, 1 line per second"]
    for i in range(N_LINES):
        level = 40.0 if i < STEP_LINE else 60.0
        temp = level + 0.5 * math.sin(i / 6.0) + 0.05 * rng.standard_normal()
        text = f"temp={temp:.3f} fan=on"  # fan: a key the config does not map (ignored)
        if i == 200:
            text = "temp=4O.1 fan=on"  # a letter O: rejected, counted
        elif i == 300:
            text = "temp=ERR fan=on"  # the probe failed: the stream goes STALE at once
        lines.append(text)
    return "\n".join(lines) + "\n"


class _Job:
    """One subprocess writing to files (no pipe can fill up while another test runs)."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str], tag: str) -> None:
        self.cwd = cwd
        self.out, self.err = cwd.parent / f"{tag}.out", cwd.parent / f"{tag}.err"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=err, text=True)

    def result(self) -> tuple[int, str, str]:
        rc = self.proc.wait(timeout=300)
        return rc, self.out.read_text(), self.err.read_text()


@pytest.fixture(scope="module")
def jobs(installed: tuple[Path, Path, dict[str, str]]) -> Iterator[dict[str, _Job]]:
    """The three subprocesses of this module, started together (they overlap on a 2-core box)."""
    _, src, env = installed
    work = src.parent / "run"
    work.mkdir()
    text = (src / "example.toml").read_text()
    assert "# start_ns = 0" in text
    (work / "example.toml").write_text(text.replace("# start_ns = 0", f"start_ns = {START_NS}"))
    (work / "oven.log").write_text(_oven_log())
    started = {
        "run": _Job([*MW, "run", "example.toml"], work, env, "run"),
        "plugins": _Job(
            [*MW, "plugins", "--check", "--json", "--config", "example.toml", "example-lines"],
            src,
            env,
            "plugins",
        ),
        "pytest": _Job(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], src, env, "pytest"
        ),
    }
    yield started
    for job in started.values():
        if job.proc.poll() is None:
            job.proc.kill()
            job.proc.wait()


@pytest.fixture(scope="module")
def run(jobs: dict[str, _Job]) -> tuple[Path, str]:
    """``machinewatch run example.toml`` in a folder holding the example config and an oven log."""
    rc, _, err = jobs["run"].result()
    assert rc == 0, err[-3000:]
    return jobs["run"].cwd / "machinewatch-example" / "machinewatch.db", err


def test_plugins_command_finds_and_checks_the_installed_plugin(jobs: dict[str, _Job]) -> None:
    rc, stdout, stderr = jobs["plugins"].result()
    assert rc == 0, stdout + stderr[-3000:]
    out = json.loads(stdout)
    assert out["plugins"] == [
        {
            "group": "sources",
            "name": "example-lines",
            "target": "mw_example_sensor:LineSensorSource",
            "distribution": "machinewatch-plugin-example 0.1.0",
            "problems": [],
        }
    ]
    assert out["config"] == {} and out["failed"] == 0


def test_engine_runs_the_plugin_from_config_alone(run: tuple[Path, str]) -> None:
    db_path, stderr = run
    counters = json.loads(re.findall(r"stopped after .*?: (\{.*\})", stderr)[-1])
    # 1500 lines, one reading each; the ERR line is a StreamDown, the "4O.1" line a Rejected
    assert counters["chunks_in"] == N_LINES - 2
    assert counters["rejected_bad_value"] == 1
    db = sqlite3.connect(db_path)
    rows = read_summaries(db, "oven1", stream="temp")
    assert len(rows) >= 24  # 1500 s of data in 60 s intervals
    assert {r["site"] for r in rows} == {"example"}
    step_ns = START_NS + STEP_LINE * 1_000_000_000
    before = [r for r in rows if r["time_ns"] <= step_ns]
    after = [r for r in rows if r["time_ns"] >= step_ns + 120_000_000_000]
    assert len(before) >= 14 and len(after) >= 8
    assert all(39.0 < r["level_mean"] < 41.0 for r in before), [r["level_mean"] for r in before]
    assert all(59.0 < r["level_mean"] < 61.0 for r in after), [r["level_mean"] for r in after]


def test_stream_down_and_machine_alarm_reach_the_database(run: tuple[Path, str]) -> None:
    db = sqlite3.connect(run[0])
    alarms = read_alarms(db, "oven1")
    stale = [a for a in alarms if a["kind"] == "quality" and a["to_state"] == "STALE"]
    assert len(stale) == 1 and "sensor_error" in stale[0]["reason"], alarms
    assert stale[0]["time_ns"] >= START_NS + 300 * 1_000_000_000 - 1_000_000_000
    assert any(a["kind"] == "quality" and a["from_state"] == "STALE" for a in alarms)
    machine = [a for a in alarms if a["kind"] == "machine" and a["to_state"] == "ALARM"]
    assert machine, alarms  # the model learned the healthy oven from the plug-in's data
    assert machine[0]["time_ns"] > START_NS + STEP_LINE * 1_000_000_000  # and no alarm before the step


def test_example_package_own_tests_pass(jobs: dict[str, _Job]) -> None:
    rc, stdout, stderr = jobs["pytest"].result()
    assert rc == 0, stdout[-3000:] + stderr[-2000:]
    assert re.search(r"\b4 passed\b", stdout), stdout[-2000:]
