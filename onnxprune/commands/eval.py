"""`onnxprune eval MODEL.onnx`: top-1 / top-5 accuracy under onnxruntime."""

from __future__ import annotations

import math
import os
from dataclasses import asdict
from pathlib import Path

import click

from .. import choices
from ..train import DATASETS


@click.command("eval")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--dataset", type=click.Choice(DATASETS), required=True)
@click.option("--data-dir", type=click.Path(path_type=Path), required=True,
              help="Dataset root folder (for npz: the .npz file). Nothing is downloaded.")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), help="Data-loading processes [0 for npz, else up to 4].")
@click.option("--normalize/--no-normalize", default=True, show_default=True,
              help="Normalize as training did (off when the graph normalizes itself).")
@click.option("--device", type=click.Choice(choices.DEVICES), default="auto", show_default=True,
              help="onnxruntime's CUDA provider when present (auto), or CPU.")
@click.option("--report", "report_path", type=click.Path(path_type=Path), help="Write the result as JSON.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --report file.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def eval_command(model, dataset, data_dir, split, batch_size, workers, normalize, device, report_path, overwrite,
                 quiet):
    """Top-1 (and top-5 when there are more than 5 classes) accuracy of MODEL with onnxruntime."""
    from ..evaluate import check_fit, evaluate, input_spec, session
    from ..io import check_output_path, load_model, write_json
    from ..train.data import load_dataset
    from ..train.progress import Reporter

    if report_path is not None:
        check_output_path(report_path, overwrite=overwrite, inputs=(model,))
    load_model(model)  # one-line errors for a missing or invalid file
    sess = session(model, device)
    spec, _ = input_spec(sess)
    data = load_dataset(dataset, data_dir, train=split == "train", input_spec=spec, augment=False,
                        normalize=normalize)
    for note in check_fit(sess, data, dataset):  # refuses a model that cannot fit the data, before the run
        click.echo(f"warning: {note}", err=True)
    if workers is None:
        workers = 0 if dataset == "npz" else min(4, os.cpu_count() or 1)
    reporter = Reporter(quiet=quiet)
    with reporter.bar("evaluating", math.ceil(len(data) / batch_size)) as update:
        result = evaluate(sess, data, batch_size=batch_size, workers=workers, progress=update)
    top5 = f"  top-5 {100 * result.top5:.2f} %" if result.top5 is not None else ""
    click.echo(f"top-1 {100 * result.top1:.2f} % ({result.correct1}/{result.total}){top5}  "
               f"[{result.provider}, {result.seconds:.1f} s]")
    if report_path:
        payload = {"model": str(model), "dataset": dataset, "data_dir": str(data_dir), "split": split,
                   **asdict(result)}
        write_json(payload, report_path)

