"""`onnxprune train MODEL.onnx`: train a (pruned) model through its twin; pruned weights stay zero."""

from __future__ import annotations

import os
from pathlib import Path

import click

from .. import choices
from ..errors import OnnxPruneError
from ..train import DATASETS, OPTIMIZER_NAMES
from .options import image_options, output_kind_option, parse_image_options, parse_output_kinds


def parse_loss_weights(text: str | None) -> dict[str, float]:
    """'boxes=2,scores=0.5' -> {"boxes": 2.0, "scores": 0.5}; an output name may hold '=' (the last splits)."""
    if not text:
        return {}
    weights = {}
    for item in text.split(","):
        name, sep, value = item.strip().rpartition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if not sep or not name or not weight >= 0 or weight == float("inf"):
            raise OnnxPruneError(f"--loss-weights {text!r}: expected NAME=W,... with finite weights >= 0, "
                                 "e.g. boxes=2,scores=1")
        weights[name] = weight
    return weights


def parse_drops(text: str | None) -> tuple[int, ...]:
    """'30,60' or '30 60' -> (30, 60)."""
    if not text:
        return ()
    try:
        drops = tuple(int(t) for t in text.replace(",", " ").split())
    except ValueError:
        raise OnnxPruneError(f"--lr-drops {text!r}: expected epoch numbers such as 30,60") from None
    if any(d <= 0 for d in drops):
        raise OnnxPruneError(f"--lr-drops {text!r}: epochs must be positive")
    return drops


def default_output(model: Path) -> Path:
    stem = model.name[:-5] if model.name.endswith(".onnx") else model.name
    return model.with_name(f"{stem}.trained.onnx")


@click.command("train")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--dataset", type=click.Choice(DATASETS), required=True)
@click.option("--data-dir", type=click.Path(path_type=Path),
              help="Dataset root folder (for npz: the .npz file; none for random). Nothing is downloaded.")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Trained model [MODEL.trained.onnx].")
@click.option("--epochs", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Global batch size (split across processes under torchrun).")
@click.option("--optimizer", type=click.Choice(OPTIMIZER_NAMES), default="adam", show_default=True,
              help="momentum = SGD with Nesterov momentum 0.9.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--lr-drops", metavar="E1,E2,...", help="Epochs after which the LR is multiplied by --lr-drop-rate.")
@click.option("--lr-drop-rate", type=click.FloatRange(min=0), default=0.1, show_default=True)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--workers", type=click.IntRange(min=0), help="Data-loading processes [0 for npz, else up to 4].")
@click.option("--augment/--no-augment", default=None, help="Random crop + flip [on for CIFAR and imagefolder].")
@click.option("--normalize/--no-normalize", default=True, show_default=True,
              help="Subtract the dataset's mean, divide by its std (off when the graph normalizes itself).")
@click.option("--test-batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--format", "fmt", type=click.Choice(choices.FORMATS), default="auto", show_default=True,
              help="Pruned tensors as sparse initializers, dense with zeros, or whichever is smaller.")
@click.option("--report", "report_path", type=click.Path(path_type=Path),
              help="JSON: per-epoch train loss/accuracy and test loss/accuracy.")
@click.option("--checkpoint", type=click.Path(path_type=Path),
              help="Checkpoint written after every epoch [OUTPUT.ckpt]; kept, so --resume can extend a run.")
@click.option("--resume", is_flag=True, help="Continue from --checkpoint (finished epochs are not redone).")
@click.option("--overwrite", is_flag=True, help="Replace existing output and report files (--resume may replace its own run's).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or per-epoch lines.")
@click.option("--teacher", type=click.Path(path_type=Path),
              help="Distil from this original (label-free): KL on class scores, variance-normalized MSE on "
                   "other outputs; accuracy figures become top-1 agreement with it.")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="With --teacher: softening of class scores.")
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="With --teacher: weight of the labelled loss (the data must have labels).")
@click.option("--loss-weights", metavar="NAME=W,...",
              help="With --teacher: weight of each output's distillation term (others 1; 0 leaves one out).")
@click.option("--feature-weight", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="With --teacher (the file the model was pruned from): weight of matching its Conv, Gemm and "
                   "MatMul outputs at the channels each pruned layer kept, layer by layer (0: outputs only).")
@click.option("--reconstruct", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="With --teacher (the file the model was pruned from): before the first epoch, refit each "
                   "pruned Conv, Gemm and MatMul in graph order by least squares to the teacher's output at "
                   "its kept channels, on the first N training inputs (with --epochs 0: only this).")
@click.option("--holdout", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.1,
              show_default=True, help="With --teacher and an npz of arrays named after the inputs: the "
                                      "fraction held out to measure agreement (never trained on).")
@click.option("--bn-statistics", type=click.Choice(choices.BN_STATISTICS), default="update",
              show_default=True,
              help="BatchNormalization in training: normalize with batch statistics and update the running "
                   "ones, keep the trained running ones (frozen), or re-estimate them on the training data "
                   "first and then keep them (recalibrate: a pruned model on a small recovery set).")
@output_kind_option
@image_options
def train(model, dataset, data_dir, output, epochs, batch_size, optimizer, lr, lr_drops, lr_drop_rate,
          weight_decay, seed, device, workers, augment, normalize, test_batch_size, fmt, report_path,
          checkpoint, resume, overwrite, quiet, teacher=None, temperature=1.0, alpha=0.0,
          holdout=0.1, loss_weights=None, bn_statistics="update", feature_weight=0.0, reconstruct=0,
          output_kinds=(), image_size=None, mean=None, std=None, layout=None, color=None):
    """Train MODEL with its zero weights held at zero, evaluate each epoch, write the trained ONNX file.

    BatchNormalization trains with batch statistics and its running statistics are written back
    (--bn-statistics frozen keeps the trained ones).
    Under torchrun (`torchrun --nproc_per_node N -m onnxprune train ...`) it trains with
    DistributedDataParallel: gloo on CPU, nccl on CUDA.
    """
    from ..train.loop import TrainConfig
    from ..train.run import TrainRequest
    from ..train.run import train as run_training

    from ..io import check_output_path

    if data_dir is None and dataset != "random":
        raise OnnxPruneError(f"--data-dir is required with --dataset {dataset}")
    weights = parse_loss_weights(loss_weights)
    if weights and teacher is None:
        raise OnnxPruneError("--loss-weights applies with --teacher only")
    kinds = parse_output_kinds(output_kinds)
    if kinds and teacher is None:
        raise OnnxPruneError("--output-kind applies with --teacher only")
    output = output or default_output(model)
    if output.resolve() == model.resolve():
        raise OnnxPruneError(f"{output}: the output would replace the input model; pass another -o")
    checkpoint = checkpoint or output.with_name(output.name + ".ckpt")
    # Every output folder is checked before the first epoch, not after hours of training.
    # --resume continues the run that wrote these files: replacing them is the point.
    check_output_path(output, overwrite=overwrite or resume, inputs=(model,))
    if report_path is not None:
        check_output_path(report_path, overwrite=overwrite or resume, inputs=(model, output))
    check_output_path(checkpoint, overwrite=True)  # rewritten every epoch; --resume reads it back
    if workers is None:
        workers = 0 if dataset in ("npz", "random") else min(4, os.cpu_count() or 1)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
                         lr_drops=parse_drops(lr_drops), lr_drop_rate=lr_drop_rate, weight_decay=weight_decay,
                         seed=seed, test_batch_size=test_batch_size, workers=workers)
    request = TrainRequest(model, dataset, data_dir, config, device=device, augment=augment, normalize=normalize,
                           output=output, fmt=fmt, report=report_path,
                           checkpoint=checkpoint,
                           resume=resume, quiet=quiet, teacher=teacher, temperature=temperature, alpha=alpha,
                           holdout=holdout, loss_weights=weights, bn_statistics=bn_statistics,
                           feature_weight=feature_weight, reconstruct=reconstruct, output_kinds=kinds,
                           images=parse_image_options(image_size, mean, std, layout, color))
    result = run_training(request, warn=lambda text: click.echo(f"warning: {text}", err=True))
    if not result.main:
        return
    if result.history:
        last = result.history[-1]
        density = f"{100 * result.kept / result.total:.2f} %" if result.total else "n/a"
        click.echo(f"trained {len(result.history)} epochs (density {density}): "
                   f"test {result.measure if teacher else 'accuracy'} "
                   f"{100 * last.test_accuracy:.2f} %, train loss {last.train_loss:.4f}")
    click.echo(f"wrote {', '.join(str(p) for p in [output, report_path, request.checkpoint] if p)}")
