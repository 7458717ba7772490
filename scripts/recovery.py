"""Recovery of a channel-pruned trained LeNet-5: label-free distillation (`train --teacher`) against
labelled fine-tuning, and Torch-Pruning with the same labelled epochs; plus what a recovery epoch costs.

LeNet-5 trained in plain torch on MNIST-10k (as scripts/trained_choice.py does), channel-pruned to 0.5
and 0.25 of its MACs with the default criterion given data (taylor, per layer) at exact widths
(`--round-to 1`: rounding to 8 costs this small net accuracy, README); then 1 and 3 epochs of
`onnxprune train --teacher` on the 8,000 training images without labels, and 1 and 3 labelled epochs
of `onnxprune train`. Accuracy and top-1 agreement with the dense model are measured in onnxruntime
on the 2,000 held-out images. Torch-Pruning (group L2, same ratio per layer, installed aside) gets
the same labelled epochs. The cost line compares the seconds of one `train --teacher` epoch (its
held-out evaluation included) with a plain torch epoch of the same pruned widths plus one teacher
forward per batch and the same evaluation, median of 3.

    .venv/bin/pip install --target /tmp/tp --no-deps torch-pruning==1.6.1   # optional
    OMP_NUM_THREADS=2 .venv/bin/python scripts/recovery.py [--torch-pruning /tmp/tp] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trained_choice import (DATA, accuracy, mnist, taylor_batches, torch_pruning_row,  # noqa: E402
                            torch_trained)

from models.torch_nets import LeNet5, export  # noqa: E402
from onnxprune.fidelity import compare, load_inputs  # noqa: E402
from onnxprune.io import save_model  # noqa: E402
from onnxprune.structured import prune_channels  # noqa: E402
from onnxprune.train.loop import TrainConfig  # noqa: E402
from onnxprune.train.run import TrainRequest, train  # noqa: E402


def trained(src: Path, out: Path, epochs: int, teacher: Path | None, data: Path) -> tuple[float, float]:
    """(top-1 accuracy, seconds of the last epoch) after `epochs` of onnxprune train."""
    result = train(TrainRequest(model=src, dataset="npz", data_dir=data, config=TrainConfig(epochs=epochs),
                                device="cpu", output=out, quiet=True, teacher=teacher), warn=lambda _: None)
    return accuracy(out), result.history[-1].seconds


def agreement(model: Path, dense: Path, unlabelled: Path) -> float:
    original = onnx.load(str(dense))
    return compare(onnx.load(str(model)), original, load_inputs(unlabelled, original))["agreement"]


class Widths(nn.Module):
    """LeNet-5 with the pruned widths, for the plain torch epoch."""

    def __init__(self, c1: int, c2: int, f1: int, f2: int):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, c1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(c1, c2, 5), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c2 * 25, f1), nn.ReLU(), nn.Linear(f1, f2), nn.ReLU(),
                                        nn.Linear(f2, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


def torch_epoch(student: nn.Module, teacher: nn.Module) -> float:
    """Seconds of one distillation epoch in plain torch (Adam, batch 64) and a held-out pass."""
    x, _ = mnist(True)
    xt, _ = mnist(False)
    opt = torch.optim.Adam(student.parameters(), 1e-3)
    start = time.perf_counter()
    student.train()
    for i in range(0, len(x), 64):
        batch = x[i:i + 64]
        with torch.no_grad():
            target = F.log_softmax(teacher(batch), 1)
        loss = F.kl_div(F.log_softmax(student(batch), 1), target, log_target=True, reduction="sum")
        opt.zero_grad()
        loss.backward()
        opt.step()
    student.eval()
    with torch.no_grad():
        for i in range(0, len(xt), 256):
            teacher(xt[i:i + 256]).argmax(1).eq(student(xt[i:i + 256]).argmax(1)).sum()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--torch-pruning", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--epochs", type=int, default=3, help="training epochs of the dense model")
    args = parser.parse_args()
    torch.set_num_threads(2)
    tp = None
    if args.torch_pruning:
        sys.path.append(str(args.torch_pruning))
        import torch_pruning as tp
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        x = np.load(DATA)
        unlabelled = folder / "unlabelled.npz"
        np.savez(unlabelled, x_train=x["x_train"], x_test=x["x_test"])
        net = torch_trained(LeNet5, 0, args.epochs)
        dense = folder / "dense.onnx"
        save_model(export(net, (1, 1, 28, 28)), dense)
        print(f"dense: {accuracy(dense):.4f}", flush=True)
        for target in (0.5, 0.25):
            result = prune_channels(onnx.load(str(dense)), macs=target, batches=taylor_batches(), round_to=1)
            pruned = folder / f"pruned{target}.onnx"
            save_model(result.model, pruned)
            row = {"target": target, "tool": "onnxprune", "criterion": result.report["method"],
                   "pruned": accuracy(pruned), "pruned_agreement": agreement(pruned, dense, unlabelled)}
            for epochs in (1, 3):
                for mode, teacher, data in (("distilled", dense, unlabelled), ("finetuned", None, DATA)):
                    out = folder / f"{mode}{target}_{epochs}.onnx"
                    acc, seconds = trained(pruned, out, epochs, teacher, data)
                    row[f"{mode}_{epochs}"] = acc
                    row[f"{mode}_{epochs}_agreement"] = agreement(out, dense, unlabelled)
                    if mode == "distilled" and epochs == 1:
                        row["distill_epoch_s"] = [seconds] + [trained(pruned, out, 1, teacher, data)[1]
                                                              for _ in range(2)]
            widths = [la["kept"] for la in result.report["layers"]][:4]
            row["torch_epoch_s"] = [torch_epoch(Widths(*widths), net.eval()) for _ in range(3)]
            row["epoch_cost"] = statistics.median(row["distill_epoch_s"]) / statistics.median(row["torch_epoch_s"])
            rows.append(row)
            print(json.dumps(row), flush=True)
            if tp is not None:
                theirs = torch_pruning_row(tp, net, target, folder, epochs=(3,))
                rows.append({"target": target, "tool": "torch-pruning", **theirs})
                print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
