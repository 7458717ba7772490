"""The `onnxprune` command: a Click group. Each subcommand lives in onnxprune/commands/."""

from __future__ import annotations

import sys

import click

from . import __version__
from .errors import OnnxPruneError


class Group(click.Group):
    """Turns user errors into one line and exit 2, and internal errors into one line and exit 1.

    `--debug` (anywhere on the command line) shows the traceback instead.
    """

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except OnnxPruneError as err:
            if ctx.meta.get("debug"):
                raise
            click.echo(f"error: {err}", err=True)
            ctx.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            ctx.exit(130)
        except Exception as err:  # noqa: BLE001 (the contract: never a traceback without --debug)
            if ctx.meta.get("debug"):
                raise
            message = str(err).strip().splitlines()[0] if str(err).strip() else ""
            click.echo(f"internal error: {type(err).__name__}: {message} (rerun with --debug for details)",
                       err=True)
            ctx.exit(1)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="onnxprune")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
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
