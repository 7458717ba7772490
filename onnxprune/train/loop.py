"""The epoch loop: optimizer, LR drops, per-epoch test accuracy, checkpoints.

The model is a twin with its masks set (params.masks_from_zeros): a masked weight gets a zero gradient
and, for every optimizer here, a zero update (weight decay of a zero is zero), so it stays exactly zero.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from ..errors import DataError
from .batches import GlobalBatches, epoch_seed, share
from .checkpoint import Checkpoint
from .distributed import Dist
from .progress import Reporter

OPTIMIZERS = {
    "sgd": (torch.optim.SGD, {}),
    "momentum": (torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
    "adam": (torch.optim.Adam, {}),
    "rms": (torch.optim.RMSprop, {}),
}


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64  # global: split across processes under torchrun
    optimizer: str = "adam"
    lr: float = 1e-3
    lr_drops: tuple[int, ...] = ()  # epochs after which the LR is multiplied by lr_drop_rate
    lr_drop_rate: float = 0.1
    weight_decay: float = 0.0
    seed: int = 0
    test_batch_size: int = 256
    workers: int = 0


@dataclass
class EpochRecord:
    epoch: int
    lr: float
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    seconds: float


@dataclass
class Objective:
    """Summed per-sample cross-entropy from what the graph outputs: logits (the usual), probabilities
    (a final Softmax) or log-probabilities (a final LogSoftmax)."""

    kind: str = "logits"

    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = out.float()
        if self.kind == "probs":
            return F.nll_loss(out.clamp_min(1e-12).log(), y, reduction="sum")
        if self.kind == "log_probs":
            return F.nll_loss(out, y, reduction="sum")
        return F.cross_entropy(out, y, reduction="sum")


def to_device(x, device: torch.device):
    """A batch's inputs on `device`: one tensor (an image batch) or a list, one per graph input."""
    if isinstance(x, (list, tuple)):
        return [v.to(device, non_blocking=True) for v in x]
    return x.to(device, non_blocking=True)


def call(model, x):
    """The model on one batch: a list is one tensor per graph input, in graph order."""
    return model(*x) if isinstance(x, (list, tuple)) else model(x)


def first_output(out, flatten: bool = True) -> torch.Tensor:
    """The first graph output; as [N, classes] unless not `flatten` ([N, 1, C] and the like flattened)."""
    out = out[0] if isinstance(out, tuple) else out
    return out.reshape(out.shape[0], -1) if flatten and out.dim() > 2 else out


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    cls, extra = OPTIMIZERS[cfg.optimizer]
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **extra)


@dataclass
class Trainer:
    twin: torch.nn.Module
    train_set: Dataset
    test_set: Dataset
    cfg: TrainConfig
    device: torch.device
    dist: Dist = field(default_factory=Dist)
    objective: Objective = field(default_factory=Objective)
    reporter: Reporter = field(default_factory=lambda: Reporter(enabled=False))
    checkpoint: Checkpoint | None = None
    teacher: torch.nn.Module | None = None  # train --teacher: the frozen original (objective: distill.py)
    features: object | None = None  # features.FeatureMatch: per-layer terms, with a teacher

    def __post_init__(self):
        self.model = self.dist.wrap(self.twin, self.device)
        self.optimizer = make_optimizer([p for p in self.twin.parameters() if p.requires_grad], self.cfg)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=list(self.cfg.lr_drops), gamma=self.cfg.lr_drop_rate)
        self.sampler = GlobalBatches(len(self.train_set), self.cfg.batch_size, rank=self.dist.rank,
                                     world=self.dist.world, seed=self.cfg.seed)
        self.history: list[EpochRecord] = []
        self.skipped = 0  # training steps left out: a non-finite gradient
        self.start_epoch = 0

    # ----- checkpoint state -----------------------------------------------------------------------
    def state(self) -> dict:
        return {"model": self.twin.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict()}

    def restore(self, payload: dict) -> None:
        self.twin.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.history = [EpochRecord(**r) for r in payload["history"]]
        self.start_epoch = int(payload["epoch"])

    # ----- loop -----------------------------------------------------------------------------------
    def fit(self) -> list[EpochRecord]:
        loader = DataLoader(self.train_set, batch_sampler=self.sampler, num_workers=self.cfg.workers,
                            pin_memory=self.device.type == "cuda")
        for epoch in range(self.start_epoch, self.cfg.epochs):
            start = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            train_loss, train_acc = self.train_epoch(loader, epoch)
            test_loss, test_acc = self.test()
            self.scheduler.step()
            record = EpochRecord(epoch + 1, lr, train_loss, train_acc, test_loss, test_acc,
                                 time.perf_counter() - start)
            self.history.append(record)
            what = f"{teacher_measure(self.objective)}, " if self.teacher is not None else ""
            self.reporter.line(f"epoch {epoch + 1}/{self.cfg.epochs}  loss {train_loss:.4f}  {what}"
                               f"train {100 * train_acc:.2f} %  test {100 * test_acc:.2f} %  lr {lr:.3g}  "
                               f"{record.seconds:.1f} s")
            if self.checkpoint is not None and self.dist.main:
                self.checkpoint.save(epoch + 1, self.state(), [asdict(r) for r in self.history])
            self.dist.barrier()
        return self.history

    def train_epoch(self, loader: DataLoader, epoch: int) -> tuple[float, float]:
        # Augmentation and dropout draw from the global generator: seeded per epoch (a resumed run
        # draws the same numbers), differently per process.
        torch.manual_seed(epoch_seed(self.cfg.seed, epoch) + 7919 * self.dist.rank)
        self.sampler.set_epoch(epoch)
        sizes = self.sampler.sizes()
        self.model.train()
        totals = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss sum, correct, seen
        with self.reporter.bar(f"epoch {epoch + 1}/{self.cfg.epochs}", len(sizes)) as update:
            for step, ((x, y), n_global) in enumerate(zip(loader, sizes)):
                x, y = to_device(x, self.device), y.to(self.device, non_blocking=True)
                loss, correct = self.loss(call(self.model, x), x, y)
                self.optimizer.zero_grad(set_to_none=True)
                # DDP averages gradients over processes: scaling each share's summed loss by
                # world / global batch makes that average the mean over the whole global batch.
                (loss * (self.dist.world / n_global)).backward()
                if self._finite_gradients():
                    self.optimizer.step()
                else:  # one batch's NaN or inf must not reach the weights that get written
                    self.skipped += 1
                totals += torch.stack([loss.detach().double(), correct.double(),
                                       torch.tensor(float(len(y)), dtype=torch.float64, device=self.device)])
                if step % 10 == 9 or step + 1 == len(sizes):
                    s, c, n = totals.tolist()
                    update(step + 1, f"loss {s / n:.4f}  acc {100 * c / n:.2f} %")
        s, c, n = self.dist.sum(totals.tolist(), self.device)
        return s / max(n, 1), c / max(n, 1)

    def _finite_gradients(self) -> bool:
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        return not grads or bool(torch.stack([g.isfinite().all() for g in grads]).all())

    def loss(self, raw, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed loss, hits): against the labels, or with a teacher against its outputs (hits: the
        same top class as the teacher, as a share of positions for [N, T, C] scores, or for other
        outputs the per-sample cosine: teacher_measure)."""
        out = first_output(raw)
        if self.teacher is None:
            return self.objective(out, y), (out.argmax(1) == y).sum()
        with torch.no_grad():
            target = call(self.teacher, x)
        first = first_output(target)
        if class_scores(self.objective):  # per position for [N, T, C]: the share of positions that agree
            s, t = first_output(raw, flatten=False), first_output(target, flatten=False)
            hits = (s.argmax(-1) == t.argmax(-1)).reshape(len(s), -1).double().mean(1).sum()
        else:  # a map, boxes, an embedding: per-sample cosine, as `compare` measures it
            hits = F.cosine_similarity(out.detach().flatten(1).double(), first.flatten(1).double(), dim=1).sum()
        loss = self.objective(raw, target, y)
        return (loss + self.features.loss() if self.features is not None else loss), hits

    @torch.no_grad()
    def test(self) -> tuple[float, float]:
        """Loss and top-1 accuracy (agreement, with a teacher) on the test set, each process scoring its share."""
        self.dist.sync_buffers(self.twin)  # BN statistics as rank 0 has them (what gets written)
        self.twin.eval()
        part = Subset(self.test_set, share(len(self.test_set), self.dist.rank, self.dist.world).tolist())
        loader = DataLoader(part, batch_size=self.cfg.test_batch_size, num_workers=self.cfg.workers)
        totals = [0.0, 0.0, 0.0]
        for x, y in loader:
            x, y = to_device(x, self.device), y.to(self.device, non_blocking=True)
            loss, correct = self.loss(call(self.twin, x), x, y)
            totals[0] += float(loss)
            totals[1] += float(correct)
            totals[2] += len(y)
        s, c, n = self.dist.sum(totals, self.device)
        return s / max(n, 1), c / max(n, 1)


def class_scores(objective) -> bool:
    """Whether the first output holds class scores (distill.Distillation.kinds; labels: always)."""
    from ..graph.outputs import CLASS_KINDS

    kinds = getattr(objective, "kinds", None)
    return not kinds or kinds[0] in CLASS_KINDS


def teacher_measure(objective) -> str:
    """What the per-epoch figure is with a teacher: top-1 agreement where the first output holds class
    scores, else the mean cosine similarity per sample."""
    return "top-1 agreement with the teacher" if class_scores(objective) else "cosine to the teacher"


def check_classes(out: torch.Tensor, classes: int, name: str) -> None:
    if out.dim() != 2:
        raise DataError(f"model output has shape {list(out.shape)}; training needs [batch, classes]")
    if out.shape[1] < classes:
        raise DataError(f"model outputs {out.shape[1]} classes; {name} has {classes}")
