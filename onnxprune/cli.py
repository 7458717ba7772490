"""The `onnxprune` command: a Click group. Each subcommand lives in onnxprune/commands/."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import threading
import traceback
import warnings

import click

from . import __version__
from .errors import OnnxPruneError, OnnxPruneWarning, one_line

# Python arguments whose option has another name in Click (`--format` is `fmt`: `format` is a builtin).
ARGUMENT_FLAGS = {"format": "--format"}


def _split_debug(args: list[str]) -> tuple[list[str], bool]:
    """Remove `--debug` from anywhere before a `--` separator (so `onnxprune prune ... --debug` works)."""
    end = args.index("--") if "--" in args else len(args)
    head = [a for a in args[:end] if a != "--debug"]
    return head + args[end:], len(head) < end


def flags() -> dict[str, str]:
    """Python argument -> its flag, read from the commands' options (`input_shapes` -> `--input-shape`):
    the library's messages name arguments (errors.arg), the command line shows the flags."""
    table = {}
    for command in main.commands.values():
        for param in command.params:
            long = [o for o in param.opts if o.startswith("--")]
            if isinstance(param, click.Option) and long:
                table.setdefault(param.name, max(long, key=len))
    return {**table, **ARGUMENT_FLAGS}


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    text = message.message(flags()) if isinstance(message, OnnxPruneWarning) else str(message)
    click.echo(f"warning: {one_line(text)}", err=True)


class Terminated(BaseException):
    """SIGTERM (a pipeline's timeout) as an exception: `finally` blocks run, so the atomic writers
    remove their temporary files, and the exit is the usual 128 + 15 with one line."""


def _importing(frame) -> bool:
    """Whether an import is under way (the CLI imports torch lazily, on the first command that needs it)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _raise_terminated(signum, frame):
    if RETRY_SIGNAL and _importing(frame):
        # Never raise inside an import: importlib's weakref callbacks print and ignore the exception
        # (seen in CI: the prune then ran to its end, exit 0), and torch's C++ start-up aborts on it
        # (exit -6, no cleanup). Raise a moment later, once the import is done.
        signal.setitimer(signal.ITIMER_REAL, 0.01)
        return
    raise Terminated


# SIGALRM carries the retry; absent on Windows, where the signal is raised at once.
RETRY_SIGNAL = getattr(signal, "SIGALRM", None) if hasattr(signal, "setitimer") else None


@contextlib.contextmanager
def _sigterm_raises():
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread (e.g. not under some test runners)
        return
    signals = [signal.SIGTERM] + ([RETRY_SIGNAL] if RETRY_SIGNAL else [])
    previous = {s: signal.signal(s, _raise_terminated) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class Group(click.Group):
    """Every failure ends in one line on stderr and an exit code; a traceback only with `--debug`.

    User errors (OnnxPruneError, Click usage errors) print `error: <msg>` and exit 2 (Click's usage
    block stays above the line); anything else is a bug: `internal error: ...` and exit 1.
    Warnings become one `warning: <msg>` line each. `--debug` may appear anywhere on the command line.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        args, debug = _split_debug(list(sys.argv[1:] if args is None else args))
        args = ["--debug", *args] if debug else args
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        with warnings.catch_warnings(), _sigterm_raises():
            if not debug:
                warnings.showwarning = _warning_line
            try:
                code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            except Exception as err:  # noqa: BLE001 (the contract: one line, never a traceback)
                if debug and not isinstance(err, click.ClickException):
                    traceback.print_exc()
                code = _report(err)
            except KeyboardInterrupt:
                click.echo("error: interrupted", err=True)
                code = 130
            except Terminated:
                click.echo("error: terminated", err=True)
                _exit_now(143)
        sys.exit(code if isinstance(code, int) else 0)


def _exit_now(code: int) -> None:
    """Exit without interpreter shutdown. A SIGTERM lands anywhere, also inside an extension module's
    import (the CLI imports torch lazily); a half-initialized libtorch can hang its static destructors
    at exit (seen once in CI: a prune still alive 120 s after the signal). The `finally` blocks
    (temporary files) already ran while the exception propagated."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _report(err: Exception) -> int:
    """Print the one line for `err` and return the exit code."""
    no_args = getattr(click.exceptions, "NoArgsIsHelpError", ())  # Click >= 8.2: bare `onnxprune`
    if isinstance(err, no_args) and err.ctx is not None:
        click.echo(err.ctx.get_help(), err=True)
        click.echo("\nerror: no command given (see above)", err=True)
        return 2
    if isinstance(err, click.exceptions.UsageError):
        if err.ctx is not None:
            click.echo(err.ctx.get_usage(), err=True)
            click.echo(f"Try '{err.ctx.command_path} --help' for help.\n", err=True)
        click.echo(f"error: {one_line(err.format_message())}", err=True)
        return 2
    if isinstance(err, (click.ClickException, OnnxPruneError)):
        message = err.format_message() if isinstance(err, click.ClickException) else err.message(flags())
        click.echo(f"error: {one_line(message)}", err=True)
        return 2
    if isinstance(err, click.exceptions.Abort):
        click.echo("error: aborted", err=True)
        return 1
    if isinstance(err, OSError) and err.errno == errno.EPIPE:  # output piped into `head` and cut short
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 1
    if isinstance(err, MemoryError):
        click.echo("error: out of memory", err=True)
        return 1
    if isinstance(err, OSError) and err.strerror:  # the system refused (disk full, permissions): not a bug
        where = f"{err.filename}: " if err.filename else ""
        click.echo(f"error: {where}{err.strerror}", err=True)
        return 2
    message = one_line(str(err))
    click.echo(f"internal error: {type(err).__name__}{': ' + message if message else ''} "
               "(a bug; rerun with --debug for the traceback)", err=True)
    return 1


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="onnxprune")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors (accepted anywhere).")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Prune ONNX models at initialization (SynFlow and friends) through an exact PyTorch twin."""
    ctx.meta["debug"] = debug


def _register_commands() -> None:
    from .commands import COMMANDS

    for command in COMMANDS:
        main.add_command(command)


_register_commands()

if __name__ == "__main__":
    sys.exit(main())
