"""Parlour packets package."""
