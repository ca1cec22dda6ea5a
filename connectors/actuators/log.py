"""The ``log`` actuator: writes each output change to the log (and keeps the state)."""

from __future__ import annotations

__all__ = ["LogActuator"]

import logging
from collections.abc import Mapping
from typing import Any

from machinewatch.connectors.actuators.policy import POLICY_KEYS, policy_problems
from machinewatch.connectors.base import Actuator
from machinewatch.engine.config import Config
from machinewatch.engine.errors import ConfigProblem
from machinewatch.engine.types import AlarmEvent

log = logging.getLogger(__name__)
_KEYS = POLICY_KEYS | {"level"}


class LogActuator(Actuator):
    """Logs ``ENERGISE``/``RELEASE`` per asset; ``safe_state`` releases everything.

    Options: ``level`` (``"WARNING"`` by default), and the policy options every actuator takes
    (:mod:`machinewatch.connectors.actuators.policy`).
    """

    def __init__(self, name: str, options: Mapping[str, Any], config: Config) -> None:
        super().__init__(name, options, config)
        self.level = logging.getLevelName(str(options.get("level", "WARNING")))
        self.state: dict[str, bool] = {}

    @classmethod
    def validate_options(cls, options: Mapping[str, Any], path: str) -> list[ConfigProblem]:
        probs = [ConfigProblem(f"{path}.{k}", "unknown key") for k in options if k not in _KEYS]
        probs += policy_problems(options, path)
        lvl = options.get("level", "WARNING")
        if lvl not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            probs.append(ConfigProblem(f"{path}.level", "must be DEBUG, INFO, WARNING or ERROR"))
        return probs

    async def set(self, asset: str, energised: bool, event: AlarmEvent | None) -> None:
        if self.state.get(asset) == energised:
            return
        self.state[asset] = energised
        why = f" ({event.reason})" if event else ""
        log.log(
            self.level, "actuator %s: %s %s%s", self.name, "ENERGISE" if energised else "RELEASE", asset, why
        )

    async def safe_state(self) -> None:
        for asset, on in list(self.state.items()):
            if on:
                await self.set(asset, False, None)
