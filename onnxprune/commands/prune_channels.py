"""`onnxprune prune --structure channel`: the command-line side of channel pruning.

Called from commands/prune.py with that command's options; imported only when channel pruning is
asked for, so `onnxprune --help` stays free of torch. The pruning itself is `api.prune(structure=
"channel")`, which refuses the options that mean nothing there.
"""

from __future__ import annotations

from pathlib import Path

import click


def run_channel_pruning(*, model: Path, compression, density, sparsity, output, overwrite, method, iterations,
                        schedule, scope, input_shapes, data, batch_size, data_batches, precision, seed, exclude,
                        min_layer_density, report_path, quiet, macs, round_to=None, benchmark=False, latency=None,
                        best_effort=False, fmt="auto", device="auto", plot_path=None, prune_bias=False,
                        image_size=None, mean=None, std=None, layout=None, color=None, approximate=False,
                        output_kinds=(), **ignored) -> None:
    """Prune channels of MODEL and write the rewritten dense graph (see onnxprune.structured)."""
    from .. import io
    from ..api import prune
    from ..report import stdout_console
    from ..structured.latency import compare
    from ..structured.report import plot_layers, print_table, summary_lines, warnings_for
    from .options import check_side_outputs, default_output, parse_image_options, parse_input_shape, parse_output_kinds

    shapes = dict(parse_input_shape(text) for text in input_shapes)
    images = parse_image_options(image_size, mean, std, layout, color)
    kinds = parse_output_kinds(output_kinds)
    output = io.check_output_path(output or default_output(model), overwrite=overwrite, inputs=(model,))
    check_side_outputs((report_path, plot_path), model, output, overwrite=overwrite)
    loaded = io.load_model(model)
    result = prune(loaded, structure="channel", method=method, density=density, compression=compression,
                   sparsity=sparsity, macs=macs, latency=latency, best_effort=best_effort, iterations=iterations,
                   schedule=schedule, scope=scope, min_layer_density=min_layer_density, round_to=round_to,
                   exclude=exclude, input_shapes=shapes or None, data=data, batch_size=batch_size,
                   data_batches=data_batches, precision=precision, seed=seed, format=fmt, prune_bias=prune_bias,
                   device=device, images=images, approximate=approximate, output_kinds=kinds or None)
    if benchmark:  # in the report too, so a pipeline can read the measured speed-up
        result.report["latency"] = compare(loaded, result.model, input_shapes=shapes or None)
    if "latency_fit" in result.report:  # measured again, apart from the search, at its settings
        final = compare(loaded, result.model, input_shapes=shapes or None, threads=1, runs=15)
        result.report["latency_fit"]["measured"] = 1 / final["speedup"]
    result.external_data = bool(io.external_files(model))
    result.save(output, overwrite=True, inputs=(model,) if overwrite else ())
    written = list(result.report["output"]["files"])
    if report_path is not None:
        io.write_json(result.report, report_path)
        written.append(str(report_path))
    if plot_path is not None:
        plot_layers(result.report, plot_path)
        written.append(str(plot_path))
    for warning in warnings_for(result.report):  # a pipeline sees them even with -q
        click.echo(warning, err=True)
    if not quiet:
        print_table(result.report, stdout_console())
        for line in summary_lines(result.report):  # not through rich: long frozen reasons are never wrapped
            click.echo(line)
        click.echo(f"wrote {', '.join(written)}")
