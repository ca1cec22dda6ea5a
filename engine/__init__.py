"""machinewatch.engine: the asyncio runtime and the hot path."""

from machinewatch.engine.errors import (
    ConfigError,
    ConnectorError,
    MachinewatchError,
    ModelError,
    NotFittedError,
    PayloadError,
)

__all__ = [
    "ConfigError",
    "ConnectorError",
    "MachinewatchError",
    "ModelError",
    "NotFittedError",
    "PayloadError",
]
