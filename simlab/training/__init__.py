"""simlab.training."""
