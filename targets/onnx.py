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
           "log": "Log", "sqrt": "Sqrt", "sigmoid": "Sigmoid", "tanh": "Tanh", "cos": "Cos",
           "sin": "Sin", "softplus": "Softplus", "relu": "Relu", "floor": "Floor",
           "sign": "Sign", "logical_not": "Not", "where": "Where"}


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


FloatLowering = Callable[[Nodes, Graph, Op], None]


def _clip(n: Nodes, g: Graph, op: Op) -> None:
    dtype = np.dtype(g.tensors[op.inputs[0]].dtype)
    lo = n.const(f"{op.output}__min", np.asarray(op.attrs["min"], dtype))
    hi = n.const(f"{op.output}__max", np.asarray(op.attrs["max"], dtype))
    n.nodes.append(helper.make_node("Clip", [op.inputs[0], lo, hi], [op.output]))


def _cast(n: Nodes, g: Graph, op: Op) -> None:
    n.nodes.append(helper.make_node("Cast", list(op.inputs), [op.output],
                                    to=ONNX_DTYPES[op.attrs["dtype"]]))


def _concat(n: Nodes, g: Graph, op: Op) -> None:
    n.nodes.append(helper.make_node("Concat", list(op.inputs), [op.output],
                                    axis=op.attrs["axis"]))


def _slice(n: Nodes, g: Graph, op: Op) -> None:
    a = op.attrs
    axes = tuple(range(len(a["starts"])))
    extra = [n.ints(op, k, v) for k, v in (("starts", a["starts"]), ("stops", a["stops"]),
                                           ("axes", axes), ("steps", a["steps"]))]
    n.nodes.append(helper.make_node("Slice", [*op.inputs, *extra], [op.output]))


def _gather(n: Nodes, g: Graph, op: Op) -> None:
    indices = n.ints(op, "indices", op.attrs["indices"])
    n.nodes.append(helper.make_node("Gather", [op.inputs[0], indices], [op.output],
                                    axis=op.attrs["axis"]))


def _with_shape(onnx_op: str) -> FloatLowering:
    """Reshape / Expand: the IR's `shape` attribute as an int64 input."""
    def lower(n: Nodes, g: Graph, op: Op) -> None:
        shape = n.ints(op, "shape", op.attrs["shape"])
        n.nodes.append(helper.make_node(onnx_op, [*op.inputs, shape], [op.output]))
    return lower


def _transpose(n: Nodes, g: Graph, op: Op) -> None:
    n.nodes.append(helper.make_node("Transpose", list(op.inputs), [op.output],
                                    perm=list(op.attrs["perm"])))


def _reduce(onnx_op: str) -> FloatLowering:
    def lower(n: Nodes, g: Graph, op: Op) -> None:
        axes = n.ints(op, "axes", op.attrs["axes"])
        n.nodes.append(helper.make_node(onnx_op, [*op.inputs, axes], [op.output], keepdims=0))
    return lower


def _simple(onnx_op: str) -> FloatLowering:
    """IR op = one ONNX op of the same inputs, no attributes."""
    def lower(n: Nodes, g: Graph, op: Op) -> None:
        n.nodes.append(helper.make_node(onnx_op, list(op.inputs), [op.output]))
    return lower


FLOAT_LOWERINGS: dict[str, FloatLowering] = {
    **{kind: _simple(onnx_op) for kind, onnx_op in _SIMPLE.items()},
    "clip": _clip, "cast": _cast, "concat": _concat, "slice": _slice,
    "reshape": _with_shape("Reshape"), "broadcast": _with_shape("Expand"),
    "transpose": _transpose, "gather": _gather, "reduce_sum": _reduce("ReduceSum"),
    "reduce_max": _reduce("ReduceMax"),
}
"""IR op kind -> the function appending its ONNX nodes (float IR, and the integer IR's
data-movement ops)."""


def lower_float_op(n: Nodes, g: Graph, op: Op) -> None:
    lowering = FLOAT_LOWERINGS.get(op.kind)
    if lowering is None:
        raise NotImplementedError(f"onnx target: no lowering for op {op.kind!r}")
    lowering(n, g, op)


def _value_info(g: Graph, name: str, lead: tuple[int, ...] = ()) -> onnx.ValueInfoProto:
    t = g.tensors[name]
    return helper.make_tensor_value_info(name, ONNX_DTYPES[t.dtype], list(lead + t.shape))


def _live(nodes: list[onnx.NodeProto], outputs: set[str]) -> list[onnx.NodeProto]:
    """The nodes (in topological order) that some graph output depends on."""
    needed, kept = set(outputs), []
    for node in reversed(nodes):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(node.input)
    return kept[::-1]


def step_graph(g: Graph, lower_op: Callable[[Any, Graph, Op], None] = lower_float_op,
               with_constants: bool = True, nodes: Nodes | None = None,
               ) -> tuple[onnx.GraphProto, list[onnx.TensorProto]]:
    """The step as an ONNX graph; also returns the weight initializers.

    `lower_op(nodes, g, op)` appends the nodes of one IR op (the int8 target passes
    its own, with `nodes` carrying its helpers)."""
    n = nodes or Nodes()
    for op in g.ops:
        lower_op(n, g, op)
    n.nodes = _live(n.nodes, set(g.outputs))
    used = {name for node in n.nodes for name in node.input} | set(g.outputs)
    weights = [numpy_helper.from_array(np.ascontiguousarray(v), k)
               for k, v in g.constants.items() if k in used]  # folded ones are not stored
    graph = helper.make_graph(
        n.nodes, g.name,
        [_value_info(g, name) for name in g.inputs],
        [_value_info(g, name) for name in g.outputs],
        initializer=(weights if with_constants else []) +
        [t for t in n.initializers if t.name in used],
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
