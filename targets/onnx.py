"""Float ONNX target: the step graph as ONNX, state as explicit inputs and outputs.

`lower(g)` gives `model.onnx` computing one timestep: inputs x, [dt], state_in...;
outputs y, state_out... With `sequence_length=T` the step becomes the body of
an ONNX `Scan` over T steps: inputs x (T, *x_shape), [dt (T, *dt_shape)] and
the initial states; outputs y (T, *y_shape) and the final states.

Opset 18 (default domain): the first opset where every reduction takes its
axes as an input; onnxruntime >= 1.14 runs it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ncc.compiler.artifact import Artifact
from ncc.compiler.ir import Graph, Op

OPSET = 18
TARGET = "onnx-float"

ONNX_DTYPES = {"float32": TensorProto.FLOAT, "int8": TensorProto.INT8,
           "int16": TensorProto.INT16, "int32": TensorProto.INT32,
           "int64": TensorProto.INT64, "uint8": TensorProto.UINT8, "bool": TensorProto.BOOL}

_SIMPLE = {"matmul": "MatMul", "add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div",
           "max": "Max", "min": "Min", "pow": "Pow", "greater": "Greater",
           "greater_equal": "GreaterOrEqual", "less": "Less", "less_equal": "LessOrEqual",
           "equal": "Equal", "identity": "Identity", "neg": "Neg", "abs": "Abs", "exp": "Exp",
           "log": "Log", "sqrt": "Sqrt", "sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu",
           "floor": "Floor", "sign": "Sign", "logical_not": "Not", "where": "Where"}


class Nodes:
    """Collects ONNX nodes and the small int64 constants they need (shapes, axes)."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def ints(self, op: Op, what: str, values: tuple[int, ...]) -> str:
        return self.const(f"{op.output}__{what}", np.asarray(values, np.int64))


def lower_float_op(n: Nodes, g: Graph, op: Op) -> None:
    out, ins, a = op.output, list(op.inputs), op.attrs
    if op.kind in _SIMPLE:
        n.nodes.append(helper.make_node(_SIMPLE[op.kind], ins, [out]))
    elif op.kind == "clip":
        dtype = np.dtype(g.tensors[ins[0]].dtype)
        lo = n.const(f"{out}__min", np.asarray(a["min"], dtype))
        hi = n.const(f"{out}__max", np.asarray(a["max"], dtype))
        n.nodes.append(helper.make_node("Clip", [ins[0], lo, hi], [out]))
    elif op.kind == "cast":
        n.nodes.append(helper.make_node("Cast", ins, [out], to=ONNX_DTYPES[a["dtype"]]))
    elif op.kind == "concat":
        n.nodes.append(helper.make_node("Concat", ins, [out], axis=a["axis"]))
    elif op.kind == "slice":
        axes = tuple(range(len(a["starts"])))
        extra = [n.ints(op, k, v) for k, v in (("starts", a["starts"]), ("stops", a["stops"]),
                                               ("axes", axes), ("steps", a["steps"]))]
        n.nodes.append(helper.make_node("Slice", ins + extra, [out]))
    elif op.kind == "reshape":
        n.nodes.append(helper.make_node("Reshape", ins + [n.ints(op, "shape", a["shape"])],
                                        [out]))
    elif op.kind == "broadcast":
        n.nodes.append(helper.make_node("Expand", ins + [n.ints(op, "shape", a["shape"])],
                                        [out]))
    elif op.kind == "transpose":
        n.nodes.append(helper.make_node("Transpose", ins, [out], perm=list(a["perm"])))
    elif op.kind in ("reduce_sum", "reduce_max"):
        kind = "ReduceSum" if op.kind == "reduce_sum" else "ReduceMax"
        n.nodes.append(helper.make_node(kind, ins + [n.ints(op, "axes", a["axes"])], [out],
                                        keepdims=0))
    else:
        raise NotImplementedError(f"onnx target: no lowering for op {op.kind!r}")


def _value_info(g: Graph, name: str, lead: tuple[int, ...] = ()) -> onnx.ValueInfoProto:
    t = g.tensors[name]
    return helper.make_tensor_value_info(name, ONNX_DTYPES[t.dtype], list(lead + t.shape))


def step_graph(g: Graph, lower_op: Callable[[Any, Graph, Op], None] = lower_float_op,
               with_constants: bool = True, nodes: Nodes | None = None,
               ) -> tuple[onnx.GraphProto, list[onnx.TensorProto]]:
    """The step as an ONNX graph; also returns the weight initializers.

    `lower_op(nodes, g, op)` appends the nodes of one IR op (the int8 target passes
    its own, with `nodes` carrying its helpers)."""
    n = nodes or Nodes()
    for op in g.ops:
        lower_op(n, g, op)
    weights = [numpy_helper.from_array(np.ascontiguousarray(v), k)
               for k, v in g.constants.items()]
    graph = helper.make_graph(
        n.nodes, g.name,
        [_value_info(g, name) for name in g.inputs],
        [_value_info(g, name) for name in g.outputs],
        initializer=(weights if with_constants else []) + n.initializers,
    )
    return graph, weights


def sequence_graph(g: Graph, length: int) -> onnx.GraphProto:
    """The step inside an ONNX Scan over `length` steps (state threaded by Scan)."""
    state_in = [s for s, _ in g.state_pairs]
    state_out = [s for _, s in g.state_pairs]
    scanned_in = [n for n in g.inputs if g.roles[n] in ("input", "dt")]
    scanned_out = [n for n in g.outputs if g.roles[n] == "output"]
    body, weights = step_graph(g, with_constants=False)
    body.ClearField("input")
    body.ClearField("output")
    body.input.extend([_value_info(g, n) for n in state_in + scanned_in])
    body.output.extend([_value_info(g, n) for n in state_out + scanned_out])
    seq_in = [f"{n}_seq" for n in scanned_in]
    seq_out = [f"{n}_seq" for n in scanned_out]
    final = [f"{s}_final" for s in state_out]
    scan = helper.make_node("Scan", state_in + seq_in, final + seq_out, body=body,
                            num_scan_inputs=len(seq_in))
    def stacked(name: str, src: str) -> onnx.ValueInfoProto:
        t = g.tensors[src]
        return helper.make_tensor_value_info(name, ONNX_DTYPES[t.dtype], [length, *t.shape])

    def renamed(name: str, src: str) -> onnx.ValueInfoProto:
        t = g.tensors[src]
        return helper.make_tensor_value_info(name, ONNX_DTYPES[t.dtype], list(t.shape))

    return helper.make_graph(
        [scan], f"{g.name}_sequence",
        [_value_info(g, n) for n in state_in]
        + [stacked(s, n) for s, n in zip(seq_in, scanned_in, strict=True)],
        [renamed(f, s) for f, s in zip(final, state_out, strict=True)]
        + [stacked(s, n) for s, n in zip(seq_out, scanned_out, strict=True)],
        initializer=weights,
    )


def to_model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="ncc")
    model.ir_version = 9  # readable by onnxruntime >= 1.16
    onnx.checker.check_model(model, full_check=True)
    return model


def lower(g: Graph, *, reference: Graph | None = None, model: Any = None,
          sequence_length: int | None = None) -> Artifact:
    """Float ONNX artifact for graph `g` (one step, or a Scan over `sequence_length`)."""
    if sequence_length is None:
        graph, _ = step_graph(g)
        io = {n: n for n in g.inputs + g.outputs}
    else:
        if sequence_length < 1:
            raise ValueError(f"--sequence-length must be >= 1, got {sequence_length}")
        graph = sequence_graph(g, sequence_length)
        io = {n: n for n, _ in g.state_pairs}
        io.update({n: f"{n}_seq" for n in g.inputs + g.outputs
                   if g.roles[n] in ("input", "dt", "output")})
        io.update({s: f"{s}_final" for _, s in g.state_pairs})
    model = to_model(graph)
    return Artifact(target=TARGET, entry="model.onnx",
                    files={"model.onnx": model.SerializeToString(deterministic=True)},
                    io_names=io, sequence_length=sequence_length,
                    details={"opset": OPSET, "onnx_ir_version": model.ir_version})
