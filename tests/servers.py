"""Real servers on loopback for the integration tests: Mosquitto, VictoriaMetrics, InfluxDB 1.x.

Each server runs as a child process on a free ``127.0.0.1`` port, with its config, data and log
under a temporary folder. ``start()`` returns once the server answers (an MQTT CONNACK, VM's
``/health``, influxd's ``/ping``); ``stop()`` terminates it, then kills it if it does not exit in
time. Nothing here ever talks to a system-wide instance.

Process hygiene, in three layers:

1. the pytest fixtures in ``tests/conftest.py`` stop everything at teardown;
2. an ``atexit`` hook stops whatever is still alive when the interpreter exits normally;
3. children started from the main thread get ``PR_SET_PDEATHSIG`` (via util-linux ``setpriv``),
   so the kernel kills them even if pytest itself is killed with SIGKILL.

``run_process`` is the generic form of the same hygiene for any subprocess (an engine under test):
logs to a file, guaranteed termination.

Test modules import this file as ``servers`` (``tests/`` is on ``sys.path`` through the pytest
``pythonpath`` setting), e.g. ``from servers import Mosquitto``.
"""

from __future__ import annotations

__all__ = [
    "REQUIRE_SERVERS_ENV",
    "InfluxDB1",
    "ManagedProcess",
    "Mosquitto",
    "MosquittoFactory",
    "RunProcess",
    "ServerError",
    "ServerProcess",
    "TLSFiles",
    "VictoriaMetrics",
    "find_binary",
    "free_port",
    "make_tls_files",
    "missing_reason",
    "mqtt_probe",
    "run_process",
    "stop_all",
]

import atexit
import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

#: Set to ``1`` by ``scripts/test``: a missing server binary then fails the tests instead of
#: skipping them.
REQUIRE_SERVERS_ENV = "MACHINEWATCH_REQUIRE_SERVERS"

_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 10.0
_POLL_S = 0.05
_PORT_ATTEMPTS = 5

_LIVE: weakref.WeakSet[ManagedProcess] = weakref.WeakSet()


class ServerError(RuntimeError):
    """A test server could not be started or answered badly."""


# ----------------------------------------------------------------------------- ports, binaries


def missing_reason(cls: type[ServerProcess]) -> str | None:
    """Why the tests cannot start ``cls`` (its binary is not installed), or None if they can."""
    if cls.binary() is not None:
        return None
    return f"{cls.binary_name} not installed: run scripts/test"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (bind to port 0, read it, close).

    Another process may take it before the server binds it; the servers retry on that collision.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def find_binary(name: str, *fallbacks: str) -> str | None:
    """Path of an executable: ``$MACHINEWATCH_BIN_<NAME>``, then ``PATH``, then ``fallbacks``.

    ``/usr/sbin`` is not on a normal user's ``PATH``, hence the fallbacks.
    """
    override = os.environ.get("MACHINEWATCH_BIN_" + name.upper().replace("-", "_"))
    if override:
        return override if os.access(override, os.X_OK) else None
    found = shutil.which(name)
    if found:
        return found
    for path in fallbacks:
        if os.access(path, os.X_OK):
            return path
    return None


# ----------------------------------------------------------------------------- processes


def _pdeathsig_prefix() -> list[str]:
    """``setpriv --pdeathsig KILL --`` when usable: the child dies with the thread that forked it.

    Only from the main thread: the signal fires when the *forking thread* ends, so a child
    started from a short-lived worker thread would die early.
    """
    if threading.current_thread() is not threading.main_thread():
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


class ManagedProcess:
    """A child process with its output in a log file, which is always terminated in the end.

    Parameters
    ----------
    args
        The command line.
    log_path
        File that receives stdout and stderr (appended to, so restarts keep earlier output).
    env
        Extra environment variables on top of ``os.environ``.
    cwd
        Working directory.
    """

    def __init__(
        self,
        args: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.args = [str(a) for a in args]
        self.log_path = Path(log_path)
        self.env = dict(env or {})
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None
        self.paused = False

    def start(self) -> Self:
        """Start the process (a no-op if it is running)."""
        if self.running:
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n=== start: {' '.join(self.args)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                _pdeathsig_prefix() + self.args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env={**os.environ, **self.env},
                # Own process group: a Ctrl-C in the terminal reaches pytest only, and pytest
                # decides the order of shutdown.
                start_new_session=True,
            )
        self.paused = False
        _LIVE.add(self)
        return self

    @property
    def pid(self) -> int | None:
        """Process id, or None before the first start."""
        return self.popen.pid if self.popen else None

    @property
    def running(self) -> bool:
        """True while the process exists (paused counts as running)."""
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        """Exit status once the process has ended, else None."""
        return None if self.popen is None else self.popen.poll()

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to the process if it is running."""
        if self.running and self.popen is not None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signum)

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): its sockets stay open but nothing answers."""
        self.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """Unfreeze a paused process (SIGCONT)."""
        self.send_signal(signal.SIGCONT)
        self.paused = False

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to end and return its exit status."""
        if self.popen is None:
            raise ServerError("process was never started")
        return self.popen.wait(timeout)

    def stop(self, timeout: float = _STOP_TIMEOUT_S, sig: int = signal.SIGTERM) -> int | None:
        """Send ``sig``, wait up to ``timeout`` s, then SIGKILL; returns the exit status."""
        if self.popen is None:
            return None
        if self.running:
            self.send_signal(sig)
            # A stopped (paused) process only acts on SIGTERM once continued.
            self.send_signal(signal.SIGCONT)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.paused = False
        _LIVE.discard(self)
        return self.popen.poll()

    def kill(self) -> int | None:
        """SIGKILL (a crash or power cut, seen from outside) and reap."""
        if self.popen is None:
            return None
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()
        self.popen.wait()
        self.paused = False
        _LIVE.discard(self)
        return self.popen.returncode

    def log_text(self) -> str:
        """Everything the process wrote so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the log (for failure messages)."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_process(
    args: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ManagedProcess:
    """Start ``args`` with stdout+stderr to ``log_path``; the caller (a fixture) must ``stop()`` it.

    Prefer the ``run_process`` fixture in ``tests/conftest.py``, which stops every process it
    started at teardown.
    """
    return ManagedProcess(args, log_path, env=env, cwd=cwd).start()


def stop_all() -> None:
    """Stop every process this module started that is still alive."""
    for proc in list(_LIVE):
        with contextlib.suppress(Exception):
            proc.stop(timeout=5.0)


atexit.register(stop_all)


# ----------------------------------------------------------------------------- HTTP helpers


# Loopback only: never route test traffic through an http_proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http(method: str, url: str, body: bytes | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    """A tiny HTTP client (stdlib only): returns (status, body) and never raises on 4xx/5xx."""
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _http_ok(url: str, statuses: tuple[int, ...] = (200, 204)) -> bool:
    try:
        status, _ = _http("GET", url, timeout=1.0)
    except OSError:
        return False
    return status in statuses


# ----------------------------------------------------------------------------- servers


class ServerProcess:
    """Common shape: a binary on a loopback port with a workdir; start/stop/pause/resume.

    Parameters
    ----------
    workdir
        Folder for config, data and log; created if missing. A fresh temp dir when None.
    port
        Fixed port; a free one is picked (and re-picked on collision) when None.
    """

    name: ClassVar[str] = "server"
    binary_name: ClassVar[str] = ""
    binary_fallbacks: ClassVar[tuple[str, ...]] = ()

    def __init__(self, workdir: Path | None = None, port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self._own_tmp = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"mw-{self.name}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._fixed_port = port is not None
        self.port = port if port is not None else 0
        self.process: ManagedProcess | None = None
        self.starts = 0

    # -- to override ---------------------------------------------------------------------------

    def _command(self, binary: str) -> list[str]:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Write config files for ``self.port`` before each start."""

    def _ready(self) -> bool:
        raise NotImplementedError

    # -- common --------------------------------------------------------------------------------

    @classmethod
    def binary(cls) -> str | None:
        """Path of the server binary, or None when it is not installed."""
        return find_binary(cls.binary_name, *cls.binary_fallbacks)

    @property
    def log_path(self) -> Path:
        """The server's log (stdout, stderr and its own log file)."""
        return self.workdir / f"{self.name}.log"

    @property
    def running(self) -> bool:
        """True while the server process exists (paused counts as running)."""
        return self.process is not None and self.process.running

    @property
    def paused(self) -> bool:
        """True between pause() and resume()."""
        return self.process is not None and self.process.paused

    def start(self, timeout: float = _START_TIMEOUT_S) -> Self:
        """Start on the same port as before (or a free one the first time) and wait until ready."""
        if self.running:
            return self
        binary = self.binary()
        if binary is None:
            raise ServerError(f"{self.binary_name} not installed: run scripts/test")
        attempts = 1 if (self._fixed_port or self.port) else _PORT_ATTEMPTS
        for attempt in range(attempts):
            if not self.port:
                self.port = free_port(self.host)
            self._prepare()
            self.process = ManagedProcess(self._command(binary), self.log_path, cwd=self.workdir)
            self.process.start()
            if self._wait_ready(timeout):
                self.starts += 1
                return self
            tail = self.process.log_tail()
            self.process.stop()
            collision = "address already in use" in tail.lower()
            if collision and attempt + 1 < attempts:
                self.port = 0  # someone took the port between free_port() and bind: re-pick
                continue
            raise ServerError(
                f"{self.name} did not become ready on {self.host}:{self.port} within "
                f"{timeout:.0f} s (exit status {self.process.returncode}); log tail:\n{tail}"
            )
        raise AssertionError("unreachable")

    def _wait_ready(self, timeout: float) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.running:
                return False
            if self._ready():
                return True
            time.sleep(_POLL_S)  # polling a child process for readiness, not waiting for time
        return False

    def stop(self, timeout: float = _STOP_TIMEOUT_S) -> None:
        """Graceful stop (SIGTERM, then SIGKILL after ``timeout``); the port is kept for start()."""
        if self.process is not None:
            self.process.stop(timeout)

    def kill(self) -> None:
        """Hard stop (SIGKILL), like a crash; the port is kept for start()."""
        if self.process is not None:
            self.process.kill()

    def restart(self) -> Self:
        """stop() then start() on the same port."""
        self.stop()
        return self.start()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open, nothing is answered."""
        if self.process is not None:
            self.process.pause()

    def resume(self) -> None:
        """Unfreeze after pause() (SIGCONT)."""
        if self.process is not None:
            self.process.resume()

    def ensure_running(self) -> None:
        """Resume if paused, start if stopped: used between tests on session-wide servers."""
        if self.paused:
            self.resume()
        if not self.running:
            self.start()

    def close(self) -> None:
        """Stop for good and remove the temp folder if this object created it."""
        self.stop()
        if self._own_tmp:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "paused" if self.paused else "running" if self.running else "stopped"
        return f"<{type(self).__name__} {self.host}:{self.port} {state}>"


# -- Mosquitto ---------------------------------------------------------------------------------


def _mqtt_connect_packet(client_id: str) -> bytes:
    """A minimal MQTT 3.1.1 CONNECT (clean session, keepalive 5 s)."""
    cid = client_id.encode()
    variable = b"\x00\x04MQTT\x04\x02\x00\x05"
    payload = struct.pack("!H", len(cid)) + cid
    remaining = len(variable) + len(payload)
    assert remaining < 128  # one-byte remaining length is enough for this packet
    return bytes([0x10, remaining]) + variable + payload


def mqtt_probe(host: str, port: int, timeout: float = 1.0) -> int | None:
    """CONNECT and return the CONNACK return code (0 = accepted), or None if none came back."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(_mqtt_connect_packet(f"mw-probe-{os.getpid()}"))
            data = b""
            while len(data) < 4:
                chunk = sock.recv(4 - len(data))
                if not chunk:
                    return None
                data += chunk
            with contextlib.suppress(OSError):
                sock.sendall(b"\xe0\x00")  # DISCONNECT
    except OSError:
        return None
    if data[0] != 0x20:
        return None
    return data[3]


@dataclass(frozen=True)
class TLSFiles:
    """PEM files of a throw-away CA, a server certificate for 127.0.0.1/localhost, a client one."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def mosquitto_conf(self, require_client_cert: bool = False) -> str:
        """Listener options that put a Mosquitto listener on TLS with these files."""
        lines = [
            f"cafile {self.ca}",
            f"certfile {self.server_cert}",
            f"keyfile {self.server_key}",
        ]
        if require_client_cert:
            lines.append("require_certificate true")
        return "\n".join(lines) + "\n"


def make_tls_files(directory: Path) -> TLSFiles:
    """Create a CA and server/client certificates (EC P-256, valid 2 days) with ``openssl``."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ServerError("openssl not installed: needed to make test certificates")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    key_opts = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str | Path) -> None:
        subprocess.run([openssl, *map(str, args)], check=True, capture_output=True, timeout=30)

    run("req", "-x509", *key_opts, "-keyout", d / "ca.key", "-out", d / "ca.crt",
        "-days", "2", "-subj", "/CN=machinewatch-test-ca")  # fmt: skip
    for who, cn, ext in (
        ("server", "127.0.0.1", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ("client", "machinewatch-client", "extendedKeyUsage=clientAuth"),
    ):
        (d / f"{who}.ext").write_text(ext + "\n")
        run("req", *key_opts, "-keyout", d / f"{who}.key", "-out", d / f"{who}.csr",
            "-subj", f"/CN={cn}")  # fmt: skip
        run("x509", "-req", "-in", d / f"{who}.csr", "-CA", d / "ca.crt", "-CAkey", d / "ca.key",
            "-CAcreateserial", "-out", d / f"{who}.crt", "-days", "2",
            "-extfile", d / f"{who}.ext")  # fmt: skip
    return TLSFiles(
        ca=d / "ca.crt",
        server_cert=d / "server.crt",
        server_key=d / "server.key",
        client_cert=d / "client.crt",
        client_key=d / "client.key",
    )


class Mosquitto(ServerProcess):
    """A Mosquitto 2.x broker on ``127.0.0.1:port``, anonymous access allowed by default.

    Parameters
    ----------
    conf_extra
        Lines appended after the main ``listener`` line, so listener options (``cafile``,
        ``certfile``, ``require_certificate``) apply to it; global options (``acl_file``,
        ``password_file``, ``allow_anonymous false``) work too since the config is otherwise
        minimal. Extra listeners can be declared with ``listener <port> 127.0.0.1``.
    persistence
        Keep retained messages and persistent sessions across stop()/start() (saved on a
        graceful stop; a kill() loses what was not yet saved).
    """

    name = "mosquitto"
    binary_name = "mosquitto"
    binary_fallbacks = ("/usr/sbin/mosquitto",)

    def __init__(
        self,
        workdir: Path | None = None,
        port: int | None = None,
        conf_extra: str = "",
        persistence: bool = True,
    ) -> None:
        super().__init__(workdir, port)
        self.conf_extra = conf_extra
        self.persistence = persistence

    @property
    def conf_path(self) -> Path:
        """The generated mosquitto.conf."""
        return self.workdir / "mosquitto.conf"

    @property
    def url(self) -> str:
        """``mqtt://host:port``."""
        return f"mqtt://{self.host}:{self.port}"

    def _prepare(self) -> None:
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        lines = [
            # Started as root, mosquitto would switch to user "mosquitto" that cannot write
            # our temp dir; as any other user this option is ignored.
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            f"pid_file {self.workdir / 'mosquitto.pid'}",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {data}/",
            # Its own file output is flushed per line (stdout to a file is block-buffered).
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            "allow_anonymous true",
            f"listener {self.port} {self.host}",
            self.conf_extra,
            "",
        ]
        self.conf_path.write_text("\n".join(lines))

    def _command(self, binary: str) -> list[str]:
        return [binary, "-c", str(self.conf_path)]

    def _ready(self) -> bool:
        if mqtt_probe(self.host, self.port) is not None:
            return True  # any CONNACK, even "not authorised", means the broker is serving
        # A TLS-only main listener cannot answer a plain CONNECT; trust the broker's own word.
        assert self.process is not None
        return " running" in self.process.log_text().rsplit("=== start:", 1)[-1]


# -- VictoriaMetrics ---------------------------------------------------------------------------


class VictoriaMetrics(ServerProcess):
    """Single-node VictoriaMetrics with the InfluxDB write APIs (``/write``, ``/api/v2/write``).

    Retention is 100 years so test data with old timestamps is kept, and
    ``-search.latencyOffset=0s`` so queries see the newest samples.
    """

    name = "victoria-metrics"
    binary_name = "victoria-metrics"
    binary_fallbacks = ("/usr/bin/victoria-metrics",)

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    def _command(self, binary: str) -> list[str]:
        return [
            binary,
            f"-httpListenAddr={self.host}:{self.port}",
            f"-storageDataPath={self.workdir / 'data'}",
            "-retentionPeriod=100y",
            "-search.latencyOffset=0s",
            "-search.disableCache",
            "-memory.allowedPercent=20",
            "-loggerLevel=WARN",
        ]

    def _ready(self) -> bool:
        return _http_ok(self.url + "/health")

    def write(self, lines: str | Sequence[str], precision: str = "ns") -> None:
        """Write InfluxDB line protocol through VM's ``/write``; raises on a non-204 answer.

        VM answers 204 even for lines it drops: read back with ``export`` to be sure.
        """
        body = lines if isinstance(lines, str) else "\n".join(lines)
        url = f"{self.url}/write?{urllib.parse.urlencode({'precision': precision})}"
        status, resp = _http("POST", url, body.encode())
        if status != 204:
            raise ServerError(f"write: HTTP {status}: {resp[:300]!r}")

    def flush(self) -> None:
        """Make everything ingested so far searchable (``/internal/force_flush``)."""
        status, body = _http("GET", self.url + "/internal/force_flush")
        if status != 200:
            raise ServerError(f"force_flush: HTTP {status}: {body[:200]!r}")

    def export(self, match: str, start: str | None = None, end: str | None = None) -> list[dict[str, Any]]:
        """Every series matching ``match`` (a series selector, e.g. ``'{__name__=~"m_.*"}'``).

        Flushes first, so a write that VM acknowledged is visible. Each series is
        ``{"metric": {"__name__": ..., labels...}, "values": [...], "timestamps": [ms...]}``.
        """
        self.flush()
        params = [("match[]", match)]
        if start is not None:
            params.append(("start", start))
        if end is not None:
            params.append(("end", end))
        status, body = _http("GET", f"{self.url}/api/v1/export?{urllib.parse.urlencode(params)}")
        if status != 200:
            raise ServerError(f"export {match}: HTTP {status}: {body[:300]!r}")
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    def query(self, promql: str, time_s: float | None = None) -> dict[str, Any]:
        """Instant PromQL query (``/api/v1/query``); returns the ``data`` object."""
        self.flush()
        params = [("query", promql)]
        if time_s is not None:
            params.append(("time", f"{time_s:.3f}"))
        status, body = _http("GET", f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}")
        if status != 200:
            raise ServerError(f"query {promql}: HTTP {status}: {body[:300]!r}")
        data: dict[str, Any] = json.loads(body)["data"]
        return data


# -- InfluxDB 1.x ------------------------------------------------------------------------------


class InfluxDB1(ServerProcess):
    """InfluxDB 1.x (``influxd``) with HTTP on ``127.0.0.1:port`` and every other listener off
    or on a private loopback port; meta, data and WAL under the workdir."""

    name = "influxdb1"
    binary_name = "influxd"
    binary_fallbacks = ("/usr/bin/influxd",)

    def __init__(self, workdir: Path | None = None, port: int | None = None) -> None:
        super().__init__(workdir, port)
        self.rpc_port = 0

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    @property
    def conf_path(self) -> Path:
        """The generated influxdb.conf."""
        return self.workdir / "influxdb.conf"

    def _prepare(self) -> None:
        if not self.rpc_port:
            self.rpc_port = free_port(self.host)
        d = self.workdir
        self.conf_path.write_text(
            f"""\
reporting-disabled = true
bind-address = "{self.host}:{self.rpc_port}"

[meta]
  dir = "{d / "meta"}"
  retention-autocreate = true
  logging-enabled = false

[data]
  dir = "{d / "data"}"
  wal-dir = "{d / "wal"}"
  wal-fsync-delay = "0s"
  query-log-enabled = false
  index-version = "inmem"

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false

[http]
  enabled = true
  bind-address = "{self.host}:{self.port}"
  auth-enabled = false
  log-enabled = false
  pprof-enabled = false
  unix-socket-enabled = false

[ifql]
  enabled = false

[logging]
  level = "warn"
  suppress-logo = true
"""
        )

    def _command(self, binary: str) -> list[str]:
        return [binary, "run", "-config", str(self.conf_path)]

    def _ready(self) -> bool:
        return _http_ok(self.url + "/ping")

    def query(self, q: str, db: str | None = None, epoch: str = "ns") -> list[dict[str, Any]]:
        """Run InfluxQL (``/query``, POST so statements that write work) and return ``results``.

        Raises ``ServerError`` when the server or any statement reports an error.
        """
        params = {"q": q, "epoch": epoch}
        if db is not None:
            params["db"] = db
        status, body = _http("POST", f"{self.url}/query?{urllib.parse.urlencode(params)}")
        if status != 200:
            raise ServerError(f"query {q!r}: HTTP {status}: {body[:300]!r}")
        doc = json.loads(body)
        results: list[dict[str, Any]] = doc.get("results", [])
        errors = [r["error"] for r in results if "error" in r]
        if "error" in doc or errors:
            raise ServerError(f"query {q!r}: {doc.get('error') or errors}")
        return results

    def create_database(self, db: str) -> None:
        """``CREATE DATABASE db`` (idempotent)."""
        self.query(f'CREATE DATABASE "{db}"')

    def write(self, lines: str | Sequence[str], db: str, precision: str = "ns") -> None:
        """Write line protocol through ``/write`` (the database must exist); raises on non-204."""
        body = lines if isinstance(lines, str) else "\n".join(lines)
        params = urllib.parse.urlencode({"db": db, "precision": precision})
        status, resp = _http("POST", f"{self.url}/write?{params}", body.encode())
        if status != 204:
            raise ServerError(f"write to {db}: HTTP {status}: {resp[:300]!r}")

    def points(self, q: str, db: str) -> list[dict[str, Any]]:
        """Rows of the first statement's series as dicts (column name -> value), tags included."""
        rows: list[dict[str, Any]] = []
        for series in self.query(q, db)[0].get("series", []):
            tags = series.get("tags", {})
            rows.extend({**tags, **dict(zip(series["columns"], v, strict=True))} for v in series["values"])
        return rows


#: The ``mosquitto_factory`` fixture: ``(conf_extra="", persistence=True) -> started Mosquitto``.
MosquittoFactory = Callable[..., Mosquitto]
#: The ``run_process`` fixture: ``(args, name="proc", env=None, cwd=None) -> ManagedProcess``.
RunProcess = Callable[..., ManagedProcess]


def iter_servers() -> Iterator[type[ServerProcess]]:
    """The three server kinds, for checks that loop over them."""
    yield from (Mosquitto, VictoriaMetrics, InfluxDB1)
