"""Subcommands. Each module defines one Click command; add it to COMMANDS."""

from .eval import eval_command
from .info import info
from .prune import prune
from .train import train
from .verify import verify

COMMANDS: list = [prune, info, verify, train, eval_command]
