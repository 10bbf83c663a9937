"""Parlour client package."""
