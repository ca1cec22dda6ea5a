"""``modbus`` actuator: a coil or holding register per asset over Modbus TCP (pymodbus).

Options
-------
::

    [actuators.plc]
    kind = "modbus"
    host = "192.168.1.20"
    port = 502
    # device_id = 1             # Modbus unit / slave id
    # timeout_s = 2.0
    [actuators.plc.outputs]     # asset -> address
    pump1 = 0
    fan1 = 1
    # mode = "coil"             # "coil" (on = True) or "register" (on_value / off_value)
    # on_value = 1
    # off_value = 0
    # plus min_on_s, min_off_s, max_changes_per_min, safe_state (the engine's actuator policy)
"""

from __future__ import annotations

__all__ = ["ModbusActuator"]

import logging
from collections.abc import Callable, Mapping
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from machinewatch.connectors.actuators.policy import POLICY_KEYS, policy_problems
from machinewatch.connectors.base import Actuator
from machinewatch.engine.config import Config
from machinewatch.engine.errors import ConfigProblem, ConnectorError
from machinewatch.engine.types import AlarmEvent

log = logging.getLogger(__name__)
_KEYS = POLICY_KEYS | {"host", "port", "device_id", "timeout_s", "outputs", "mode", "on_value", "off_value"}


class ModbusActuator(Actuator):
    """Writes one coil (or register) per asset."""

    def __init__(
        self,
        name: str,
        options: Mapping[str, Any],
        config: Config,
        client_factory: Callable[..., Any] = AsyncModbusTcpClient,
    ) -> None:
        super().__init__(name, options, config)
        o = self.options
        self.host = str(o.get("host", "127.0.0.1"))
        self.port = int(o.get("port", 502))
        self.device_id = int(o.get("device_id", 1))
        self.timeout_s = float(o.get("timeout_s", 2.0))
        self.outputs = {str(k): int(v) for k, v in dict(o.get("outputs", {})).items()}
        self.mode = str(o.get("mode", "coil"))
        self.on_value = int(o.get("on_value", 1))
        self.off_value = int(o.get("off_value", 0))
        self.safe_on = bool(o.get("safe_state", False))
        self.client_factory = client_factory
        self._client: Any = None

    @classmethod
    def validate_options(cls, options: Mapping[str, Any], path: str) -> list[ConfigProblem]:
        probs = [ConfigProblem(f"{path}.{k}", "unknown key") for k in options if k not in _KEYS]
        probs += policy_problems(options, path)
        if not isinstance(options.get("host"), str):
            probs.append(ConfigProblem(f"{path}.host", "is required"))
        outs = options.get("outputs")
        if not isinstance(outs, dict) or not outs:
            probs.append(ConfigProblem(f"{path}.outputs", "must map asset names to addresses"))
        else:
            for k, v in outs.items():
                if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 65535:
                    probs.append(ConfigProblem(f"{path}.outputs.{k}", "must be an address 0-65535"))
        if options.get("mode", "coil") not in ("coil", "register"):
            probs.append(ConfigProblem(f"{path}.mode", "must be coil or register"))
        return probs

    async def _connected(self) -> Any:
        if self._client is None or not self._client.connected:
            if self._client is not None:
                self._client.close()
            self._client = self.client_factory(
                self.host, port=self.port, timeout=self.timeout_s, retries=1, reconnect_delay=0
            )
            if not await self._client.connect():
                where = f"{self.host}:{self.port}"
                raise ConnectorError(f"modbus actuator {self.name}: cannot connect to {where}")
        return self._client

    async def set(self, asset: str, energised: bool, event: AlarmEvent | None) -> None:
        addr = self.outputs.get(asset)
        if addr is None:
            raise ConnectorError(f"modbus actuator {self.name}: no output address for asset {asset!r}")
        c = await self._connected()
        try:
            if self.mode == "coil":
                rr = await c.write_coil(addr, energised, device_id=self.device_id)
            else:
                value = self.on_value if energised else self.off_value
                rr = await c.write_register(addr, value, device_id=self.device_id)
        except (ModbusException, OSError) as exc:
            raise ConnectorError(f"modbus actuator {self.name}: write to {addr} failed: {exc}") from exc
        if rr.isError():
            raise ConnectorError(f"modbus actuator {self.name}: device answered {rr}")

    async def safe_state(self) -> None:
        for asset in self.outputs:
            try:
                await self.set(asset, self.safe_on, None)
            except ConnectorError as exc:
                log.error("%s", exc)

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
