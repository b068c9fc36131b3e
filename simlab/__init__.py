"""simlab: specialize language models to simulate survey response distributions."""

__version__ = "0.1.0"
