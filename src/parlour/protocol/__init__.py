"""Parlour protocol package."""
