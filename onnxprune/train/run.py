"""`onnxprune train` end to end: model file -> twin with masks -> epochs -> trained ONNX file + report."""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import onnx
import torch

from ..choices import BN_STATISTICS
from ..errors import DataError, OnnxPruneError, arg
from ..graph import roles
from ..io import load_model, save_model, write_json
from ..twin.module import Twin
from .batchnorm import recalibrate
from .checkpoint import Checkpoint, file_hash
from .data import load_dataset, num_classes
from .distributed import setup
from .features import FeatureMatch, layer_taps
from .loop import (EpochRecord, Objective, TrainConfig, Trainer, call, check_classes, first_output, teacher_measure,
                   to_device)
from .params import freeze_constants, masks_from_zeros
from .progress import Reporter
from .untie import untie

# Below this many weight layers a network trains fine without normalization (LeNet-5 has 5).
DEEP = 6
KEEP_BN_HINT = ("export with BatchNorm kept: torch.onnx.export(model, x, path, dynamo=False, "
                "training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)")


@dataclass
class TrainRequest:
    model: Path
    dataset: str
    data_dir: Path | None  # None: --dataset random
    config: TrainConfig = field(default_factory=TrainConfig)
    device: str = "auto"
    augment: bool | None = None
    normalize: bool = True
    output: Path | None = None
    fmt: str = "auto"
    report: Path | None = None
    checkpoint: Path | None = None  # None: no checkpoints
    resume: bool = False
    quiet: bool = False
    teacher: Path | None = None  # distil from this original instead of (or, with alpha, besides) labels
    holdout: float = 0.1  # arrays named after the inputs (one source): this fraction measures, the rest trains
    temperature: float = 1.0
    alpha: float = 0.0
    loss_weights: dict[str, float] = field(default_factory=dict)  # output name -> weight (others 1)
    output_kinds: dict[str, str] = field(default_factory=dict)  # output name -> kind, as --output-kind declares
    images: Any = None  # fidelity.images.ImageOptions for an imagefolder without class subfolders
    bn_statistics: str = "update"  # "frozen": keeps its running statistics; "recalibrate": re-estimated first
    feature_weight: float = 0.0  # with a teacher: weight of the per-layer terms (features.py); 0: outputs only
    reconstruct: int = 0  # with a teacher: refit each pruned layer on this many inputs first (reconstruct.py)

    @property
    def batch_statistics(self) -> bool:
        """Whether BatchNormalization trains on batch statistics (and updates its running ones)."""
        return self.bn_statistics == "update"

    @property
    def labelled(self) -> bool:
        return self.teacher is None or self.alpha > 0


@dataclass
class TrainResult:
    history: list[EpochRecord]
    kept: int
    total: int
    untied: list[str]
    frozen: list[str]
    resumed_from: int
    device: str
    world: int
    main: bool = True  # rank 0 (the process that writes and prints)
    measure: str = "top-1 accuracy against the labels"  # what EpochRecord.test_accuracy is


def _output_kind(twin: Twin) -> str:
    producer = twin.facts.producer(twin.output_names[0])
    return {"Softmax": "probs", "LogSoftmax": "log_probs"}.get(producer.op_type if producer else "", "logits")


def _normalization_warning(twin: Twin) -> str | None:
    if any(roles.normalizes(n.op_type) for n in twin.facts.nodes):
        return None
    layers = len({u.node for u in twin.weight_uses if u.role == "weight"})
    if layers < DEEP:
        return None
    return (f"the graph has no normalization layers ({layers} weight layers; BatchNorm folded into Conv at "
            f"export?): deep networks train poorly without them; {KEEP_BN_HINT}")


def _untie_warnings(result) -> list[str]:
    notes = []
    if result.untied:
        shown = ", ".join(result.untied[:4]) + (", ..." if len(result.untied) > 4 else "")
        notes.append(f"{len(result.untied)} BatchNorm/bias tensors were merged by value with others at export "
                     f"(Identity nodes; {shown}); they train separately and the output stores each as its "
                     "own initializer")
    if result.shared_stats:
        notes.append(f"BatchNorm statistics {', '.join(result.shared_stats)} share their tensor with other "
                     "values through non-Identity ops and could not be untied: training updates the shared "
                     "tensor; re-export with keep_initializers_as_inputs=True")
    return notes


def _identity(req: TrainRequest, world: int) -> dict:
    """What must match for --resume: same file, data and trajectory-shaping options."""
    cfg = asdict(req.config)
    for key in ("epochs", "workers", "test_batch_size"):
        cfg.pop(key)
    teacher = {"teacher": file_hash(req.teacher), "temperature": req.temperature, "alpha": req.alpha,
               "loss_weights": dict(sorted(req.loss_weights.items())),
               **{k: getattr(req, k) for k in ("feature_weight", "reconstruct") if getattr(req, k)}} if req.teacher else {}
    return {"model": file_hash(req.model), "dataset": req.dataset, "data": os.path.abspath(req.data_dir) if req.data_dir else None,
            "augment": req.augment, "normalize": req.normalize, "world": world, **cfg, **teacher}


def train(req: TrainRequest, warn: Callable[[str], None]) -> TrainResult:
    info, device = setup(req.device)
    try:
        return _train(req, warn if info.main else (lambda _: None), info, device)
    finally:
        info.close()


def _prepare(req: TrainRequest, warn):
    """The model with exporter ties undone, its twin with masks from the file's zeros, (kept, total)."""
    for option in ("feature_weight", "reconstruct"):
        if getattr(req, option) and req.teacher is None:
            raise OnnxPruneError(f"{arg(option)} applies with {arg('teacher')} only")
    if req.bn_statistics not in BN_STATISTICS:
        raise OnnxPruneError(f"unknown {arg('bn_statistics')} {req.bn_statistics!r} (choose from "
                             f"{', '.join(BN_STATISTICS)})")
    tied = untie(load_model(req.model))
    for note in _untie_warnings(tied):
        warn(note)
    twin = Twin(tied.model)
    twin.ctx.batch_statistics = req.batch_statistics
    kept, total = masks_from_zeros(twin)
    if note := _normalization_warning(twin):
        warn(note)
    return tied, twin, kept, total


def _teacher(req: TrainRequest, student: onnx.ModelProto, device) -> Twin | None:
    """The original's twin, frozen, on the student's device; its inputs and outputs must be the student's."""
    if req.teacher is None:
        return None
    from ..fidelity import check_interfaces

    original = load_model(req.teacher)
    check_interfaces(student, original)
    teacher = Twin(original).to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def _objective(req: TrainRequest, twin: Twin):
    labelled = Objective(_output_kind(twin))
    if req.teacher is None:
        return labelled
    from ..graph.outputs import output_kinds, sigmoid_outputs
    from .distill import Distillation

    unknown = sorted(set(req.loss_weights) - set(twin.output_names))
    if unknown:
        raise OnnxPruneError(f"{arg('loss_weights')} names no output of the model: {unknown} (its outputs: "
                             f"{twin.output_names})")
    kinds = {**output_kinds(twin.model, req.output_kinds),  # a declared kind wins over the graph's reading
             **{name: "bernoulli" for name in sigmoid_outputs(twin.model) if name not in req.output_kinds}}
    return Distillation([kinds.get(name, "values") for name in twin.output_names], req.temperature, req.alpha,
                        labelled, [req.loss_weights.get(name, 1.0) for name in twin.output_names])


# `--dataset random`: samples drawn per run (seeded), the holdout split off them like an npz's. The
# seed is offset so that `compare --data random` (seed 0) never measures on samples trained on.
RANDOM_ROWS, RANDOM_SEED_OFFSET = 4096, 1_000_003


def _datasets(req: TrainRequest, twin: Twin):
    """(train, test) sets: images from a dataset, or (with a teacher) an npz's arrays named after the
    model's inputs, split by `holdout` so that recovery and measurement never share a sample."""
    arrays = _unlabelled_arrays(req, twin)
    if arrays is not None:
        return _array_splits(arrays, req.holdout, req.config.seed)
    if len(twin.inputs) != 1:
        raise DataError(f"the model has {len(twin.inputs)} inputs ({', '.join(twin.input_names)}); training "
                        f"feeds one image input, or with {arg('teacher')} an npz with one array per input")
    spec = twin.inputs[0]
    train_set = load_dataset(req.dataset, req.data_dir, train=True, input_spec=spec, augment=req.augment,
                             normalize=req.normalize, labels=req.labelled)
    test_set = load_dataset(req.dataset, req.data_dir, train=False, input_spec=spec, normalize=req.normalize,
                            labels=req.labelled)
    if len(train_set) == 0 or len(test_set) == 0:
        raise DataError(f"{req.data_dir}: the {'training' if len(train_set) == 0 else 'test'} split is empty")
    return train_set, test_set


def _unlabelled_arrays(req: TrainRequest, twin: Twin) -> dict | None:
    """One array per model input from a label-free source (see fidelity/samples.py): random draws, an
    npz naming the inputs, or a folder holding the images themselves; None for a labelled dataset."""
    from ..fidelity import images, samples

    if req.dataset == "random":  # label-free by nature: --teacher gives the targets
        if req.teacher is None or req.alpha > 0:
            raise DataError(f"--dataset random has no labels: it trains with {arg('teacher')} only (alpha 0)")
        return samples.random_inputs(twin, RANDOM_ROWS, seed=req.config.seed + RANDOM_SEED_OFFSET)
    if req.teacher is None:
        return None
    if req.dataset == "npz":
        return samples.named_arrays(req.data_dir, twin.model)
    if req.dataset == "imagefolder" and Path(req.data_dir).is_dir() and images.image_files(Path(req.data_dir)):
        # the images themselves, no class subfolders
        return samples.folder_inputs(Path(req.data_dir), twin.model, req.images or images.ImageOptions())
    return None


def _array_splits(arrays: dict, holdout: float, seed: int):
    from torch.utils.data import Subset, TensorDataset

    rows = len(next(iter(arrays.values())))
    tensors = [torch.from_numpy(a) for a in arrays.values()]
    whole = TensorDataset(*tensors, torch.zeros(rows, dtype=torch.int64))
    order = torch.randperm(rows, generator=torch.Generator().manual_seed(seed)).tolist()
    n_test = max(1, round(holdout * rows))
    if rows - n_test < 1:
        raise DataError(f"{rows} rows cannot be split into training and {arg('holdout')} {holdout} samples")
    return _Pairs(Subset(whole, order[n_test:])), _Pairs(Subset(whole, order[:n_test]))


class _Pairs(torch.utils.data.Dataset):
    """(one tensor per input, label) from a TensorDataset's rows, as the loop expects."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        *inputs, label = self.rows[i]
        return list(inputs), label


def fixed_batch(spec) -> int | None:
    """The batch size the model's input fixes (an exporter's static batch), or None when it is free."""
    first = spec.shape[0] if spec.shape else None
    return first if isinstance(first, int) and first > 0 else None


def _probe(twin: Twin, train_set, per_process: int, device) -> torch.Tensor:
    """A first batch through the twin, before any epoch: a model exported with a fixed batch whose
    graph bakes that batch in (Reshape to [1, 512]) fails here, and is named in one line."""
    fixed = fixed_batch(twin.inputs[0])
    n = min(fixed if fixed == per_process else 2, len(train_set))
    from torch.utils.data import default_collate

    probe = to_device(default_collate([train_set[i][0] for i in range(n)]), device)
    try:
        with torch.no_grad():
            call(twin.eval(), probe)
    except (RuntimeError, OnnxPruneError) as err:
        if fixed is None or fixed == n:
            raise
        name = twin.inputs[0].name
        raise DataError(f"model input '{name}' has a fixed batch dimension of {fixed} and the graph does not "
                        f"run at batch {n} ({err}); train with {arg('batch_size')} {fixed} (per process), or "
                        f"re-export with a dynamic batch (torch.onnx.export(..., dynamic_axes={{'{name}': "
                        "{0: 'batch'}}))") from None
    return probe


def _trained_outputs(req: TrainRequest, twin: Twin) -> list[int]:
    """The outputs the objective reads: the first for labels, each one a teacher's term weighs."""
    if req.teacher is None:
        return [0]
    weighed = {k for k, name in enumerate(twin.output_names) if req.loss_weights.get(name, 1.0) != 0}
    return sorted(weighed | ({0} if req.alpha > 0 else set()))


def _fit_to_data(twin: Twin, train_set, req: TrainRequest, device, world: int) -> list[str]:
    """Check the output against the classes, freeze graph constants; returns the frozen names."""
    twin.to(device)
    probe = _probe(twin, train_set, max(1, req.config.batch_size // world), device)
    if req.labelled:
        with torch.no_grad():
            check_classes(first_output(call(twin.eval(), probe)), num_classes(train_set), req.dataset)
    frozen = freeze_constants(twin, probe, _trained_outputs(req, twin))
    if not any(p.requires_grad for p in twin.parameters()):
        raise OnnxPruneError("the model has no trainable tensors (no float weights that reach the output)")
    return frozen


def _train(req: TrainRequest, warn, info, device) -> TrainResult:
    cfg = req.config
    torch.manual_seed(cfg.seed)
    if cfg.batch_size < info.world:
        raise OnnxPruneError(f"{arg('batch_size')} {cfg.batch_size} is smaller than the {info.world} processes")
    tied, twin, kept, total = _prepare(req, warn)
    teacher = _teacher(req, tied.model, device)
    train_set, test_set = _datasets(req, twin)
    frozen = _fit_to_data(twin, train_set, req, device, info.world)
    if req.bn_statistics == "recalibrate" and not req.resume:  # a resumed run restores its statistics
        recalibrate(twin, train_set, max(1, cfg.batch_size // info.world), device)
    if (fixed := fixed_batch(twin.inputs[0])) == cfg.batch_size // info.world:
        cfg = replace(cfg, test_batch_size=fixed)  # the graph runs only at its fixed batch
    checkpoint = Checkpoint(req.checkpoint, _identity(req, info.world)) if req.checkpoint else None
    reporter = Reporter(quiet=req.quiet, enabled=info.main)
    taps = layer_taps(tied.model, teacher.model) if req.feature_weight or req.reconstruct else []
    features = FeatureMatch(taps, req.feature_weight) if req.feature_weight else None
    trainer = Trainer(twin, train_set, test_set, cfg, device, info, _objective(req, twin), reporter, checkpoint,
                      teacher, features)
    payload = checkpoint.load() if checkpoint and req.resume else None
    if payload is not None:
        trainer.restore(payload)
        reporter.line(f"resuming after epoch {trainer.start_epoch} from {req.checkpoint}")
    elif req.resume:
        reporter.line(f"no checkpoint at {req.checkpoint}: starting from epoch 1")
    # in place, after DDP's first broadcast: every process fits the same weights from the same inputs
    fitted = _reconstruct(twin, teacher, taps, train_set, req, device) if req.reconstruct and payload is None else None
    if fitted:
        reporter.line(f"refitted {fitted['layers']} layers by least squares on {req.reconstruct} inputs in "
                      f"{fitted['seconds']} s")
    with features.tapped(twin, teacher) if features else contextlib.nullcontext():
        history = trainer.fit()
    if trainer.skipped:
        warn(f"{trainer.skipped} training steps were left out: their gradients were not finite (NaN or inf)")
    measure = teacher_measure(trainer.objective) if teacher is not None else TrainResult.measure
    if info.main:
        _write_outputs(req, tied.model, twin, history, kept, total,
                       {"device": str(device), "processes": info.world, "untied": tied.untied, "fixed": frozen,
                        "test_accuracy_means": measure, "skipped_steps": trainer.skipped,
                        "feature_layers": len(features.taps) if features else 0, "reconstructed": fitted})
    return TrainResult(history, kept, total, tied.untied, frozen, trainer.start_epoch if payload else 0,
                       str(device), info.world, info.main, measure)


def _reconstruct(twin: Twin, teacher: Twin, taps, train_set, req: TrainRequest, device) -> dict:
    """reconstruct.py on the first `req.reconstruct` training inputs (the same on every process, so
    every process fits the same weights)."""
    from torch.utils.data import DataLoader, Subset

    from .reconstruct import reconstruct

    rows = Subset(train_set, range(min(req.reconstruct, len(train_set))))
    batches = [to_device(x, device) for x, _ in DataLoader(rows, batch_size=min(32, req.config.batch_size))]
    return reconstruct(twin, teacher, taps, batches, seed=req.config.seed)


def _write_outputs(req: TrainRequest, model: onnx.ModelProto, twin: Twin, history, kept, total, extra) -> None:
    from ..writeback import twin_tensors, write_back

    if req.output is not None:
        twin.cpu()
        save_model(write_back(model, twin_tensors(twin), fmt=req.fmt), req.output)
    if req.report is not None:
        report = {
            "model": str(req.model), "dataset": req.dataset, "data_dir": str(req.data_dir) if req.data_dir else None,
            "teacher": str(req.teacher) if req.teacher else None, "temperature": req.temperature,
            "alpha": req.alpha, "loss_weights": req.loss_weights,
            "output": str(req.output) if req.output else None, "config": asdict(req.config),
            "prunable": total, "kept": kept, "density": kept / total if total else 1.0, **extra,
            "epochs": [asdict(r) for r in history],
            "final": asdict(history[-1]) if history else None,
        }
        write_json(report, req.report)
