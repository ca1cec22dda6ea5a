"""The plug-in contract check, run over every registered plug-in of every group.

The parametrisation is read from the registry at collection time, so a plug-in installed into
the environment (a built-in added to ``pyproject.toml``, or a third-party package) is checked the
moment it is registered. The second half shows the check catches what it claims to.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from machinewatch.connectors.base import Actuator, Rejected, Sink, Source, StreamDown
from machinewatch.engine.config import Config, load_config
from machinewatch.engine.errors import ConfigProblem
from machinewatch.engine.plugins import check_class, check_config, check_plugin, list_plugins
from machinewatch.engine.registry import GROUPS, registry
from machinewatch.engine.types import AlarmEvent, Chunk, Summary
from machinewatch.models.mahalanobis import MahalanobisModel

ROOT = Path(__file__).resolve().parents[1]
# every plug-in installed through an entry point (built-in or third-party); classes that tests add
# at run time with registry.add are fakes, and which are imported first depends on the run
PLUGINS = [
    (g, n) for g in GROUPS for n in sorted({ep.name for ep in entry_points(group=f"machinewatch.{g}")})
]


def test_every_group_has_its_builtins() -> None:
    names = {g: {n for gg, n in PLUGINS if gg == g} for g in GROUPS}
    assert {"simulator", "replay", "mqtt"} <= names["sources"]
    assert {"local", "influxdb"} <= names["sinks"]
    assert {"log", "mqtt", "modbus", "webhook"} <= names["actuators"]
    assert {"mahalanobis", "pca", "autoencoder", "iforest"} <= names["models"]


@pytest.mark.parametrize(("group", "name"), PLUGINS, ids=[f"{g}:{n}" for g, n in PLUGINS])
def test_registered_plugin_meets_the_contract(group: str, name: str) -> None:
    assert check_plugin(group, name) == []


def test_list_plugins_names_the_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry._extra["sinks"], "runtime-sink", _GoodSink)
    infos = {(i.group, i.name): i for i in list_plugins()}
    # entry points, plus what was added at run time (by this test, and fakes other test modules add)
    runtime = {(g, n) for g in GROUPS for n in registry._extra[g]}
    assert ("sinks", "runtime-sink") in runtime
    assert set(infos) == set(PLUGINS) | runtime
    local = infos[("sinks", "local")]
    assert local.target == "machinewatch.connectors.sinks.local:LocalSink"
    assert local.distribution.startswith("machinewatch ")
    assert infos[("sinks", "runtime-sink")].distribution == ""


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_sample_configs_construct_without_network(path: Path) -> None:
    assert check_config(load_config(path)) == {}


# ------------------------------------------------------------------ the check catches violations


class _GoodSink(Sink):
    @classmethod
    def validate_options(cls, options: Mapping[str, Any], path: str) -> list[ConfigProblem]:
        return [ConfigProblem(f"{path}.{k}", "unknown key") for k in options]

    async def write(self, summaries: list[Summary], events: list[AlarmEvent]) -> None:
        return None


class _NoChunks(Source):
    validate_options = _GoodSink.validate_options


class _CoroutineChunks(Source):
    validate_options = _GoodSink.validate_options

    async def chunks(self) -> AsyncIterator[Chunk | Rejected | StreamDown]:  # type: ignore[override]
        return None  # type: ignore[return-value]


class _SyncWrite(_GoodSink):
    def write(self, summaries: list[Summary], events: list[AlarmEvent]) -> None:  # type: ignore[override]
        return None


class _RaisingValidate(_GoodSink):
    @classmethod
    def validate_options(cls, options: Mapping[str, Any], path: str) -> list[ConfigProblem]:
        return [ConfigProblem(f"{path}.port", "bad")] if int(options.get("port", 1)) else []


class _SilentOnUnknown(_GoodSink):
    @classmethod
    def validate_options(cls, options: Mapping[str, Any], path: str) -> list[ConfigProblem]:
        return []


class _WrongPath(_GoodSink):
    @classmethod
    def validate_options(cls, options: Mapping[str, Any], path: str) -> list[ConfigProblem]:
        return [ConfigProblem(k, "unknown key") for k in options]


class _StringProblems(_GoodSink):
    @classmethod
    def validate_options(cls, options: Mapping[str, Any], path: str) -> list[ConfigProblem]:
        return [f"{path}.{k}: unknown key" for k in options]  # type: ignore[misc]


class _NoPolicy(Actuator):
    validate_options = _GoodSink.validate_options

    async def set(self, asset: str, energised: bool, event: AlarmEvent | None) -> None:
        return None


class _KeyErrorInit(_GoodSink):
    def __init__(self, name: str, options: Mapping[str, Any], config: Config) -> None:
        super().__init__(name, options, config)
        self.host = options["host"]


@pytest.mark.parametrize(
    ("group", "cls", "expect"),
    [
        ("sources", _GoodSink, "is not a subclass of machinewatch.connectors.base.Source"),
        ("sources", _NoChunks, "does not implement chunks()"),
        ("sources", _CoroutineChunks, "chunks() is a coroutine"),
        ("sinks", _SyncWrite, "write must be a coroutine function"),
        ("sinks", _RaisingValidate, "validate_options raised ValueError on options set to"),
        ("sinks", _SilentOnUnknown, "does not report an unknown key"),
        ("sinks", _WrongPath, "outside the key path"),
        ("sinks", _StringProblems, "must return a list of ConfigProblem"),
        ("sinks", _KeyErrorInit, "constructor raised KeyError (not a MachinewatchError)"),
        ("actuators", _NoPolicy, "refuses the actuator policy options ['max_changes_per_min', 'min_off_s'"),
        ("bogus", _GoodSink, "unknown plug-in group"),
    ],
    ids=lambda v: getattr(v, "__name__", None) if isinstance(v, type) else None,
)
def test_check_reports_the_violation(group: str, cls: type, expect: str) -> None:
    problems = check_class(group, "x", cls)
    assert any(expect in p for p in problems), problems


def test_a_good_plugin_passes() -> None:
    assert check_class("sinks", "x", _GoodSink) == []


def test_constructor_network_access_is_caught_and_refused() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        port = listener.getsockname()[1]

        class Connects(_GoodSink):
            def __init__(self, name: str, options: Mapping[str, Any], config: Config) -> None:
                super().__init__(name, options, config)
                self.sock = socket.socket()
                try:  # a connector that hides its failures still fails the check
                    self.sock.connect(("127.0.0.1", port))
                except Exception:
                    self.sock.close()

        problems = check_class("sinks", "x", Connects)
        assert any(f"touched the network: socket.connect(('127.0.0.1', {port}),)" in p for p in problems), (
            problems
        )
        with pytest.raises(BlockingIOError):
            listener.accept()  # the connection was refused before it was made

    class Resolves(_GoodSink):
        def __init__(self, name: str, options: Mapping[str, Any], config: Config) -> None:
            super().__init__(name, options, config)
            socket.getaddrinfo("localhost", 1883)

    problems = check_class("sinks", "x", Resolves)
    assert any("socket.getaddrinfo" in p for p in problems), problems
    socket.getaddrinfo("localhost", 1883)  # outside a check the hook stays out of the way


class _Backwards(MahalanobisModel):
    kind = "backwards"

    def _score(self, x: np.ndarray) -> np.ndarray:
        return -super()._score(x)  # lower = more anomalous: the wrong way round


def test_model_checks_catch_wrong_way_scores_and_kind() -> None:
    problems = check_class("models", "backwards", _Backwards)
    assert any("12-sigma outlier does not score above" in p for p in problems), problems
    assert any("kind is 'mahalanobis'" in p for p in check_class("models", "mine", MahalanobisModel))
    assert any("is not a subclass" in p for p in check_class("models", "x", _GoodSink))
