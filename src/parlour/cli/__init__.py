"""Command-line entry point and the terminal chat client."""
