"""machinewatch.models: anomaly models (fit, quantise, save/load, int8 inference)."""
