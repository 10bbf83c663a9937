"""Parlour storage package."""
