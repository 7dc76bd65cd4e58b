"""ONNX int8 target: the golden integer graph as ONNX that onnxruntime computes bit-exactly.

Integer matmuls are `MatMulInteger` (int8 x int8 -> int32, exact; int16 activations
of the 16x8 mode: an int64 `MatMul`, exact); every
requantization is TFLite's MultiplyByQuantizedMultiplier spelled out in int64
ONNX arithmetic (Mul, Add, BitwiseAnd, exact divisions by powers of two), so
no runtime's own rounding enters; tables are `Gather`. Comparisons, min/max
and selects run on int32 copies, since onnxruntime registers few int8 kernels
for them. Inputs, outputs and state are int8 with the manifest's parameters.

Opset 18 (BitwiseAnd needs 18).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from onnx import helper

from ncc.compiler.artifact import Artifact
from ncc.compiler.ir import Graph, Op
from ncc.numerics import reduced_multiplier
from ncc.targets.onnx import ONNX_DTYPES, Nodes, lower_float_op, step_graph, to_model

TARGET = "onnx-int8"
_WIDEN = ("greater", "greater_equal", "less", "less_equal", "equal", "max", "min", "where")


class _Int(Nodes):
    """Node helpers with unique names derived from the op being lowered."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def tmp(self, op: Op, what: str) -> str:
        self.count += 1
        return f"{op.output}__{what}{self.count}"

    def node(self, op: Op, kind: str, ins: list[str], what: str = "", **attrs: object) -> str:
        out = self.tmp(op, what or kind.lower())
        self.nodes.append(helper.make_node(kind, ins, [out], **attrs))
        return out

    def i64(self, op: Op, what: str, value: object) -> str:
        return self.const(self.tmp(op, what), np.asarray(value, np.int64))

    def cast(self, op: Op, name: str, dtype: str) -> str:
        return self.node(op, "Cast", [name], "cast", to=ONNX_DTYPES[dtype])

    def mbqm(self, op: Op, x: str, multiplier: object, shift: object) -> str:
        """int64 x -> MultiplyByQuantizedMultiplier(x, multiplier, shift), int64."""
        m = np.asarray(multiplier, np.int64)
        s = np.asarray(shift, np.int64)
        left, right = np.maximum(s, 0), np.maximum(-s, 0)
        if np.any(left):
            x = self.node(op, "Mul", [x, self.i64(op, "left", np.int64(1) << left)])
        # SaturatingRoundingDoublingHighMul: (x m + nudge) / 2^31, truncating toward zero
        ab = self.node(op, "Mul", [x, self.i64(op, "m", m)])
        zero = self.i64(op, "zero", 0)
        nudge = self.node(op, "Where", [self.node(op, "GreaterOrEqual", [ab, zero]),
                                        self.i64(op, "pos", 1 << 30),
                                        self.i64(op, "neg", 1 - (1 << 30))])
        high = self._div_trunc(op, self.node(op, "Add", [ab, nudge]), 31)
        # RoundingDivideByPOT(high, right): floor division plus round-half-away-from-zero
        mask = (np.int64(1) << right) - 1
        remainder = self.node(op, "BitwiseAnd", [high, self.i64(op, "mask", mask)])
        floor = self.node(op, "Div", [self.node(op, "Sub", [high, remainder]),
                                      self.i64(op, "pot", np.int64(1) << right)])
        negative = self.cast(op, self.node(op, "Less", [high, zero]), "int64")
        threshold = self.node(op, "Add", [self.i64(op, "half", mask >> 1), negative])
        up = self.cast(op, self.node(op, "Greater", [remainder, threshold]), "int64")
        return self.node(op, "Add", [floor, up])

    def mbqm_int64(self, op: Op, x: str, multiplier: object, shift: object) -> str:
        """int64 x -> TFLite's int64 MultiplyByQuantizedMultiplier (16x8 dense layers):
        (x * reduced + 2^(total_shift - 1)) >> total_shift, reduced the 16-bit multiplier."""
        reduced = reduced_multiplier(multiplier)
        total = 15 - np.asarray(shift, np.int64)
        ab = self.node(op, "Mul", [x, self.i64(op, "reduced", reduced)])
        rounded = self.node(op, "Add", [ab, self.i64(op, "round", np.int64(1) << (total - 1))])
        return self._div_floor(op, rounded, total)

    def _div_floor(self, op: Op, x: str, bits: object) -> str:
        """x >> bits (arithmetic): exact division of x minus its remainder."""
        pot = np.int64(1) << np.asarray(bits, np.int64)
        remainder = self.node(op, "BitwiseAnd", [x, self.i64(op, "mask", pot - 1)])
        return self.node(op, "Div", [self.node(op, "Sub", [x, remainder]),
                                     self.i64(op, "pot", pot)])

    def _div_trunc(self, op: Op, x: str, bits: int) -> str:
        """x / 2^bits rounded toward zero (C semantics), from exact floor divisions."""
        pot = self.i64(op, "pot", np.int64(1) << bits)
        mask = self.i64(op, "mask", (np.int64(1) << bits) - 1)
        remainder = self.node(op, "BitwiseAnd", [x, mask])
        floor = self.node(op, "Div", [self.node(op, "Sub", [x, remainder]), pot])
        # floor differs from truncation for negative x with a remainder: add 1 there
        negative = self.node(op, "Less", [x, self.i64(op, "zero", 0)])
        inexact = self.node(op, "Greater", [remainder, self.i64(op, "zero", 0)])
        fix = self.cast(op, self.node(op, "And", [negative, inexact]), "int64")
        return self.node(op, "Add", [floor, fix])

    def finish(self, op: Op, acc: str, out_zp: int, dtype: str) -> None:
        """acc int64 -> saturate(acc + out_zp) as `dtype`, written to op.output."""
        info = np.iinfo(np.dtype(dtype))
        shifted = self.node(op, "Add", [acc, self.i64(op, "zp", out_zp)])
        clipped = self.node(op, "Clip", [shifted, self.i64(op, "lo", info.min),
                                         self.i64(op, "hi", info.max)])
        self.nodes.append(helper.make_node("Cast", [clipped], [op.output], to=ONNX_DTYPES[dtype]))

    def centered(self, op: Op, x: str, zp: int) -> str:
        """int8 x -> int64 (x - zp)."""
        return self.node(op, "Sub", [self.cast(op, x, "int64"), self.i64(op, "zp", zp)])


def _fully_connected(n: _Int, g: Graph, op: Op) -> None:
    a, (x, w, bias) = op.attrs, op.inputs
    if g.tensors[x].dtype == "int16":  # 16x8: int64 MatMul (exact), TFLite's int64 requant
        acc = n.node(op, "MatMul", [n.centered(op, x, a["x_zp"]), n.cast(op, w, "int64")])
        acc = n.node(op, "Add", [acc, n.cast(op, bias, "int64")])
        n.finish(op, n.mbqm_int64(op, acc, a["multiplier"], a["shift"]), a["out_zp"],
                 a["dtype"])
        return
    zp = n.const(n.tmp(op, "xzp"), np.asarray(a["x_zp"], np.int8))
    acc = n.node(op, "MatMulInteger", [x, w, zp])
    acc = n.node(op, "Add", [n.cast(op, acc, "int64"), n.cast(op, bias, "int64")])
    n.finish(op, n.mbqm(op, acc, a["multiplier"], a["shift"]), a["out_zp"], a["dtype"])


def _add_sub(n: _Int, g: Graph, op: Op) -> None:
    a, ins = op.attrs, op.inputs
    pow2 = 1 << a["left_shift"]
    xa = n.node(op, "Mul", [n.centered(op, ins[0], a["a_zp"]), n.i64(op, "ls", pow2)])
    xb = n.node(op, "Mul", [n.centered(op, ins[1], a["b_zp"]), n.i64(op, "ls", pow2)])
    xa = n.mbqm(op, xa, a["a_multiplier"], a["a_shift"])
    xb = n.mbqm(op, xb, a["b_multiplier"], a["b_shift"])
    raw = n.node(op, "Add" if op.kind == "qadd" else "Sub", [xa, xb])
    n.finish(op, n.mbqm(op, raw, a["multiplier"], a["shift"]), a["out_zp"], a["dtype"])


def _mul(n: _Int, g: Graph, op: Op) -> None:
    a, ins = op.attrs, op.inputs
    prod = n.node(op, "Mul", [n.centered(op, ins[0], a["a_zp"]),
                              n.centered(op, ins[1], a["b_zp"])])
    n.finish(op, n.mbqm(op, prod, a["multiplier"], a["shift"]), a["out_zp"], a["dtype"])


def _requantize(n: _Int, g: Graph, op: Op) -> None:
    a = op.attrs
    x = n.centered(op, op.inputs[0], a["in_zp"])
    n.finish(op, n.mbqm(op, x, a["multiplier"], a["shift"]), a["out_zp"], a["dtype"])


def _lut(n: _Int, g: Graph, op: Op) -> None:
    x, table = op.inputs
    lo = int(np.iinfo(np.dtype(g.tensors[x].dtype)).min)
    index = n.node(op, "Sub", [n.cast(op, x, "int64"), n.i64(op, "lo", lo)])
    n.nodes.append(helper.make_node("Gather", [table, index], [op.output], axis=0))


def _widened(n: _Int, g: Graph, op: Op) -> None:
    """Comparisons, min/max and selects run on int32 copies of int8/int16 operands."""
    if not any(g.tensors[i].dtype in ("int8", "int16") for i in op.inputs):
        lower_float_op(n, g, op)
        return
    wide = [n.cast(op, i, "int32") if g.tensors[i].dtype in ("int8", "int16") else i
            for i in op.inputs]
    out_dtype = g.tensors[op.output].dtype
    inner = Op(op.kind, tuple(wide), n.tmp(op, "wide"), op.attrs)
    lower_float_op(n, g, inner)
    if out_dtype in ("int8", "int16"):
        n.nodes.append(helper.make_node("Cast", [inner.output], [op.output],
                                        to=ONNX_DTYPES[out_dtype]))
    else:
        n.nodes.append(helper.make_node("Identity", [inner.output], [op.output]))


INT_LOWERINGS: dict[str, Callable[[_Int, Graph, Op], None]] = {
    "fully_connected": _fully_connected, "qadd": _add_sub, "qsub": _add_sub, "qmul": _mul,
    "requantize": _requantize, "lut": _lut, **{kind: _widened for kind in _WIDEN},
}
"""The integer ops' lowerings; every other op (data movement, casts) is the float
target's `lower_float_op`."""


def _lower_int_op(n: _Int, g: Graph, op: Op) -> None:
    INT_LOWERINGS.get(op.kind, lower_float_op)(n, g, op)


def lower(g: Graph, *, reference: Graph | None = None, model: Any = None,
          sequence_length: int | None = None) -> Artifact:
    """onnx-int8 artifact of integer graph `g` (one step per run)."""
    if not g.metadata.get("quantized"):
        raise ValueError("onnx-int8 lowers a quantized graph; pass --calibration data")
    if sequence_length is not None:
        raise ValueError("onnx-int8 artifacts run one step per call; drop --sequence-length")
    graph, _ = step_graph(g, _lower_int_op, nodes=_Int())
    model = to_model(graph)
    return Artifact(target=TARGET, entry="model.onnx",
                    files={"model.onnx": model.SerializeToString(deterministic=True)},
                    io_names={n: n for n in g.inputs + g.outputs},
                    details={"opset": model.opset_import[0].version,
                             "exact": "bit-exact with the golden integer model"})
