"""`onnxprune verify PRUNED.onnx [--reference ORIGINAL.onnx]`: is the written model what we meant?

Two checks. (1) onnxruntime and the twin agree on random inputs: the file runs, and runs the graph
the twin ran. (2) With --reference: the pruned file is the original with some weights zeroed: same
graph, opset, IR version, inputs and outputs; every stored tensor bit-identical except entries set
to zero in Conv/ConvTranspose/Gemm/MatMul weights and biases. Exit 1 on any mismatch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np
import onnx
import torch

# Exit status when the check ran and found a mismatch (2 is bad input, 1 an internal error).
VERIFY_FAILED = 3

# ORT computes in float32; the twin in float64 is the reference. float32 rounding grows with depth
# relative to the size of the values, so the bound scales with the output's magnitude.
RTOL = 1e-4


@dataclass
class OutputDiff:
    name: str
    max_diff: float
    scale: float  # max |value| of the twin's output
    ok: bool


@dataclass
class ReferenceCheck:
    problems: list[str] = field(default_factory=list)
    pruned_tensors: int = 0  # tensors with entries zeroed
    zeroed: int = 0  # entries zeroed across them
    identical: int = 0  # tensors bit-identical to the original


def ort_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: ORT warns about harmless things (initializers as inputs)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def compare_with_ort(path: Path, model: onnx.ModelProto, *, input_shapes=None, seed: int = 0,
                     rtol: float = RTOL) -> list[OutputDiff]:
    """Run ORT (float32, CPU) and the float64 twin on the same random inputs; max |diff| per output."""
    from ..api import example_feeds, resolve_shapes
    from ..twin import Twin

    twin = Twin(model, dtype=torch.float64).eval()
    feeds = example_feeds(twin, resolve_shapes(twin, input_shapes), seed=seed)
    ort_out = ort_session(path).run(None, {name: value.numpy() for name, value in feeds.items()})
    with torch.no_grad():
        twin_out = twin.run(feeds)
    diffs = []
    for (name, ref), got in zip(twin_out.items(), ort_out):
        ref = ref.detach().cpu().numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref)
        got = np.asarray(got)
        if ref.shape != got.shape:
            diffs.append(OutputDiff(name, float("inf"), 0.0, False))
            continue
        if ref.dtype.kind in "fc":
            diff = float(np.max(np.abs(got.astype(np.float64) - ref))) if ref.size else 0.0
            scale = float(np.max(np.abs(ref))) if ref.size else 0.0
            ok = bool(np.all(np.isfinite(got) == np.isfinite(ref))) and diff <= rtol * max(scale, 1e-30)
            diffs.append(OutputDiff(name, diff, scale, ok or diff == 0.0))
        else:
            equal = np.array_equal(got, ref)
            diffs.append(OutputDiff(name, 0.0 if equal else float("inf"), 0.0, equal))
    return diffs


def compare_with_reference(pruned: onnx.ModelProto, original: onnx.ModelProto) -> ReferenceCheck:
    """The pruned model must be the original with some weight entries set to zero, nothing else."""
    from ..twin.sources import weight_uses
    from ..writeback import stored_tensors

    check = ReferenceCheck()
    for what, a, b in (("IR version", pruned.ir_version, original.ir_version),
                       ("opsets", _opsets(pruned), _opsets(original)),
                       ("inputs", _ser(pruned.graph.input), _ser(original.graph.input)),
                       ("outputs", _ser(pruned.graph.output), _ser(original.graph.output)),
                       ("metadata", _ser(pruned.metadata_props), _ser(original.metadata_props))):
        if a != b:
            check.problems.append(f"{what} differ from the reference")
    new, old = stored_tensors(pruned.graph), stored_tensors(original.graph)
    # Write-back turns a pruned Constant / ConstantOfShape node into an initializer of the same name.
    became_initializers = {n for n, (kind, _) in old.items() if kind == "node" and new.get(n, ("node",))[0] != "node"}
    old_nodes = [n for n in original.graph.node if not (n.output and n.output[0] in became_initializers)]
    if _ser(pruned.graph.node) != _ser(old_nodes):
        check.problems.append("nodes differ from the reference")
    prunable = {u.source for u in weight_uses(original.graph)}
    freed = {n.input[0] for n in original.graph.node if n.op_type == "ConstantOfShape"
             and n.output[0] in became_initializers}
    for name, (_, before) in old.items():
        if name not in new:
            if name not in freed:
                check.problems.append(f"tensor '{name}' is missing")
            continue
        _compare_tensor(check, name, new[name][1], before, name in prunable)
    extra = sorted(set(new) - set(old))
    if extra:
        check.problems.append(f"tensors not in the reference: {extra[:5]}")
    return check


def _compare_tensor(check: ReferenceCheck, name: str, after: np.ndarray, before: np.ndarray, prunable: bool) -> None:
    if after.dtype != before.dtype or after.shape != before.shape:
        check.problems.append(f"tensor '{name}': {after.dtype}{list(after.shape)} vs reference "
                              f"{before.dtype}{list(before.shape)}")
        return
    bits = f"u{after.itemsize}" if after.itemsize in (1, 2, 4, 8) else None
    if bits is None:
        same = np.frombuffer(after.tobytes(), np.uint8) == np.frombuffer(before.tobytes(), np.uint8)
        if not same.all():
            check.problems.append(f"tensor '{name}' differs")
        return
    differ = np.frombuffer(after.tobytes(), bits) != np.frombuffer(before.tobytes(), bits)
    if not differ.any():
        check.identical += 1
        return
    zero = after.reshape(-1).astype(np.float64) == 0 if after.dtype.kind != "b" else ~after.reshape(-1)
    if not prunable or not np.all(zero[differ]):
        what = "a non-prunable tensor changed" if not prunable else "kept entries differ from the reference"
        check.problems.append(f"tensor '{name}': {what} ({int(differ.sum())} entries)")
        return
    check.pruned_tensors += 1
    check.zeroed += int(differ.sum())


def _opsets(model: onnx.ModelProto) -> dict[str, int]:
    return {("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import}


def _ser(items) -> list[bytes]:
    return [item.SerializeToString(deterministic=True) for item in items]


@click.command("verify")
@click.argument("pruned", type=click.Path(path_type=Path))
@click.option("-r", "--reference", type=click.Path(path_type=Path),
              help="The original model: check PRUNED is it with some weights zeroed, all else bit-identical.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=1x3x224x224",
              help="Concrete shape of an input (repeatable); needed when a non-batch dim is symbolic.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random inputs.")
@click.option("--rtol", type=click.FloatRange(min=0), default=RTOL, show_default=True,
              help="Allowed max |ORT - twin| relative to the output's max |value|.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.pass_context
def verify(ctx: click.Context, pruned: Path, reference: Path | None, input_shapes, seed: int, rtol: float,
           as_json: bool) -> None:
    """Check PRUNED runs in onnxruntime exactly like the twin (and, with --reference, is the original
    with zeroed weights). Exit 1 on mismatch."""
    from ..io import load_model
    from .prune import parse_input_shape

    shapes = dict(parse_input_shape(text) for text in input_shapes)
    model = load_model(pruned)
    original = load_model(reference) if reference is not None else None
    diffs = compare_with_ort(pruned, model, input_shapes=shapes, seed=seed, rtol=rtol)
    ref = compare_with_reference(model, original) if original is not None else None
    ok = all(d.ok for d in diffs) and (ref is None or not ref.problems)
    if as_json:
        click.echo(json.dumps(_as_dict(diffs, ref, ok, rtol), indent=2))
    else:
        _print(diffs, ref, ok, rtol, reference)
    ctx.exit(0 if ok else VERIFY_FAILED)


def _as_dict(diffs, ref, ok, rtol) -> dict[str, Any]:
    out: dict[str, Any] = {"ok": ok, "rtol": rtol, "outputs": [d.__dict__ for d in diffs]}
    if ref is not None:
        out["reference"] = ref.__dict__
    return out


def _print(diffs, ref, ok, rtol, reference) -> None:
    click.echo("onnxruntime (float32) vs twin (float64) on random inputs:")
    for d in diffs:
        click.echo(f"  {d.name}: max |diff| {d.max_diff:.3g} (max |value| {d.scale:.3g}, "
                   f"allowed {rtol * d.scale:.3g})  {'ok' if d.ok else 'MISMATCH'}")
    if ref is not None:
        click.echo(f"reference {reference}: {ref.pruned_tensors} tensor(s) pruned ({ref.zeroed:,} entries zeroed), "
                   f"{ref.identical} bit-identical")
        for problem in ref.problems:
            click.echo(f"  MISMATCH: {problem}")
    click.echo("verified" if ok else "verify failed")
