"""Which channel multiple makes channel-pruned models fastest in onnxruntime (the `--round-to` default).

For each model, prunes to --macs with the default criterion at each --round-to and times onnxruntime
(CPU, batch 1 and 8, one and two threads, median of --runs, dense and pruned alternated in one
process so load hits both alike). Prints, per model and multiple, the MACs kept and the speed-up.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_widths.py [--models mobilenet_v3_small-dynamo] [--multiples 8]
    PYTHONPATH=/tmp/simlib ... scripts/bench_widths.py --multiples 8 --onnxsim   # onnxsim beside, same MACs

Models are torchvision architectures with random weights, exported by torch's default exporter
(torch.export, "-dynamo") and by the TorchScript one ("-torchscript") at 224x224, and a BERT-style
encoder (bert_encoder: 4 layers, width 256, 4 heads, FFN 1024, sequence 128); --onnx adds files.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from onnxprune.structured import prune_channels  # noqa: E402
from onnxprune.structured.latency import latency, session  # noqa: E402
from onnxprune.structured.shapes import input_feeds  # noqa: E402


def bert_encoder(vocab: int = 8000, width: int = 256, heads: int = 4, layers: int = 4, seq: int = 128):
    """A BERT-style encoder in plain torch (token and position embeddings, post-norm GELU layers)."""
    import torch
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.tokens = nn.Embedding(vocab, width)
            self.positions = nn.Parameter(torch.randn(1, seq, width) * 0.02)
            layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu",
                                               batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

        def forward(self, ids):
            return self.encoder(self.tokens(ids) + self.positions)

    return Encoder(), torch.randint(0, vocab, (2, seq))  # batch 2: torch.export specializes a batch of 1


def build(name: str) -> onnx.ModelProto:
    import torch
    import torchvision

    from models.torch_nets import export

    arch, exporter = name.rsplit("-", 1)
    torch.manual_seed(0)
    if arch == "bert_encoder":
        net, example = bert_encoder()
    else:
        net, example = getattr(torchvision.models, arch)(weights=None), torch.randn(1, 3, 224, 224)
    net.eval()
    if exporter == "torchscript":
        return export(net, tuple(example.shape))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(net, (example,), dynamo=True, verbose=False, dynamic_shapes=({0: "batch"},))
    return program.model_proto


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="*", default=["mobilenet_v3_small-dynamo", "resnet18-dynamo",
                                                  "mobilenet_v2-dynamo", "efficientnet_b0-dynamo",
                                                  "bert_encoder-dynamo"])
    p.add_argument("--onnx", nargs="*", default=[], type=Path)
    p.add_argument("--macs", type=float, default=0.5)
    p.add_argument("--multiples", type=int, nargs="+", default=[1, 4, 8, 16])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--runs", type=int, default=15)
    p.add_argument("--onnxsim", action="store_true",
                   help="add a row per model for onnxsim 0.8.1's apply_structured_pruning, its sparsity bisected "
                        "to the same MACs (install aside: see scripts/compare_onnxsim.py)")
    args = p.parse_args()
    models = {name: build(name) for name in args.models}
    models.update({path.stem: onnx.load(str(path)) for path in args.onnx})
    print("| model | round-to | MACs kept | " + " | ".join(f"b{b} t{t}" for b in args.batches for t in args.threads)
          + " |")
    print("|---|---:|---:|" + "---:|" * (len(args.batches) * len(args.threads)))
    for name, model in models.items():
        rows = {}
        for multiple in args.multiples:
            result = prune_channels(model, macs=args.macs, round_to=multiple)
            rows[str(multiple)] = (result.model, result.report["macs"]["kept"] / result.report["macs"]["total"])
        if args.onnxsim:
            from compare_onnxsim import macs, onnxsim_at

            total = macs(model)
            best, note, _ = onnxsim_at(model, args.macs, total)
            rows["onnxsim"] = best if best is not None else (None, note)
        for label, (pruned_model, kept) in rows.items():
            if pruned_model is None:
                print(f"| {name} | {label} | {kept} |", flush=True)
                continue
            cells = []
            for batch in args.batches:
                feeds = input_feeds(model, None, seed=0, batch=batch)
                for threads in args.threads:
                    dense, pruned = latency([session(model, threads), session(pruned_model, threads)], feeds,
                                            args.runs)
                    cells.append(f"{dense / pruned:.2f}x ({1e3 * pruned:.2f} ms)")
            print(f"| {name} | {label} | {kept:.3f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
