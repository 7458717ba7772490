"""What `--approximate` opens (issue 23): MACs in prunable channels, exact mode vs approximate mode,
and the onnxruntime speed-up of each at --macs 0.5, on transformers and a LayerNorm model from a wheel.

Per model, in both modes: coverage (fraction of Conv/Gemm/MatMul MACs in layers with a prunable
channel on any axis: a layer whose hidden-size axis is frozen still counts through its other axis); then each mode pruned to --macs (default criterion, --best-effort: exact mode may not reach
it), the MACs it kept, the relative L2 deviation approximate mode's report measured before any
recovery, and the speed-up (CPU, batch 1, one thread, median of 15).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/approximate_coverage.py [--models vit_tiny-dynamo ...]

Models: the zoo ViT (torchvision VisionTransformer, tests/zoo.py) by both exporters, the BERT-style
encoder of bench_widths.py by torch.export (its hidden states the output; and with a classifier head), the committed Keras and Flax transformers, a torch.export
AttentionStack, magika 1.0.3's jax2tf file-type classifier (scripts/real_models.py), and the
corpus' transformers (BERT, DistilBERT, GPT-2, T5 encoder, HF ViT, BART: base models, their hidden
states the output) and timm exports (deit, mixer, convnext, mobilevit) where real_models.py built them.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))

from onnxprune.structured import analyze, prune_channels  # noqa: E402
from onnxprune.structured.latency import compare  # noqa: E402


def _zoo(name: str):
    import zoo

    return lambda: (zoo.zoo_model(name), None)


def _bert(classifier: bool):
    """bench_widths' BERT-style encoder; as a classifier (mean over tokens, a 2-way head) its hidden
    size is no graph output, so approximate mode can shrink it."""
    def build():
        import torch

        from bench_widths import bert_encoder

        torch.manual_seed(0)
        encoder, example = bert_encoder()
        net = torch.nn.Sequential(encoder, Pool(), torch.nn.Linear(256, 2)) if classifier else encoder
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(net.eval(), (example,), dynamo=True, verbose=False)
        return program.model_proto, None
    return build


def Pool():
    import torch

    class Mean(torch.nn.Module):
        def forward(self, x):
            return x.mean(1)
    return Mean()


def _stack():
    import torch

    from models.torch_nets import AttentionStack, export

    torch.manual_seed(0)
    return export(AttentionStack(layers=4, d=64, inputs=16, heads=4), (1, 16, 16), dynamo=True), None


def _committed(name: str):
    return lambda: (onnx.load(str(ROOT / "models" / "zoo" / f"{name}.onnx")), None)


def _magika():
    import real_models

    [path] = real_models.fetch({"magika==1.0.3": real_models.PACKAGES["magika==1.0.3"]})
    model = onnx.load(str(path))
    return model, {model.graph.input[0].name: (1, 2048)}


def _corpus(relative: str):
    """A timm / transformers export of the real-model corpus (scripts/real_models.py --list builds them
    in its throwaway venv; random weights, TorchScript exporter), at the corpus' input shapes."""
    def build():
        import real_models

        path = real_models.EXPORTS / relative
        if not path.exists():
            raise FileNotFoundError(f"{path}: run scripts/real_models.py --list first")
        shapes = real_models.SHAPES.get(path.stem, {})
        return onnx.load(str(path)), {k: tuple(int(d) for d in v.split("x")) for k, v in shapes.items()} or None
    return build


CORPUS = {f"{rel.split('/')[0]}-{Path(rel).stem}": _corpus(rel) for rel in
          [f"transformers/{n}.onnx" for n in ("bert", "bert_mini", "distilbert", "gpt2", "t5_encoder", "vit", "bart")]
          + [f"timm/{n}.onnx" for n in ("deit_tiny_patch16_224", "mixer_s16_224", "convnext_atto", "mobilevit_xxs")]}

MODELS = {"vit_tiny-dynamo": _zoo("vit_tiny-dynamo"), "vit_tiny-torchscript": _zoo("vit_tiny-torchscript"),
          "bert_encoder-dynamo": _bert(False), "bert_classifier-dynamo": _bert(True), "attention_stack-dynamo": _stack,
          "keras_transformer": _committed("keras_transformer"), "flax_transformer": _committed("flax_transformer"),
          "magika": _magika, **CORPUS}


def row(name: str, macs: float) -> dict:
    model, shapes = MODELS[name]()
    out = {"model": name}
    for mode, approximate in (("exact", False), ("approximate", True)):
        out[f"{mode}_coverage"] = round(analyze(model, shapes, approximate).coverage(), 3)
        result = prune_channels(model, macs=macs, best_effort=True, input_shapes=shapes, approximate=approximate)
        kept = result.report["macs"]
        out[f"{mode}_macs"] = round(kept["kept"] / kept["total"], 3)
        out[f"{mode}_speedup"] = round(compare(model, result.model, input_shapes=shapes, threads=1, runs=15)["speedup"], 2)
        if approximate:
            out["deviation"] = {k: round(v, 3) for k, v in result.report["approximate"]["deviation"].items()}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--macs", type=float, default=0.5)
    args = p.parse_args()
    for name in args.models:
        try:
            print(json.dumps(row(name, args.macs)), flush=True)
        except Exception as err:  # noqa: BLE001  (a row's failure is its finding)
            print(json.dumps({"model": name, "error": f"{type(err).__name__}: {str(err)[:200]}"}), flush=True)


if __name__ == "__main__":
    main()
