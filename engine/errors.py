"""The one exception tree of machinewatch.

::

    MachinewatchError
     +-- ConfigError        a config file or option is invalid (carries every problem found)
     +-- PayloadError       one input record (MQTT payload, file row) is malformed; carries a reason
     +-- ConnectorError     a source, sink or actuator failed to talk to the outside world
     +-- ModelError         a model cannot be fitted, saved or loaded
     |    +-- NotFittedError   scoring was asked of a model that has not been fitted
     +-- SpoolError         the durable store-and-forward spool cannot be used
     +-- PluginError        a plug-in name is unknown or its entry point is broken

Every error is raised with ``raise ... from exc`` where it wraps another one.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConfigProblem",
    "ConnectorError",
    "MachinewatchError",
    "ModelError",
    "NotFittedError",
    "PayloadError",
    "PluginError",
    "SpoolError",
]

from dataclasses import dataclass


class MachinewatchError(Exception):
    """Base of every error machinewatch raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem in a config: the dotted key path and why it is wrong."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class ConfigError(MachinewatchError):
    """A config is invalid; ``problems`` lists every problem found, by key path."""

    def __init__(self, problems: list[ConfigProblem] | str, source: str = "") -> None:
        if isinstance(problems, str):
            problems = [ConfigProblem("", problems)]
        self.problems = list(problems)
        self.source = source
        head = f"invalid config {source}" if source else "invalid config"
        body = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{head} ({len(self.problems)} problem(s)):\n{body}")


class PayloadError(MachinewatchError):
    """One input record is malformed. ``reason`` is a short stable counter key."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class ConnectorError(MachinewatchError):
    """A connector could not talk to the outside world."""


class ModelError(MachinewatchError):
    """A model cannot be fitted, saved, loaded or used."""


class NotFittedError(ModelError):
    """A model was asked to score before it was fitted."""


class SpoolError(MachinewatchError):
    """The durable spool cannot be used. ``stored``: records of the failed put that were stored
    before it failed (a put on a full disk goes in chunks), so ``len(put) - stored`` were refused."""

    def __init__(self, message: str, stored: int = 0) -> None:
        super().__init__(message)
        self.stored = stored


class PluginError(MachinewatchError):
    """A plug-in name is unknown or its entry point is broken."""
