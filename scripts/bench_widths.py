"""Which channel multiple makes channel-pruned models fastest in onnxruntime (the `--round-to` default).

For each model, prunes to --macs with the default criterion at each --round-to and times onnxruntime
(CPU, batch 1 and 8, one and two threads, median of --runs, dense and pruned alternated in one
process so load hits both alike). Prints, per model and multiple, the MACs kept and the speed-up.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_widths.py [--models mobilenet_v3_small resnet18]

Models are torchvision architectures with random weights, exported by torch's default exporter
(torch.export, "-dynamo") and by the TorchScript one ("-torchscript") at 224x224; --onnx adds files.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxprune.structured import prune_channels  # noqa: E402
from onnxprune.structured.latency import latency, session  # noqa: E402
from onnxprune.structured.shapes import input_feeds  # noqa: E402


def build(name: str) -> onnx.ModelProto:
    import torch
    import torchvision

    from models.torch_nets import export

    arch, exporter = name.rsplit("-", 1)
    torch.manual_seed(0)
    net = getattr(torchvision.models, arch)(weights=None).eval()
    if exporter == "torchscript":
        return export(net, (1, 3, 224, 224))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(net, (torch.randn(1, 3, 224, 224),), dynamo=True, verbose=False,
                                    dynamic_shapes=({0: "batch"},))
    return program.model_proto


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="*", default=["mobilenet_v3_small-dynamo", "resnet18-dynamo",
                                                  "mobilenet_v2-dynamo", "efficientnet_b0-dynamo"])
    p.add_argument("--onnx", nargs="*", default=[], type=Path)
    p.add_argument("--macs", type=float, default=0.5)
    p.add_argument("--multiples", type=int, nargs="+", default=[1, 4, 8, 16])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--runs", type=int, default=15)
    args = p.parse_args()
    models = {name: build(name) for name in args.models}
    models.update({path.stem: onnx.load(str(path)) for path in args.onnx})
    print("| model | round-to | MACs kept | " + " | ".join(f"b{b} t{t}" for b in args.batches for t in args.threads)
          + " |")
    print("|---|---:|---:|" + "---:|" * (len(args.batches) * len(args.threads)))
    for name, model in models.items():
        for multiple in args.multiples:
            result = prune_channels(model, macs=args.macs, round_to=multiple)
            macs = result.report["macs"]["kept"] / result.report["macs"]["total"]
            cells = []
            for batch in args.batches:
                feeds = input_feeds(model, None, seed=0, batch=batch)
                for threads in args.threads:
                    dense, pruned = latency([session(model, threads), session(result.model, threads)], feeds,
                                            args.runs)
                    cells.append(f"{dense / pruned:.2f}x ({1e3 * pruned:.2f} ms)")
            print(f"| {name} | {multiple} | {macs:.3f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
