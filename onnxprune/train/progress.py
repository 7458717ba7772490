"""Progress bars on stderr (only on a terminal, never with --quiet) and one summary line per epoch."""

from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)


class Reporter:
    def __init__(self, *, quiet: bool = False, enabled: bool = True):
        self.console = Console(stderr=True)
        self.lines = enabled and not quiet
        self.bars = self.lines and self.console.is_terminal

    def line(self, text: str) -> None:
        if self.lines:
            print(text, file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def bar(self, description: str, total: int) -> Iterator[Callable[..., None]]:
        """Yields update(done, text=""): `done` steps finished, `text` shown after the bar."""
        if not self.bars:
            yield lambda done, text="": None
            return
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[text]}"), TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=self.console, transient=True) as progress:
            task = progress.add_task(description, total=total, text="")
            yield lambda done, text="": progress.update(task, completed=done, text=text)
