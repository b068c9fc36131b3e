"""simlab.analysis."""
