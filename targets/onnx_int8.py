"""ONNX int8 target: the golden integer graph as ONNX that onnxruntime computes bit-exactly.

Integer matmuls are `MatMulInteger` (int8 x int8 -> int32, exact; int16 activations
of the 16x8 mode: an int64 `MatMul`, exact). Every requantization is TFLite's
MultiplyByQuantizedMultiplier in one int64 rounding step (`_Int.mbqm_affine`: a
multiply, a sign term, an add and an exact division by a power of two; the bias, the
zero points and ADD's left shift folded into its constants), so no runtime's own
rounding enters. An int8 x int8 binary op (qadd, qsub, qmul) is one `Gather` from its
65,536 results, computed by the golden kernel itself; tables are `Gather`. Comparisons,
min/max and selects run on int32 copies, since onnxruntime registers few int8 kernels
for them. Inputs, outputs and state are int8 with the manifest's parameters.

Opset 18 (BitwiseAnd needs 18).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from onnx import helper

from ncc import numerics as nx
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

    def mbqm_affine(self, op: Op, p: str, multiplier: object, shift: object, *,
                    scale: int = 1, offset: object = 0, out_zp: int = 0) -> str | None:
        """int64 p -> MBQM(p * scale + offset, multiplier, shift) + out_zp in 7 nodes (3
        without rounding shifts), or None where a folded constant would not fit.

        With v = p * scale + offset, l = max(shift, 0), e = max(-shift, 0) and
        ab = v * 2^l * m (the SRDHM product; v * 2^l is an int32, as golden.py's MBQM
        needs, so |ab| < 2^62): SRDHM is floor((ab + 2^30) / 2^31) (its nudge toward
        zero for negative ab is exactly floor rounding: m >= 0 excludes the one
        saturating case); RoundingDivideByPOT(h, e) is floor((h + 2^(e-1) - [h < 0]) /
        2^e) for e >= 1, and h < 0 exactly when ab < -2^30. Nested floor divisions by
        integers compose, so MBQM + out_zp = floor((ab + 2^30 + 2^(30+e) - 2^31 [ab <
        -2^30] + out_zp 2^(31+e)) / 2^(31+e)): one Mul, a Less and Where for the sign
        term, an Add, and an exact floor division (BitwiseAnd, Sub, Div)."""
        m = np.asarray(multiplier, np.int64)
        s = np.asarray(shift, np.int64)
        left, e = np.maximum(s, 0), np.maximum(-s, 0)
        m, left, e, off = np.broadcast_arrays(m, left, e, np.asarray(offset, np.int64))
        big = [int(v) for v in (m * (1 << left)).reshape(-1)]
        mm = [b * scale for b in big]
        d = [int(o) * b for o, b in zip(off.reshape(-1), big, strict=True)]
        k = [31 + int(v) for v in e.reshape(-1)]
        r = [(1 << 30) + ((1 << (kk - 1)) if kk > 31 else 0) + out_zp * (1 << kk) + dd
             for kk, dd in zip(k, d, strict=True)]
        # |ab| < 2^62; p * M = ab - D and y = ab + (rounding terms) must stay in int64
        bound = 1 << 62
        if any(abs(v) >= bound for v in [*mm, *d]) or any(
                abs(rr - dd) + (1 << 31) >= bound for rr, dd in zip(r, d, strict=True)):
            return None
        shape = m.shape

        def const(what: str, values: list[int]) -> str:
            return self.i64(op, what, np.asarray(values, np.int64).reshape(shape))

        pm = p if all(v == 1 for v in mm) else self.node(op, "Mul", [p, const("m", mm)])
        if any(kk > 31 for kk in k):
            below = self.node(op, "Less", [pm, const("t", [-(1 << 30) - dd for dd in d])])
            neg = [rr - ((1 << 31) if kk > 31 else 0) for rr, kk in zip(r, k, strict=True)]
            term = self.node(op, "Where", [below, const("rneg", neg), const("r", r)])
        else:
            term = const("r", r)
        y = self.node(op, "Add", [pm, term])
        return self._div_floor(op, y, np.asarray(k, np.int64).reshape(shape))

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

    def saturate(self, op: Op, value: str, dtype: str) -> None:
        """int64 value -> saturate(value) as `dtype`, written to op.output."""
        info = np.iinfo(np.dtype(dtype))
        clipped = self.node(op, "Clip", [value, self.i64(op, "lo", info.min),
                                         self.i64(op, "hi", info.max)])
        self.nodes.append(helper.make_node("Cast", [clipped], [op.output], to=ONNX_DTYPES[dtype]))

    def requantized(self, op: Op, p: str, multiplier: object, shift: object, out_zp: int,
                    dtype: str, *, scale: int = 1, offset: object = 0) -> None:
        """saturate(MBQM(p * scale + offset) + out_zp) as `dtype` into op.output: the
        short form where its constants fit, else the long one."""
        short = self.mbqm_affine(op, p, multiplier, shift, scale=scale, offset=offset,
                                 out_zp=out_zp)
        if short is not None:
            self.saturate(op, short, dtype)
            return
        unfolded = p
        if scale != 1:
            unfolded = self.node(op, "Mul", [unfolded, self.i64(op, "scale", scale)])
        if np.any(np.asarray(offset) != 0):
            unfolded = self.node(op, "Add", [unfolded, self.i64(op, "offset", offset)])
        self.finish(op, self.mbqm(op, unfolded, multiplier, shift), out_zp, dtype)

    def finish(self, op: Op, acc: str, out_zp: int, dtype: str) -> None:
        """acc int64 -> saturate(acc + out_zp) as `dtype`, written to op.output."""
        self.saturate(op, self.node(op, "Add", [acc, self.i64(op, "zp", out_zp)]), dtype)

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
    acc = n.cast(op, n.node(op, "MatMulInteger", [x, w, zp]), "int64")
    bias_values = g.constants.get(bias)
    if bias_values is not None:  # the bias folds into the requantization's constants
        short = n.mbqm_affine(op, acc, a["multiplier"], a["shift"],
                              offset=np.asarray(bias_values, np.int64), out_zp=a["out_zp"])
        if short is not None:
            n.saturate(op, short, a["dtype"])
            return
    acc = n.node(op, "Add", [acc, n.cast(op, bias, "int64")])
    n.requantized(op, acc, a["multiplier"], a["shift"], a["out_zp"], a["dtype"])


def _binary_table(n: _Int, g: Graph, op: Op) -> bool:
    """An int8 x int8 -> int8 binary op as one Gather from its 65,536 results (golden.py's
    kernel over every input pair): index a * 256 + b, negative indices counting from the
    end as ONNX Gather defines them. False if the operands are not int8."""
    from ncc.compiler.golden import INT_KERNELS

    if any(g.tensors[i].dtype != "int8" for i in (*op.inputs, op.output)):
        return False
    grid = np.arange(-128, 128, dtype=np.int64)
    a_all = np.repeat(grid, 256).astype(np.int8)
    b_all = np.tile(grid, 256).astype(np.int8)
    values = np.asarray(INT_KERNELS[op.kind](np, (a_all, b_all), op.attrs), np.int8)
    table = np.zeros(65536, np.int8)
    table[(a_all.astype(np.int64) * 256 + b_all) % 65536] = values
    name = n.const(n.tmp(op, "table"), table)
    hi = n.node(op, "Mul", [n.cast(op, op.inputs[0], "int32"),
                            n.const(n.tmp(op, "row"), np.asarray(256, np.int32))])
    index = n.node(op, "Add", [hi, n.cast(op, op.inputs[1], "int32")])
    n.nodes.append(helper.make_node("Gather", [name, index], [op.output], axis=0))
    return True


def _add_sub(n: _Int, g: Graph, op: Op) -> None:
    if _binary_table(n, g, op):
        return
    a, ins = op.attrs, op.inputs
    pow2 = 1 << a["left_shift"]
    sides = []
    for i, side in ((0, "a"), (1, "b")):
        x = n.cast(op, ins[i], "int64")
        short = n.mbqm_affine(op, x, a[f"{side}_multiplier"], a[f"{side}_shift"],
                              scale=pow2, offset=-a[f"{side}_zp"] * pow2)
        if short is None:
            wide = n.node(op, "Mul", [n.centered(op, ins[i], a[f"{side}_zp"]),
                                      n.i64(op, "ls", pow2)])
            short = n.mbqm(op, wide, a[f"{side}_multiplier"], a[f"{side}_shift"])
        sides.append(short)
    raw = n.node(op, "Add" if op.kind == "qadd" else "Sub", sides)
    n.requantized(op, raw, a["multiplier"], a["shift"], a["out_zp"], a["dtype"])


def _mul(n: _Int, g: Graph, op: Op) -> None:
    if _binary_table(n, g, op):
        return
    a, ins = op.attrs, op.inputs
    prod = n.node(op, "Mul", [n.centered(op, ins[0], a["a_zp"]),
                              n.centered(op, ins[1], a["b_zp"])])
    n.requantized(op, prod, a["multiplier"], a["shift"], a["out_zp"], a["dtype"])


def _requantize(n: _Int, g: Graph, op: Op) -> None:
    a = op.attrs
    x = n.cast(op, op.inputs[0], "int64")
    n.requantized(op, x, a["multiplier"], a["shift"], a["out_zp"], a["dtype"],
                  offset=-a["in_zp"])


def _lut_interpolated(n: _Int, op: Op, x: str, values: np.ndarray) -> None:
    """The compact int16 table (`numerics.interpolated_lookup`) in int64: u = x + 2^15,
    i = u / 128 and f = u & 127 (u >= 0: Div is floor); y = (T[i] - 2^16) + (d_i f + 64 +
    2^23) / 128 with d_i = T[i+1] - T[i]: |d_i f + 64| < 2^23 keeps the dividend positive,
    so Div floors, and the 2^23 / 128 = 2^16 it adds is taken back from the base table."""
    t = np.asarray(values, np.int64)
    seg = 1 << nx.INTERP_SEGMENT_BITS
    u = n.node(op, "Add", [n.cast(op, x, "int64"), n.i64(op, "half", 1 << (nx.INTERP_BITS - 1))])
    i = n.node(op, "Div", [u, n.i64(op, "seg", seg)])
    f = n.node(op, "BitwiseAnd", [u, n.i64(op, "mask", seg - 1)])
    base = n.node(op, "Gather", [n.i64(op, "base", t[:-1] - (1 << 16)), i], axis=0)
    slope = n.node(op, "Gather", [n.i64(op, "slope", np.diff(t)), i], axis=0)
    delta = n.node(op, "Add", [n.node(op, "Mul", [slope, f]),
                               n.i64(op, "round", seg // 2 + (1 << 23))])
    y = n.node(op, "Add", [base, n.node(op, "Div", [delta, n.i64(op, "seg", seg)])])
    n.nodes.append(helper.make_node("Cast", [y], [op.output], to=ONNX_DTYPES["int16"]))


def _lut(n: _Int, g: Graph, op: Op) -> None:
    x, table = op.inputs
    lo = int(np.iinfo(np.dtype(g.tensors[x].dtype)).min)
    values = g.constants.get(table)
    if g.tensors[x].dtype == "int16" and g.tensors[table].shape == (nx.INTERP_ENTRIES,):
        if values is None:
            raise ValueError(f"op lut -> {op.output!r}: an interpolated table must be a "
                             "constant of the graph")
        _lut_interpolated(n, op, x, values)
        return
    if values is not None:  # rotated so that x itself indexes it (negative: from the end)
        rotated = n.const(n.tmp(op, "table"), np.roll(np.asarray(values), lo))
        n.nodes.append(helper.make_node("Gather", [rotated, n.cast(op, x, "int32")],
                                        [op.output], axis=0))
        return
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
