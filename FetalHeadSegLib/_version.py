"""The library's version, defined once."""

__version__ = "0.1.0"
