"""C target: the golden integer graph as portable C99 over ncc's C runtime (`runtime/c`).

The artifact folder builds alone: `model.h` (sizes, the context struct holding the
recurrent state, the API), `model.c` (constants as `static const` arrays, one step
function calling the runtime kernels in graph order over statically planned scratch
arenas) and copies of the runtime sources `ncc.h`, `ncc_kernels.c`.

API (model.h):

- `void ncc_init(ncc_ctx *ctx)` / `void ncc_reset(ncc_ctx *ctx)`: state to its initial value;
- `void ncc_step(ncc_ctx *ctx, const int8_t *x, int8_t *y)`: one timestep, state threaded
  in `ctx` (x and y are int16_t for a 16x8 graph, `QuantOptions(activations="int16")`:
  the pointer types follow the tensors' dtypes); models with a time delta also get
  `ncc_step_dt(ctx, x, dt, y)` (`ncc_step` then feeds dt = 1.0 on dt's grid);
- `void *ncc_state(ncc_ctx *ctx, int32_t i)`, `int32_t ncc_state_bytes(int32_t i)`,
  `int32_t ncc_ctx_size(void)`: generic access for hosts (tests, the Python session);
- `void ncc_step_bytes(ncc_ctx *ctx, const void *x, const void *dt, void *y)`: one step on
  byte buffers, for generic drivers (`runtime/c/host`, `runtime/c/cortex_m`): every output
  concatenated in manifest order (`NCC_OUTPUTS_BYTES`), dt NULL for 1.0.

Scratch buffers are file-static in model.c: one model instance runs at a time per
program (the state lives in each ctx, so contexts can be interleaved step by step).

Weight matrices whose int8 density is at most `SPARSE_DENSITY` (sparse NCP wirings,
whose masked synapses are exact zeros) become synapse lists (CSR by output neuron);
absent synapses are skipped, the bits are the same, and `macs_per_step` counts present
synapses only. The trade: a present synapse costs 3 bytes of flash (int8 weight, uint16
presynaptic index) instead of 1, an absent one nothing, so at NCP densities (1/2 to 2/3)
the step does a third to a half fewer MACs for up to twice the weight bytes.

Integer ops run on int8 activations (`_s8` kernels) or on int16 ones (TFLite's 16x8 mode,
`_s16` kernels: int8 weights, int32 biases, int64 accumulators); the kernel follows the
dtypes of the op's tensors, and a mix the runtime has no kernel for (e.g. a qadd of an int8
and an int16 tensor) is a `CTargetError` naming the op.

A dense layer fed by spikes (an integer cast of a bool comparison, zero point 0) is listed in
`details["spiking_layers"]`: its synaptic events per step are the present synapses of the
neurons that spiked, at most `synapses` (the figure a neuromorphic core is sized by).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ncc.compiler.artifact import Artifact
from ncc.compiler.c_names import CNames
from ncc.compiler.ir import COMPARISONS, Graph, Op, Tensor
from ncc.compiler.numerics import quantize

TARGET = "c"
RUNTIME_FILES = ("ncc.h", "ncc_kernels.c")
SOURCES = ("model.c", "ncc_kernels.c")  # what a program compiles (with its own main)
WARNINGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic")
# Cortex-M4 footprint: arm-none-eabi-gcc objects sized by arm-none-eabi-size
ARM_CC = "arm-none-eabi-gcc"
ARM_SIZE = "arm-none-eabi-size"
ARM_CPU_FLAGS = ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=soft")  # no FPU needed
ARM_OPT_FLAGS = ("-Os", "-ffunction-sections", "-fdata-sections")
SPARSE_DENSITY = 0.75  # at least a quarter of the synapses absent
MAX_RANK = 6

CTYPES = {"int8": "int8_t", "int16": "int16_t", "int32": "int32_t", "uint8": "uint8_t",
          "bool": "uint8_t"}
DTYPE_ENUM = {"bool": "NCC_BOOL", "uint8": "NCC_UINT8", "int8": "NCC_INT8",
              "int16": "NCC_INT16", "int32": "NCC_INT32"}
SUFFIX = {"int8": "s8", "int16": "s16", "int32": "s32"}
ACTIVATIONS = ("int8", "int16")  # the widths of the integer ops' kernels
# TFLite's int64 MultiplyByQuantizedMultiplier (16x8 dense layers) shifts right by
# 15 - shift: shift <= 14 keeps that a right shift (TFLite itself allows shift < 8)
FC16_MAX_SHIFT = 14
ALIASES = ("reshape", "identity")
ELEMENTWISE = ("qadd", "qsub", "qmul", "max", "min", "where") + tuple(sorted(COMPARISONS))


class CTargetError(ValueError):
    """The integer graph uses something the C runtime does not implement; names the op."""


def runtime_sources() -> dict[str, bytes]:
    """The runtime files every C artifact carries: {file name: bytes}."""
    folder = resources.files("ncc.runtime").joinpath("c")
    return {name: folder.joinpath(name).read_bytes() for name in RUNTIME_FILES}


def _itemsize(dtype: str) -> int:
    return 1 if dtype == "bool" else np.dtype(dtype).itemsize


def _literal(v: int) -> str:
    return "(-2147483647 - 1)" if v == -(1 << 31) else str(int(v))


def _array(ctype: str, name: str, values: np.ndarray, comment: str = "") -> str:
    flat = [int(v) for v in np.asarray(values).reshape(-1)]
    rows = [", ".join(_literal(v) for v in flat[i:i + 16]) for i in range(0, len(flat), 16)]
    body = ",\n    ".join(rows) if rows else "0"
    note = f"/* {comment} */\n" if comment else ""
    return f"{note}static const {ctype} {name}[{max(len(flat), 1)}] = {{\n    {body}\n}};\n"


@dataclass
class _Buffer:
    """A scratch region: `size` elements of `dtype` live over op indices [first, last]."""

    dtype: str
    size: int
    first: int
    last: int
    offset: int = 0


@dataclass
class _Emitter:
    """Walks the integer graph once, collecting constants, buffers and statements."""

    g: Graph
    ident: CNames = field(default_factory=CNames)  # ident(tensor, prefix) -> C name
    decls: list[str] = field(default_factory=list)
    emitted: set[str] = field(default_factory=set)
    body: list[str] = field(default_factory=list)
    storage: dict[str, str] = field(default_factory=dict)  # tensor -> storage key
    buffers: dict[str, _Buffer] = field(default_factory=dict)
    const_bytes: int = 0
    macs: int = 0
    sparse: list[dict[str, Any]] = field(default_factory=list)
    spiking: list[dict[str, Any]] = field(default_factory=list)
    producers: dict[str, Op] = field(default_factory=dict)  # tensor -> the op computing it

    def const_array(self, ctype: str, name: str, values: np.ndarray, comment: str = "") -> str:
        if name not in self.emitted:
            self.emitted.add(name)
            self.decls.append(_array(ctype, name, values, comment))
            self.const_bytes += int(np.asarray(values).size) * {
                "int8_t": 1, "uint8_t": 1, "int16_t": 2, "uint16_t": 2, "int32_t": 4}[ctype]
        return name

    def decl(self, text: str, bytes_: int = 0) -> None:
        self.decls.append(text)
        self.const_bytes += bytes_

    # --- tensors -------------------------------------------------------------------
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
        name = self.storage.get(name, name)
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
        buf = self.buffers[name]
        return f"({self.arena(buf.dtype)} + {buf.offset})"

    @staticmethod
    def arena(dtype: str) -> str:
        return f"ncc_arena_{'u8' if dtype in ('bool', 'uint8') else SUFFIX[dtype]}"


def _strides(shape: tuple[int, ...]) -> list[int]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return out[::-1]


def _explicit_broadcasts(g: Graph) -> tuple[list[Op], dict[str, Tensor]]:
    """Elementwise inputs neither of the output's size nor scalar get a `broadcast` op."""
    ops: list[Op] = []
    tensors = dict(g.tensors)
    for op in g.ops:
        out = tensors[op.output]
        ins = list(op.inputs)
        if op.kind in ELEMENTWISE:
            for i, name in enumerate(ins):
                t = tensors[name]
                if t.size not in (1, out.size):  # equal sizes share the flat layout
                    wide = f"{name}__bcast_{op.output}"
                    tensors[wide] = Tensor(wide, out.shape, t.dtype, t.quant)
                    ops.append(Op("broadcast", (name,), wide, {"shape": out.shape}))
                    ins[i] = wide
        ops.append(Op(op.kind, tuple(ins), op.output, op.attrs, op.source))
    return ops, tensors


def _plan(e: _Emitter, ops: list[Op]) -> dict[str, int]:
    """Storage: aliases share their input's; other op results get arena offsets by
    first-fit over live intervals, one arena per element type. Returns arena sizes."""
    g = e.g
    end = len(ops)
    for i, op in enumerate(ops):
        if op.kind in ALIASES:
            e.storage[op.output] = e.storage.get(op.inputs[0], op.inputs[0])
            continue
        t = e.t(op.output)
        e.buffers[op.output] = _Buffer(t.dtype, t.size, i, i)
    for i, op in enumerate(ops):
        for name in op.inputs:
            root = e.storage.get(name, name)
            if root in e.buffers:
                e.buffers[root].last = max(e.buffers[root].last, i)
    for name in g.outputs:
        root = e.storage.get(name, name)
        if root in e.buffers:
            e.buffers[root].last = end
    sizes: dict[str, int] = {}
    placed: dict[str, list[_Buffer]] = {}
    for buf in e.buffers.values():  # in definition order: deterministic
        key = e.arena(buf.dtype)
        live = sorted((b for b in placed.get(key, []) if b.first <= buf.last
                       and buf.first <= b.last), key=lambda b: b.offset)
        offset = 0
        for other in live:
            if offset + buf.size <= other.offset:
                break
            offset = max(offset, other.offset + other.size)
        buf.offset = offset
        placed.setdefault(key, []).append(buf)
        sizes[key] = max(sizes.get(key, 0), offset + buf.size)
    return sizes


def _width(op: Op, e: _Emitter, names: tuple[str, ...]) -> str:
    """Kernel suffix ("s8" or "s16") of an op whose tensors `names` share one width."""
    got = [e.t(n).dtype for n in names]
    if len(set(got)) != 1 or got[0] not in ACTIVATIONS:
        listed = ", ".join(f"{n}: {d}" for n, d in zip(names, got, strict=True))
        raise CTargetError(f"c target: op {op.kind} -> {op.output!r} on {listed}; the C "
                           "runtime implements it with every operand int8, or every one "
                           "int16")
    return SUFFIX[got[0]]


def _step(e: _Emitter, op: Op, name: str) -> str:
    """1 if tensor `name` matches op's output elementwise, 0 if it is a scalar."""
    return "1" if e.t(name).size == e.t(op.output).size else "0"


def _emit_op(e: _Emitter, op: Op, index: int) -> None:
    a, out = op.attrs, op.output
    tag = f"o{index}"
    y = e.ptr(out) if op.kind not in ALIASES else ""
    n = e.t(out).size
    comment = f"    /* {op.kind} -> {out} */"
    lines: list[str] = []
    if op.kind == "fully_connected":
        x, w, bias = op.inputs
        width = _width(op, e, (x, out))
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
        weights = e.g.constants.get(e.storage.get(w, w))
        density = (np.count_nonzero(weights) / weights.size if weights is not None
                   and weights.size else 1.0)
        if e.is_spikes(x) and a["x_zp"] == 0 and weights is not None:
            # an input spike drives its present synapses: events = spikes x fan-out
            e.spiking.append({"tensor": out, "spikes": x, "neurons": e.t(x).size,
                              "synapses": rows * int(np.count_nonzero(weights))})
        if weights is not None and density <= SPARSE_DENSITY and depth <= 0xFFFF:
            cols = [np.flatnonzero(weights[:, j]) for j in range(units)]
            start = np.concatenate([[0], np.cumsum([len(c) for c in cols])])
            pre = np.concatenate(cols) if start[-1] else np.zeros(0, np.int64)
            wv = np.concatenate([weights[c, j] for j, c in enumerate(cols)]) if start[-1] \
                else np.zeros(0, np.int8)
            ps = e.const_array("int32_t", f"{tag}_post_start", start)
            pp = e.const_array("uint16_t", f"{tag}_pre", pre)
            pw = e.const_array("int8_t", f"{tag}_weight", wv,
                               f"{w}: {int(start[-1])} of {weights.size} synapses")
            lines.append(f"    ncc_sparse_fully_connected_{width}({e.ptr(x)}, {ps}, {pp}, {pw}, "
                         f"{e.ptr(bias)}, {rows}, {depth}, {units}, &{tag}_params, {y});")
            e.macs += rows * int(start[-1])
            e.sparse.append({"tensor": out, "synapses": int(start[-1]),
                             "dense_size": int(weights.size)})
        else:
            lines.append(f"    ncc_fully_connected_{width}({e.ptr(x)}, {e.ptr(w)}, {e.ptr(bias)}, "
                         f"{rows}, {depth}, {units}, &{tag}_params, {y});")
            e.macs += rows * depth * units
    elif op.kind in ("qadd", "qsub"):
        width = _width(op, e, (*op.inputs, out))
        fields = ", ".join(str(int(a[k])) for k in (
            "a_zp", "b_zp", "a_multiplier", "a_shift", "b_multiplier", "b_shift",
            "multiplier", "shift", "out_zp", "left_shift"))
        e.decl(f"static const ncc_add_params {tag}_params = {{{fields}}};\n")
        fn = f"ncc_{'add' if op.kind == 'qadd' else 'sub'}_{width}"
        p, q = op.inputs
        lines.append(f"    {fn}({e.ptr(p)}, {_step(e, op, p)}, {e.ptr(q)}, {_step(e, op, q)}, "
                     f"{n}, &{tag}_params, {y});")
    elif op.kind == "qmul":
        width = _width(op, e, (*op.inputs, out))
        fields = (a["a_zp"], a["b_zp"], a["multiplier"], a["shift"], a["out_zp"])
        e.decl(f"static const ncc_mul_params {tag}_params = "
               f"{{{', '.join(str(int(v)) for v in fields)}}};\n")
        p, q = op.inputs
        lines.append(f"    ncc_mul_{width}({e.ptr(p)}, {_step(e, op, p)}, {e.ptr(q)}, "
                     f"{_step(e, op, q)}, {n}, &{tag}_params, {y});")
    elif op.kind == "requantize":  # int8 <-> int16 too: ncc_requantize_s8_s16, _s16_s8
        x = op.inputs[0]
        if {e.t(x).dtype, e.t(out).dtype} - set(ACTIVATIONS):
            raise CTargetError(f"c target: requantize -> {out!r} from {e.t(x).dtype} to "
                               f"{e.t(out).dtype}; the C runtime requantizes between int8 "
                               "and int16 only")
        fields = (a["in_zp"], 0, a["multiplier"], a["shift"], a["out_zp"])
        e.decl(f"static const ncc_mul_params {tag}_params = "
               f"{{{', '.join(str(int(v)) for v in fields)}}};\n")
        widths = [SUFFIX[e.t(name).dtype] for name in (x, out)]
        fn = "_".join(["ncc_requantize", *dict.fromkeys(widths)])  # one suffix if equal
        lines.append(f"    {fn}({e.ptr(x)}, {n}, &{tag}_params, {y});")
    elif op.kind == "lut":
        x, table = op.inputs
        width = _width(op, e, (x, table))
        lines.append(f"    ncc_lut_{width}({e.ptr(x)}, {n}, {e.ptr(table)}, {y});")
    elif op.kind in ("max", "min") or op.kind in COMPARISONS:
        dtype = e.t(op.inputs[0]).dtype
        if dtype not in SUFFIX:
            raise CTargetError(f"c target: {op.kind} -> {out!r} on {dtype}: int8/16/32 only")
        p, q = op.inputs
        args = f"{e.ptr(p)}, {_step(e, op, p)}, {e.ptr(q)}, {_step(e, op, q)}, {n}, {y}"
        if op.kind in COMPARISONS:
            lines.append(f"    ncc_compare_{SUFFIX[dtype]}(NCC_{op.kind.upper()}, {args});")
        else:
            lines.append(f"    ncc_{op.kind}_{SUFFIX[dtype]}({args});")
    elif op.kind == "where":
        c, p, q = op.inputs
        lines.append(f"    ncc_select({e.ptr(c)}, {_step(e, op, c)}, {e.ptr(p)}, "
                     f"{_step(e, op, p)}, {e.ptr(q)}, {_step(e, op, q)}, {n}, "
                     f"{_itemsize(e.t(out).dtype)}, {y});")
    elif op.kind == "logical_not":
        lines.append(f"    ncc_logical_not({e.ptr(op.inputs[0])}, {n}, {y});")
    elif op.kind == "cast":
        src = e.t(op.inputs[0]).dtype
        dst = e.t(out).dtype
        if src not in DTYPE_ENUM or dst not in DTYPE_ENUM:
            raise CTargetError(f"c target: cast -> {out!r} from {src} to {dst} unsupported")
        lines.append(f"    ncc_cast({e.ptr(op.inputs[0])}, {DTYPE_ENUM[src]}, {y}, "
                     f"{DTYPE_ENUM[dst]}, {n});")
    elif op.kind == "concat":
        shape = e.t(out).shape
        axis = a["axis"] % len(shape)
        outer = int(np.prod(shape[:axis], dtype=np.int64))
        y_inner = e.t(out).size // max(outer, 1)
        at = 0
        for name in op.inputs:
            x_inner = e.t(name).size // max(outer, 1)
            lines.append(f"    ncc_concat_part({e.ptr(name)}, {_itemsize(e.t(out).dtype)}, "
                         f"{outer}, {x_inner}, {y_inner}, {at}, {y});")
            at += x_inner
    elif op.kind in ("slice", "transpose", "broadcast"):
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
        lines.append(f"    ncc_strided_copy({e.ptr(x)}, {_itemsize(e.t(out).dtype)}, "
                     f"{len(out_shape)}, {sh}, {sd}, {offset}, {y});")
    elif op.kind in ALIASES:
        lines.append(f"    /* {op.kind}: {out} shares {e.storage[out]}'s storage */")
        comment = ""
    else:
        raise CTargetError(f"c target: op {op.kind} -> {out!r} has no C kernel")
    e.body.extend(([comment] if comment else []) + lines)


def _dt_one(t: Tensor) -> np.ndarray:
    """dt = 1.0 on dt's grid (what `ncc_step` feeds), as the Python session does."""
    if t.quant is None:
        raise CTargetError(f"c target: dt input {t.name!r} is not quantized")
    return quantize(np.ones(t.shape, np.float32), t.quant)


def _step_bytes(g: Graph, x_name: str, dt_names: list[str], outputs: list[str],
                step_name: str) -> list[str]:
    """`ncc_step_bytes`: copies through typed locals, so byte buffers need no alignment."""
    def local(name: str, ident: str) -> str:
        t = g.tensors[name]
        return f"    {CTYPES[t.dtype]} {ident}[{t.size}];"

    def size(name: str) -> int:
        return g.tensors[name].size * _itemsize(g.tensors[name].dtype)

    c = ["void ncc_step_bytes(ncc_ctx *ctx, const void *x, const void *dt, void *y) {",
         "    unsigned char *out = (unsigned char *)y;", local(x_name, "xv")]
    c += [local(d, f"dt{i}") for i, d in enumerate(dt_names)]
    c += [local(o, f"y{i}") for i, o in enumerate(outputs)]
    c.append(f"    ncc_copy(x, {size(x_name)}, xv);")
    ys = ", ".join(f"y{i}" for i in range(len(outputs)))
    if dt_names:
        c.append("    if (dt == 0) {")
        c.append(f"        ncc_step(ctx, xv, {ys});")
        c.append("    } else {")
        at = 0
        for i, d in enumerate(dt_names):
            c.append(f"        ncc_copy((const unsigned char *)dt + {at}, {size(d)}, dt{i});")
            at += size(d)
        dts = ", ".join(f"dt{i}" for i in range(len(dt_names)))
        c += [f"        {step_name}(ctx, xv, {dts}, {ys});", "    }"]
    else:
        c += ["    (void)dt;", f"    ncc_step(ctx, xv, {ys});"]
    at = 0
    for i, o in enumerate(outputs):
        c.append(f"    ncc_copy(y{i}, {size(o)}, out + {at});")
        at += size(o)
    return c + ["}", ""]


def lower(g: Graph, *, reference: Graph | None = None, model: Any = None,
          sequence_length: int | None = None) -> Artifact:
    """C artifact of integer graph `g`: files model.h, model.c, ncc.h, ncc_kernels.c."""
    if not g.metadata.get("quantized"):
        raise CTargetError("the c target lowers a quantized graph; pass --calibration data")
    if sequence_length is not None:
        raise CTargetError("c artifacts run one step per call; drop --sequence-length")
    for name in g.inputs + g.outputs:
        if g.tensors[name].dtype not in CTYPES:
            raise CTargetError(f"c target: tensor {name!r} is {g.tensors[name].dtype}; "
                               f"the C runtime stores {sorted(CTYPES)}")
    e = _Emitter(g)
    ops, tensors = _explicit_broadcasts(g)
    e.g = g.replace(tensors=tensors)
    arenas = _plan(e, ops)
    e.producers = {op.output: op for op in ops}
    for i, op in enumerate(ops):
        _emit_op(e, op, i)
    (x_name,) = g.by_role("input")
    dt_names = g.by_role("dt")
    outputs = g.by_role("output")
    states = g.state_pairs
    out_params = ["y"] if len(outputs) == 1 else [f"y{i}" for i in range(len(outputs))]

    def sig(name: str, const: bool) -> str:
        return f"{'const ' if const else ''}{CTYPES[g.tensors[name].dtype]} *"

    x_param = f"{sig(x_name, True)}{e.ident(x_name, 'in')}"
    dt_params = [f"{sig(d, True)}{e.ident(d, 'in')}" for d in dt_names]
    y_params = [f"{sig(o, False)}{p}" for o, p in zip(outputs, out_params, strict=True)]
    step_name = "ncc_step_dt" if dt_names else "ncc_step"
    step_sig = f"void {step_name}(ncc_ctx *ctx, {', '.join([x_param, *dt_params, *y_params])})"
    plain_sig = f"void ncc_step(ncc_ctx *ctx, {', '.join([x_param, *y_params])})"

    def nbytes(name: str) -> int:
        return g.tensors[name].size * _itemsize(g.tensors[name].dtype)

    state_bytes = sum(g.tensors[s].size * _itemsize(g.tensors[s].dtype) for s, _ in states)
    scratch_bytes = sum(size * {"s8": 1, "u8": 1, "s16": 2, "s32": 4}[k.rsplit("_", 1)[1]]
                        for k, size in arenas.items())

    # --- model.h -------------------------------------------------------------------
    h = ["/* Generated by ncc (target c): do not edit. */",
         "#ifndef NCC_MODEL_H", "#define NCC_MODEL_H", "", '#include "ncc.h"', "",
         "#ifdef __cplusplus", 'extern "C" {', "#endif", "",
         f"/* model {g.name} */"]

    def sizes(macro: str, name: str) -> None:
        t = g.tensors[name]
        h.append(f"#define {macro}_SIZE {t.size} /* {name}: {t.dtype}{list(t.shape)} */")
        if t.quant is not None and len(t.quant.zero_point) == 1:
            h.append(f"#define {macro}_ZERO_POINT {t.quant.zero_point[0]} "
                     f"/* scale {t.quant.scale[0]:.9g} */")

    sizes("NCC_INPUT", x_name)
    for i, d in enumerate(dt_names):
        sizes("NCC_DT" if len(dt_names) == 1 else f"NCC_DT{i}", d)
    for i, o in enumerate(outputs):
        sizes("NCC_OUTPUT" if len(outputs) == 1 else f"NCC_OUTPUT{i}", o)
    h.append(f"#define NCC_STATE_COUNT {len(states)}")
    for i, (s, _) in enumerate(states):
        sizes(f"NCC_STATE{i}", s)
    h.append(f"#define NCC_STATE_BYTES {state_bytes}")
    h.append(f"#define NCC_INPUT_BYTES {nbytes(x_name)}")
    h.append(f"#define NCC_DT_BYTES {sum(nbytes(d) for d in dt_names)} /* 0: no time delta */")
    h.append(f"#define NCC_OUTPUTS_BYTES {sum(nbytes(o) for o in outputs)} "
             "/* every output, concatenated */")
    h.append(f"#define NCC_SCRATCH_BYTES {scratch_bytes}")
    h.append(f"#define NCC_HAS_DT {1 if dt_names else 0}")
    h += ["", "/* the recurrent state of one model instance */", "typedef struct {"]
    for i, (s, _) in enumerate(states):
        t = g.tensors[s]
        h.append(f"    {CTYPES[t.dtype]} s{i}[{t.size}]; /* {s} */")
    if not states:
        h.append("    int32_t unused; /* stateless model */")
    h += ["} ncc_ctx;", "",
          "/* state to its initial value (ncc_init: the same, for a fresh ctx) */",
          "void ncc_init(ncc_ctx *ctx);", "void ncc_reset(ncc_ctx *ctx);",
          "/* one timestep: reads x, writes y, advances ctx's state */", plain_sig + ";"]
    if dt_names:
        h += ["/* one timestep with an explicit time delta (ncc_step feeds dt = 1.0) */",
              step_sig + ";"]
    h += ["/* one step on byte buffers (generic drivers): x holds NCC_INPUT_BYTES, dt",
          "   NCC_DT_BYTES (or NULL: dt = 1.0), y receives NCC_OUTPUTS_BYTES, every output",
          "   in manifest order; no alignment needed */",
          "void ncc_step_bytes(ncc_ctx *ctx, const void *x, const void *dt, void *y);"]
    h += ["/* generic access (hosts, tests): state i's storage and size, sizeof(ncc_ctx) */",
          "void *ncc_state(ncc_ctx *ctx, int32_t index);",
          "int32_t ncc_state_bytes(int32_t index);", "int32_t ncc_ctx_size(void);", "",
          "#ifdef __cplusplus", "}", "#endif", "", "#endif /* NCC_MODEL_H */", ""]

    # --- model.c -------------------------------------------------------------------
    c = ["/* Generated by ncc (target c): do not edit. */", '#include "model.h"', ""]
    for i, (s, _) in enumerate(states):
        t = g.tensors[s]
        e.const_array(CTYPES[t.dtype], f"ncc_initial_s{i}", g.initial_state[s],
                      f"initial value of {s}")
    # resolve the pointers the step's epilogue copies from now: a constant output or state
    # declares its array here, before the declarations are written out
    result_ptr = {name: e.ptr(name) for name in [*outputs, *(s for _, s in states)]}
    c += e.decls
    c.append("/* scratch: op results, placed by liveness */")
    for key in sorted(arenas):
        ctype = {"s8": "int8_t", "u8": "uint8_t", "s16": "int16_t", "s32": "int32_t"}[
            key.rsplit("_", 1)[1]]
        c.append(f"static {ctype} {key}[{arenas[key]}];")
    c += ["", "void ncc_reset(ncc_ctx *ctx) {"]
    for i in range(len(states)):
        c.append(f"    ncc_copy(ncc_initial_s{i}, (int32_t)sizeof(ctx->s{i}), ctx->s{i});")
    if not states:
        c.append("    ctx->unused = 0;")
    c += ["}", "", "void ncc_init(ncc_ctx *ctx) {", "    ncc_reset(ctx);", "}", "",
          step_sig + " {"]
    c += e.body
    for o, p in zip(outputs, out_params, strict=True):
        t = g.tensors[o]
        c.append(f"    ncc_copy({result_ptr[o]}, {t.size * _itemsize(t.dtype)}, {p});")
    staged = []
    for i, (_s_in, s_out) in enumerate(states):
        src = result_ptr[s_out]
        if src.startswith("ctx->"):  # a state passed through: read it before any write
            t = g.tensors[s_out]
            staged.append(f"    {CTYPES[t.dtype]} stage{i}[{t.size}];")
            c.append(f"    ncc_copy({src}, (int32_t)sizeof(stage{i}), stage{i});")
            src = f"stage{i}"
        c.append(f"    ncc_copy({src}, (int32_t)sizeof(ctx->s{i}), ctx->s{i});")
    if staged:
        at = c.index(step_sig + " {") + 1
        c[at:at] = staged
    if not states:
        c.append("    (void)ctx;")
    c += ["}", ""]
    if dt_names:
        for d in dt_names:
            c.append(_array(CTYPES[g.tensors[d].dtype], f"ncc_dt_one_{e.ident(d, 'in')}",
                            _dt_one(g.tensors[d]), f"dt = 1.0 on {d}'s grid"))
        args = ", ".join([e.ident(x_name, "in"),
                          *[f"ncc_dt_one_{e.ident(d, 'in')}" for d in dt_names], *out_params])
        c += [plain_sig + " {", f"    {step_name}(ctx, {args});", "}", ""]
    c += _step_bytes(g, x_name, dt_names, outputs, step_name)
    c += ["void *ncc_state(ncc_ctx *ctx, int32_t index) {", "    (void)ctx;",
          "    switch (index) {"]
    c += [f"    case {i}: return ctx->s{i};" for i in range(len(states))]
    c += ["    default: return 0;", "    }", "}", "",
          "int32_t ncc_state_bytes(int32_t index) {", "    switch (index) {"]
    c += [f"    case {i}: return (int32_t)sizeof(((ncc_ctx *)0)->s{i});"
          for i in range(len(states))]
    c += ["    default: return 0;", "    }", "}", "",
          "int32_t ncc_ctx_size(void) {", "    return (int32_t)sizeof(ncc_ctx);", "}", ""]

    files = {"model.h": "\n".join(h).encode(), "model.c": "\n".join(c).encode(),
             **runtime_sources()}
    cortex_m = cortex_m_footprint(files, state_bytes)
    details = {
        "exact": "bit-exact with the golden integer model",
        "language": "C99, no malloc, no libm, no floating point",
        "api": {"step": plain_sig, "step_dt": step_sig if dt_names else None,
                "init": "void ncc_init(ncc_ctx *ctx)", "reset": "void ncc_reset(ncc_ctx *ctx)"},
        "build": "cc -std=c99 -O2 -c model.c ncc_kernels.c",
        "memory": {"weights_bytes": e.const_bytes, "state_bytes": state_bytes,
                   "scratch_bytes": scratch_bytes},
        "macs_per_step": e.macs,
        "sparse_layers": e.sparse,
        "spiking_layers": e.spiking,
        "max_synaptic_events_per_step": sum(s["synapses"] for s in e.spiking),
        "sparse_density_threshold": SPARSE_DENSITY,
        "cortex_m": cortex_m,
    }
    return Artifact(target=TARGET, entry="model.c", files=files,
                    io_names={n: n for n in g.inputs + g.outputs}, details=details)


# --- Cortex-M4 footprint ------------------------------------------------------------------


class FootprintError(RuntimeError):
    """The cross-compiler or arm-none-eabi-size failed; the message has its output."""


def _tool(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise FootprintError(f"{' '.join(cmd)} exited {done.returncode}:\n"
                             f"{(done.stderr + done.stdout)[-2000:]}")
    return done.stdout


def arm_objects(src: Path, build: Path) -> list[Path]:
    """model.o and ncc_kernels.o of the C files in `src`, built for a Cortex-M4."""
    objects = []
    for source in SOURCES:
        obj = build / Path(source).with_suffix(".o").name
        _tool([ARM_CC, *ARM_CPU_FLAGS, *WARNINGS, *ARM_OPT_FLAGS, "-c", str(src / source),
               "-o", str(obj)])
        objects.append(obj)
    return objects


def arm_sizes(paths: list[Path]) -> dict[str, dict[str, int]]:
    """arm-none-eabi-size (Berkeley format: text includes rodata) -> {file name: {text,
    data, bss}}."""
    sizes = {}
    for line in _tool([ARM_SIZE, *map(str, paths)]).splitlines()[1:]:
        text, data, bss, _dec, _hex, name = line.split(maxsplit=5)
        sizes[Path(name).name] = {"text": int(text), "data": int(data), "bss": int(bss)}
    return sizes


def cortex_m_footprint(files: dict[str, bytes], state_bytes: int) -> dict[str, Any]:
    """Flash and RAM of the model on a Cortex-M4, from `arm-none-eabi-size` of model.o and
    ncc_kernels.o: flash = text (code, weights, tables) + data; RAM = data + bss (the
    scratch arenas) + the state (ncc_ctx, which the caller allocates). Without the
    toolchain, {"not_measured": why}; the figures depend on the compiler version named."""
    missing = [t for t in (ARM_CC, ARM_SIZE) if shutil.which(t) is None]
    if missing:
        return {"not_measured": f"{' and '.join(missing)} not on PATH (Debian: "
                                "gcc-arm-none-eabi)"}
    try:
        with tempfile.TemporaryDirectory(prefix="ncc-m4-") as tmp:
            folder = Path(tmp)
            for name, data in files.items():
                (folder / name).write_bytes(data)
            objects = arm_sizes(arm_objects(folder, folder))
        version = _tool([ARM_CC, "-dumpversion"]).strip()
    except (FootprintError, OSError, subprocess.TimeoutExpired) as e:
        return {"not_measured": f"cross-compilation failed: {e}"[:2000]}
    data = sum(o["data"] for o in objects.values())
    return {
        "flash_bytes": sum(o["text"] for o in objects.values()) + data,
        "ram_bytes": data + sum(o["bss"] for o in objects.values()) + state_bytes,
        "state_bytes": state_bytes,
        "objects": objects,
        "definition": "flash = text (code, weights, tables) + data; RAM = data + bss "
                      "(scratch) + state (ncc_ctx); the whole runtime counted, unused "
                      "kernels included",
        "compiler": f"{ARM_CC} {version}",
        "flags": " ".join(ARM_CPU_FLAGS + ARM_OPT_FLAGS),
    }
