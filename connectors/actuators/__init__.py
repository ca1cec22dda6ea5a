"""Built-in actuators."""
