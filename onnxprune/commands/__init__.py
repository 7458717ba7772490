"""Subcommands. Each module defines one Click command; add it to COMMANDS."""

from .compare import compare
from .eval import eval_command
from .info import info
from .prune import prune
from .train import train
from .verify import verify

COMMANDS: list = [prune, info, verify, compare, train, eval_command]
