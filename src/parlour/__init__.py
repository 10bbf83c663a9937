"""Parlour: a self-hosted chat platform, a reverse proxy and a packet lab."""

__all__ = ["__version__"]

__version__ = "0.1.0"
