"""simlab.runs."""
