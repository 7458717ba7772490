"""Channel choice on trained networks: every onnxprune criterion beside Torch-Pruning, right after
pruning and after one labelled epoch of `onnxprune train`.

Models, all trained on the repository's MNIST-10k (tests/data/mnist10k.npz, 8,000 train / 2,000 test):
LeNet-5 trained in plain torch (one per --seeds), a BatchNorm ResNet-8 trained in plain torch, and the
zoo LeNet-5 (models/zoo/lenet5.onnx) trained with `onnxprune train` itself. Each is pruned to 0.75,
0.5 and 0.25 of its Conv/Gemm MACs by every criterion and ranking; accuracy is onnxruntime top-1 on
the 2,000 test images, right after pruning and after one epoch of `onnxprune train` (Adam 1e-3,
batch 64) on the pruned file. Taylor scores on 4 batches of 64 training images, labels unused.

Torch-Pruning is never a dependency: install it aside and point at it,
    .venv/bin/pip install --target /tmp/tp --no-deps torch-pruning==1.6.1
    OMP_NUM_THREADS=2 .venv/bin/python scripts/trained_choice.py --torch-pruning /tmp/tp [--json out.json]
It prunes the torch models with its GroupMagnitudeImportance (group L2, mean reduction and
normalization), one ratio for every layer, the classifier kept, the ratio bisected until its own MAC
counter keeps the target; the result is exported to ONNX, checked with onnxprune's MAC counter, and
recovered by the same `onnxprune train` epoch.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.torch_nets import LeNet5, ResNet20, export  # noqa: E402
from onnxprune.io import save_model  # noqa: E402
from onnxprune.structured import analyze, cost, prune_channels  # noqa: E402
from onnxprune.train.data import load_dataset  # noqa: E402
from onnxprune.train.loop import TrainConfig  # noqa: E402
from onnxprune.train.run import TrainRequest, train  # noqa: E402
from onnxprune.twin.module import InputSpec  # noqa: E402

DATA = ROOT / "tests" / "data" / "mnist10k.npz"
TARGETS = (0.75, 0.5, 0.25)
CRITERIA = (("l2", "local"), ("l1", "local"), ("bn", "local"), ("taylor", "local"), ("l2", "global"),
            ("taylor", "global"), ("mag", "global"), ("synflow", "global"))
SPEC = InputSpec("input", 1, ("N", 1, 28, 28))


def mnist(train_split: bool):
    data = load_dataset("npz", DATA, train=train_split, input_spec=SPEC, augment=False)
    return data.x, data.targets


def torch_trained(make, seed: int, epochs: int) -> torch.nn.Module:
    x, y = mnist(True)
    torch.manual_seed(seed)
    net = make()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = order[i:i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    return net.eval()


def accuracy(model: onnx.ModelProto | Path) -> float:
    x, y = mnist(False)
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    return float((out.argmax(1) == y.numpy()).mean())


def macs(model: onnx.ModelProto) -> float:
    """onnxprune's MAC counter (Conv/Gemm/MatMul, per sample)."""
    cg = analyze(model)
    return cost(cg, np.zeros(cg.n_channels, bool), "macs")[1] / cg.batch


def recovered(model: onnx.ModelProto, folder: Path, seed: int = 0, epochs: int = 1) -> float:
    """Top-1 after `epochs` labelled epochs of onnxprune train."""
    src, out = folder / "pruned.onnx", folder / "recovered.onnx"
    save_model(model, src)
    train(TrainRequest(model=src, dataset="npz", data_dir=DATA, config=TrainConfig(epochs=epochs, seed=seed),
                       device="cpu", output=out, quiet=True), warn=lambda _: None)
    return accuracy(out)


def tool_trained_zoo_lenet(folder: Path, epochs: int) -> onnx.ModelProto:
    out = folder / "zoo_lenet.trained.onnx"
    train(TrainRequest(model=ROOT / "models" / "zoo" / "lenet5.onnx", dataset="npz", data_dir=DATA,
                       config=TrainConfig(epochs=epochs), device="cpu", output=out, quiet=True), warn=lambda _: None)
    return onnx.load(str(out))


def taylor_batches(n: int = 4, size: int = 64, seed: int = 0):
    x, y = mnist(True)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    return [(x[order[i * size:(i + 1) * size]], y[order[i * size:(i + 1) * size]]) for i in range(n)]


def torch_pruning_row(tp, net: torch.nn.Module, target: float, folder: Path, epochs: tuple[int, ...] = ()) -> dict:
    """Torch-Pruning at one ratio for every layer, the ratio bisected to keep `target` of its MACs."""
    example = torch.randn(1, 1, 28, 28)
    dense = tp.utils.count_ops_and_params(net, example)[0]

    def pruned(ratio):
        model = copy.deepcopy(net)
        pruner = tp.pruner.MetaPruner(model, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                      pruning_ratio=ratio, ignored_layers=[_classifier(model)], global_pruning=False)
        pruner.step()
        return model, tp.utils.count_ops_and_params(model, example)[0] / dense

    lo, hi = 0.0, 0.99
    best = None
    for _ in range(14):
        mid = (lo + hi) / 2
        model, kept = pruned(mid)
        if kept <= target:
            best, hi = (model, kept, mid), mid
        else:
            lo = mid
    model, kept, ratio = best
    onx = export(model.eval(), (1, 1, 28, 28))
    return {"ratio": ratio, "macs_tp": kept, "macs": macs(onx) / macs(export(net, (1, 1, 28, 28))),
            "pruned": accuracy(onx), "recovered": recovered(onx, folder),
            **{f"finetuned_{e}": recovered(onx, folder, epochs=e) for e in epochs}}


def _classifier(model):
    return model.classifier[-1] if isinstance(model, LeNet5) else model.fc


def channel_agreement(tp, net: torch.nn.Module, onx: onnx.ModelProto) -> list[dict]:
    """Per prunable group of LeNet-5, the rank correlation of onnxprune's l2 channel scores with
    Torch-Pruning's group importance on the same weights, and how many of the lower half agree."""
    from onnxprune.structured.importance import importance
    from onnxprune.structured.select import home_layers

    cg = analyze(onx)
    ours = importance(cg, "l2")
    home = home_layers(cg)
    graph = tp.DependencyGraph().build_dependency(net, example_inputs=torch.randn(1, 1, 28, 28))
    imp = tp.importance.GroupMagnitudeImportance(p=2)
    rows = []
    layers = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))][:-1]
    for layer, module in enumerate(layers):
        fn = tp.prune_conv_out_channels if isinstance(module, torch.nn.Conv2d) else tp.prune_linear_out_channels
        n = module.weight.shape[0]
        theirs = imp(graph.get_pruning_group(module, fn, idxs=list(range(n)))).numpy()
        mine = ours[np.flatnonzero(home == layer)]
        rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
        rho = float(np.corrcoef(rank(mine), rank(theirs))[0, 1])
        low = set(np.argsort(mine)[: n // 2].tolist()) & set(np.argsort(theirs)[: n // 2].tolist())
        rows.append({"layer": layer, "channels": n, "spearman": rho, "lower_half_shared": len(low)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3, help="training epochs of the dense models")
    parser.add_argument("--torch-pruning", type=Path, help="a folder holding torch_pruning (pip --target)")
    parser.add_argument("--models", nargs="*", help="a subset: lenet-s0 ... resnet8 zoo-lenet")
    parser.add_argument("--no-recovery", action="store_true", help="skip the one-epoch recovery")
    parser.add_argument("--criteria", nargs="*", help="a subset, as method-scope: taylor-local taylor-global ...")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(2)
    tp = None
    if args.torch_pruning:
        sys.path.append(str(args.torch_pruning))
        import torch_pruning as tp
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        nets = {f"lenet-s{s}": (lambda s=s: torch_trained(LeNet5, s, args.epochs)) for s in args.seeds}
        nets["resnet8"] = lambda: torch_trained(lambda: ResNet20(per_stage=1, in_channels=1), 0, args.epochs)
        nets["zoo-lenet"] = None
        rows = []
        for name, make in nets.items():
            if args.models and name not in args.models:
                continue
            start = time.perf_counter()
            net = make() if make else None
            onx = export(net, (1, 1, 28, 28)) if net is not None else tool_trained_zoo_lenet(folder, args.epochs)
            dense = accuracy(onx)
            print(f"{name}: dense {dense:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
            if tp is not None and name == "lenet-s0":
                for row in channel_agreement(tp, net, onx):
                    print(f"  l2 vs Torch-Pruning group importance: {row}", flush=True)
            for target in TARGETS:
                for method, scope in (c for c in CRITERIA if not args.criteria or "-".join(c) in args.criteria):
                    batches = taylor_batches() if method == "taylor" else None
                    result = prune_channels(onx, method=method, scope=scope, macs=target, batches=batches)
                    row = {"model": name, "dense": dense, "target": target, "tool": "onnxprune",
                           "criterion": f"{method}-{scope}", "macs": result.report["macs"]["kept"] /
                           result.report["macs"]["total"], "pruned": accuracy(result.model),
                           "widths": [la["kept"] for la in result.report["layers"]]}
                    row["recovered"] = None if args.no_recovery else recovered(result.model, folder)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                if tp is not None and net is not None:
                    row = {"model": name, "dense": dense, "target": target, "tool": "torch-pruning",
                           "criterion": "group-l2-local", **torch_pruning_row(tp, net, target, folder)}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


def print_table(rows: list[dict]) -> None:
    """Per model kind (LeNet seeds averaged), target and criterion: pruned -> recovered accuracy."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        kind = "lenet (torch, mean of seeds)" if row["model"].startswith("lenet-s") else row["model"]
        groups.setdefault((kind, row["target"], f"{row['tool']} {row['criterion']}"), []).append(row)
    print("| model | MACs | criterion | after pruning | after 1 epoch | seeds (after pruning) |")
    print("|---|---:|---|---:|---:|---|")
    for (kind, target, criterion), members in groups.items():
        pruned = statistics.mean(r["pruned"] for r in members)
        rec = [r["recovered"] for r in members if r["recovered"] is not None]
        seeds = " ".join(f"{100 * r['pruned']:.1f}" for r in members)
        print(f"| {kind} | {target} | {criterion} | {100 * pruned:.2f} % | "
              f"{f'{100 * statistics.mean(rec):.2f} %' if rec else '-'} | {seeds} |")


if __name__ == "__main__":
    main()
