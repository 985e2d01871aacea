"""clfserve: serve small Keras image classifiers from a versioned model repository."""

__all__ = ["__version__"]

__version__ = "0.1.0"
