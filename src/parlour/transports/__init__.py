"""Parlour transports package."""
