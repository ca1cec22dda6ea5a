"""Plug-in registry: sources, sinks, actuators and models are found by name.

The registry is filled from Python entry points (groups ``machinewatch.sources``,
``machinewatch.sinks``, ``machinewatch.actuators``, ``machinewatch.models``). A third-party
package adds a sensor by shipping one class and one entry point; config then names it
(``kind = "my-sensor"``). Built-ins register the same way, in ``pyproject.toml``.
"""

from __future__ import annotations

__all__ = ["GROUPS", "Registry", "registry"]

from importlib.metadata import entry_points
from typing import Any

from machinewatch.engine.errors import PluginError

GROUPS = ("sources", "sinks", "actuators", "models")


class Registry:
    """Name -> class, per group, loaded lazily from entry points; extra classes may be added."""

    def __init__(self) -> None:
        self._extra: dict[str, dict[str, type[Any]]] = {g: {} for g in GROUPS}

    def names(self, group: str) -> list[str]:
        """Every registered name of a group, sorted."""
        self._check_group(group)
        eps = {ep.name for ep in entry_points(group=f"machinewatch.{group}")}
        return sorted(eps | set(self._extra[group]))

    def get(self, group: str, name: str) -> type[Any]:
        """The class registered as ``name`` in ``group``; :class:`PluginError` if unknown."""
        self._check_group(group)
        if name in self._extra[group]:
            return self._extra[group][name]
        for ep in entry_points(group=f"machinewatch.{group}"):
            if ep.name == name:
                try:
                    cls: type[Any] = ep.load()
                except Exception as exc:
                    raise PluginError(f"{group} plug-in {name!r} ({ep.value}) failed to load: {exc}") from exc
                return cls
        known = ", ".join(self.names(group)) or "none"
        raise PluginError(f"unknown {group[:-1]} kind {name!r} (known: {known})")

    def add(self, group: str, name: str, cls: type[Any]) -> None:
        """Register ``cls`` under ``name`` at run time (tests, embedding applications)."""
        self._check_group(group)
        self._extra[group][name] = cls

    @staticmethod
    def _check_group(group: str) -> None:
        if group not in GROUPS:
            raise PluginError(f"unknown plug-in group {group!r} (one of {', '.join(GROUPS)})")


registry = Registry()
