"""simlab.simulator."""
