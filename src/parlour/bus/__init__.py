"""Implementations of the core's `Bus` port (fan-out between the nodes of a deployment)."""
