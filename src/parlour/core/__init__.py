"""Parlour core package."""
