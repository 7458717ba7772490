"""`onnxprune compare PRUNED ORIGINAL --data INPUTS`: label-free agreement, and a gate for pipelines."""

from __future__ import annotations

from pathlib import Path

import click

from .options import image_options, output_kind_option
from .verify import VERIFY_FAILED


@click.command("compare")
@click.argument("pruned", type=click.Path(path_type=Path))
@click.argument("original", type=click.Path(path_type=Path))
@click.option("--data", required=True, metavar="INPUTS",
              help="An .npz (one array per input, named after it; or x_test / x_train images), a folder of "
                   "images, or 'random'.")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True,
              help="Which images of an x_train / x_test npz.")
@click.option("--samples", type=click.IntRange(min=1), help="At most this many rows [all; random: 256].")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=1x3x224x224",
              help="Shape of an input for --data random (repeatable), where a non-batch dim is symbolic; "
                   "the first dim becomes --samples.")
@click.option("--min-agreement", type=click.FloatRange(0, 1),
              help="Exit 3 when any output's agreement (top-1, or cosine for non-class outputs) is below this.")
@click.option("--report", "report_path", type=click.Path(path_type=Path), help="Write the figures as JSON.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --report file.")
@output_kind_option
@image_options
def compare(pruned, original, data, split, samples, batch_size, input_shapes, min_agreement, report_path, overwrite,
            output_kinds=(), image_size=None, mean=None, std=None, layout=None, color=None):
    """How closely PRUNED follows ORIGINAL on the same inputs, in onnxruntime, without labels: per
    output, top-1/top-5 agreement and KL for class scores, relative L2, cosine and max |diff| else."""
    from .. import fidelity
    from ..io import check_output_path, load_model, write_json
    from ..graph.outputs import output_kinds as read_kinds
    from .options import parse_image_options, parse_input_shape, parse_output_kinds

    if report_path is not None:
        check_output_path(report_path, overwrite=overwrite, inputs=(pruned, original))
    candidate, reference = load_model(pruned), load_model(original)
    fidelity.check_interfaces(candidate, reference)  # before reading any data for them
    declared = parse_output_kinds(output_kinds)
    read_kinds(reference, declared)  # names checked before any data is read
    shapes = dict(parse_input_shape(text) for text in input_shapes)
    images = parse_image_options(image_size, mean, std, layout, color)
    feeds = fidelity.load_inputs(data, reference, split=split, samples=samples, input_shapes=shapes or None,
                                 images=images)
    result = fidelity.compare(candidate, reference, feeds, batch_size=batch_size, output_kinds=declared)
    result.update(pruned=str(pruned), original=str(original), data=str(data), min_agreement=min_agreement)
    click.echo(f"{result['samples']} samples of {data}")
    for name, o in result["outputs"].items():
        if o["kind"] == "values":
            figures = f"relative L2 {o['relative_l2']:.4g}  cosine {o['cosine']:.4f}  max |diff| {o['max_abs_diff']:.4g}"
        else:
            figures = (f"top-1 agreement {o['top1_agreement']:.4f}  top-5 {o['top5_agreement']:.4f}  "
                       f"KL {o['kl']:.4g}")
        click.echo(f"{name} ({o['kind']}): {figures}")
    if report_path is not None:
        write_json(result, report_path)
    if min_agreement is not None and result["agreement"] < min_agreement:
        worst = min(result["outputs"], key=lambda n: result["outputs"][n]["agreement"])
        click.echo(f"error: agreement {result['agreement']:.4f} on output '{worst}' is below --min-agreement "
                   f"{min_agreement}", err=True)
        click.get_current_context().exit(VERIFY_FAILED)
