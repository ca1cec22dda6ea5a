"""Shared pytest fixtures: the real servers on loopback, and a process runner.

Server fixtures (session-wide, started on first use, stopped at the end of the run):

``mosquitto``   a :class:`servers.Mosquitto` (``host``, ``port``, ``stop()``, ``start()`` on the
                same port, ``kill()``, ``pause()``/``resume()``)
``victoria``    a :class:`servers.VictoriaMetrics` (``url``, ``export(match)``, ``query(promql)``)
``influxdb1``   a :class:`servers.InfluxDB1` (``url``, ``query(q, db)``, ``write(lines, db)``)

A test may stop, kill or pause a session server; it is resumed or restarted after the test, so
the next test always finds it serving. ``mosquitto_factory(conf_extra="")`` starts a private
broker with extra config (ACL, TLS, passwords) that lives until the end of the test.

``tls_files`` is a throw-away CA with server and client certificates (see :class:`servers.TLSFiles`).

``run_process(args, name=...)`` starts any command with its output in ``<tmp_path>/<name>.log``
and guarantees termination at teardown.

When a server binary is missing, tests that need it are skipped ("mosquitto not installed: run
scripts/test"), unless ``MACHINEWATCH_REQUIRE_SERVERS=1`` (set by ``scripts/test``): then they fail.
Tests using a server fixture get the ``servers`` marker, so ``-m "not servers"`` runs the rest.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Generator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import pytest
from servers import (
    REQUIRE_SERVERS_ENV,
    InfluxDB1,
    ManagedProcess,
    Mosquitto,
    MosquittoFactory,
    RunProcess,
    ServerError,
    ServerProcess,
    TLSFiles,
    VictoriaMetrics,
    make_tls_files,
    missing_reason,
)
from servers import (
    run_process as _run_process,
)

S = TypeVar("S", bound=ServerProcess)

SERVER_FIXTURES = frozenset({"mosquitto", "mosquitto_factory", "victoria", "influxdb1"})

# Session servers started so far, checked after every test.
_SESSION_SERVERS: list[ServerProcess] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a real server with ``servers``."""
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.servers)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item, so teardown can show server logs on failure."""
    report: pytest.TestReport = yield
    setattr(item, f"_mw_report_{report.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    node = request.node
    return any(
        getattr(getattr(node, f"_mw_report_{when}", None), "failed", False) for when in ("setup", "call")
    )


def _require_binary(cls: type[ServerProcess]) -> None:
    reason = missing_reason(cls)
    if reason is None:
        return
    if os.environ.get(REQUIRE_SERVERS_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_SERVERS_ENV}=1, servers are required)", pytrace=False)
    pytest.skip(reason)


def _session_server(
    cls: type[S], request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> S:
    _require_binary(cls)
    server = cls(workdir=tmp_path_factory.mktemp(cls.name))

    def finish() -> None:
        if server in _SESSION_SERVERS:
            _SESSION_SERVERS.remove(server)
        server.stop()

    request.addfinalizer(finish)
    server.start()
    _SESSION_SERVERS.append(server)
    return server


@pytest.fixture(autouse=True)
def _session_servers_back_up() -> Iterator[None]:
    """After each test, resume or restart any session server the test paused or stopped."""
    yield
    for server in _SESSION_SERVERS:
        server.ensure_running()


@pytest.fixture(scope="session")
def mosquitto(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Mosquitto:
    """A Mosquitto broker on a free loopback port for the whole run (anonymous, persistent)."""
    return _session_server(Mosquitto, request, tmp_path_factory)


@pytest.fixture(scope="session")
def victoria(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> VictoriaMetrics:
    """A VictoriaMetrics server on a free loopback port for the whole run."""
    return _session_server(VictoriaMetrics, request, tmp_path_factory)


@pytest.fixture(scope="session")
def influxdb1(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> InfluxDB1:
    """An InfluxDB 1.x server on a free loopback port for the whole run."""
    return _session_server(InfluxDB1, request, tmp_path_factory)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A throw-away CA with server (127.0.0.1) and client certificates, made once per run.

    ``mosquitto_factory(tls_files.mosquitto_conf())`` starts a TLS broker.
    """
    try:
        return make_tls_files(tmp_path_factory.mktemp("tls"))
    except ServerError as exc:
        if os.environ.get(REQUIRE_SERVERS_ENV) == "1":
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture
def mosquitto_factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MosquittoFactory]:
    """Start private brokers: ``mosquitto_factory(conf_extra="", persistence=True)``.

    ``conf_extra`` is appended after the main listener line (see :class:`servers.Mosquitto`).
    Every broker is stopped at the end of the test.
    """
    _require_binary(Mosquitto)
    started: list[Mosquitto] = []

    def factory(conf_extra: str = "", persistence: bool = True) -> Mosquitto:
        broker = Mosquitto(
            workdir=tmp_path_factory.mktemp("mosquitto-private"),
            conf_extra=conf_extra,
            persistence=persistence,
        )
        started.append(broker)
        return broker.start()

    yield factory
    for broker in started:
        broker.stop()
        if _failed(request):
            tail = broker.process.log_tail() if broker.process else ""
            print(f"--- {broker!r} log ({broker.log_path}):\n{tail}", file=sys.stderr)


@pytest.fixture
def run_process(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunProcess]:
    """Start subprocesses that are always terminated at teardown.

        ``tls_files`` is a throw-away CA with server and client certificates (see :class:`servers.TLSFiles`).

    ``run_process(args, name="proc", env=None, cwd=None)`` returns a started
        :class:`servers.ManagedProcess` whose stdout and stderr go to ``tmp_path / f"{name}.log"``
        (read it with ``.log_text()``). At teardown: SIGTERM, then SIGKILL after 10 s; the log tail is
        printed when the test failed.
    """
    started: list[ManagedProcess] = []

    def factory(
        args: Sequence[str],
        name: str = "proc",
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> ManagedProcess:
        proc = _run_process(args, tmp_path / f"{name}.log", env=env, cwd=cwd)
        started.append(proc)
        return proc

    yield factory
    for proc in started:
        proc.stop()
        if _failed(request):
            print(f"--- {proc.args[0]} log ({proc.log_path}):\n{proc.log_tail()}", file=sys.stderr)
