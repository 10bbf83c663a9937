"""Parlour web package."""
