"""`onnxprune verify PRUNED --reference ORIGINAL` on a channel-pruned file, through the installed command.

The pruned file records which channels it lost (structured/record.py); verify rebuilds the original
with them zeroed and compares the two in onnxruntime. A weight changed after pruning, or a record
naming other channels than the ones removed, must fail with exit 3.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import zoo
from onnxprune.structured.record import KEY, recorded

EXE = str(Path(sys.executable).parent / "onnxprune")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=300)


def _pruned(tmp_path: Path) -> tuple[Path, Path]:
    src = zoo.ZOO_DIR / "lenet5.onnx"
    out = tmp_path / "small.onnx"
    done = _run("prune", str(src), "--structure", "channel", "--macs", "0.5", "-m", "mag", "-o", str(out), "-q")
    assert done.returncode == 0, done.stderr
    return src, out


def test_channel_pruned_model_verifies_against_its_original(tmp_path):
    src, out = _pruned(tmp_path)
    done = _run("verify", str(out), "--reference", str(src), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    ref = json.loads(done.stdout)["reference"]
    [entries] = recorded(onnx.load(str(out)))
    assert ref["channels"] == sum(len(e["removed"]) for e in entries if e["zero"]) > 0
    assert ref["max_rel_diff"] <= 1e-5 and not ref["problems"]


def test_a_weight_changed_after_channel_pruning_fails(tmp_path):
    src, out = _pruned(tmp_path)
    model = onnx.load(str(out))
    tensor = next(t for t in model.graph.initializer if len(t.dims) == 4)
    value = numpy_helper.to_array(tensor).copy()
    value.flat[0] += 0.5
    tensor.CopyFrom(numpy_helper.from_array(value, tensor.name))
    onnx.save(model, str(out))
    done = _run("verify", str(out), "--reference", str(src))
    assert done.returncode == 3, done.stdout + done.stderr
    assert "kept entries differ from the reference (1 entries)" in done.stdout


def test_a_record_naming_other_channels_fails(tmp_path):
    src, out = _pruned(tmp_path)
    model = onnx.load(str(out))
    prop = next(p for p in model.metadata_props if p.key == KEY)
    [entries] = json.loads(prop.value)["steps"]
    conv = next(e for e in entries if e["tensor"] == entries[0]["tensor"])  # the first Conv filter's record
    size = next(len(numpy_helper.to_array(t)) for t in onnx.load(str(src)).graph.initializer
                if t.name == conv["tensor"])
    kept = sorted(set(range(size)) - set(conv["removed"]))
    for e in entries:  # claim the same number of channels went, but others
        if e["tensor"].rsplit(".", 1)[0] == conv["tensor"].rsplit(".", 1)[0] and e["axis"] == 0:
            e["removed"] = kept[:len(e["removed"])]
    prop.value = json.dumps({"steps": [entries]})
    onnx.save(model, str(out))
    done = _run("verify", str(out), "--reference", str(src))
    assert done.returncode == 3, done.stdout + done.stderr


def test_a_weight_pruned_file_still_gets_the_bitwise_check(tmp_path):
    src = zoo.ZOO_DIR / "lenet5.onnx"
    out = tmp_path / "w.onnx"
    assert _run("prune", str(src), "-c", "1", "-m", "mag", "-o", str(out), "-q").returncode == 0
    done = _run("verify", str(out), "--reference", str(src), "--json")
    assert done.returncode == 0
    ref = json.loads(done.stdout)["reference"]
    assert ref["max_rel_diff"] is None and ref["zeroed"] > 0 and ref["channels"] == 0
    assert np.isfinite(ref["zeroed"])


def test_attention_heads_pruned_per_layer_verify(tmp_path):
    """Two attention blocks lose different heads: each Reshape reads its own copy of the shared
    head-count constant (`<name>_prunedK`), and verify still matches the graph node for node."""
    from onnxprune.structured import analyze, rewrite
    from onnxprune.structured.record import record, removed_slices
    from test_structured_heads import D, TwoBlocks, build

    model = build(TwoBlocks())
    cg = analyze(model)
    removed = np.zeros(cg.n_channels, bool)
    removed[[cg.keys()[("a.q.weight", 0)][0], *cg.keys()[("b.q.weight", 0)][[0, D]]]] = True  # 1 head, 2 heads
    pruned = rewrite(cg, removed)
    record(pruned, [removed_slices(cg, removed)])
    assert any(i.endswith("_pruned0") for n in pruned.graph.node for i in n.input)
    src, out = tmp_path / "blocks.onnx", tmp_path / "small.onnx"
    onnx.save(model, str(src))
    onnx.save(pruned, str(out))
    done = _run("verify", str(out), "--reference", str(src))
    assert done.returncode == 0, done.stdout + done.stderr
    removed[cg.keys()[("a.q.weight", 0)][D]] = True  # a record claiming one more head than the file lost
    record(pruned, [removed_slices(cg, removed)])
    onnx.save(pruned, str(out))
    assert _run("verify", str(out), "--reference", str(src)).returncode == 3


def test_a_record_from_before_steps_still_verifies(tmp_path):
    """Files written before chains of prunes hold one bare list of parameter entries."""
    src, out = _pruned(tmp_path)
    model = onnx.load(str(out))
    prop = next(p for p in model.metadata_props if p.key == KEY)
    [entries] = json.loads(prop.value)["steps"]
    prop.value = json.dumps([{k: e[k] for k in ("tensor", "axis", "removed")} for e in entries if e["zero"]])
    onnx.save(model, str(out))
    done = _run("verify", str(out), "--reference", str(src))
    assert done.returncode == 0, done.stdout + done.stderr


CHAINS = {"channel-channel": (["--structure", "channel", "--macs", "0.6"], ["--structure", "channel", "--macs", "0.6"]),
          "channel-weight": (["--structure", "channel", "--macs", "0.5"], ["-c", "1"]),
          "weight-channel": (["-c", "0.5"], ["--structure", "channel", "--macs", "0.5"])}


@pytest.mark.parametrize("chain", CHAINS)
def test_a_chain_of_prunes_verifies_against_every_earlier_file(tmp_path, chain):
    """Before: the second prune's file failed against the original (rel diff 1 or 2.63) and was judged
    as weight-pruned against the first. Now each channel prune appends a step to the record, and verify
    passes against either earlier file; a file that is not an ancestor is refused."""
    first_args, second_args = CHAINS[chain]
    src, first, second = zoo.ZOO_DIR / "lenet5.onnx", tmp_path / "first.onnx", tmp_path / "second.onnx"
    for a, b, extra in ((src, first, first_args), (first, second, second_args)):
        done = _run("prune", str(a), *extra, "-m", "mag", "-o", str(b), "-q")
        assert done.returncode == 0, done.stderr
    assert len(recorded(onnx.load(str(second)))) == sum("channel" in args for args in CHAINS[chain])
    for reference in (src, first):
        done = _run("verify", str(second), "--reference", str(reference), "--json")
        assert done.returncode == 0, f"{reference.name}: {done.stdout} {done.stderr}"
        ref = json.loads(done.stdout)["reference"]
        assert not ref["problems"] and (ref["channels"] > 0 or ref["zeroed"] > 0)
    done = _run("verify", str(first), "--reference", str(second))
    assert done.returncode == 3, done.stdout + done.stderr
