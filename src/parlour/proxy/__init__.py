"""Parlour proxy package."""
