"""Concrete shapes of every tensor of a graph, measured by one onnxruntime run at batch 1.

Channel analysis needs the channel count of every tensor and the spatial size behind a Flatten.
ONNX shape inference leaves holes (computed Reshape shapes, exporters' wrong value_info); running the
graph once with every node output exposed gives the truth for the shapes the analysis assumes.
Symbolic dims become 1 unless `input_shapes` names the input.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import onnx
from onnx import helper

from ..errors import OnnxPruneError


def input_feeds(model: onnx.ModelProto, input_shapes: Mapping[str, tuple[int, ...]] | None = None,
                *, seed: int | None = None, batch: int = 1) -> dict[str, np.ndarray]:
    """One array per graph input: the given shape, else the declared one with symbolic dims = `batch`.
    Float inputs are standard normal (seeded) or ones when seed is None; others are zeros."""
    input_shapes = dict(input_shapes or {})
    rng = np.random.default_rng(seed)
    constants = {t.name for t in model.graph.initializer}
    feeds = {}
    for value in model.graph.input:
        if value.name in constants:
            continue
        tensor = value.type.tensor_type
        if value.name in input_shapes:
            shape = list(input_shapes[value.name])
        else:
            shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else batch for d in tensor.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        if np.issubdtype(dtype, np.floating):
            data = rng.standard_normal(shape) if seed is not None else np.ones(shape)
            feeds[value.name] = data.astype(dtype)
        else:
            feeds[value.name] = np.zeros(shape, dtype=dtype)
    return feeds


def value_shapes(model: onnx.ModelProto, input_shapes: Mapping[str, tuple[int, ...]] | None = None,
                 ) -> dict[str, tuple[int, ...]]:
    """{tensor name: shape} for graph inputs, initializers and every node output of the main graph."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    graph = probe.graph
    del graph.value_info[:]  # exporters' value_info can be wrong (flax): let onnxruntime infer
    exposed = {o.name for o in graph.output}
    for node in graph.node:
        for name in node.output:
            if name and name not in exposed:
                graph.output.append(onnx.ValueInfoProto(name=name))
                exposed.add(name)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    feeds = input_feeds(model, input_shapes)
    try:
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        values = session.run(None, feeds)
    except Exception as err:  # noqa: BLE001  (onnxruntime raises its own exception types)
        raise OnnxPruneError(f"channel analysis could not run the model in onnxruntime: {err}") from None
    shapes = {o.name: tuple(np.shape(v)) for o, v in zip(session.get_outputs(), values)}
    shapes.update({name: tuple(a.shape) for name, a in feeds.items()})
    shapes.update({t.name: tuple(t.dims) for t in model.graph.initializer})
    return shapes


def shape_values(model: onnx.ModelProto, input_shapes: Mapping[str, tuple[int, ...]] | None = None,
                 ) -> dict[str, np.ndarray]:
    """{output of each main-graph Shape node: its value} in one onnxruntime run at these input shapes;
    only those small vectors are exposed, so the run takes no more memory than inference."""
    import onnxruntime as ort

    names = [n.output[0] for n in model.graph.node if n.op_type == "Shape"]
    if not names:
        return {}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.value_info[:]
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        values = session.run(None, input_feeds(model, input_shapes))
    except Exception as err:  # noqa: BLE001  (onnxruntime raises its own exception types)
        raise OnnxPruneError(f"channel analysis could not run the model in onnxruntime: {err}") from None
    return {name: np.asarray(v, np.int64) for name, v in zip(names, values)}
