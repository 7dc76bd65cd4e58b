"""The step IR: one timestep of a recurrent model as a small graph of tensor ops.

A `Graph` maps named inputs (the step input `x`, an optional time delta `dt`,
and the previous state tensors) to named outputs (`y` and the next state
tensors). Every value is a `Tensor` with a static shape (batch included,
batch = 1), a dtype and, after quantization, `QuantParams`. Weights live in
`Graph.constants`. Ops come from the closed set `OPS`; elementwise ops follow
numpy broadcasting.

This module imports nothing from the rest of ncc but the numeric core (`QuantParams`
is `ncc.numerics.QuantParams`): it is the contract every other part speaks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ncc.numerics import INTERP_BITS, INTERP_ENTRIES, QuantParams

DTYPES = ("float32", "int8", "int16", "int32", "int64", "uint8", "bool")
ROLES = ("input", "dt", "state_in", "state_out", "output")

# op -> (number of inputs, or None for variadic; attribute names it requires)
OPS: dict[str, tuple[int | None, tuple[str, ...]]] = {
    # linear algebra: (..., K) @ (K, N) -> (..., N)
    "matmul": (2, ()),
    # binary elementwise, numpy broadcasting
    "add": (2, ()),
    "sub": (2, ()),
    "mul": (2, ()),
    "div": (2, ()),
    "max": (2, ()),
    "min": (2, ()),
    "pow": (2, ()),
    "greater": (2, ()),
    "greater_equal": (2, ()),
    "less": (2, ()),
    "less_equal": (2, ()),
    "equal": (2, ()),
    # unary elementwise
    "identity": (1, ()),
    "neg": (1, ()),
    "abs": (1, ()),
    "exp": (1, ()),
    "log": (1, ()),
    "sqrt": (1, ()),
    "sigmoid": (1, ()),
    "tanh": (1, ()),
    # cos, sin (radians) and softplus log(1 + e^x): phasor rotations, complex exp, SSM step
    # sizes; integer form a table, like every unary function
    "cos": (1, ()),
    "sin": (1, ()),
    "softplus": (1, ()),
    "relu": (1, ()),
    "floor": (1, ()),
    "sign": (1, ()),
    "logical_not": (1, ()),
    "clip": (1, ("min", "max")),
    "cast": (1, ("dtype",)),
    # QAT: dequantize(quantize(x)) on the grid (scale, zero_point, dtype, axis), float32 in
    # and out, evaluated exactly like ncc.numerics.quantize then dequantize. The quantizer turns
    # it into preset parameters for its input and output; it never reaches a target.
    "fake_quant": (1, ("scale", "zero_point", "dtype", "axis")),
    # selection: where(cond, a, b)
    "where": (3, ()),
    # shape ops
    "concat": (None, ("axis",)),
    "slice": (1, ("starts", "stops", "steps")),
    "reshape": (1, ("shape",)),
    "broadcast": (1, ("shape",)),
    "transpose": (1, ("perm",)),
    # take entries `indices` (constant, in range) along `axis` (not the batch axis)
    "gather": (1, ("axis", "indices")),
    # reductions over `axes`, dropping them
    "reduce_sum": (1, ("axes",)),
    "reduce_max": (1, ("axes",)),
    # --- integer ops (after quantization; kernels in compiler/golden.py) ---
    # (x, w (K, N) int8, bias (N,) int32) -> requantized (..., N)
    "fully_connected": (3, ("x_zp", "multiplier", "shift", "out_zp", "dtype")),
    # a + b, a - b with TFLite's ADD/SUB int8 rescaling (left shift, three multipliers)
    "qadd": (2, ("a_zp", "b_zp", "a_multiplier", "a_shift", "b_multiplier", "b_shift",
                 "multiplier", "shift", "out_zp", "left_shift", "dtype")),
    "qsub": (2, ("a_zp", "b_zp", "a_multiplier", "a_shift", "b_multiplier", "b_shift",
                 "multiplier", "shift", "out_zp", "left_shift", "dtype")),
    # a * b requantized with one multiplier
    "qmul": (2, ("a_zp", "b_zp", "multiplier", "shift", "out_zp", "dtype")),
    # table[x - min(dtype)]: any unary function at fixed input/output parameters; for int16
    # x also a compact 513-entry table, linearly interpolated (ncc.numerics.interpolated_lookup)
    "lut": (2, ()),
    # change scale and zero point
    "requantize": (1, ("in_zp", "multiplier", "shift", "out_zp", "dtype")),
}

INTEGER_OPS = frozenset({"fully_connected", "qadd", "qsub", "qmul", "lut", "requantize"})

COMPARISONS = frozenset({"greater", "greater_equal", "less", "less_equal", "equal"})


class IRError(ValueError):
    """A graph breaks an IR rule; the message names the offending tensor or op."""


@dataclass(frozen=True)
class Tensor:
    """A named value: static shape, dtype, optional quantization."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    quant: QuantParams | None = None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class Op:
    """`outputs = kind(inputs, **attrs)`; every name refers to a Tensor of the graph.

    `source` records where the op came from in user code ("file.py:12"), for errors.
    """

    kind: str
    inputs: tuple[str, ...]
    output: str
    attrs: dict[str, Any] = field(default_factory=dict)
    source: str = ""


@dataclass
class Graph:
    """One timestep. `inputs`/`outputs` are ordered; `roles` gives each one's role.

    `state_pairs` lists (state_in, state_out): the host feeds state_out of step t
    as state_in of step t + 1. `initial_state` holds each state_in's value at t = 0.
    """

    name: str
    tensors: dict[str, Tensor]
    inputs: list[str]
    outputs: list[str]
    roles: dict[str, str]
    state_pairs: list[tuple[str, str]]
    constants: dict[str, np.ndarray]
    ops: list[Op]
    initial_state: dict[str, np.ndarray] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    # --- queries -------------------------------------------------------------------
    def by_role(self, role: str) -> list[str]:
        names = self.inputs if role in ("input", "dt", "state_in") else self.outputs
        return [n for n in names if self.roles[n] == role]

    def producer(self) -> dict[str, Op]:
        return {op.output: op for op in self.ops}

    def consumers(self) -> dict[str, list[Op]]:
        users: dict[str, list[Op]] = {name: [] for name in self.tensors}
        for op in self.ops:
            for name in op.inputs:
                users[name].append(op)
        return users

    def replace(self, **changes: Any) -> Graph:
        return dataclasses.replace(self, **changes)

    def __str__(self) -> str:
        return format_graph(self)


# --- shape inference -------------------------------------------------------------------


def broadcast_shapes(name: str, *shapes: tuple[int, ...]) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise IRError(f"{name}: shapes {list(shapes)} do not broadcast") from None


def infer(op: Op, ins: list[Tensor]) -> tuple[tuple[int, ...], str]:
    """Shape and dtype of `op`'s output given its input tensors; raises IRError."""
    kind, a = op.kind, op.attrs
    where = f"op {kind} -> {op.output!r}"
    if kind == "matmul":
        x, w = ins
        if len(w.shape) != 2 or not x.shape or x.shape[-1] != w.shape[0]:
            raise IRError(f"{where}: cannot multiply {x.name}{list(x.shape)} by "
                          f"{w.name}{list(w.shape)}")
        out_dtype = "int32" if x.dtype.startswith(("int", "uint")) else x.dtype
        return x.shape[:-1] + (w.shape[1],), out_dtype
    if kind == "fully_connected":
        x, w, b = ins
        if len(w.shape) != 2 or not x.shape or x.shape[-1] != w.shape[0] or b.shape != (
                w.shape[1],):
            raise IRError(f"{where}: bad operand shapes {[list(t.shape) for t in ins]}")
        return x.shape[:-1] + (w.shape[1],), a["dtype"]
    if kind in ("qadd", "qsub", "qmul"):
        return broadcast_shapes(where, *(t.shape for t in ins)), a["dtype"]
    if kind == "lut":
        x, table = ins
        bits = 8 * np.dtype(x.dtype).itemsize
        if table.shape != (1 << bits,) and (bits, table.shape) != (INTERP_BITS, (INTERP_ENTRIES,)):
            raise IRError(f"{where}: table {table.name} must have one entry per {x.dtype} "
                          f"value (or {INTERP_ENTRIES}, interpolated, for int16)")
        return x.shape, table.dtype
    if kind == "requantize":
        return ins[0].shape, a["dtype"]
    if kind in COMPARISONS:
        return broadcast_shapes(where, *(t.shape for t in ins)), "bool"
    if kind == "where":
        c, x, y = ins
        if c.dtype != "bool":
            raise IRError(f"{where}: condition {c.name} must be bool, got {c.dtype}")
        _same_dtype(where, [x, y])
        return broadcast_shapes(where, c.shape, x.shape, y.shape), x.dtype
    if kind in ("add", "sub", "mul", "div", "max", "min", "pow"):
        _same_dtype(where, ins)
        return broadcast_shapes(where, *(t.shape for t in ins)), ins[0].dtype
    if kind == "cast":
        if a["dtype"] not in DTYPES:
            raise IRError(f"{where}: unknown dtype {a['dtype']!r}")
        return ins[0].shape, a["dtype"]
    if kind == "logical_not":
        return ins[0].shape, "bool"
    if kind in ("identity", "neg", "abs", "exp", "log", "sqrt", "sigmoid", "tanh", "relu", "floor",
                "sign", "clip", "fake_quant", "cos", "sin", "softplus"):
        return ins[0].shape, ins[0].dtype
    if kind == "concat":
        _same_dtype(where, ins)
        axis = a["axis"] % len(ins[0].shape)
        rest = {t.shape[:axis] + t.shape[axis + 1:] for t in ins}
        if len(rest) != 1 or len({len(t.shape) for t in ins}) != 1:
            raise IRError(f"{where}: inputs {[list(t.shape) for t in ins]} differ off axis")
        size = sum(t.shape[axis] for t in ins)
        return ins[0].shape[:axis] + (size,) + ins[0].shape[axis + 1:], ins[0].dtype
    if kind == "slice":
        x = ins[0]
        if not len(a["starts"]) == len(a["stops"]) == len(a["steps"]) == len(x.shape):
            raise IRError(f"{where}: slice rank does not match {x.name}{list(x.shape)}")
        shape = tuple(len(range(s, e, st)) for s, e, st in
                      zip(a["starts"], a["stops"], a["steps"], strict=True))
        return shape, x.dtype
    if kind == "reshape":
        shape = tuple(a["shape"])
        if int(np.prod(shape)) != ins[0].size:
            raise IRError(f"{where}: cannot reshape {list(ins[0].shape)} to {list(shape)}")
        return shape, ins[0].dtype
    if kind == "broadcast":
        shape = tuple(a["shape"])
        if broadcast_shapes(where, ins[0].shape, shape) != shape:
            raise IRError(f"{where}: cannot broadcast {list(ins[0].shape)} to {list(shape)}")
        return shape, ins[0].dtype
    if kind == "transpose":
        perm = tuple(a["perm"])
        if sorted(perm) != list(range(len(ins[0].shape))):
            raise IRError(f"{where}: bad permutation {list(perm)}")
        return tuple(ins[0].shape[p] for p in perm), ins[0].dtype
    if kind == "gather":
        x = ins[0]
        if not x.shape or not -len(x.shape) <= a["axis"] < len(x.shape):
            raise IRError(f"{where}: axis {a['axis']} out of range for {x.name}{list(x.shape)}")
        axis = a["axis"] % len(x.shape)
        if not all(0 <= int(i) < x.shape[axis] for i in a["indices"]):
            raise IRError(f"{where}: indices outside [0, {x.shape[axis]}) on axis {axis}")
        return x.shape[:axis] + (len(a["indices"]),) + x.shape[axis + 1:], x.dtype
    if kind in ("reduce_sum", "reduce_max"):
        axes = {ax % len(ins[0].shape) for ax in a["axes"]}
        return tuple(d for i, d in enumerate(ins[0].shape) if i not in axes), ins[0].dtype
    raise IRError(f"{where}: unknown op kind {kind!r}")


def _same_dtype(where: str, ins: list[Tensor]) -> None:
    if len({t.dtype for t in ins}) != 1:
        raise IRError(f"{where}: mixed dtypes {[f'{t.name}:{t.dtype}' for t in ins]}")


# --- verifier --------------------------------------------------------------------------


def verify(g: Graph) -> Graph:
    """Check every IR rule; return the graph unchanged or raise IRError naming the culprit."""
    defined: set[str] = set()
    for name in g.inputs:
        _check_declared(g, name, "graph input")
        if g.roles.get(name) not in ("input", "dt", "state_in"):
            raise IRError(f"graph input {name!r} has role {g.roles.get(name)!r}")
        if name in defined:
            raise IRError(f"tensor {name!r} is listed twice as an input")
        defined.add(name)
    for name, value in g.constants.items():
        t = _check_declared(g, name, "constant")
        if name in defined:
            raise IRError(f"constant {name!r} is also a graph input")
        if tuple(value.shape) != t.shape or str(value.dtype) != t.dtype:
            raise IRError(f"constant {name!r}: data is {value.dtype}{list(value.shape)}, "
                          f"tensor says {t.dtype}{list(t.shape)}")
        defined.add(name)
    for op in g.ops:
        arity, attrs = OPS.get(op.kind, (-1, ()))
        if arity == -1:
            raise IRError(f"op producing {op.output!r}: unknown kind {op.kind!r}")
        if arity is not None and len(op.inputs) != arity:
            raise IRError(f"op {op.kind} -> {op.output!r}: takes {arity} inputs, "
                          f"got {len(op.inputs)}")
        missing = [k for k in attrs if k not in op.attrs]
        if missing:
            raise IRError(f"op {op.kind} -> {op.output!r}: missing attributes {missing}")
        for name in op.inputs:
            if name not in defined:
                raise IRError(f"op {op.kind} -> {op.output!r} reads tensor {name!r} "
                              "before it is defined")
        if op.output in defined:
            raise IRError(f"tensor {op.output!r} is assigned twice (single assignment)")
        out = _check_declared(g, op.output, f"output of op {op.kind}")
        shape, dtype = infer(op, [g.tensors[n] for n in op.inputs])
        if shape != out.shape or dtype != out.dtype:
            raise IRError(f"tensor {op.output!r}: declared {out.dtype}{list(out.shape)}, "
                          f"op {op.kind} gives {dtype}{list(shape)}")
        defined.add(op.output)
    for name in g.outputs:
        if name not in defined:
            raise IRError(f"graph output {name!r} is never defined")
        if g.roles.get(name) not in ("output", "state_out"):
            raise IRError(f"graph output {name!r} has role {g.roles.get(name)!r}")
    for s_in, s_out in g.state_pairs:
        if g.roles.get(s_in) != "state_in" or g.roles.get(s_out) != "state_out":
            raise IRError(f"state pair ({s_in!r}, {s_out!r}) must link a state_in "
                          "to a state_out")
        a, b = g.tensors[s_in], g.tensors[s_out]
        if a.shape != b.shape or a.dtype != b.dtype:
            raise IRError(f"state {s_in!r} is {a.dtype}{list(a.shape)} but its next "
                          f"value {s_out!r} is {b.dtype}{list(b.shape)}")
        init = g.initial_state.get(s_in)
        if init is None or tuple(init.shape) != a.shape:
            raise IRError(f"state {s_in!r} needs an initial value of shape {list(a.shape)}")
    return g


def _check_declared(g: Graph, name: str, what: str) -> Tensor:
    t = g.tensors.get(name)
    if t is None:
        raise IRError(f"{what} {name!r} has no tensor declaration")
    if t.dtype not in DTYPES:
        raise IRError(f"tensor {name!r}: unknown dtype {t.dtype!r}")
    if any(int(d) < 0 for d in t.shape):
        raise IRError(f"tensor {name!r}: negative dimension in {list(t.shape)}")
    return t


# --- printer ---------------------------------------------------------------------------


def _type(t: Tensor) -> str:
    text = f"{t.dtype}[{','.join(map(str, t.shape))}]"
    if t.quant is not None:
        q = t.quant
        scale = f"{q.scale[0]:.6g}" if len(q.scale) == 1 else f"<{len(q.scale)} scales>"
        zp = f"{q.zero_point[0]}" if len(q.zero_point) == 1 else "<per-axis>"
        text += f"{{{q.dtype} s={scale} zp={zp}}}"
    return text


def format_graph(g: Graph) -> str:
    """Readable text form, one line per input, constant, op and output."""
    lines = [f"graph {g.name} {{"]
    for name in g.inputs:
        lines.append(f"  {g.roles[name]:9} %{name}: {_type(g.tensors[name])}")
    for name, value in g.constants.items():
        preview = f" = {value.item():.6g}" if value.size == 1 else ""
        lines.append(f"  const     %{name}: {_type(g.tensors[name])}{preview}")
    for op in g.ops:
        args = ", ".join(f"%{n}" for n in op.inputs)
        attrs = "".join(f" {k}={v}" for k, v in sorted(op.attrs.items()))
        lines.append(f"  %{op.output}: {_type(g.tensors[op.output])} = {op.kind}({args}){attrs}")
    for name in g.outputs:
        lines.append(f"  {g.roles[name]:9} %{name}")
    for s_in, s_out in g.state_pairs:
        lines.append(f"  state     %{s_out} -> %{s_in}")
    lines.append("}")
    return "\n".join(lines)
