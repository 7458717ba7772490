"""Subcommands. Each module defines one Click command; add it to COMMANDS."""

COMMANDS: list = []
