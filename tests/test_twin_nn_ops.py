"""The NN op families against onnxruntime on random geometries: Conv, ConvTranspose, the pools (ceil
mode, dilations, asymmetric pads, auto_pad, argmax indices), normalizations, activations and the
Softmax family across opsets. The backend conformance cases cover the spec's examples; these cover the
combinations exporters produce and where onnxruntime's kernels are the reference users run.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from onnxprune.twin import Twin

# float32 single ops: both sides round once per multiply-add or transcendental; sums here are short
# (<= 100 terms), so differences stay within a few ulp of the result scale (1e-6 relative); 1e-5
# leaves margin without hiding a wrong window, pad or axis (errors of order 1).
TOL = 1e-5


def single_node(op: str, inputs: dict[str, np.ndarray], attrs: dict, *, opset: int = 22, n_outputs: int = 1,
                domain: str = ""):
    types = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int64): TensorProto.INT64}
    outs = [f"y{i}" for i in range(n_outputs)]
    node = helper.make_node(op, list(inputs), outs, domain=domain, **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, types[a.dtype], a.shape)
                                            for n, a in inputs.items()],
                              [helper.make_empty_tensor_value_info(o) for o in outs])
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=opsets, ir_version=10)


def ort_or_none(model, feeds):
    """onnxruntime's outputs, or None where it refuses the configuration (then nothing to compare)."""
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return session.run(None, feeds)
    except Exception:  # noqa: BLE001 (onnxruntime raises several unrelated types for invalid configs)
        return None


def assert_matches_ort(model, feeds) -> bool:
    refs = ort_or_none(model, feeds)
    if refs is None:
        return False
    got = [t.numpy() for t in Twin(model).run(feeds).values()]
    for value, ref in zip(got, refs, strict=True):
        assert value.shape == ref.shape, model.graph.node[0]
        if ref.dtype.kind == "f":
            scale = max(float(np.abs(ref).max(initial=0)), 1.0)
            assert np.abs(value - ref).max(initial=0) <= TOL * scale, model.graph.node[0]
        else:
            np.testing.assert_array_equal(value, ref)
    return True


def _ints(values) -> list[int]:
    return [int(v) for v in values]


# ----- windows ----------------------------------------------------------------------------------------------
def pool_case(rng, op):
    nd = int(rng.integers(1, 4))
    kernel, strides = _ints(rng.integers(1, 4, nd)), _ints(rng.integers(1, 4, nd))
    sizes = _ints(rng.integers(3, 9, nd))
    attrs = {"kernel_shape": kernel, "strides": strides}
    dilations = _ints(rng.integers(1, 3, nd)) if rng.random() < 0.5 else [1] * nd
    if rng.random() < 0.25:
        attrs["auto_pad"] = str(rng.choice(["SAME_UPPER", "SAME_LOWER", "VALID"]))
        same = attrs["auto_pad"] != "VALID"
        # onnxruntime's pools mis-place SAME windows with dilations or when the input needs no padding
        # (it ignores the dilation / shifts windows; its Conv does not): the spec is followed there.
        if same and (set(dilations) != {1} or any((-(-i // s) - 1) * s + k < i
                                                  for i, s, k in zip(sizes, strides, kernel))):
            return None
        pads = [0] * (2 * nd)
    else:
        pads = [int(rng.integers(0, k)) for k in kernel + kernel]  # begins, ends: asymmetric too
        attrs.update(pads=pads, ceil_mode=int(rng.integers(0, 2)))
    if set(dilations) != {1}:
        attrs["dilations"] = dilations
    if any(d * (k - 1) + 1 > i + pads[j] + pads[j + nd] for j, (d, k, i) in enumerate(zip(dilations, kernel, sizes))):
        return None  # window larger than the padded input: invalid, implementations disagree
    n_outputs = 1
    if op == "AveragePool":
        attrs["count_include_pad"] = int(rng.integers(0, 2))
    elif op == "LpPool":
        attrs["p"] = int(rng.integers(1, 4))
    elif rng.random() < 0.5:  # MaxPool with argmax indices
        n_outputs = 2
        attrs["storage_order"] = int(rng.integers(0, 2)) if nd == 2 else 0
    x = rng.standard_normal([2, 3, *sizes]).astype(np.float32)
    return single_node(op, {"x": x}, attrs, n_outputs=n_outputs), {"x": x}


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool", "LpPool"])
def test_pools_match_onnxruntime(op):
    rng = np.random.default_rng(0)
    cases = [c for c in (pool_case(rng, op) for _ in range(120)) if c is not None]
    compared = sum(assert_matches_ort(model, feeds) for model, feeds in cases)
    assert compared >= 60  # most random geometries are valid: the comparison really ran


def conv_case(rng, transpose: bool):
    nd, group = int(rng.integers(1, 4)), int(rng.integers(1, 3))
    kernel, strides = _ints(rng.integers(1, 4, nd)), _ints(rng.integers(1, 4, nd))
    sizes = _ints(rng.integers(2, 7, nd))
    dilations = _ints(rng.integers(1, 3, nd))
    attrs = {"strides": strides, "dilations": dilations, "group": group}
    mode = int(rng.integers(0, 3))
    if mode == 0:
        attrs["auto_pad"] = str(rng.choice(["SAME_UPPER", "SAME_LOWER"] + ([] if transpose else ["VALID"])))
    elif mode == 1:
        attrs["pads"] = _ints(rng.integers(0, 3, 2 * nd))
    elif transpose:  # a requested output size, up to 2 cells off the full one either way
        attrs["output_shape"] = [s * (i - 1) + (k - 1) * d + 1 + int(rng.integers(-2, 3))
                                 for s, i, k, d in zip(strides, sizes, kernel, dilations)]
        attrs["auto_pad"] = str(rng.choice(["SAME_UPPER", "SAME_LOWER", "NOTSET"]))
    if transpose and mode != 2 and rng.random() < 0.4:
        attrs["output_padding"] = [int(rng.integers(0, max(s, d))) for s, d in zip(strides, dilations)]
    cin, cout = 2 * group, int(rng.integers(1, 3)) * group
    feeds = {"x": rng.standard_normal([1, cin, *sizes]).astype(np.float32),
             "w": rng.standard_normal([cin, cout // group, *kernel] if transpose else
                                      [cout, cin // group, *kernel]).astype(np.float32)}
    if rng.random() < 0.5:
        feeds["b"] = rng.standard_normal(cout).astype(np.float32)
    return single_node("ConvTranspose" if transpose else "Conv", feeds, attrs), feeds


@pytest.mark.parametrize("transpose", [False, True], ids=["Conv", "ConvTranspose"])
def test_convolutions_match_onnxruntime(transpose):
    rng = np.random.default_rng(1)
    compared = sum(assert_matches_ort(*conv_case(rng, transpose)) for _ in range(120))
    assert compared >= 60


# ----- normalizations and activations -------------------------------------------------------------------------
def _normal(rng, *shape):
    return (rng.standard_normal(shape) * 2 + 0.5).astype(np.float32)


NORMS = [
    ("LRN", {"size": 3, "alpha": 0.01, "beta": 0.75, "bias": 1.0}, [(2, 7, 3, 3)], 13),
    ("LRN", {"size": 5}, [(2, 7, 4, 2)], 13),
    ("LpNormalization", {"p": 1, "axis": 1}, [(2, 5, 3)], 22),
    ("LpNormalization", {"p": 2, "axis": 0}, [(2, 5, 3)], 1),
    ("MeanVarianceNormalization", {}, [(2, 3, 4, 5)], 13),
    ("MeanVarianceNormalization", {"axes": [1]}, [(2, 3, 4)], 9),
    ("RMSNormalization", {"axis": 1}, [(2, 3, 8), (3, 8)], 23),
    ("LayerNormalization", {}, [(2, 3, 8), (8,), (8,)], 17),
    ("LayerNormalization", {"axis": 1}, [(2, 3, 8), (3, 8)], 17),
    ("GroupNormalization", {"num_groups": 2}, [(2, 4, 3, 3), (2,), (2,)], 18),
    ("GroupNormalization", {"num_groups": 2}, [(2, 4, 3, 3), (4,), (4,)], 21),
    ("InstanceNormalization", {}, [(2, 4, 3, 3), (4,), (4,)], 22),
    ("BatchNormalization", {"epsilon": 1e-3}, [(2, 4, 3), (4,), (4,), (4,), (4,)], 15),
]


@pytest.mark.parametrize("op,attrs,shapes,opset", NORMS, ids=[f"{n[0]}-{n[3]}" for n in NORMS])
def test_normalizations_match_onnxruntime(op, attrs, shapes, opset):
    rng = np.random.default_rng(2)
    feeds = {f"i{k}": _normal(rng, *s) for k, s in enumerate(shapes)}
    if op == "BatchNormalization":
        feeds["i4"] = np.abs(feeds["i4"]) + 0.1  # a variance
    assert assert_matches_ort(single_node(op, feeds, attrs, opset=opset), feeds)


ACTIVATIONS = [
    ("Shrink", {"lambd": 1.0, "bias": 0.5}, 22), ("HardSwish", {}, 22), ("HardSigmoid", {"alpha": 0.3}, 22),
    ("Gelu", {}, 22), ("Gelu", {"approximate": "tanh"}, 22), ("Mish", {}, 22), ("Softplus", {}, 22),
    ("Softsign", {}, 22), ("Celu", {"alpha": 0.7}, 22), ("Selu", {}, 22), ("Elu", {}, 22),
    ("ThresholdedRelu", {}, 22), ("LeakyRelu", {"alpha": 0.2}, 22), ("Swish", {"alpha": 0.7}, 24),
    *[(op, {"axis": axis}, opset) for op in ("Softmax", "LogSoftmax", "Hardmax")
      for opset in (1, 11, 13) for axis in (0, 1, 2)],
    *[(op, {}, opset) for op in ("Softmax", "LogSoftmax", "Hardmax") for opset in (1, 13)],
]


@pytest.mark.parametrize("op,attrs,opset", ACTIVATIONS, ids=[f"{a[0]}-{a[2]}-{a[1]}" for a in ACTIVATIONS])
def test_activations_match_onnxruntime(op, attrs, opset):
    x = np.round(_normal(np.random.default_rng(3), 2, 3, 4), 1)  # rounding makes Hardmax ties
    assert assert_matches_ort(single_node(op, {"x": x}, attrs, opset=opset), {"x": x})


@pytest.mark.parametrize("op,attrs", [("Gelu", {}), ("FastGelu", {}), ("QuickGelu", {"alpha": 1.2})])
def test_contrib_gelus_match_onnxruntime(op, attrs):
    x = _normal(np.random.default_rng(4), 3, 50)
    assert assert_matches_ort(single_node(op, {"x": x}, attrs, domain="com.microsoft", opset=17), {"x": x})
