"""ONNX QDQ target: the float step with QuantizeLinear/DequantizeLinear at every tensor the
golden model quantizes, using exactly the golden model's parameters.

This is the standard form that onnxruntime fuses into its fast int8 kernels and
that NPU execution providers expect. Its arithmetic between the Q/DQ pairs is
the runtime's (float tables, its own rounding), so it is not bit-exact with the
golden model: validation measures and reports the deviation.

Interface as onnx-int8: int8 inputs, outputs and state with the manifest's
parameters; weights are int8 per output channel behind a DequantizeLinear.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import helper, numpy_helper

from ncc import numerics as nx
from ncc.compiler.artifact import Artifact
from ncc.compiler.ir import Graph, Op, QuantParams
from ncc.targets.onnx import ONNX_DTYPES, Nodes, lower_float_op, to_model

TARGET = "onnx-qdq"


def _params(n: Nodes, name: str, p: QuantParams) -> list[str]:
    scale = np.asarray(p.scale, np.float32)
    zp = np.asarray(p.zero_point, np.dtype(p.dtype))
    if len(p.scale) == 1:
        scale, zp = scale.reshape(()), zp.reshape(())
    return [n.const(f"{name}__scale", scale), n.const(f"{name}__zp", zp)]


def _qdq(n: Nodes, src: str, dst: str, p: QuantParams) -> None:
    """dst = DequantizeLinear(QuantizeLinear(src)) at parameters p."""
    args = _params(n, dst, p)
    n.nodes.append(helper.make_node("QuantizeLinear", [src, *args], [f"{dst}__q"]))
    n.nodes.append(helper.make_node("DequantizeLinear", [f"{dst}__q", *args], [dst]))


def lower(g: Graph, *, reference: Graph | None = None, model: Any = None,
          sequence_length: int | None = None) -> Artifact:
    """QDQ artifact of float graph `reference`, annotated with the golden graph `g`'s
    quantization (see `compiler.quantize.annotate`)."""
    if sequence_length is not None:
        raise ValueError("onnx-qdq artifacts run one step per call; drop --sequence-length")
    if reference is None:
        raise ValueError("onnx-qdq lowers the float reference graph; pass reference=")
    wide = sorted(n for n, t in reference.tensors.items()
                  if t.quant is not None and t.quant.dtype != "int8")
    if wide:
        raise ValueError(f"onnx-qdq is the int8 QDQ form (opset 18), but {wide[0]!r} is "
                         f"{reference.tensors[wide[0]].quant.dtype}; compile --activations "
                         "int16 models to onnx-int8 or tflite-int8")
    n = Nodes()
    f = reference
    inputs = []
    for name in f.inputs:  # int8 in, dequantized for the float body
        p = f.tensors[name].quant
        inputs.append(helper.make_tensor_value_info(name, ONNX_DTYPES[p.dtype],
                                                    list(f.tensors[name].shape)))
        n.nodes.append(helper.make_node("DequantizeLinear", [name, *_params(n, name, p)],
                                        [f"{name}__f"]))
    rename = {name: f"{name}__f" for name in f.inputs}
    weights = []
    for name, value in f.constants.items():
        if value.ndim == 2 and any(op.kind == "matmul" and op.inputs[1] == name
                                   for op in f.ops):
            p = nx.params_for_tensor(value, 8, symmetric=True, axis=1)
            weights.append(numpy_helper.from_array(nx.quantize(value, p), f"{name}__int8"))
            n.nodes.append(helper.make_node("DequantizeLinear",
                                            [f"{name}__int8", *_params(n, name, p)], [name],
                                            axis=1))
        else:
            weights.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
    for op in f.ops:
        ins = tuple(rename.get(i, i) for i in op.inputs)
        p = f.tensors[op.output].quant
        raw = f"{op.output}__raw" if p is not None else op.output
        lower_float_op(n, f, Op(op.kind, ins, raw, op.attrs, op.source))
        if p is not None:
            _qdq(n, raw, op.output, p)
    outputs = []
    for name in f.outputs:  # int8 out
        p = f.tensors[name].quant
        n.nodes.append(helper.make_node("QuantizeLinear", [name, *_params(n, f"{name}_out", p)],
                                        [f"{name}__out"]))
        outputs.append(helper.make_tensor_value_info(f"{name}__out", ONNX_DTYPES[p.dtype],
                                                     list(f.tensors[name].shape)))
    graph = helper.make_graph(n.nodes, f"{f.name}_qdq", inputs, outputs,
                              initializer=weights + n.initializers)
    model = to_model(graph)
    io = {name: name for name in f.inputs}
    io.update({name: f"{name}__out" for name in f.outputs})
    return Artifact(target=TARGET, entry="model.onnx",
                    files={"model.onnx": model.SerializeToString(deterministic=True)},
                    io_names=io,
                    details={"opset": model.opset_import[0].version,
                             "exact": "no: runtime-defined rounding between Q/DQ pairs; "
                                      "deviation from golden measured in report.json"})
