"""C statements for the integer graph's ops: one small emitter per op kind, as TFLite
Micro registers one kernel per op. Each returns the step's lines for its op and declares
the constants it needs (parameters, weights, tables) on the `Emitter`."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ncc import numerics as nx
from ncc.compiler.c_names import CNames
from ncc.compiler.ir import COMPARISONS, Graph, Op, Tensor
from ncc.targets.c_arena import ALIASES, SUFFIX, ArenaPlan, arena_name

SPARSE_DENSITY = 0.75  # at least a quarter of the synapses absent
MAX_RANK = 6
CTYPES = {"int8": "int8_t", "int16": "int16_t", "int32": "int32_t", "uint8": "uint8_t",
          "bool": "uint8_t"}
CTYPE_BYTES = {"int8_t": 1, "uint8_t": 1, "int16_t": 2, "uint16_t": 2, "int32_t": 4}
DTYPE_ENUM = {"bool": "NCC_BOOL", "uint8": "NCC_UINT8", "int8": "NCC_INT8",
              "int16": "NCC_INT16", "int32": "NCC_INT32"}
ACTIVATIONS = ("int8", "int16")  # the widths of the integer ops' kernels
# TFLite's int64 MultiplyByQuantizedMultiplier (16x8 dense layers) shifts right by
# 15 - shift: shift <= 14 keeps that a right shift (TFLite itself allows shift < 8)
FC16_MAX_SHIFT = 14
# the int8 dense kernel sums x * w (each |.| <= 2^14) in int32: depth <= 2^16 keeps it exact
FC_MAX_DEPTH = 1 << 16


class CTargetError(ValueError):
    """The integer graph uses something the C runtime does not implement; names the op."""


def itemsize(dtype: str) -> int:
    return 1 if dtype == "bool" else np.dtype(dtype).itemsize


def _literal(v: int) -> str:
    return "(-2147483647 - 1)" if v == -(1 << 31) else str(int(v))


def c_array(ctype: str, name: str, values: np.ndarray, comment: str = "") -> str:
    """`static const ctype name[n] = {...};`, 16 values a row, after an optional comment."""
    flat = [int(v) for v in np.asarray(values).reshape(-1)]
    rows = [", ".join(_literal(v) for v in flat[i:i + 16]) for i in range(0, len(flat), 16)]
    body = ",\n    ".join(rows) if rows else "0"
    note = f"/* {comment} */\n" if comment else ""
    return f"{note}static const {ctype} {name}[{max(len(flat), 1)}] = {{\n    {body}\n}};\n"


@dataclass
class Emitter:
    """Walks the integer graph once, collecting constants and statements."""

    g: Graph
    arenas: ArenaPlan
    producers: dict[str, Op]  # tensor -> the op computing it
    ident: CNames = field(default_factory=CNames)  # ident(tensor, prefix) -> C name
    decls: list[str] = field(default_factory=list)
    emitted: set[str] = field(default_factory=set)
    body: list[str] = field(default_factory=list)
    const_bytes: int = 0
    macs: int = 0
    sparse: list[dict[str, Any]] = field(default_factory=list)
    spiking: list[dict[str, Any]] = field(default_factory=list)

    def const_array(self, ctype: str, name: str, values: np.ndarray, comment: str = "") -> str:
        if name not in self.emitted:
            self.emitted.add(name)
            self.decls.append(c_array(ctype, name, values, comment))
            self.const_bytes += int(np.asarray(values).size) * CTYPE_BYTES[ctype]
        return name

    def decl(self, text: str) -> None:
        self.decls.append(text)

    def t(self, name: str) -> Tensor:
        return self.g.tensors[name]

    def is_spikes(self, name: str) -> bool:
        """True if `name` is 0/1 spikes: an integer cast of a bool (through reshapes)."""
        op = self.producers.get(name)
        while op is not None and op.kind in ALIASES:
            op = self.producers.get(op.inputs[0])
        return op is not None and op.kind == "cast" and self.t(op.inputs[0]).dtype == "bool"

    def ptr(self, name: str) -> str:
        """C expression of a pointer to tensor `name`'s first element."""
        g = self.g
        name = self.arenas.storage.get(name, name)
        if name in g.constants:
            t = self.t(name)
            return self.const_array(CTYPES[t.dtype], self.ident(name, "k"), g.constants[name],
                                    f"{name}: {t.dtype}{list(t.shape)}")
        role = g.roles.get(name)
        if role in ("input", "dt") and name in g.inputs:
            return self.ident(name, "in")
        if role == "state_in":
            index = [s for s, _ in g.state_pairs].index(name)
            return f"ctx->s{index}"
        buf = self.arenas.buffers[name]
        return f"({arena_name(buf.dtype)} + {buf.offset})"

    def step(self, op: Op, name: str) -> str:
        """1 if tensor `name` matches op's output elementwise, 0 if it is a scalar."""
        return "1" if self.t(name).size == self.t(op.output).size else "0"

    def width(self, op: Op, names: tuple[str, ...]) -> str:
        """Kernel suffix ("s8" or "s16") of an op whose tensors `names` share one width."""
        got = [self.t(n).dtype for n in names]
        if len(set(got)) != 1 or got[0] not in ACTIVATIONS:
            listed = ", ".join(f"{n}: {d}" for n, d in zip(names, got, strict=True))
            raise CTargetError(f"c target: op {op.kind} -> {op.output!r} on {listed}; the C "
                               "runtime implements it with every operand int8, or every one "
                               "int16")
        return SUFFIX[got[0]]


def _strides(shape: tuple[int, ...]) -> list[int]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return out[::-1]


def _csr(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(post_start, pre, weight) of a (depth, units) matrix: synapse lists by output."""
    units = weights.shape[1]
    cols = [np.flatnonzero(weights[:, j]) for j in range(units)]
    start = np.concatenate([[0], np.cumsum([len(c) for c in cols])])
    pre = np.concatenate(cols) if start[-1] else np.zeros(0, np.int64)
    wv = (np.concatenate([weights[c, j] for j, c in enumerate(cols)]) if start[-1]
          else np.zeros(0, np.int8))
    return start, pre, wv


def _fully_connected(e: Emitter, op: Op, tag: str) -> list[str]:
    a, out = op.attrs, op.output
    y = e.ptr(out)
    x, w, bias = op.inputs
    width = e.width(op, (x, out))
    if e.t(w).dtype != "int8" or e.t(bias).dtype != "int32":
        raise CTargetError(f"c target: fully_connected -> {out!r} needs int8 weights and "
                           f"int32 biases, got {e.t(w).dtype} and {e.t(bias).dtype}")
    top = int(np.max(a["shift"]))
    if width == "s16" and top > FC16_MAX_SHIFT:
        raise CTargetError(f"c target: 16x8 fully_connected -> {out!r} has a requantization "
                           f"shift {top} > {FC16_MAX_SHIFT}; the int64 multiplier cannot "
                           "apply it")
    depth, units = e.t(w).shape
    rows = e.t(x).size // depth
    mult = np.broadcast_to(np.asarray(a["multiplier"], np.int64), (units,))
    shift = np.broadcast_to(np.asarray(a["shift"], np.int64), (units,))
    m = e.const_array("int32_t", f"{tag}_multiplier", mult)
    s = e.const_array("int32_t", f"{tag}_shift", shift)
    e.decl(f"static const ncc_fc_params {tag}_params = {{{a['x_zp']}, {m}, {s}, "
           f"{a['out_zp']}}};\n")
    weights = e.g.constants.get(e.arenas.storage.get(w, w))
    density = (np.count_nonzero(weights) / weights.size if weights is not None
               and weights.size else 1.0)
    if e.is_spikes(x) and a["x_zp"] == 0 and weights is not None:
        # an input spike drives its present synapses: events = spikes x fan-out
        e.spiking.append({"tensor": out, "spikes": x, "neurons": e.t(x).size,
                          "synapses": rows * int(np.count_nonzero(weights))})
    if weights is not None and density <= SPARSE_DENSITY and depth <= 0xFFFF:
        start, pre, wv = _csr(weights)
        k = e.ident(w, "k")  # named after the weights: ops sharing them share the arrays
        ps = e.const_array("int32_t", f"{k}_post_start", start)
        pp = e.const_array("uint16_t", f"{k}_pre", pre)
        pw = e.const_array("int8_t", f"{k}_weight", wv,
                           f"{w}: {int(start[-1])} of {weights.size} synapses")
        e.macs += rows * int(start[-1])
        e.sparse.append({"tensor": out, "synapses": int(start[-1]),
                         "dense_size": int(weights.size)})
        return [f"    ncc_sparse_fully_connected_{width}({e.ptr(x)}, {ps}, {pp}, {pw}, "
                f"{e.ptr(bias)}, {rows}, {depth}, {units}, &{tag}_params, {y});"]
    bias_values = e.g.constants.get(e.arenas.storage.get(bias, bias))
    if weights is None or bias_values is None:
        raise CTargetError(f"c target: fully_connected -> {out!r} needs constant weights "
                           "and bias (the kernel's weight layout is chosen at compile time)")
    if depth > FC_MAX_DEPTH:
        raise CTargetError(f"c target: fully_connected -> {out!r} has depth {depth} > "
                           f"{FC_MAX_DEPTH}; the int8 kernel's int32 partial sums need it")
    e.macs += rows * depth * units
    wr, br = _dense_rows(e, w, bias, weights, bias_values, int(a["x_zp"]), width)
    return [f"    ncc_fully_connected_{width}({e.ptr(x)}, {wr}, {br}, "
            f"{rows}, {depth}, {units}, &{tag}_params, {y});"]


def _dense_rows(e: Emitter, w: str, bias: str, weights: np.ndarray, bias_values: np.ndarray,
                x_zp: int, width: str) -> tuple[str, str]:
    """The dense kernel's constants: the weights as contiguous per-output rows
    `[units][depth]` (the transpose of the IR's (depth, units)), and for int8 the bias with
    the input zero point folded in, bias[n] - x_zp * sum_k w[k, n] modulo 2^32 (the
    kernel's uint32 accumulator gives golden.py's bits; see ncc_kernels.c)."""
    rows_name = e.const_array("int8_t", f"{e.ident(w, 'k')}_rows",
                              np.ascontiguousarray(weights.T),
                              f"{w}: int8 [units][depth], one row per output")
    if width != "s8" or x_zp == 0:
        return rows_name, e.ptr(bias)
    folded = (bias_values.astype(np.int64).reshape(-1)
              - x_zp * weights.astype(np.int64).sum(axis=0))
    wrapped = ((folded + (1 << 31)) % (1 << 32)) - (1 << 31)
    name = e.const_array("int32_t", f"{e.ident(bias, 'k')}_zp{x_zp + 128}", wrapped,
                         f"{bias} - ({x_zp}) * column sums of {w}, modulo 2^32")
    return rows_name, name


def _add_sub(e: Emitter, op: Op, tag: str) -> list[str]:
    a, out = op.attrs, op.output
    y, n = e.ptr(out), e.t(out).size
    width = e.width(op, (*op.inputs, out))
    fields = ", ".join(str(int(a[k])) for k in (
        "a_zp", "b_zp", "a_multiplier", "a_shift", "b_multiplier", "b_shift",
        "multiplier", "shift", "out_zp", "left_shift"))
    e.decl(f"static const ncc_add_params {tag}_params = {{{fields}}};\n")
    fn = f"ncc_{'add' if op.kind == 'qadd' else 'sub'}_{width}"
    p, q = op.inputs
    return [f"    {fn}({e.ptr(p)}, {e.step(op, p)}, {e.ptr(q)}, {e.step(op, q)}, "
            f"{n}, &{tag}_params, {y});"]


def _mul_params(e: Emitter, tag: str, fields: tuple[Any, ...]) -> None:
    e.decl(f"static const ncc_mul_params {tag}_params = "
           f"{{{', '.join(str(int(v)) for v in fields)}}};\n")


def _mul(e: Emitter, op: Op, tag: str) -> list[str]:
    a, out = op.attrs, op.output
    y, n = e.ptr(out), e.t(out).size
    width = e.width(op, (*op.inputs, out))
    _mul_params(e, tag, (a["a_zp"], a["b_zp"], a["multiplier"], a["shift"], a["out_zp"]))
    p, q = op.inputs
    return [f"    ncc_mul_{width}({e.ptr(p)}, {e.step(op, p)}, {e.ptr(q)}, "
            f"{e.step(op, q)}, {n}, &{tag}_params, {y});"]


def _requantize(e: Emitter, op: Op, tag: str) -> list[str]:
    """int8 <-> int16 too: ncc_requantize_s8_s16, _s16_s8."""
    a, out = op.attrs, op.output
    y, n = e.ptr(out), e.t(out).size
    x = op.inputs[0]
    if {e.t(x).dtype, e.t(out).dtype} - set(ACTIVATIONS):
        raise CTargetError(f"c target: requantize -> {out!r} from {e.t(x).dtype} to "
                           f"{e.t(out).dtype}; the C runtime requantizes between int8 "
                           "and int16 only")
    _mul_params(e, tag, (a["in_zp"], 0, a["multiplier"], a["shift"], a["out_zp"]))
    widths = [SUFFIX[e.t(name).dtype] for name in (x, out)]
    fn = "_".join(["ncc_requantize", *dict.fromkeys(widths)])  # one suffix if equal
    return [f"    {fn}({e.ptr(x)}, {n}, &{tag}_params, {y});"]


def _lut(e: Emitter, op: Op, tag: str) -> list[str]:
    y, n = e.ptr(op.output), e.t(op.output).size
    x, table = op.inputs
    width = e.width(op, (x, table))
    compact = width == "s16" and e.t(table).shape == (nx.INTERP_ENTRIES,)
    kind = "lut_interp" if compact else "lut"
    return [f"    ncc_{kind}_{width}({e.ptr(x)}, {n}, {e.ptr(table)}, {y});"]


def _binary_int(e: Emitter, op: Op, tag: str) -> list[str]:
    """max, min and the comparisons, on int8/16/32 operands."""
    out = op.output
    y, n = e.ptr(out), e.t(out).size
    dtype = e.t(op.inputs[0]).dtype
    if dtype not in SUFFIX:
        raise CTargetError(f"c target: {op.kind} -> {out!r} on {dtype}: int8/16/32 only")
    p, q = op.inputs
    args = f"{e.ptr(p)}, {e.step(op, p)}, {e.ptr(q)}, {e.step(op, q)}, {n}, {y}"
    if op.kind in COMPARISONS:
        return [f"    ncc_compare_{SUFFIX[dtype]}(NCC_{op.kind.upper()}, {args});"]
    return [f"    ncc_{op.kind}_{SUFFIX[dtype]}({args});"]


def _where(e: Emitter, op: Op, tag: str) -> list[str]:
    y, n = e.ptr(op.output), e.t(op.output).size
    c, p, q = op.inputs
    return [f"    ncc_select({e.ptr(c)}, {e.step(op, c)}, {e.ptr(p)}, "
            f"{e.step(op, p)}, {e.ptr(q)}, {e.step(op, q)}, {n}, "
            f"{itemsize(e.t(op.output).dtype)}, {y});"]


def _logical_not(e: Emitter, op: Op, tag: str) -> list[str]:
    y, n = e.ptr(op.output), e.t(op.output).size
    return [f"    ncc_logical_not({e.ptr(op.inputs[0])}, {n}, {y});"]


def _cast(e: Emitter, op: Op, tag: str) -> list[str]:
    out = op.output
    y, n = e.ptr(out), e.t(out).size
    src, dst = e.t(op.inputs[0]).dtype, e.t(out).dtype
    if src not in DTYPE_ENUM or dst not in DTYPE_ENUM:
        raise CTargetError(f"c target: cast -> {out!r} from {src} to {dst} unsupported")
    return [f"    ncc_cast({e.ptr(op.inputs[0])}, {DTYPE_ENUM[src]}, {y}, "
            f"{DTYPE_ENUM[dst]}, {n});"]


def _concat(e: Emitter, op: Op, tag: str) -> list[str]:
    out = op.output
    y = e.ptr(out)
    shape = e.t(out).shape
    axis = op.attrs["axis"] % len(shape)
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    y_inner = e.t(out).size // max(outer, 1)
    lines, at = [], 0
    for name in op.inputs:
        x_inner = e.t(name).size // max(outer, 1)
        lines.append(f"    ncc_concat_part({e.ptr(name)}, {itemsize(e.t(out).dtype)}, "
                     f"{outer}, {x_inner}, {y_inner}, {at}, {y});")
        at += x_inner
    return lines


def _gather(e: Emitter, op: Op, tag: str) -> list[str]:
    """ncc_gather over [outer, axis, inner]; equal index lists share one int16 array."""
    x, out = op.inputs[0], op.output
    shape = e.t(x).shape
    axis = op.attrs["axis"] % len(shape)
    if shape[axis] > 1 << 15:
        raise CTargetError(f"c target: gather -> {out!r} indexes an axis of {shape[axis]} "
                           "> 32768 entries")
    indices = np.asarray(op.attrs["indices"], np.int64)
    digest = hashlib.sha256(indices.astype("<i2").tobytes()).hexdigest()[:12]
    idx = e.const_array("int16_t", f"ncc_gather_{digest}", indices)
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    return [f"    ncc_gather({e.ptr(x)}, {itemsize(e.t(out).dtype)}, {outer}, {shape[axis]}, "
            f"{inner}, {len(indices)}, {idx}, {e.ptr(out)});"]


def _strided_copy(e: Emitter, op: Op, tag: str) -> list[str]:
    """slice, transpose and broadcast: one strided copy each."""
    a, out = op.attrs, op.output
    y = e.ptr(out)
    x = op.inputs[0]
    in_shape, out_shape = e.t(x).shape, e.t(out).shape
    base = _strides(in_shape)
    offset = 0
    if op.kind == "slice":
        strides = []
        for d, (s0, s1, st) in enumerate(zip(a["starts"], a["stops"], a["steps"],
                                             strict=True)):
            start = slice(s0, s1, st).indices(in_shape[d])[0]
            offset += start * base[d]
            strides.append(st * base[d])
    elif op.kind == "transpose":
        strides = [base[p] for p in a["perm"]]
    else:
        pad = len(out_shape) - len(in_shape)
        strides = [0] * pad + [0 if dim == 1 else s for dim, s in zip(in_shape, base,
                                                                       strict=True)]
    if len(out_shape) > MAX_RANK:
        raise CTargetError(f"c target: {op.kind} -> {out!r} has rank {len(out_shape)} "
                           f"> {MAX_RANK}")
    sh = e.const_array("int32_t", f"{tag}_shape", np.asarray(out_shape, np.int64))
    sd = e.const_array("int32_t", f"{tag}_strides", np.asarray(strides, np.int64))
    return [f"    ncc_strided_copy({e.ptr(x)}, {itemsize(e.t(out).dtype)}, "
            f"{len(out_shape)}, {sh}, {sd}, {offset}, {y});"]


Emit = Callable[[Emitter, Op, str], list[str]]

EMITTERS: dict[str, Emit] = {
    "fully_connected": _fully_connected, "qadd": _add_sub, "qsub": _add_sub, "qmul": _mul,
    "requantize": _requantize, "lut": _lut, "max": _binary_int, "min": _binary_int,
    **{kind: _binary_int for kind in sorted(COMPARISONS)},
    "where": _where, "logical_not": _logical_not, "cast": _cast, "concat": _concat,
    "slice": _strided_copy, "transpose": _strided_copy, "broadcast": _strided_copy,
    "gather": _gather,
}
"""Op kind -> its emitter; `ALIASES` (reshape, identity) emit no code."""


def emit_op(e: Emitter, op: Op, index: int) -> None:
    """Append op number `index`'s statements (after a comment naming it) to `e.body`."""
    if op.kind in ALIASES:
        e.body.append(f"    /* {op.kind}: {op.output} shares "
                      f"{e.arenas.storage[op.output]}'s storage */")
        return
    emit = EMITTERS.get(op.kind)
    if emit is None:
        raise CTargetError(f"c target: op {op.kind} -> {op.output!r} has no C kernel")
    lines = emit(e, op, f"o{index}")
    e.body.extend([f"    /* {op.kind} -> {op.output} */", *lines])
