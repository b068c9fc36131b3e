"""simlab.metrics.registry."""
