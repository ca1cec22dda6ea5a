"""What is registered, and the one contract check every plug-in passes (built-in or third-party).

:func:`list_plugins` says which entry point (and which installed distribution) provides each
name of each group; :func:`check_plugin` loads one and runs :func:`check_class` on it. The same
checks run in the test suite over every registered name (``tests/test_plugin_contract.py``), in a
plug-in's own tests, and from the command line (``machinewatch plugins --check``).

The checks, by group (a failed check is one line of text; an empty list means it passes):

sources, sinks, actuators
    the class subclasses :class:`~machinewatch.connectors.base.Source` (``Sink``, ``Actuator``);
    it implements ``chunks`` as an async generator (``write``, ``set`` as coroutines), and its
    ``__aenter__``/``__aexit__`` are coroutines; ``validate_options`` returns a list of
    :class:`~machinewatch.engine.errors.ConfigProblem` under the given key path for ``{}``, for an
    unknown key (which must be reported) and for options of every wrong type, and never raises;
    an actuator accepts the policy options every actuator takes (``min_on_s`` ...); where ``{}``
    is valid, ``validate_config`` and the constructor accept it. Construction
    (:func:`check_construct`) may raise only a :class:`~machinewatch.engine.errors.MachinewatchError`
    and must not touch the network (no connect, bind, send or name lookup, seen through Python's
    audit hooks).
models
    the class subclasses :class:`~machinewatch.models.base.AnomalyModel`, its ``kind`` is its
    registered name (a stored model is loaded by kind), ``cls()`` works, scoring before fitting
    raises :class:`~machinewatch.engine.errors.NotFittedError`, ``fit`` returns self, scores are
    finite with higher meaning more anomalous, contributions are non-negative, ``score_row``
    agrees with ``score``, the learned arrays round-trip, and the int8 form (if any) keeps the
    interface.
"""

from __future__ import annotations

__all__ = [
    "PluginInfo",
    "check_class",
    "check_config",
    "check_construct",
    "check_plugin",
    "list_plugins",
]

import asyncio
import inspect
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from machinewatch.engine.config import Config, load_config_text
from machinewatch.engine.errors import ConfigProblem, MachinewatchError, NotFittedError
from machinewatch.engine.registry import GROUPS, registry

F64 = npt.NDArray[np.float64]
_NET_EVENTS = frozenset(
    {
        "socket.connect",
        "socket.bind",
        "socket.sendto",
        "socket.sendmsg",
        "socket.getaddrinfo",
        "socket.gethostbyname",
        "socket.gethostbyaddr",
    }
)
#: wrongly typed values for the garbage-options check (every TOML type, and a few nonsense ones)
_GARBAGE_VALUES: tuple[Any, ...] = (
    -1,
    0,
    1.5e300,
    float("nan"),
    True,
    "",
    "\x00?",
    [],
    [1, "a"],
    {},
    {"x": {}},
)
#: option names plug-ins commonly take; each gets every garbage value
_COMMON_KEYS = (
    "path",
    "url",
    "host",
    "port",
    "topic",
    "streams",
    "files",
    "stream",
    "rate_hz",
    "timeout_s",
    "level",
    "outputs",
    "bucket",
    "speedup",
    "nodes",
    "registers",
)
#: the options :mod:`machinewatch.connectors.actuators.policy` adds to every actuator, at their defaults
_POLICY_DEFAULTS = {"min_on_s": 0.0, "min_off_s": 0.0, "max_changes_per_min": 30, "safe_state": False}
_SAMPLE_CONFIG = """
[engine]
state_dir = "state"
[assets.a1.streams.s1]
kind = "scalar"
rate_hz = 1
window_samples = 10
[sources.rec]
kind = "replay"   # cheap to import; the contract constructs plug-ins against this config, not it
path = "a1.csv"
stream = "a1/s1"
"""


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """One registered name: where it comes from (entry point target and distribution)."""

    group: str
    name: str
    target: str  # "module:Class", or the class's qualified name when added at run time
    distribution: str  # "name version", or "" when added at run time

    def as_dict(self) -> dict[str, str]:
        """The fields as a dict (JSON output)."""
        return {
            "group": self.group,
            "name": self.name,
            "target": self.target,
            "distribution": self.distribution,
        }


def list_plugins(groups: tuple[str, ...] = GROUPS) -> list[PluginInfo]:
    """Every registered plug-in of ``groups``, by group then name."""
    out = []
    for group in groups:
        eps = {ep.name: ep for ep in entry_points(group=f"machinewatch.{group}")}
        for name in registry.names(group):
            ep = eps.get(name)
            if ep is None or name in registry._extra[group]:  # added at run time wins, as in get()
                cls = registry.get(group, name)
                out.append(PluginInfo(group, name, f"{cls.__module__}:{cls.__qualname__}", ""))
                continue
            dist = ep.dist
            out.append(PluginInfo(group, name, ep.value, f"{dist.name} {dist.version}" if dist else ""))
    return out


def check_plugin(group: str, name: str) -> list[str]:
    """Load the plug-in ``name`` of ``group`` and return every contract problem (empty: it passes)."""
    try:
        cls = registry.get(group, name)
    except MachinewatchError as exc:
        return [str(exc)]
    return check_class(group, name, cls)


def check_class(group: str, name: str, cls: Any) -> list[str]:
    """Every contract problem of ``cls`` as the plug-in ``name`` of ``group`` (empty: it passes)."""
    if group == "models":
        return _check_model(name, cls)
    from machinewatch.connectors.base import Actuator, Sink, Source

    base = {"sources": Source, "sinks": Sink, "actuators": Actuator}.get(group)
    if base is None:
        return [f"unknown plug-in group {group!r} (one of {', '.join(GROUPS)})"]
    if not (isinstance(cls, type) and issubclass(cls, base)):
        return [f"{cls!r} is not a subclass of {base.__module__}.{base.__qualname__}"]
    problems: list[str] = []
    required = {"sources": "chunks", "sinks": "write", "actuators": "set"}[group]
    if getattr(cls, required) is getattr(base, required):
        problems.append(f"does not implement {required}()")
    if group == "sources" and inspect.iscoroutinefunction(getattr(cls, "chunks", None)):
        problems.append("chunks() is a coroutine: make it an async generator (async def ... yield)")
    coros = {"sinks": ("write",), "actuators": ("set", "safe_state")}.get(group, ())
    for meth in (*coros, "__aenter__", "__aexit__"):
        if not inspect.iscoroutinefunction(getattr(cls, meth, None)):
            problems.append(f"{meth} must be a coroutine function (async def)")
    problems += _check_validate(group, cls)
    return problems


def _check_validate(group: str, cls: Any) -> list[str]:
    path = f"{group}.contract"
    problems: list[str] = []

    def run(options: Mapping[str, Any], what: str) -> list[ConfigProblem] | None:
        try:
            got = cls.validate_options(options, path)
        except Exception as exc:
            problems.append(f"validate_options raised {type(exc).__name__} on {what}: {exc}")
            return None
        if not isinstance(got, list) or not all(isinstance(p, ConfigProblem) for p in got):
            problems.append(f"validate_options must return a list of ConfigProblem, got {got!r} on {what}")
            return None
        off = [p for p in got if not (p.path == path or p.path.startswith(path + "."))]
        if off:
            problems.append(f"validate_options gave problems outside the key path {path!r}: {off[0]}")
        return got

    empty = run({}, "{}")
    if group == "actuators":  # the engine's policy wraps every actuator: its options are everyone's
        from machinewatch.connectors.actuators.policy import POLICY_KEYS

        got = run(_POLICY_DEFAULTS, "the policy options") or []
        refused = sorted({p.path.rsplit(".", 1)[-1] for p in got} & POLICY_KEYS)
        if refused:
            problems.append(f"validate_options refuses the actuator policy options {refused}")
    unknown = run({"zz_no_such_option": 1}, "an unknown key")
    if unknown is not None and not any("zz_no_such_option" in p.path for p in unknown):
        problems.append("validate_options does not report an unknown key (zz_no_such_option)")
    for value in _GARBAGE_VALUES:
        if run(dict.fromkeys(_COMMON_KEYS, value), f"options set to {value!r}") is None:
            break  # one such failure says it all
    if empty == []:  # no required options: validate_config and the constructor must take {}
        config = _sample_config()
        try:
            got = cls.validate_config({}, path, config)
            if not isinstance(got, list) or not all(isinstance(p, ConfigProblem) for p in got):
                problems.append(f"validate_config must return a list of ConfigProblem, got {got!r}")
        except Exception as exc:
            problems.append(f"validate_config raised {type(exc).__name__} on {{}}: {exc}")
        problems += check_construct(group, cls, "contract", {}, config)
    return problems


def _sample_config() -> Config:
    base = Path(tempfile.gettempdir()) / "machinewatch-contract"
    return load_config_text(_SAMPLE_CONFIG, base, "<contract>")


# ----------------------------------------------------------------------- construction, no network


_guard = threading.local()
_hooked = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    seen: list[str] | None = getattr(_guard, "seen", None)
    if seen is not None and event in _NET_EVENTS:
        shown = args[1:] if args and isinstance(args[0], socket.socket) else args
        seen.append(f"{event}{shown!r}")
        raise MachinewatchError(f"network access during construction: {event}")


@contextmanager
def _no_network() -> Iterator[list[str]]:
    """The network events this thread attempts in the block; each is refused (raises)."""
    global _hooked
    if not _hooked:  # an audit hook cannot be removed: one per process, idle outside this block
        sys.addaudithook(_audit)
        _hooked = True
    seen: list[str] = []
    _guard.seen = seen
    try:
        yield seen
    finally:
        _guard.seen = None


def check_construct(group: str, cls: Any, name: str, options: Mapping[str, Any], config: Config) -> list[str]:
    """Construct ``cls(name, options, config)`` on an event loop, as the engine does.

    Problems: it touched the network, or raised something other than a
    :class:`~machinewatch.engine.errors.MachinewatchError` (a ``ConfigError`` for options the
    config cannot satisfy is correct behaviour, not a problem).
    """

    async def build() -> tuple[list[str], BaseException | None]:
        with _no_network() as seen:
            try:
                cls(name, options, config)
            except Exception as exc:
                return list(seen), exc
        return list(seen), None

    seen, exc = asyncio.run(build())
    problems = [f"constructor touched the network: {e}" for e in seen[:3]]
    if exc is not None and not seen and not isinstance(exc, MachinewatchError):
        problems.append(f"constructor raised {type(exc).__name__} (not a MachinewatchError): {exc}")
    return problems


def check_config(config: Config) -> dict[str, list[str]]:
    """Construct every source, sink and actuator of ``config`` under the checks of :func:`check_construct`.

    Returns problems by ``"<section>.<name>"`` (only those with problems).
    """
    out: dict[str, list[str]] = {}
    for group, section in (
        ("sources", config.sources),
        ("sinks", config.sinks),
        ("actuators", config.actuators),
    ):
        for name, pc in section.items():
            try:
                cls = registry.get(group, pc.kind)
            except MachinewatchError as exc:
                out[f"{group}.{name}"] = [str(exc)]
                continue
            found = check_construct(group, cls, name, pc.options, config)
            if found:
                out[f"{group}.{name}"] = found
    return out


# --------------------------------------------------------------------------------------- models


def _check_model(name: str, cls: Any) -> list[str]:
    from machinewatch.models.base import AnomalyModel

    if not (isinstance(cls, type) and issubclass(cls, AnomalyModel)):
        return [f"{cls!r} is not a subclass of machinewatch.models.base.AnomalyModel"]
    problems: list[str] = []
    if cls.kind != name:
        problems.append(
            f"kind is {cls.kind!r}, not its registered name {name!r} (stored models load by kind)"
        )

    def step(what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:
            problems.append(f"{what} raised {type(exc).__name__}: {exc}")
            return None

    rng = np.random.default_rng(0)
    f = 4
    train = rng.normal(size=(120, f)) @ (np.eye(f) + 0.3) + 5.0
    names = tuple(f"s.f{i}" for i in range(f))
    model = step("cls()", cls)
    if model is None:
        return problems
    try:
        model.score(train[:1])
        problems.append("score() before fit() does not raise NotFittedError")
    except NotFittedError:
        pass
    except Exception as exc:
        problems.append(f"score() before fit() raised {type(exc).__name__}, not NotFittedError")
    fitted = step("fit()", lambda: model.fit(train, names))
    if fitted is None:
        return problems
    if fitted is not model:
        problems.append("fit() does not return self")
    healthy = train[:60]
    outlier = healthy[:5].copy()
    outlier[:, 1] += 12.0 * train[:, 1].std()
    forms = [model]
    if cls.quantized_class is not None:
        q = step("quantize()", model.quantize)
        if q is not None:
            if not (q.quantized and q.feature_names_ == names):
                problems.append("quantize() does not give a quantized model with the same feature names")
            forms.append(q)
    for m in forms:
        problems += _check_model_form(m, names, healthy, outlier)
    return problems


def _check_model_form(m: Any, names: tuple[str, ...], healthy: F64, outlier: F64) -> list[str]:
    """The scoring checks of one fitted model (float or int8)."""
    label = "int8 " if m.quantized else ""
    problems: list[str] = []
    n = len(healthy)
    try:
        s = np.asarray(m.score(np.vstack([healthy, outlier])))
        c = np.asarray(m.contributions(outlier))
        contrib = np.zeros(len(names))
        r = float(m.score_row(np.ascontiguousarray(outlier[0]), contrib))
        back = np.asarray(type(m)(**m.params).set_arrays(m.get_arrays(), names).score(healthy[:10]))
    except Exception as exc:
        return [f"{label}scoring a fitted model raised {type(exc).__name__}: {exc}"]
    if s.shape != (n + len(outlier),) or not np.isfinite(s).all():
        return [f"{label}score() must give one finite score per row"]
    if not s[n:].min() > np.median(s[:n]):
        problems.append(f"{label}score(): a 12-sigma outlier does not score above healthy rows")
    if c.shape != outlier.shape or not (c >= 0).all():
        problems.append(f"{label}contributions() must be non-negative, shape (rows, features)")
    if not np.isclose(r, s[n], rtol=1e-6, atol=1e-9):
        problems.append(f"{label}score_row() = {r} disagrees with score() = {s[n]}")
    if not np.allclose(back, s[:10], rtol=1e-6):
        problems.append(f"{label}a model restored from get_arrays() scores differently")
    return problems
