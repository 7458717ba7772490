"""timm and transformers models with random weights, exported to ONNX for the real-model corpus (issue 13).

scripts/real_models.py runs this inside a throwaway venv it builds under the corpus cache: that venv
sees the project's torch, onnx and onnxruntime through a .pth file and gets the PINS below installed
with `pip install --no-deps`, so the table means the same files. Nothing comes from a model hub:
timm models are `create_model(name, pretrained=False)` and transformers models `from_config` on a
small config written here, seeded, in eval mode, exported with the TorchScript exporter
(`torch.onnx.export(..., dynamo=False)`, opset 17) with a dynamic batch (and sequence) dim. Each
export is checked with onnx.checker and onnxruntime against torch; one that fails is left out and
its reason written to failed.json beside the models.

    python scripts/export_corpus.py OUT_DIR [--only NAME]

Only the standard library is imported at module level, so that real_models.py can read MODELS,
PINS and SHAPES without torch.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

OPSET = 17
PINS = [
    "timm==1.0.31", "transformers==5.25.0",
    # What the two import (their own dependencies otherwise come from the project's venv).
    "huggingface_hub==2.4.0", "safetensors==0.8.0", "pyyaml==6.0.4", "regex==2026.11.19",
    "tokenizers==0.23.3", "tqdm==4.70.1", "httpx2==2.16.2", "httpcore2==2.16.2", "anyio==4.16.0",
    "idna==3.20", "truststore==0.10.5", "h11==0.16.0",
]

# timm: name -> (image size, create_model keyword arguments). Small images keep SynFlow's
# 100 forward+backward passes cheap; ViT-style models get img_size so the position table matches.
TIMM = {
    "resnet18": (64, {"zero_init_last": False}),  # zero-initialised last BNs would fold to all-zero convs
    "mobilenetv3_small_050": (64, {}),
    "efficientnet_b0": (64, {}),
    "convnext_atto": (64, {}),
    "regnetx_002": (64, {}),
    "ghostnet_050": (64, {}),
    "mobilevit_xxs": (64, {}),
    "deit_tiny_patch16_224": (64, {"img_size": 64}),
    "mixer_s16_224": (64, {"img_size": 64}),
    "densenet121": (64, {}),
}

# transformers: name -> (config class, config keyword arguments, model class, input names).
_TEXT = ["input_ids", "attention_mask"]
TRANSFORMERS = {
    "bert": ("BertConfig", dict(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=128, max_position_embeddings=64), "BertModel", _TEXT),
    # large enough to time (scripts/bench_structured.py --onnx, seq 128): 4 layers x 4 heads, width 256
    "bert_mini": ("BertConfig", dict(vocab_size=1024, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                                     intermediate_size=1024, max_position_embeddings=512), "BertModel", _TEXT),
    "distilbert": ("DistilBertConfig", dict(vocab_size=512, dim=64, n_layers=2, n_heads=4, hidden_dim=128,
                                            max_position_embeddings=64), "DistilBertModel", _TEXT),
    "gpt2": ("GPT2Config", dict(vocab_size=512, n_embd=64, n_layer=2, n_head=4, n_positions=64, use_cache=False,
                            bos_token_id=0, eos_token_id=0),
             "GPT2Model", _TEXT),
    "t5_encoder": ("T5Config", dict(vocab_size=512, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                                    use_cache=False), "T5EncoderModel", _TEXT),
    "vit": ("ViTConfig", dict(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2,
                              num_attention_heads=4, intermediate_size=128), "ViTModel", ["pixel_values"]),
    "bart": ("BartConfig", dict(vocab_size=512, d_model=64, encoder_layers=2, decoder_layers=2,
                                encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                                decoder_ffn_dim=128, max_position_embeddings=64, use_cache=False),
             "BartModel", ["input_ids", "attention_mask", "decoder_input_ids"]),
}

SEQUENCE = 16
# Shapes real_models.py passes for the open dims (file stem -> input -> shape).
SHAPES = {name: {i: ("1x3x32x32" if i == "pixel_values" else f"1x{SEQUENCE}") for i in spec[3]}
          for name, spec in TRANSFORMERS.items()}

# relative path of each export under OUT_DIR
MODELS = [f"timm/{name}.onnx" for name in TIMM] + [f"transformers/{name}.onnx" for name in TRANSFORMERS]


def _timm(name: str):
    import timm
    import torch

    size, kwargs = TIMM[name]
    model = timm.create_model(name, pretrained=False, **kwargs)
    return model, (torch.randn(1, 3, size, size),), ["input"], {"input": {0: "batch"}, "output": {0: "batch"}}


def _transformers(name: str):
    import torch
    import transformers

    config_class, kwargs, model_class, names = TRANSFORMERS[name]
    config = getattr(transformers, config_class)(**kwargs)
    model = getattr(transformers, model_class)._from_config(config, attn_implementation="eager")

    class FirstOutput(torch.nn.Module):  # plain tensors in, the last hidden state out
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *inputs):
            return self.inner(**dict(zip(names, inputs)), return_dict=False)[0]

    args, axes = [], {"output": {0: "batch"}}
    for arg in names:
        if arg == "pixel_values":
            size = kwargs["image_size"]
            args.append(torch.randn(1, 3, size, size))
            axes[arg] = {0: "batch"}
        else:
            ids = torch.randint(0, kwargs["vocab_size"], (1, SEQUENCE)) if arg.endswith("ids") else \
                torch.ones(1, SEQUENCE, dtype=torch.int64)
            args.append(ids)
            axes[arg] = {0: "batch", 1: "decoder_sequence" if arg.startswith("decoder") else "sequence"}
            axes["output"][1] = axes[arg][1]  # the last text input sets the output's length
    return FirstOutput(model), tuple(args), names, axes


def export(relative: str, out: Path) -> None:
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch

    torch.manual_seed(0)
    library, name = relative.removesuffix(".onnx").split("/")
    model, args, names, axes = (_timm if library == "timm" else _transformers)(name)
    model.eval()
    target = out / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    with torch.no_grad():
        expected = model(*args)
        torch.onnx.export(model, args, str(partial), input_names=names, output_names=["output"],
                          dynamic_axes=axes, opset_version=OPSET,
                          do_constant_folding=True, dynamo=False)
    onnx.checker.check_model(str(partial))
    session = ort.InferenceSession(str(partial), providers=["CPUExecutionProvider"])
    got = session.run(None, {n: a.numpy() for n, a in zip(names, args)})[0]
    error = float(np.max(np.abs(got - expected.numpy())))
    if not error < 1e-3:
        raise ValueError(f"onnxruntime differs from torch by {error:.3g}")
    partial.replace(target)
    print(f"exported {relative}: {target.stat().st_size / 1e6:.1f} MB, ORT vs torch {error:.1g}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="Folder the exports go in (the corpus cache).")
    parser.add_argument("--only", default="", help="Export models whose name contains this.")
    args = parser.parse_args()
    failed_file = args.out / "failed.json"
    failed = json.loads(failed_file.read_text()) if failed_file.exists() else {}
    for relative in MODELS:
        if args.only not in relative or (args.out / relative).exists():
            continue
        try:
            export(relative, args.out)
            failed.pop(relative, None)
        except Exception as err:  # noqa: BLE001 (a model that will not export is left out, with its reason)
            traceback.print_exc()
            failed[relative] = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200] if str(err).strip() else ''}"
            print(f"not exported {relative}: {failed[relative]}", file=sys.stderr, flush=True)
        failed_file.write_text(json.dumps(failed, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
