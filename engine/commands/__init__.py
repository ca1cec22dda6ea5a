"""One module per ``machinewatch`` subcommand (found by :mod:`machinewatch.engine.cli`)."""
