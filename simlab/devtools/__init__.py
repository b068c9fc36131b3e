"""simlab.devtools."""
