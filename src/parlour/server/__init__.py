"""Parlour server package."""
