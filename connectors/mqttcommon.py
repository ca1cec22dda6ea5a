"""What every MQTT connector shares: broker URL, TLS/mTLS, credentials, TCP_NODELAY, backoff.

Options (in any ``[sources.X]`` of kind ``mqtt`` or ``[actuators.X]`` of kind ``mqtt``)::

    url = "mqtt://127.0.0.1:1883"    # mqtts:// = TLS (port 8883 by default)
    # username = "machinewatch"
    # password_env = "MW_MQTT_PASSWORD"   or  password_file = "/etc/machinewatch/mqtt.pw"
    # tls_ca = "/etc/machinewatch/ca.crt"            # CA that signed the broker's certificate
    # tls_cert = "/etc/machinewatch/client.crt"      # mutual TLS: client certificate ...
    # tls_key = "/etc/machinewatch/client.key"       # ... and its key
    # tls_insecure = false                           # skip host-name check (test set-ups only)
    # keepalive_s = 30               # a dead or frozen broker is noticed within this (pings every half)
    # reconnect_min_s = 0.1           # capped, jittered exponential backoff between attempts
    # reconnect_max_s = 2.0
"""

from __future__ import annotations

__all__ = ["COMMON_KEYS", "Backoff", "BrokerUrl", "client_kwargs", "parse_url", "validate_common"]

import random
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from machinewatch.engine.config import resolve_secret
from machinewatch.engine.errors import ConfigError, ConfigProblem

COMMON_KEYS = {
    "url",
    "username",
    "password_env",
    "password_file",
    "tls_ca",
    "tls_cert",
    "tls_key",
    "tls_insecure",
    "keepalive_s",
    "reconnect_min_s",
    "reconnect_max_s",
    "client_id",
}
#: Nagle's algorithm holds small packets back up to ~40 ms on loopback: measured p50 10 ms without
NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    """Host, port and whether TLS is on."""

    host: str
    port: int
    tls: bool


def parse_url(url: str) -> BrokerUrl:
    """``mqtt://host[:port]`` or ``mqtts://host[:port]``; raises ``ValueError``.

    >>> parse_url("mqtts://broker.local")
    BrokerUrl(host='broker.local', port=8883, tls=True)
    """
    u = urlsplit(url)
    if u.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ValueError(f"scheme must be mqtt:// or mqtts://, got {url!r}")
    if not u.hostname:
        raise ValueError(f"no host in {url!r}")
    tls = u.scheme in ("mqtts", "ssl")
    return BrokerUrl(u.hostname, u.port or (8883 if tls else 1883), tls)


def validate_common(options: Mapping[str, Any], path: str) -> list[ConfigProblem]:
    """Problems with the shared options (URL, TLS files, timings)."""
    probs: list[ConfigProblem] = []
    url = options.get("url")
    if not isinstance(url, str):
        probs.append(ConfigProblem(f"{path}.url", "is required (mqtt://host:port or mqtts://host:port)"))
    else:
        try:
            parse_url(url)
        except ValueError as exc:
            probs.append(ConfigProblem(f"{path}.url", str(exc)))
    for k in ("tls_ca", "tls_cert", "tls_key", "username", "password_env", "password_file", "client_id"):
        if k in options and not isinstance(options[k], str):
            probs.append(ConfigProblem(f"{path}.{k}", "must be a string"))
    if ("tls_cert" in options) != ("tls_key" in options):
        probs.append(ConfigProblem(f"{path}.tls_cert", "tls_cert and tls_key go together"))
    for k in ("keepalive_s", "reconnect_min_s", "reconnect_max_s"):
        v = options.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or v <= 0):
            probs.append(ConfigProblem(f"{path}.{k}", "must be a number > 0"))
    return probs


def _tls_context(options: Mapping[str, Any]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=options.get("tls_ca"))
    if options.get("tls_cert"):
        ctx.load_cert_chain(str(options["tls_cert"]), str(options["tls_key"]))
    if options.get("tls_insecure"):
        ctx.check_hostname = False
    return ctx


def client_kwargs(options: Mapping[str, Any], path: str) -> dict[str, Any]:
    """Keyword arguments for ``aiomqtt.Client`` from connector options (reads secrets).

    Raises :class:`ConfigError` when a secret or TLS file cannot be read.
    """
    b = parse_url(str(options["url"]))
    kw: dict[str, Any] = {
        "hostname": b.host,
        "port": b.port,
        # paho pings after one idle keepalive and gives up one keepalive later (up to 2x): pinging
        # at half the configured value notices a dead or frozen broker within keepalive_s
        "keepalive": max(1, round(int(options.get("keepalive_s", 30)) / 2)),
        "socket_options": [NODELAY],
        "timeout": 5.0,
    }
    if options.get("username"):
        kw["username"] = str(options["username"])
        kw["password"] = resolve_secret(options, "password", path)
    if b.tls or options.get("tls_ca") or options.get("tls_cert"):
        try:
            kw["tls_context"] = _tls_context(options)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError([ConfigProblem(f"{path}.tls_ca", f"cannot load TLS files: {exc}")]) from exc
        if options.get("tls_insecure"):
            kw["tls_insecure"] = True
    return kw


class Backoff:
    """Capped exponential backoff with full jitter in [delay/2, delay].

    >>> b = Backoff(0.1, 1.0, rng=random.Random(0))
    >>> [round(b.next(), 2) for _ in range(6)]
    [0.09, 0.18, 0.28, 0.5, 0.76, 0.7]
    """

    def __init__(self, min_s: float = 0.1, max_s: float = 2.0, rng: random.Random | None = None) -> None:
        self.min_s = min_s
        self.max_s = max_s
        self._delay = min_s
        self._rng = rng or random.Random()

    def next(self) -> float:
        """The next wait (seconds); grows until ``max_s``."""
        d = self._delay * (0.5 + 0.5 * self._rng.random())
        self._delay = min(self._delay * 2, self.max_s)
        return d

    def reset(self) -> None:
        """After a success: start again from ``min_s``."""
        self._delay = self.min_s
