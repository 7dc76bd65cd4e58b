"""ONNX int8 target: the golden integer graph as ONNX that onnxruntime computes bit-exactly.

Integer matmuls are `MatMulInteger` (int8 x int8 -> int32, exact, or uint8 x int8 with
the activation shifted by 128 for large weights: onnxruntime's fast kernel; int16
activations of the 16x8 mode: an int64 `MatMul`, exact). Every requantization is
TFLite's MultiplyByQuantizedMultiplier in one int64 rounding step (`_Int.mbqm_affine`,
`_Int.saturated_affine`: a multiply, a sign term, an add and an exact division by a
power of two; the bias, the zero points and ADD's left shift folded into its constants),
so no runtime's own rounding enters. An int8 x int8 binary op (qadd, qsub, qmul) is one
`Gather` from its 65,536 results, computed by the golden kernel itself; tables are
`Gather`. Comparisons, min/max and selects run on int64 copies, since onnxruntime
registers few int8 kernels for them. Inputs, outputs and state are int8 with the
manifest's parameters.

onnxruntime pays per node at batch 1 (about half a microsecond), so the lowering keeps
nodes few: FullyConnected ops on one input share one MatMulInteger (`_siblings`), a
lookup table next to a binary table is folded into it, each int64 copy of a tensor is
made once (`_Int.wide`), a table whose result is only read widened holds int64 values, a
saturated requantization hands its result + 128 to the tables it indexes (`_Int.shifted`:
no Sub, no Cast), and nodes nothing reads are dropped.

Opset 18 (BitwiseAnd needs 18).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from onnx import helper

from ncc import numerics as nx
from ncc.compiler.artifact import Artifact
from ncc.compiler.ir import Graph, Op
from ncc.numerics import reduced_multiplier
from ncc.targets.onnx import ONNX_DTYPES, Nodes, lower_float_op, step_graph, to_model

TARGET = "onnx-int8"
UNSIGNED_FROM = 4096
"""Weights (K N) from which MatMulInteger reads activations and weights as uint8
(`_Int.matmul_integer`)."""
_WIDEN = ("greater", "greater_equal", "less", "less_equal", "equal", "max", "min", "where")


@dataclass(frozen=True)
class _Affine:
    """Per-channel integer constants of `_Int.mbqm_affine` (flattened lists, `shape` the
    broadcast shape): y = p * mm + (rneg where p * mm < t, else r), result floor(y / 2^k)."""

    shape: tuple[int, ...]
    mm: list[int]
    k: list[int]
    r: list[int]
    rneg: list[int]
    t: list[int]


def _affine_constants(multiplier: object, shift: object, scale: int, offset: object,
                      out_zp: object) -> _Affine | None:
    """The constants of `_Int.mbqm_affine` (see there), or None where one would not fit."""
    m = np.asarray(multiplier, np.int64)
    s = np.asarray(shift, np.int64)
    left, e = np.maximum(s, 0), np.maximum(-s, 0)
    m, left, e, off, zp = np.broadcast_arrays(m, left, e, np.asarray(offset, np.int64),
                                              np.asarray(out_zp, np.int64))
    big = [int(v) for v in (m * (1 << left)).reshape(-1)]
    mm = [b * scale for b in big]
    d = [int(o) * b for o, b in zip(off.reshape(-1), big, strict=True)]
    k = [31 + int(v) for v in e.reshape(-1)]
    r = [(1 << 30) + ((1 << (kk - 1)) if kk > 31 else 0) + int(z) * (1 << kk) + dd
         for kk, dd, z in zip(k, d, zp.reshape(-1), strict=True)]
    # |ab| < 2^62; p * M = ab - D and y = ab + (rounding terms) must stay in int64
    bound = 1 << 62
    if any(abs(v) >= bound for v in [*mm, *d]) or any(
            abs(rr - dd) + (1 << 31) >= bound for rr, dd in zip(r, d, strict=True)):
        return None
    neg = [rr - ((1 << 31) if kk > 31 else 0) for rr, kk in zip(r, k, strict=True)]
    if not any(kk > 31 for kk in k):
        neg = r
    return _Affine(m.shape, mm, k, r, neg, [-(1 << 30) - dd for dd in d])


class _Int(Nodes):
    """Node helpers with unique names derived from the op being lowered."""

    def __init__(self, siblings: dict[str, list[Op]] | None = None,
                 narrow: set[str] | None = None) -> None:
        super().__init__()
        self.narrow = narrow
        """tensors some consumer reads as int8/int16 (None: all of them; `_narrow_reads`)."""
        self.count = 0
        self.wide: dict[str, str] = {}
        """int8/int16 tensor -> an int64 tensor of the same values (the clipped value it
        was cast from), so a consumer that widens it again needs no Cast."""
        self.siblings = siblings or {}
        """first FullyConnected of a group sharing one input -> the group (`_siblings`)."""
        self.lowered: set[str] = set()
        self.unsigned: dict[str, str] = {}
        """int8 tensor -> a uint8 tensor holding its values + 128 (`matmul_integer`)."""
        self.tabled: dict[str, tuple[str, np.ndarray]] = {}
        """int8 tensor -> (index, 65,536-entry table) it was gathered with (`_binary_table`)."""
        self.looked_up: dict[str, tuple[str, np.ndarray]] = {}
        """int8 tensor -> (int8 input, 256 values at input + 128) of the table it came from."""
        self.shifted: dict[str, tuple[str, int]] = {}
        """int8 tensor -> (int64 tensor, d) holding its values + d: a saturated
        requantization's lifted result (`saturated_affine`) before the Sub that takes d
        off. A Gather indexed by it folds d into its table (`offset_view`)."""

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

    def matmul_integer(self, op: Op, x: str, w: str, x_zp: int,
                       values: np.ndarray | None) -> str:
        """MatMulInteger(x - x_zp, w) for int8 x (1..., K) and int8 w (K, N), int32;
        `values`: w's integers if it is a constant.

        onnxruntime's fast kernels take uint8 activations; its int8 x int8 path is many
        times slower from K N ~ 10^4 on (measured: 26 us vs 5.7 us for 128 x 256 at batch
        1). So for constant weights of at least `UNSIGNED_FROM` entries the activation goes
        as x + 128 (two nodes, shared by every FullyConnected reading x) with zero point
        x_zp + 128, and the weights as w + 128 with zero point 128: uint8 x uint8. Not
        uint8 x int8: on x86 without VNNI (AVX2 only) that kernel adds pairs of u8 * s8
        products in int16 (vpmaddubsw), which saturates (2 * 255 * 127 > 2^15) and gives
        other bits than the golden model; u8 x u8 widens first and is exact everywhere."""
        if values is None or values.size < UNSIGNED_FROM:
            zp = self.const(self.tmp(op, "xzp"), np.asarray(x_zp, np.int8))
            return self.node(op, "MatMulInteger", [x, w, zp])
        if x not in self.unsigned:
            if x in self.wide:
                shifted = self.node(op, "Add", [self.wide[x], self.i64(op, "half", 128)])
                self.unsigned[x] = self.cast(op, shifted, "uint8")
            else:  # Cast wraps modulo 256 (two's complement): x XOR 0x80 = x + 128
                self.unsigned[x] = self.node(op, "BitwiseXor", [
                    self.cast(op, x, "uint8"),
                    self.const(self.tmp(op, "sign"), np.asarray(128, np.uint8))])
        zp = self.const(self.tmp(op, "xzp"), np.asarray(x_zp + 128, np.uint8))
        w_u8 = self.const(self.tmp(op, "weights_u8"),
                          (np.asarray(values, np.int16) + 128).astype(np.uint8))
        w_zp = self.const(self.tmp(op, "wzp"), np.asarray(128, np.uint8))
        return self.node(op, "MatMulInteger", [self.unsigned[x], w_u8, zp, w_zp])

    def widened(self, op: Op, name: str) -> str:
        """An int64 tensor holding the values of integer tensor `name` (one Cast, shared by
        every consumer)."""
        if name not in self.wide:
            self.wide[name] = self.cast(op, name, "int64")
        return self.wide[name]

    def offset_view(self, op: Op, name: str) -> tuple[str, int]:
        """(int64 tensor, d) holding the values of integer tensor `name` + d: its lifted
        form where it has one (d > 0, no Sub), else its int64 copy (d = 0)."""
        return self.shifted.get(name) or (self.widened(op, name), 0)

    def lifted_output(self, op: Op, name: str, lifted: str, lift: int, dtype: str) -> None:
        """`name` (op's output, or one part of it) = lifted - lift as `dtype`; the lifted
        form is kept for the Gathers that fold the lift into their tables."""
        wide = lifted if lift == 0 else self.node(op, "Sub", [lifted, self.i64(op, "lift", lift)])
        self.nodes.append(helper.make_node("Cast", [wide], [name], to=ONNX_DTYPES[dtype]))
        self.wide[name] = wide
        if lift:
            self.shifted[name] = (lifted, lift)

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
                    scale: int = 1, offset: object = 0, out_zp: object = 0) -> str | None:
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
        c = _affine_constants(multiplier, shift, scale, offset, out_zp)
        if c is None:
            return None
        return self._div_floor(op, self._affine_sum(op, p, c, [0] * len(c.k)),
                               np.asarray(c.k, np.int64).reshape(c.shape))

    def saturated_affine(self, op: Op, p: str, multiplier: object, shift: object,
                         dtype: str, p_bound: object, *, offset: object = 0,
                         out_zp: object = 0) -> tuple[str, int] | None:
        """`mbqm_affine` saturated to `dtype`'s range [lo, hi], for |p| <= p_bound (per
        channel), as (int64 tensor, C) holding the result + C, with no floor fix-up:
        C 2^k added to every dividend, ONNX's truncating Div, and a clip to [lo + C,
        hi + C]. C = -lo where that fits: truncation differs from the floor only for a
        negative dividend, whose floor is below 0 = lo + C and so clips the same. Else
        the smallest C making every dividend non-negative (0 where they all are).
        With C = -lo the result + C is the index of its value in a table read from lo
        (`offset_view`); `lifted_output` takes C off. None where a constant would not
        fit (use mbqm_affine)."""
        c = _affine_constants(multiplier, shift, 1, offset, out_zp)
        if c is None:
            return None
        bounds = np.broadcast_to(np.asarray(p_bound, np.int64), c.shape).reshape(-1).tolist()
        lowest = [-pb * abs(mm) + min(rr, rn) for pb, mm, rr, rn
                  in zip(bounds, c.mm, c.r, c.rneg, strict=True)]
        lo, hi = nx.dtype_range(dtype)
        # the smallest lift making every dividend non-negative also serves (no clipping
        # argument needed); -lo is preferred, and the one that fits is taken
        positive = max(0, *(-(y // (1 << kk)) for y, kk in zip(lowest, c.k, strict=True)))
        for lift in dict.fromkeys([min(positive, -lo), positive]):
            extra = [lift << kk for kk in c.k]
            if all(pb * abs(mm) + max(rr, rn) + x < 1 << 62 and y + x > -(1 << 62) for
                   pb, mm, rr, rn, x, y in zip(bounds, c.mm, c.r, c.rneg, extra, lowest,
                                               strict=True)):
                break
        else:
            return None
        y = self._affine_sum(op, p, c, extra)
        floor = self.node(op, "Div", [y, self.i64(op, "pot", np.asarray(
            [1 << kk for kk in c.k], np.int64).reshape(c.shape))])
        return self.node(op, "Clip", [floor, self.i64(op, "lo", lo + lift),
                                      self.i64(op, "hi", hi + lift)]), lift

    def _affine_sum(self, op: Op, p: str, c: _Affine, extra: list[int]) -> str:
        """p * M + the rounding term (sign-dependent where e >= 1) + extra, int64."""
        def const(what: str, values: list[int]) -> str:
            return self.i64(op, what, np.asarray(values, np.int64).reshape(c.shape))

        pm = p if all(v == 1 for v in c.mm) else self.node(op, "Mul", [p, const("m", c.mm)])
        r = [rr + x for rr, x in zip(c.r, extra, strict=True)]
        if c.r != c.rneg:
            below = self.node(op, "Less", [pm, const("t", c.t)])
            rneg = [rr + x for rr, x in zip(c.rneg, extra, strict=True)]
            term = self.node(op, "Where", [below, const("rneg", rneg), const("r", r)])
        else:
            term = const("r", r)
        return self.node(op, "Add", [pm, term])

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
        self.narrowed(op, self.node(op, "Clip", [value, self.i64(op, "lo", info.min),
                                                 self.i64(op, "hi", info.max)]), dtype)

    def narrowed(self, op: Op, clipped: str, dtype: str) -> None:
        """int64 `clipped` (inside dtype's range) -> op.output as `dtype`, and kept as its
        int64 copy for the consumers that widen it."""
        self.nodes.append(helper.make_node("Cast", [clipped], [op.output], to=ONNX_DTYPES[dtype]))
        self.wide[op.output] = clipped

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
        return self.node(op, "Sub", [self.widened(op, x), self.i64(op, "zp", zp)])


def _narrow_reads(g: Graph) -> set[str]:
    """Tensors read as they are (int8/int16) by some consumer or a graph output; the
    others are only read through `_Int.widened` (lookups, elementwise requantizations)."""
    narrow = set(g.outputs)
    for op in g.ops:
        for i, name in enumerate(op.inputs):
            widens = (op.kind == "lut" and i == 0) or op.kind in (
                "qadd", "qsub", "qmul", "requantize", *_WIDEN) or (
                op.kind == "fully_connected" and i == 0 and g.tensors[name].dtype == "int16")
            if not widens:
                narrow.add(name)
    return narrow


def _siblings(g: Graph) -> dict[str, list[Op]]:
    """int8 FullyConnected ops that read one input with one zero point (constant weights and
    biases, one output dtype), grouped under the first: one MatMulInteger and one
    requantization chain serve them all (onnxruntime pays per node, not per channel)."""
    groups: dict[tuple, list[Op]] = {}
    for op in g.ops:
        if op.kind != "fully_connected":
            continue
        x, w, bias = op.inputs
        if g.tensors[x].dtype != "int8" or w not in g.constants or bias not in g.constants \
                or len(g.tensors[w].shape) != 2:
            continue
        key = (x, int(op.attrs["x_zp"]), op.attrs["dtype"])
        groups.setdefault(key, []).append(op)
    return {ops[0].output: ops for ops in groups.values() if len(ops) > 1}


def _fully_connected_group(n: _Int, g: Graph, ops: list[Op]) -> bool:
    """The FullyConnected ops `ops` (`_siblings`) as one: weights, biases and per-channel
    requantization constants concatenated, the int64 result split per op. False (nothing
    emitted) where the folded constants would not fit."""
    head = ops[0]
    widths = [g.tensors[op.inputs[1]].shape[1] for op in ops]

    def channels(op: Op, key: str) -> np.ndarray:
        width = g.tensors[op.inputs[1]].shape[1]
        return np.broadcast_to(np.asarray(op.attrs[key], np.int64), (width,))

    mark = len(n.nodes), len(n.initializers), dict(n.unsigned)
    weights = np.concatenate([g.constants[op.inputs[1]] for op in ops], axis=1)
    acc = n.matmul_integer(head, head.inputs[0], n.const(n.tmp(head, "weights"), weights),
                           int(head.attrs["x_zp"]), weights)
    lifted = n.saturated_affine(
        head, n.cast(head, acc, "int64"),
        np.concatenate([channels(op, "multiplier") for op in ops]),
        np.concatenate([channels(op, "shift") for op in ops]), head.attrs["dtype"],
        np.concatenate([_accumulator_bound(g, op) for op in ops]),
        offset=np.concatenate([np.asarray(g.constants[op.inputs[2]], np.int64) for op in ops]),
        out_zp=np.concatenate([channels(op, "out_zp") for op in ops]))
    if lifted is None:  # take back the nodes and constants emitted so far
        del n.nodes[mark[0]:], n.initializers[mark[1]:]
        n.unsigned = mark[2]
        return False
    clipped, lift = lifted
    parts = [n.tmp(op, "part") for op in ops]
    n.nodes.append(helper.make_node("Split", [clipped, n.i64(head, "split", widths)], parts,
                                    axis=-1))
    for op, part in zip(ops, parts, strict=True):
        n.lifted_output(op, op.output, part, lift, op.attrs["dtype"])
        n.lowered.add(op.output)
    return True


def _accumulator_bound(g: Graph, op: Op) -> np.ndarray:
    """Per output channel, the largest |sum_k (x_k - x_zp) w_kn| of an int8 FullyConnected
    with constant weights w (K, N): int64 (N,)."""
    zp = int(op.attrs["x_zp"])
    span = max(abs(-128 - zp), abs(127 - zp))
    return span * np.abs(g.constants[op.inputs[1]].astype(np.int64)).sum(axis=0)


def _fully_connected(n: _Int, g: Graph, op: Op) -> None:
    if op.output in n.lowered:  # computed with its group's first op
        return
    if op.output in n.siblings and _fully_connected_group(n, g, n.siblings[op.output]):
        return
    a, (x, w, bias) = op.attrs, op.inputs
    if g.tensors[x].dtype == "int16":  # 16x8: int64 MatMul (exact), TFLite's int64 requant
        acc = n.node(op, "MatMul", [n.centered(op, x, a["x_zp"]), n.cast(op, w, "int64")])
        acc = n.node(op, "Add", [acc, n.cast(op, bias, "int64")])
        n.finish(op, n.mbqm_int64(op, acc, a["multiplier"], a["shift"]), a["out_zp"],
                 a["dtype"])
        return
    acc = n.cast(op, n.matmul_integer(op, x, w, int(a["x_zp"]), g.constants.get(w)), "int64")
    bias_values = g.constants.get(bias)
    if bias_values is not None:  # the bias folds into the requantization's constants
        if w in g.constants:
            lifted = n.saturated_affine(op, acc, a["multiplier"], a["shift"], a["dtype"],
                                        _accumulator_bound(g, op),
                                        offset=np.asarray(bias_values, np.int64),
                                        out_zp=a["out_zp"])
            if lifted is not None:
                n.lifted_output(op, op.output, *lifted, a["dtype"])
                return
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
    end as ONNX Gather defines them. An operand looked up in a 256-entry table is replaced
    by the table's input, the table folded into the 65,536 (composition is exact; the
    lookup itself goes as dead code when nothing else reads it). False if the operands
    are not int8."""
    from ncc.compiler.golden import INT_KERNELS

    if any(g.tensors[i].dtype != "int8" for i in (*op.inputs, op.output)):
        return False
    grid = np.arange(-128, 128, dtype=np.int64)
    operands, values = [], []
    for name, every in ((op.inputs[0], np.repeat(grid, 256)), (op.inputs[1], np.tile(grid, 256))):
        source, table = n.looked_up.get(name, (name, None))
        operands.append(source)
        values.append((every if table is None else table[every + 128]).astype(np.int8))
    results = np.asarray(INT_KERNELS[op.kind](np, tuple(values), op.attrs), np.int8)
    (a, da), (b, db) = (n.offset_view(op, name) for name in operands)
    d = 256 * da + db  # index a * 256 + b + d: the table is rolled by d
    if not -32640 <= d <= 32896:  # a * 256 + b + d must stay inside [-65536, 65535]
        (a, da), (b, db), d = (n.widened(op, operands[0]), 0), (n.widened(op, operands[1]), 0), 0
    table = np.zeros(65536, np.int8)
    table[(np.repeat(grid, 256) * 256 + np.tile(grid, 256) + d) % 65536] = results
    index = n.node(op, "Add", [n.node(op, "Mul", [a, n.i64(op, "row", 256)]), b])
    n.tabled[op.output] = (index, table)
    _gather(n, op, table, index, g.tensors[op.output].dtype)
    return True


def _gather(n: _Int, op: Op, table: np.ndarray, index: str, dtype: str) -> None:
    """op.output = table[index] as `dtype`; where every consumer widens it, the Gather
    reads an int64 copy of the table (its Cast to `dtype` stays for the record, dropped as
    dead code when nothing reads it)."""
    if n.narrow is None or op.output in n.narrow:
        n.nodes.append(helper.make_node("Gather", [n.const(n.tmp(op, "table"), table), index],
                                        [op.output], axis=0))
        return
    wide = n.node(op, "Gather", [n.i64(op, "table", table), index], axis=0)
    n.nodes.append(helper.make_node("Cast", [wide], [op.output], to=ONNX_DTYPES[dtype]))
    n.wide[op.output] = wide


def _add_sub(n: _Int, g: Graph, op: Op) -> None:
    if _binary_table(n, g, op):
        return
    a, ins = op.attrs, op.inputs
    pow2 = 1 << a["left_shift"]
    sides = []
    for i, side in ((0, "a"), (1, "b")):
        x = n.widened(op, ins[i])
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
    x = n.widened(op, op.inputs[0])
    n.requantized(op, x, a["multiplier"], a["shift"], a["out_zp"], a["dtype"],
                  offset=-a["in_zp"])


def _lut_interpolated(n: _Int, op: Op, x: str, values: np.ndarray) -> None:
    """The compact int16 table (`numerics.interpolated_lookup`) in int64: u = x + 2^15,
    i = u / 128 and f = u & 127 (u >= 0: Div is floor); y = (T[i] - 2^16) + (d_i f + 64 +
    2^23) / 128 with d_i = T[i+1] - T[i]: |d_i f + 64| < 2^23 keeps the dividend positive,
    so Div floors, and the 2^23 / 128 = 2^16 it adds is taken back from the base table."""
    t = np.asarray(values, np.int64)
    seg = 1 << nx.INTERP_SEGMENT_BITS
    u = n.node(op, "Add", [n.widened(op, x), n.i64(op, "half", 1 << (nx.INTERP_BITS - 1))])
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
    dtype = g.tensors[op.output].dtype
    if values is not None and x in n.tabled and dtype == "int8":
        # x = T[index]: look up table[T] at the same index (one Gather less on the way)
        index, inner = n.tabled[x]
        composed = np.asarray(values)[inner.astype(np.int64) + 128]
        n.tabled[op.output] = (index, composed)
        _gather(n, op, composed, index, dtype)
        return
    if values is not None:  # rotated so that x + d indexes it (negative: from the end)
        index, d = n.offset_view(op, x)
        if not (lo == -128 and d <= 128):  # x + d must stay inside [-256, 255]
            index, d = n.widened(op, x), 0
        if lo == -128 and dtype == "int8":
            n.looked_up[op.output] = (x, np.asarray(values))
        _gather(n, op, np.roll(np.asarray(values), lo + d), index, dtype)
        return
    index = n.node(op, "Sub", [n.widened(op, x), n.i64(op, "lo", lo)])
    n.nodes.append(helper.make_node("Gather", [table, index], [op.output], axis=0))


def _widened(n: _Int, g: Graph, op: Op) -> None:
    """Comparisons, min/max and selects run on int64 copies of int8/int16 operands (a
    constant one widened here, at compile time), since onnxruntime registers few int8
    kernels for them."""
    if not any(g.tensors[i].dtype in ("int8", "int16") for i in op.inputs):
        lower_float_op(n, g, op)
        return

    def wide(name: str) -> str:
        if g.tensors[name].dtype not in ("int8", "int16"):
            return name
        if name in g.constants:
            return n.i64(op, "const", g.constants[name])
        return n.widened(op, name)

    out_dtype = g.tensors[op.output].dtype
    narrow = out_dtype in ("int8", "int16")
    inner = Op(op.kind, tuple(wide(i) for i in op.inputs),
               n.tmp(op, "wide") if narrow else op.output, op.attrs)
    lower_float_op(n, g, inner)
    if narrow:
        n.nodes.append(helper.make_node("Cast", [inner.output], [op.output],
                                        to=ONNX_DTYPES[out_dtype]))
        n.wide[op.output] = inner.output


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
    graph, _ = step_graph(g, _lower_int_op, nodes=_Int(_siblings(g), _narrow_reads(g)))
    model = to_model(graph)
    return Artifact(target=TARGET, entry="model.onnx",
                    files={"model.onnx": model.SerializeToString(deterministic=True)},
                    io_names={n: n for n in g.inputs + g.outputs},
                    details={"opset": model.opset_import[0].version,
                             "exact": "bit-exact with the golden integer model"})
