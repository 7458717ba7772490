"""`onnxprune prune MODEL.onnx`: prune at initialization and write the same graph with pruned weights."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from .. import choices
from ..errors import OnnxPruneError
from .options import check_side_outputs, default_output, image_options, output_kind_option, parse_input_shape


@contextlib.contextmanager
def progress_bar(console, enabled: bool):
    """A rich progress bar over pruning iterations; yields the engine's progress(k, n) callback (k = 0
    when the loop starts). The time left is the mean iteration so far times those left, shown from the
    first iteration on (rich's own estimate needs two samples within 30 s, never on slow iterations)."""
    if not enabled:
        yield None
        return
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("pruning"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[left]}"), console=console, transient=True) as bar:
        task = bar.add_task("prune", total=None, left="")
        start = [time.perf_counter()]

        def update(k: int, n: int) -> None:
            if k == 0:
                start[0] = time.perf_counter()
            left = (time.perf_counter() - start[0]) / k * (n - k) if 0 < k < n else None
            shown = "" if left is None else f"~{int(left) // 60}:{int(left) % 60:02d} left"
            bar.update(task, completed=k, total=n, left=shown)
        yield update


@click.command("prune")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-c", "--compression", type=float, help="Keep 10**-C of the prunable weights (C=2 keeps 1 %).")
@click.option("--density", type=float, help="Fraction of prunable weights kept, in (0, 1].")
@click.option("--sparsity", type=float, help="Fraction of prunable weights removed, in [0, 1).")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Output file [MODEL.pruned.onnx].")
@click.option("--overwrite", is_flag=True, help="Allow replacing an existing output (even the input file).")
@click.option("-m", "--method", type=click.Choice(choices.METHODS + choices.CHANNEL_METHODS),
              help="Scorer [synflow]; with --structure channel, a channel criterion for trained weights "
                   f"({', '.join(choices.CHANNEL_METHODS)}; default taylor with --data, else l2) or any scorer.")
@click.option("-n", "--iterations", type=click.IntRange(min=1), help="Pruning rounds [synflow 100, others 1].")
@click.option("--schedule", type=click.Choice(choices.SCHEDULES), default="exponential", show_default=True)
@click.option("--scope", type=click.Choice(choices.SCOPES),
              help="Rank scores across all layers, or keep the same density in each layer [global; local "
                   "for the channel criteria].")
@click.option("--prune-bias", is_flag=True, help="Prune Conv/Gemm biases too.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=1x3x224x224",
              help="Concrete shape of an input (repeatable); needed when a non-batch dim is symbolic.")
@click.option("--data", type=click.Path(path_type=Path),
              help="An .npz with x_train / y_train, for data-driven methods "
                   f"({', '.join(choices.DATA_METHODS + choices.CHANNEL_DATA_METHODS)}); for the label-free "
                   f"{', '.join(choices.CHANNEL_DATA_METHODS)} also a folder of images, 'random', or an .npz with one "
                   "array per input.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Batch size of --data.")
@click.option("--data-batches", type=click.IntRange(min=1), default=1, show_default=True,
              help="How many batches of --data each scoring pass sees.")
@click.option("--format", "fmt", type=click.Choice(choices.FORMATS), default="auto", show_default=True,
              help="Pruned tensors as sparse initializers, dense with zeros, or whichever is smaller.")
@click.option("--precision", type=click.Choice(choices.PRECISIONS), default="float64", show_default=True,
              help="Precision of scoring (float32 overflows SynFlow on deep nets).")
@click.option("--device", type=click.Choice(choices.DEVICES), default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--exclude", multiple=True, metavar="GLOB", help="Keep tensors matching GLOB dense (repeatable).")
@click.option("--min-layer-density", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Keep at least this fraction of every layer (guards against layer collapse).")
@click.option("--report", "report_path", type=click.Path(path_type=Path), help="Write a JSON report here.")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), help="Write a per-layer density chart (PNG).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no table.")
@click.option("--structure", type=click.Choice(choices.STRUCTURES), default="weight", show_default=True,
              help="Prune single weights (sparse file) or whole channels (dense, smaller, faster graph).")
@click.option("--macs", type=float, help="With --structure channel: fraction of Conv/Gemm/MatMul MACs kept.")
@click.option("--latency", type=float,
              help="With --structure channel: fraction of the dense model's onnxruntime latency kept (CPU, "
                   "batch 1, one thread, measured on this machine); the MAC fraction is searched to meet it.")
@click.option("--round-to", type=click.IntRange(min=1),
              help="With --structure channel: keep a multiple of N channels per layer [8: what CPU kernels run "
                   "fastest; 1: exact widths; the budget holds either way].")
@click.option("--best-effort", is_flag=True,
              help="With --structure channel: when the target cannot be reached, prune as far as possible "
                   "(the report says target_reached: false) instead of exit 2.")
@click.option("--approximate", is_flag=True,
              help="With --structure channel: also remove channels whose removal changes the computation "
                   "(LayerNorm statistics over the kept channels: a transformer's hidden size; a constant "
                   "folded into a padded Conv); the report measures the change. Recover with train --teacher.")
@click.option("--benchmark", is_flag=True,
              help="With --structure channel: time onnxruntime (CPU, batch 1) on the dense and pruned model.")
@output_kind_option
@image_options
def prune(model: Path, compression, density, sparsity, output, overwrite, method, iterations, schedule, scope,
          prune_bias, input_shapes, data, batch_size, data_batches, fmt, precision, device, seed, exclude,
          min_layer_density, report_path, plot_path, quiet, structure="weight", macs=None, round_to=None,
          benchmark=False, latency=None, best_effort=False, image_size=None, mean=None, std=None, layout=None,
          color=None, approximate=False, output_kinds=()) -> None:
    """Prune MODEL at initialization; write the same graph with pruned weights.

    Only the pruned initializers change: graph, opset, IR version, names and metadata are the input's.
    """
    from rich.console import Console

    if structure == "channel" or macs is not None or latency is not None:  # structured pruning
        from .prune_channels import run_channel_pruning

        return run_channel_pruning(**click.get_current_context().params)

    from ..density import target_density

    if benchmark:  # a weight-pruned graph runs the dense kernels: nothing to time
        raise OnnxPruneError("--benchmark applies to --structure channel only")
    if approximate:
        raise OnnxPruneError("--approximate applies to --structure channel only")
    if output_kinds:
        raise OnnxPruneError("--output-kind applies to --structure channel -m taylor only")
    if any(v is not None for v in (image_size, mean, std, layout, color)):
        raise OnnxPruneError("--image-size/--mean/--std/--layout/--color apply to --structure channel "
                             "(taylor on a folder of images) only")
    method, scope = method or "synflow", scope or "global"

    target_density(compression, density, sparsity)  # fail fast, before loading anything (or torch)

    from .. import api, io
    from ..report import plot_density, print_table, stdout_console, warnings_for, write_json

    shapes = dict(parse_input_shape(text) for text in input_shapes)
    output = io.check_output_path(output or default_output(model), overwrite=overwrite, inputs=(model,))
    check_side_outputs((report_path, plot_path), model, output, overwrite=overwrite)

    err = Console(stderr=True)
    with progress_bar(err, not quiet and err.is_terminal) as progress:
        result = api.prune(model, compression=compression, density=density, sparsity=sparsity, method=method,
                           iterations=iterations, schedule=schedule, scope=scope, prune_bias=prune_bias,
                           input_shapes=shapes, data=data, batch_size=batch_size, data_batches=data_batches,
                           format=fmt, precision=precision, device=device, seed=seed, exclude=exclude,
                           min_layer_density=min_layer_density, progress=progress, round_to=round_to,
                           best_effort=best_effort)
    result.save(output, overwrite=True, inputs=(model,) if overwrite else ())
    written = list(result.report.output["files"])
    if report_path is not None:
        write_json(result.report, report_path)
        written.append(str(report_path))
    if plot_path is not None:
        plot_density(result.report, plot_path)
        written.append(str(plot_path))
    if quiet:
        for line in warnings_for(result.report):
            click.echo(f"warning: {line}", err=True)
        return
    sizes = (result.report.input["bytes"], result.report.output["bytes"])
    print_table(result.report, stdout_console(), sizes=sizes)
    click.echo(f"wrote {', '.join(written)}")  # not through rich: a path is never wrapped

