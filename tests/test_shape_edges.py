"""The twin's shape and layout ops against onnxruntime at the edges the spec allows: axes counted from
the end or equal to the rank, omitted axes and perms, Reshape's 0 / -1 / allowzero, Slice bounds out of
range or at INT64's limits with negative steps, negative Gather indices, 0-sized dims, empty shapes.
Every op here moves or counts elements without arithmetic, so the twin must equal onnxruntime exactly
(values, dtype and shape). Shape operands are initializers, as exporters write them. Where onnxruntime
departs from the spec (Slice backwards to INT_MAX), and for Cast to 2/4-bit integers (which onnxruntime
rounds and wraps, and the spec leaves undefined out of range), onnx's reference evaluator decides.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from onnxprune.twin import Twin

INT_MAX, INT_MIN = np.iinfo(np.int64).max, np.iinfo(np.int64).min
X = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)  # distinct values: any misplaced element shows
EMPTY = np.zeros((2, 0, 3), dtype=np.float32)


def i64(*values) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def case(op, data, consts=(), attrs=None, *, opset=21, n_outputs=1, names=None, id=None):
    """One node: `data` are graph inputs (feeds), `consts` initializers; `names` orders the node's inputs
    ("" for an omitted optional one) when it is not data then consts."""
    return pytest.param(op, list(data), list(consts), attrs or {}, opset, n_outputs, names, id=id)


CASES = [
    # Flatten: axis 0, negative, equal to the rank (-> (N, 1)), on a 0-sized dim
    *(case("Flatten", [("x", X)], attrs={"axis": a}, id=f"flatten-axis{a}") for a in (0, 1, 2, 3, -1, -3)),
    case("Flatten", [("x", EMPTY)], attrs={"axis": 2}, id="flatten-empty"),
    case("Flatten", [("x", EMPTY)], attrs={"axis": 3}, id="flatten-empty-rank"),
    case("Flatten", [("x", X)], attrs={"axis": 3}, opset=9, id="flatten-rank-opset9"),
    *(case("Flatten", [("x", X[0, 0])], attrs={"axis": a}, id=f"flatten-1d-axis{a}") for a in (0, 1, -1)),
    # Reshape: 0 copies, -1 infers, allowzero makes 0 a literal size
    case("Reshape", [("x", X)], [("s", i64(0, -1))], id="reshape-0-1"),
    case("Reshape", [("x", X)], [("s", i64(-1, 0, 2))], id="reshape-1-0"),
    case("Reshape", [("x", X)], [("s", i64(4, 0, 2))], id="reshape-copy-middle"),
    case("Reshape", [("x", X)], [("s", i64(24))], id="reshape-flat"),
    case("Reshape", [("x", X[:1, :1, :1].reshape(()))], [("s", i64())], id="reshape-scalar"),
    case("Reshape", [("x", EMPTY)], [("s", i64(0, 3, 0))], attrs={"allowzero": 1}, id="reshape-allowzero"),
    case("Reshape", [("x", EMPTY)], [("s", i64(3, 0))], id="reshape-empty-literal"),
    case("Reshape", [("x", EMPTY)], [("s", i64(-1, 3))], id="reshape-empty-infer"),
    case("Reshape", [("x", X)], [("s", i64(0, 0, -1))], opset=13, id="reshape-opset13"),
    # Squeeze / Unsqueeze: axes as attribute (opset 11) and input (13+), negative, omitted
    case("Squeeze", [("x", X.reshape(1, 2, 1, 12))], id="squeeze-all"),
    case("Squeeze", [("x", X.reshape(1, 2, 1, 12))], [("a", i64(-2))], id="squeeze-neg"),
    case("Squeeze", [("x", X.reshape(1, 2, 1, 12))], [("a", i64(0, -2))], id="squeeze-two"),
    case("Squeeze", [("x", X.reshape(1, 2, 1, 12))], attrs={"axes": [-4]}, opset=11, id="squeeze-attr"),
    case("Squeeze", [("x", X.reshape(1, 2, 1, 12))], opset=11, id="squeeze-attr-all"),
    case("Squeeze", [("x", np.zeros((1, 0, 1), np.float32))], id="squeeze-empty"),
    case("Squeeze", [("x", np.ones((1, 1), np.float32))], id="squeeze-to-scalar"),
    case("Squeeze", [("x", X.reshape(1, 2, 1, 12))], [("a", i64())], id="squeeze-empty-axes"),
    case("Unsqueeze", [("x", X)], [("a", i64(-1))], id="unsqueeze-neg"),
    case("Unsqueeze", [("x", X)], [("a", i64(-1, 0))], id="unsqueeze-neg-first"),
    case("Unsqueeze", [("x", X)], [("a", i64(4, 1, -3))], id="unsqueeze-three"),
    case("Unsqueeze", [("x", np.array(3.0, np.float32))], [("a", i64(0, -1))], id="unsqueeze-scalar"),
    case("Unsqueeze", [("x", X)], attrs={"axes": [-1, 1]}, opset=11, id="unsqueeze-attr"),
    case("Unsqueeze", [("x", EMPTY)], [("a", i64(1))], id="unsqueeze-empty"),
    # Transpose: default perm reverses, explicit perm, 0-sized dim
    case("Transpose", [("x", X)], id="transpose-default"),
    case("Transpose", [("x", X)], attrs={"perm": [1, 2, 0]}, id="transpose-perm"),
    case("Transpose", [("x", EMPTY)], id="transpose-empty"),
    case("Transpose", [("x", np.array(2.0, np.float32))], id="transpose-scalar"),
    # Concat: negative axis, an empty operand
    case("Concat", [("x", X), ("y", X[:, :1])], attrs={"axis": -2}, id="concat-neg"),
    case("Concat", [("x", X), ("y", X[:, :0])], attrs={"axis": 1}, id="concat-empty-part"),
    case("Concat", [("x", X), ("y", X)], attrs={"axis": -3}, id="concat-first"),
    case("Concat", [("x", i64(2, 3))], [("y", i64(-1)), ("z", i64())], attrs={"axis": 0}, id="concat-int64"),
    case("Concat", [("x", EMPTY), ("y", EMPTY)], attrs={"axis": 1}, id="concat-all-empty"),
    # Split: equal, uneven by num_outputs, sizes input, negative axis, a 0-sized part, attribute form
    case("Split", [("x", X)], attrs={"axis": -1}, n_outputs=2, opset=13, id="split-equal-neg"),
    case("Split", [("x", X)], attrs={"axis": 1, "num_outputs": 2}, n_outputs=2, opset=18, id="split-uneven"),
    case("Split", [("x", X)], [("s", i64(1, 0, 2))], attrs={"axis": -2}, n_outputs=3, id="split-zero-part"),
    case("Split", [("x", X)], attrs={"axis": 1, "split": [2, 1]}, n_outputs=2, opset=11, id="split-attr"),
    case("Split", [("x", EMPTY)], attrs={"axis": 2, "num_outputs": 3}, n_outputs=3, opset=18, id="split-empty"),
    case("Split", [("x", X)], [("s", i64(3, 1))], attrs={"axis": 2}, n_outputs=2, opset=13, id="split-sizes-13"),
    # Slice: negative / out-of-range / INT64 limits, negative and >1 steps, negative axes, empty results
    case("Slice", [("x", X)], [("b", i64(-3)), ("e", i64(INT_MAX)), ("a", i64(-1))], id="slice-neg-start"),
    case("Slice", [("x", X)], [("b", i64(-100)), ("e", i64(100)), ("a", i64(1))], id="slice-out-of-range"),
    case("Slice", [("x", X)], [("b", i64(INT_MAX)), ("e", i64(INT_MIN)), ("a", i64(2)), ("p", i64(-1))],
         id="slice-reverse-all"),
    case("Slice", [("x", X)], [("b", i64(-1)), ("e", i64(-100)), ("a", i64(-1)), ("p", i64(-2))],
         id="slice-reverse-step2"),
    case("Slice", [("x", X)], [("b", i64(2)), ("e", i64(0)), ("a", i64(1)), ("p", i64(-1))],
         id="slice-reverse-partial"),
    case("Slice", [("x", X)], [("b", i64(1, 0)), ("e", i64(INT_MAX, 4)), ("a", i64(0, 2)), ("p", i64(1, 3))],
         id="slice-step3"),
    # backwards, a start before the first element clamps to 0 (the spec, and onnxruntime; numpy and so
    # onnx's reference evaluator give nothing): one element each
    case("Slice", [("x", X)], [("b", i64(-100, INT_MIN)), ("e", i64(-200, INT_MIN)), ("a", i64(2, 1)),
                                ("p", i64(-1, -2))], id="slice-reverse-start-below"),
    case("Slice", [("x", X)], [("b", i64(3)), ("e", i64(1)), ("a", i64(2))], id="slice-empty"),
    case("Slice", [("x", X)], [("b", i64(1)), ("e", i64(3)), ("a", i64(2)), ("p", i64(-1))], id="slice-empty-rev"),
    case("Slice", [("x", X)], [("b", i64(0, 1)), ("e", i64(1, -1))], id="slice-no-axes"),
    case("Slice", [("x", X)], [("b", i64(-2)), ("e", i64(INT_MAX))], attrs={}, names=["x", "b", "e", "", ""],
         id="slice-omitted-axes-steps"),
    case("Slice", [("x", EMPTY)], [("b", i64(0)), ("e", i64(5)), ("a", i64(1))], id="slice-on-empty"),
    case("Slice", [("x", X)], attrs={"starts": [-1, 1], "ends": [INT_MAX, 1000], "axes": [0, -1]}, opset=9,
         id="slice-attr"),
    # Gather: negative axis, negative and scalar indices, empty indices
    case("Gather", [("x", X)], [("k", i64(-1, 0, -2))], attrs={"axis": -2}, id="gather-neg"),
    case("Gather", [("x", X)], [("k", np.array(-1, np.int64))], attrs={"axis": 0}, id="gather-scalar"),
    case("Gather", [("x", X)], [("k", i64(3, -4, 1, 0).reshape(2, 2))], attrs={"axis": 2}, id="gather-2d"),
    case("Gather", [("x", X)], [("k", np.zeros((0,), np.int64))], attrs={"axis": 1}, id="gather-empty"),
    case("Gather", [("x", X)], [("k", np.array([-1, 1], np.int32))], attrs={"axis": 1}, id="gather-int32"),
    case("Gather", [("x", X)], [("k", i64(1, -2))], attrs={"axis": -3}, id="gather-axis-minus-rank"),
    case("Gather", [("x", i64(2, 3, 4))], [("k", np.array(-1, np.int64))], id="gather-shape-scalar"),
    case("Gather", [("x", EMPTY)], [("k", i64(-1, 0))], attrs={"axis": 2}, id="gather-from-empty"),
    # Expand / Tile: fewer dims than the input, size-1 broadcast both ways, zeros
    case("Expand", [("x", X[:, :1])], [("s", i64(3, 1))], id="expand-fewer"),
    case("Expand", [("x", X[:, :1])], [("s", i64(2, 1, 2, 1))], id="expand-more"),
    case("Expand", [("x", X[:1, :1, :1])], [("s", i64(0))], id="expand-to-empty"),
    case("Tile", [("x", X)], [("r", i64(2, 1, 3))], id="tile"),
    case("Tile", [("x", X)], [("r", i64(1, 0, 1))], id="tile-zero"),
    case("Tile", [("x", EMPTY)], [("r", i64(2, 2, 2))], id="tile-empty"),
    case("Expand", [("x", EMPTY)], [("s", i64(2, 2, 1, 1))], id="expand-empty"),
    # Shape (start/end negative and out of range), Size
    case("Shape", [("x", X)], id="shape"),
    case("Shape", [("x", X)], attrs={"start": -2}, id="shape-start-neg"),
    case("Shape", [("x", X)], attrs={"start": 1, "end": -1}, id="shape-end-neg"),
    case("Shape", [("x", X)], attrs={"start": -10, "end": 10}, id="shape-out-of-range"),
    case("Shape", [("x", X)], attrs={"start": 2, "end": 1}, id="shape-empty"),
    case("Shape", [("x", np.array(1.0, np.float32))], id="shape-scalar"),
    case("Size", [("x", X)], id="size"),
    case("Size", [("x", EMPTY)], id="size-empty"),
    # ConstantOfShape: empty shape (a scalar), a 0 in the shape, default and typed values
    case("ConstantOfShape", [], [("s", i64())], attrs={"value": numpy_helper.from_array(np.array([7], np.int64))},
         id="cos-scalar"),
    case("ConstantOfShape", [], [("s", i64(2, 0))], id="cos-empty"),
    case("ConstantOfShape", [], [("s", i64(2, 3))], id="cos-default"),
    case("ConstantOfShape", [], [("s", i64(2))], attrs={"value": numpy_helper.from_array(np.array([1], np.int32))},
         id="cos-int32"),
    case("ConstantOfShape", [], [("s", i64(1))], attrs={"value": numpy_helper.from_array(np.array([True]))},
         id="cos-bool"),
    case("ConstantOfShape", [("s", i64(3, 1))], attrs={"value": numpy_helper.from_array(np.array([1.5], np.float32))},
         id="cos-fed"),
    # Identity on an empty tensor
    case("Identity", [("x", EMPTY)], id="identity-empty"),
]


def _model(op, data, consts, attrs, opset, n_outputs, names):
    names = names if names is not None else [n for n, _ in data] + [n for n, _ in consts]
    outs = [f"y{k}" for k in range(n_outputs)]
    node = helper.make_node(op, names, outs, **attrs)
    inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape) for n, a in data]
    inits = [numpy_helper.from_array(a, n) for n, a in consts]
    graph = helper.make_graph([node], "g", inputs, [helper.make_empty_tensor_value_info(o) for o in outs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


@pytest.mark.parametrize("op,data,consts,attrs,opset,n_outputs,names", CASES)
def test_twin_equals_onnxruntime(op, data, consts, attrs, opset, n_outputs, names):
    model = _model(op, data, consts, attrs, opset, n_outputs, names)
    feeds = {n: a for n, a in data}
    options = ort.SessionOptions()
    options.log_severity_level = 3
    refs = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, feeds)
    got = [t.numpy() for t in Twin(model).run(feeds).values()]
    assert len(got) == len(refs)
    for value, ref in zip(got, refs):
        assert (value.dtype, value.shape) == (ref.dtype, ref.shape)
        np.testing.assert_array_equal(value, ref)


def test_flatten_axis_equal_to_rank_is_a_column():
    # The BERT exports' failure: axis == rank must give (prod(shape), 1), not axis 0's (1, prod(shape)).
    model = _model("Flatten", [("x", X)], [], {"axis": 3}, 21, 1, None)
    assert tuple(Twin(model).run({"x": X})["y0"].shape) == (24, 1)


def test_slice_backwards_to_int_max_is_empty():
    """INT_MAX is not special: backwards, an end clamps to size-1, so starting there selects nothing
    (the spec, and onnx's reference). onnxruntime instead reads it as "to the first element"
    (microsoft/onnxruntime#11107), the one Slice case where the twin follows the spec over it."""
    from onnx.reference import ReferenceEvaluator

    consts = [("b", i64(-1)), ("e", i64(INT_MAX)), ("a", i64(2)), ("p", i64(-1))]
    model = _model("Slice", [("x", X)], consts, {}, 21, 1, None)
    got = Twin(model).run({"x": X})["y0"].numpy()
    assert got.shape == (2, 3, 0)
    np.testing.assert_array_equal(got, ReferenceEvaluator(model).run(None, {"x": X})[0])


def test_dynamic_reshape_chain():
    """The exporters' dynamic reshape: Shape -> Gather(batch) -> Unsqueeze -> Concat(-1) -> Reshape, then
    Flatten at the rank (as in the BERT exports), at two batch sizes."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["b"], axis=0),
             helper.make_node("Unsqueeze", ["b", "axes"], ["b1"]),
             helper.make_node("Concat", ["b1", "minus1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("Flatten", ["r"], ["y"], axis=2)]
    inits = [numpy_helper.from_array(np.array(0, np.int64), "zero"), numpy_helper.from_array(i64(0), "axes"),
             numpy_helper.from_array(i64(-1), "minus1")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, ["batch", 3, 4])],
                              [helper.make_tensor_value_info("y", 1, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for x in (X, X[:1]):
        ref = session.run(None, {"x": x})[0]
        got = Twin(model).run({"x": x})["y"].numpy()
        assert got.shape == ref.shape == (len(x) * 12, 1)
        np.testing.assert_array_equal(got, ref)


def test_cases_cover_every_shape_op():
    ops = {p.values[0] for p in CASES}
    assert ops >= {"Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Split", "Slice", "Gather",
                   "Expand", "Tile", "Shape", "Size", "ConstantOfShape"}


@pytest.mark.parametrize("to", ["INT4", "UINT4", "INT2", "UINT2"])
@pytest.mark.parametrize("source", [np.float32, np.float16, np.int32])
def test_cast_to_subbyte_follows_onnx_reference(source, to):
    """Cast to 2/4-bit integers against onnx's reference, beyond the backend cases' -9..15: fractions
    (truncated toward zero), values far out of range, inf and NaN (0, where ONNX leaves the result
    undefined), and integers (wrapped modulo 2**bits, as the spec says)."""
    from onnx import TensorProto
    from onnx.reference import ReferenceEvaluator

    from onnxprune.twin.tensors import to_numpy

    values = np.array([-1e30, -300, -9, -8.5, -7.9, -2.5, -1.5, -0.9, -0.5, 0, 0.5, 0.99, 1.5, 2.5, 3.5,
                       7.99, 8, 15.5, 16, 300, 1e30, np.inf, -np.inf, np.nan], np.float64)
    with np.errstate(over="ignore"):  # 1e30 is inf in float16
        x = (values if source != np.int32 else np.nan_to_num(values, posinf=0, neginf=0).clip(-300, 300)).astype(source)
    node = helper.make_node("Cast", ["x"], ["y"], to=getattr(TensorProto, to))
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", helper.np_dtype_to_tensor_dtype(x.dtype),
                                                                          x.shape)],
                              [helper.make_tensor_value_info("y", getattr(TensorProto, to), x.shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 25)], ir_version=11)
    with np.errstate(invalid="ignore", over="ignore"):
        ref = ReferenceEvaluator(model).run(None, {"x": x})[0]
    got = to_numpy(Twin(model).run({"x": x})["y"])
    np.testing.assert_array_equal(got.astype(np.int64), ref.astype(np.int64))
