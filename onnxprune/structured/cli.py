"""`onnxprune prune --structure channel`: the command-line side of channel pruning.

Called from commands/prune.py with that command's options; imported only when channel pruning is
asked for, so `onnxprune --help` stays free of torch.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..choices import CHANNEL_DATA_METHODS, DATA_METHODS
from ..errors import OnnxPruneError


def run_channel_pruning(*, model: Path, compression, density, sparsity, output, overwrite, method, iterations,
                        schedule, scope, input_shapes, data, batch_size, data_batches, precision, seed, exclude,
                        min_layer_density, report_path, quiet, macs, round_to=8, benchmark=False, latency=None,
                        best_effort=False, fmt="auto",
                        plot_path=None, prune_bias=False, **ignored) -> None:
    """Prune channels of MODEL and write the rewritten dense graph (see onnxprune.structured).
    --format and --prune-bias are refused (the output is dense; biases go with their channels);
    --device does not apply (scoring runs on the CPU)."""
    from .. import io
    from ..api import check_data
    from ..commands.prune import check_side_outputs, default_output, parse_input_shape
    from ..report import stdout_console
    from . import DEFAULT_METHOD, prune_channels
    from .report import plot_layers, print_table, summary_lines, warnings_for

    if prune_bias:  # biases go with their channel; none is pruned alone
        raise OnnxPruneError("--prune-bias does not apply to --structure channel")
    if fmt != "auto":  # the rewritten graph is dense: nothing is stored sparse
        raise OnnxPruneError("--format does not apply to --structure channel (the output is a dense, smaller graph)")
    method = method or DEFAULT_METHOD[data is not None]
    check_data(method, data, DATA_METHODS + CHANNEL_DATA_METHODS)  # the weight-level rule and messages
    shapes = dict(parse_input_shape(text) for text in input_shapes)
    output = io.check_output_path(output or default_output(model), overwrite=overwrite, inputs=(model,))
    check_side_outputs((report_path, plot_path), model, output, overwrite=overwrite)
    loaded = io.load_model(model)
    batches = _batches(loaded, data, shapes, batch_size, data_batches, seed) if method in DATA_METHODS + CHANNEL_DATA_METHODS else None
    result = prune_channels(loaded, method=method, density=density, compression=compression, sparsity=sparsity,
                            macs=macs, latency=latency, best_effort=best_effort,
                            iterations=iterations, schedule=schedule, scope=scope, min_layer_density=min_layer_density,
                            round_to=round_to, exclude=exclude, input_shapes=shapes or None, batches=batches,
                            precision=precision, seed=seed)
    from .latency import compare

    if benchmark:  # in the report too, so a pipeline can read the measured speed-up
        result.report["latency"] = compare(loaded, result.model, input_shapes=shapes or None)
    if "latency_fit" in result.report:  # measured again, apart from the search, at its settings
        final = compare(loaded, result.model, input_shapes=shapes or None, threads=1, runs=15)
        result.report["latency_fit"]["measured"] = 1 / final["speedup"]
    written = io.save_model(result.model, output, external_data=True if io.external_files(model) else None)
    if report_path is not None:
        io.write_json(result.report, report_path)
        written.append(report_path)
    if plot_path is not None:
        plot_layers(result.report, plot_path)
        written.append(plot_path)
    for warning in warnings_for(result.report):  # a pipeline sees them even with -q
        click.echo(warning, err=True)
    if not quiet:
        print_table(result.report, stdout_console())
        for line in summary_lines(result.report):  # not through rich: long frozen reasons are never wrapped
            click.echo(line)
        click.echo(f"wrote {', '.join(map(str, written))}")


def _batches(model, data, shapes, batch_size, n_batches, seed):
    import torch

    from ..api import load_batches, load_twin

    twin = load_twin(model)
    return load_batches(data, twin, shapes or None, batch_size=batch_size, n_batches=n_batches, seed=seed,
                        device=torch.device("cpu"))
