"""machinewatch.connectors: sources (sensors in), sinks (TSDB out), actuators (plant out)."""

from machinewatch.connectors.base import Actuator, Rejected, Sink, Source

__all__ = ["Actuator", "Rejected", "Sink", "Source"]
