"""Post-training quantization: float step IR + calibrated ranges -> integer IR.

The integer IR is the golden model: every op is an integer kernel of
`compiler/golden.py` with its parameters (zero points, fixed-point multipliers
and shifts, tables) written out as attributes or constants.

How float ops become integer ops:

- `matmul(x, W)` (+ a bias `add`) -> `fully_connected`: int8 weights, symmetric
  per output channel; int32 bias at scale s_x * s_w; per-channel requantization.
- chains of unary ops (sigmoid, tanh, exp, relu, neg, ... and binary ops with a
  scalar constant, such as lecun_tanh's `1.7159 * tanh(0.666 x)` or CfC's
  `1 - sigmoid(x)`) -> one `lut`: a 256-entry table (int16 input: the compact 513-entry
  interpolated table, `ncc.numerics.interp_table`) from the float function at the
  chosen input/output parameters. Division by a tensor becomes a reciprocal table
  times a product (`prepare`).
- `add`/`sub`/`mul` of two tensors -> `qadd`/`qsub`/`qmul` (TFLite's int8 kernels).
- `reduce_sum` -> `fully_connected` with a ones vector (exact integer sum).
- comparisons against a constant -> integer comparisons against a threshold on the
  tensor's own grid (exact); spikes (bool cast to float) -> int8 0/1 with scale 1.
- data movement (concat, reshape, broadcast, slice, transpose, gather), `max`/`min`/`where`
  -> the same ops on integers, with inputs and outputs sharing parameters.

Constraints (`_Groups`): a state tensor uses the same parameters in and out (no
requantize in the recurrence); concatenated tensors and data-movement ops share
parameters with their inputs.

Widths: each group is int8 or int16 on its own (`QuantOptions.widths`, chosen by
`compiler/precision.py` for `--precision auto`). An op whose tensors differ in width runs
its kernel at the widest of them: narrower inputs are widened first by a `requantize`
onto an int16 grid 128x finer (its 12-bit scale just above s / 128, so that int16 MULs
stay portable: within half an int16 step of exact; spikes stay 0/1), and a narrower output
is computed on an int16 grid over its range and requantized down. Every kernel therefore
sees one width, and the conversions are TFLite's QUANTIZE.

QAT (`compiler/qat.py`): a `fake_quant` op joins its input's group and presets the group's
parameters (two different presets in one group are an error naming the tensors); it then
vanishes. Weights annotated with parameters keep exactly their integers; a table chain
tagged `table=fn` is the core's `build_table(fn)`. Groups without a preset need ranges.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ncc import numerics as nx
from ncc.compiler.calibrate import TensorRange
from ncc.compiler.golden import requantize as golden_requantize
from ncc.compiler.int_safety import (
    add_params,
    check_accumulator,
    mul_is_portable,
    mul_multipliers,
    portable_mul_params,
)
from ncc.compiler.interpret import evaluate
from ncc.compiler.ir import COMPARISONS, Graph, IRError, Op, QuantParams, Tensor, infer, verify
from ncc.compiler.neurons import fit_requantize
from ncc.compiler.passes import canonicalize, eliminate_dead

SHARE = ("concat", "reshape", "broadcast", "slice", "transpose", "gather", "identity", "max",
         "min")
UNARY = ("neg", "abs", "exp", "log", "sqrt", "sigmoid", "tanh", "relu", "floor", "sign",
         "clip", "identity", "cos", "sin", "softplus")
SCALAR_BINARY = ("add", "sub", "mul", "div", "max", "min", "pow")


IDENTITY_MULTIPLIER = (1 << 30, 1)
"""(multiplier, shift) of MBQM(x) = x: a requantize that keeps the integers (zero point 0)."""


class QuantizationError(ValueError):
    """The model has an op with no integer form, or a range the integers cannot hold."""


ACTIVATIONS = ("int8", "int16")
PRECISIONS = (*ACTIVATIONS, "auto")


@dataclass(frozen=True)
class QuantOptions:
    """How ranges become parameters.

    method: "minmax", "percentile" or "mse" (the clipped range with the least quantization
    error on the calibration sample). activations: "int8" (asymmetric per tensor) or
    "int16" (symmetric, zero point 0: TFLite's 16x8 mode, weights stay int8); spikes take
    the activation type too, as exact 0/1; or "auto": `compiler/precision.py` picks int8
    or int16 per group (`widths`) until the calibration data meet `target_sqnr` dB against
    float (or, with labels, an accuracy at most `max_accuracy_drop` points below float's),
    with at most `flash_budget` bytes of constants if given.
    """

    method: str = "minmax"
    percentile: float = 99.99
    activations: str = "int8"
    widths: tuple[tuple[str, str], ...] = ()
    """(tensor, "int8" | "int16") pairs: the width of each named tensor's group, overriding
    `activations` (the width of every other group)."""
    target_sqnr: float = 30.0
    max_accuracy_drop: float = 0.5
    flash_budget: int | None = None

    def __post_init__(self) -> None:
        if self.activations not in PRECISIONS:
            raise ValueError(f"activations must be one of {PRECISIONS}, not "
                             f"{self.activations!r}")
        for _, dtype in self.widths:
            if dtype not in ACTIVATIONS:
                raise ValueError(f"a tensor's width must be one of {ACTIVATIONS}, not "
                                 f"{dtype!r}")
        if self.flash_budget is not None and self.flash_budget <= 0:
            raise ValueError(f"flash budget {self.flash_budget}: give a positive byte count")

    def width_of(self, names: list[str]) -> str:
        """The width of the group holding tensors `names`."""
        chosen = {w for n, w in self.widths if n in set(names)}
        if len(chosen) > 1:
            raise ValueError(f"tensors {sorted(names)} share one grid but were given "
                             f"widths {sorted(chosen)}")
        return chosen.pop() if chosen else self.activations

    def params(self, lo: float, hi: float, dtype: str | None = None) -> QuantParams:
        """Parameters of an activation with range [lo, hi] at `dtype` (default
        `activations`)."""
        if self.activations == "auto" and dtype is None:
            raise ValueError("precision auto: choose the widths first (compiler/precision)")
        if (dtype or self.activations) == "int16":  # 12-bit scales keep int16 MULs portable
            return nx.int16_activation_params(lo, hi)
        return nx.asymmetric_params(lo, hi, 8)


DEFAULT_OPTIONS = QuantOptions()


# --- preparation (float -> float) -------------------------------------------------------


def prepare(g: Graph) -> Graph:
    """Rewrite float ops with no direct integer form into ones that have one.

    div(a, b) with b a tensor -> mul(a, pow(b, -1)): the reciprocal is then a table,
    and calibration sees its range. div by a constant -> mul by its reciprocal.
    """
    ops: list[Op] = []
    tensors, constants = dict(g.tensors), dict(g.constants)
    for op in g.ops:
        if op.kind != "div":
            ops.append(op)
            continue
        a, b = op.inputs
        if b in constants:
            recip = f"{b}_reciprocal"
            constants[recip] = (1.0 / constants[b]).astype(np.float32)
            tensors[recip] = Tensor(recip, tensors[b].shape, tensors[b].dtype)
        else:
            minus_one, recip = f"{op.output}_m1", f"{op.output}_reciprocal"
            constants[minus_one] = np.float32(-1.0).reshape(())
            tensors[minus_one] = Tensor(minus_one, (), "float32")
            tensors[recip] = Tensor(recip, tensors[b].shape, "float32")
            ops.append(Op("pow", (b, minus_one), recip, {}, op.source))
        ops.append(Op("mul", (a, recip), op.output, {}, op.source))
    return canonicalize(g.replace(ops=ops, tensors=tensors, constants=constants))


# --- analysis ----------------------------------------------------------------------------


class _Groups:
    """Union-find over tensor names: members of a group share quantization parameters."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, a: str) -> str:
        self.parent.setdefault(a, a)
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: str, b: str) -> None:
        self.parent[self.find(a)] = self.find(b)


def _is_scalar_const(g: Graph, name: str) -> bool:
    return name in g.constants and g.constants[name].size == 1


def _lut_operand(g: Graph, op: Op) -> str | None:
    """The one tensor input of a unary-like op (others scalar constants), else None."""
    if op.kind in UNARY:
        return op.inputs[0]
    if op.kind in SCALAR_BINARY:
        tensors = [n for n in op.inputs if not _is_scalar_const(g, n)]
        if len(set(tensors)) == 1 and tensors[0] not in g.constants:
            return tensors[0]
    return None


@dataclass
class _Plan:
    """What becomes what: LUT chains, fused biases, tensors that exist as integers."""

    chain_of: dict[str, tuple[str, list[Op]]]  # chain output -> (chain input, ops)
    internal: set[str]  # float tensors that vanish inside a chain or a fused dense
    bias_of: dict[str, tuple[Op, str]]  # matmul output -> (the bias add op, bias const)


def _plan(g: Graph) -> _Plan:
    users = g.consumers()
    keep = set(g.outputs)
    lut_in = {op.output: _lut_operand(g, op) for op in g.ops}
    chain_of: dict[str, tuple[str, list[Op]]] = {}
    internal: set[str] = set()
    bias_of: dict[str, tuple[Op, str]] = {}

    def single_use(name: str) -> bool:
        return name not in keep and len(users[name]) == 1

    for op in g.ops:
        if op.kind == "matmul" and single_use(op.output):
            (user,) = users[op.output]
            if user.kind == "add":
                other = [n for n in user.inputs if n != op.output]
                n_out = g.tensors[op.output].shape[-1]
                if (len(other) == 1 and other[0] in g.constants
                        and g.constants[other[0]].size == n_out
                        and g.tensors[user.output].shape == g.tensors[op.output].shape):
                    bias_of[op.output] = (user, other[0])
                    internal.add(op.output)
    bias_adds = {add.output for add, _ in bias_of.values()}
    for op in g.ops:  # grow chains forwards: an op extends its input's chain if single-use
        src = lut_in.get(op.output)
        if src is None or op.output in bias_adds or g.tensors[src].dtype != "float32":
            continue
        if src in chain_of and single_use(src) and src not in bias_of:
            start, ops = chain_of.pop(src)
            internal.add(src)
            chain_of[op.output] = (start, ops + [op])
        else:
            chain_of[op.output] = (src, [op])
    return _Plan(chain_of, internal, bias_of)


# --- parameters ----------------------------------------------------------------------------


def _groups(g: Graph, plan: _Plan) -> _Groups:
    groups = _Groups()
    for s_in, s_out in g.state_pairs:
        groups.union(s_in, s_out)
    for op in g.ops:
        if op.output in plan.internal or op.output in plan.chain_of:
            continue
        if op.kind == "fake_quant" and op.inputs[0] not in g.constants:
            groups.union(op.inputs[0], op.output)
        if op.kind in SHARE or op.kind == "where":
            data = op.inputs[1:] if op.kind == "where" else op.inputs
            for name in data:
                if name not in g.constants:
                    groups.union(name, op.output)
    return groups


def _range_of(name: str, ranges: dict[str, TensorRange], opts: QuantOptions) -> tuple[float, float]:
    r = ranges.get(name)
    if r is None or not np.isfinite(r.lo):
        raise QuantizationError(f"no calibrated range for tensor {name!r}")
    if opts.method == "percentile":
        return r.percentile_range(opts.percentile)
    if opts.method == "mse":
        return r.mse_range()
    return min(r.lo, 0.0), max(r.hi, 0.0)


def _presets(g: Graph) -> dict[str, QuantParams]:
    """Parameters fixed by the model itself: each `fake_quant` op's output (QAT)."""
    return {op.output: QuantParams.of_dtype(op.attrs["scale"], op.attrs["zero_point"],
                                            op.attrs["dtype"], op.attrs["axis"])
            for op in g.ops if op.kind == "fake_quant"}


def _members(g: Graph, plan: _Plan) -> list[list[str]]:
    """The groups of float tensors that exist as integers (sharing parameters)."""
    groups = _groups(g, plan)
    members: dict[str, list[str]] = {}
    for name, t in g.tensors.items():
        if t.dtype == "float32" and name not in g.constants and name not in plan.internal:
            members.setdefault(groups.find(name), []).append(name)
    return list(members.values())


def activation_groups(g: Graph) -> list[list[str]]:
    """The tensors of float graph `g` (from `prepare`) that exist as integers, by group
    (members share parameters, and so one width)."""
    return _members(g, _plan(g))


def spike_tensors(g: Graph) -> set[str]:
    """The exact 0/1 tensors of float graph `g`: bools cast to float (spikes)."""
    return {op.output for op in g.ops
            if op.kind == "cast" and g.tensors[op.inputs[0]].dtype == "bool"}


def uncalibrated(g: Graph) -> list[str]:
    """Tensors of float graph `g` (from `prepare`) whose parameters need calibrated ranges:
    empty for a model whose fake-quant points cover it (QAT)."""
    presets, spikes = _presets(g), spike_tensors(g)
    return [n for names in _members(g, _plan(g))
            if not (set(names) & (presets.keys() | spikes)) for n in names]


def choose_params(g: Graph, plan: _Plan, ranges: dict[str, TensorRange],
                  opts: QuantOptions) -> dict[str, QuantParams]:
    """Parameters for every tensor that exists as integers: the model's own (QAT presets),
    else `opts.params` of the calibrated ranges."""
    spikes, presets = spike_tensors(g), _presets(g)
    params: dict[str, QuantParams] = {}
    for names in _members(g, plan):
        fixed = {n: presets[n] for n in names if n in presets}
        if len(set(fixed.values())) > 1:
            where = {op.output: op.source for op in g.ops}
            listed = ", ".join(f"{n} at {where.get(n) or '?'} (scale {p.scale[0]:.6g}, zero "
                               f"point {p.zero_point[0]}, {p.dtype})"
                               for n, p in sorted(fixed.items()))
            raise QuantizationError(f"tensors that must share one grid (state in/out, concat, "
                                    f"data movement) carry different fake-quant parameters: "
                                    f"{listed}; give them one FakeQuant point")
        if fixed:
            p = next(iter(fixed.values()))
        elif spikes & set(names):
            p = QuantParams.of_dtype(1.0, 0, opts.width_of(names))  # spikes stay exact 0/1
        else:
            lo = min(_range_of(n, ranges, opts)[0] for n in names)
            hi = max(_range_of(n, ranges, opts)[1] for n in names)
            p = opts.params(lo, hi, opts.width_of(names))
        params.update({n: p for n in names})
    return params


# --- lowering ------------------------------------------------------------------------------


class _IntBuilder:
    def __init__(self, g: Graph, params: dict[str, QuantParams], opts: QuantOptions,
                 free: set[str], qat: set[str], spikes: set[str]):
        self.g, self.params, self.opts = g, params, opts
        self.spikes = set(spikes)  # exact 0/1 tensors (and their int16 twins)
        self.free = free  # tensors whose parameters no other tensor shares
        self.qat = qat  # tensors whose parameters the model's fake-quant points fix
        self.users = g.consumers()
        self.tensors: dict[str, Tensor] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.ops: list[Op] = []
        self.alias: dict[str, str] = {}  # dropped fake_quant output -> its input

    def declare_q(self, name: str) -> str:
        t, p = self.g.tensors[name], self.params[name]
        self.tensors[name] = Tensor(name, t.shape, p.dtype, p)
        return name

    def kernel_width(self, out: str, operands: list[str]) -> str:
        """The width op `out`'s kernel runs at: the widest of its integer operands and its
        output (QAT tensors keep theirs: the training forward has no conversions)."""
        widths = {self.params[out].dtype} | {self.tensors[n].dtype for n in operands
                                             if self.tensors[n].dtype in ACTIVATIONS}
        if out in self.qat or any(n in self.qat for n in operands):
            return self.params[out].dtype
        return "int16" if "int16" in widths else "int8"

    def widened(self, name: str, dtype: str, source: str = "") -> str:
        """Integer tensor `name` at `dtype`: itself, or (int8 -> int16) its twin on the
        12-bit scale just above s / 128, zero point 0 (spikes: the same 0/1 on scale 1)."""
        t = self.tensors[name]
        if t.dtype == dtype or t.dtype not in ACTIVATIONS or name in self.qat:
            return name
        # a tensor `computed_at` int16 and narrowed already has its int16 original under
        # this name: int16 consumers read that, skipping the round trip through int8
        twin = f"{name}_int16"
        if twin not in self.tensors:
            p = t.quant
            spikes = name in self.spikes
            scale = p.scale[0] if spikes else nx.short_scale(p.scale[0] / 128)
            pt = QuantParams((scale,), (0,), 16, True)
            m, s = (int(v) for v in nx.requantize_multipliers(p, pt, 0))
            attrs = dict(in_zp=p.zero_point[0], multiplier=m, shift=s, out_zp=0, dtype="int16")
            if name in self.constants:  # folded here: no runtime op on a constant
                self.const(twin, golden_requantize(self.constants[name], **attrs), pt)
            else:
                self.tensors[twin] = Tensor(twin, t.shape, "int16", pt)
                self.emit("requantize", [name], twin, source, **attrs)
            if spikes:
                self.spikes.add(twin)
        return twin

    def computed_at(self, out: str, dtype: str) -> str:
        """Where op `out` writes: `out` itself (declared) at its own width, else an int16
        tensor over out's range that `narrowed` then requantizes onto out's grid."""
        po = self.params[out]
        if po.dtype == dtype:
            self.declare_q(out)
            return out
        lo, hi = (float((v - po.zero_point[0]) * po.scale[0]) for v in nx.dtype_range(po.dtype))
        wide = f"{out}_int16"
        self.tensors[wide] = Tensor(wide, self.g.tensors[out].shape, "int16",
                                    nx.int16_activation_params(lo, hi))
        return wide

    def narrowed(self, wide: str, out: str, source: str = "") -> None:
        """Requantize `computed_at`'s int16 tensor onto out's grid (nothing if it is out)."""
        if wide == out:
            return
        pw, po = self.tensors[wide].quant, self.params[out]
        m, s = (int(v) for v in nx.requantize_multipliers(pw, po, 0))
        self.declare_q(out)
        self.emit("requantize", [wide], out, source, in_zp=pw.zero_point[0], multiplier=m,
                  shift=s,
                  out_zp=po.zero_point[0], dtype=po.dtype)

    def const(self, name: str, value: np.ndarray, quant: QuantParams | None = None) -> str:
        value = np.ascontiguousarray(value)
        self.tensors[name] = Tensor(name, tuple(value.shape), str(value.dtype), quant)
        self.constants[name] = value
        return name

    def emit(self, kind: str, inputs: tuple[str, ...] | list[str], output: str,
             source: str = "", **attrs: Any) -> str:
        op = Op(kind, tuple(inputs), output, attrs, source)
        if output not in self.tensors:
            shape, dtype = infer(op, [self.tensors[n] for n in inputs])
            self.tensors[output] = Tensor(output, shape, dtype)
        self.ops.append(op)
        return output

    def operand(self, name: str, like: QuantParams | None = None) -> str:
        """A float tensor's integer twin; constants quantized (onto `like` if given)."""
        name = self.alias.get(name, name)
        if name in self.tensors:
            return name
        value = self.g.constants.get(name)
        if value is None:
            raise IRError(f"tensor {name!r} used before it was lowered")
        if self.g.tensors[name].dtype != "float32":
            return self.const(name, value)
        p = like or self.opts.params(float(value.min()), float(value.max()))
        return self.const(f"{name}_q", nx.quantize(value, p), p)


def _lut_table(g: Graph, start: str, ops: list[Op], p_in: QuantParams,
               p_out: QuantParams, compact: bool = True) -> np.ndarray:
    """Evaluate a unary chain in float32 on every input level (int16 and `compact`: at the
    compact table's points, `nx.interp_points`); quantize the results.
    A chain the tracer tagged `table=fn` (a QAT table) is the core's `deployed_table(fn)`."""
    fns = {op.attrs.get("table") for op in ops}
    if len(fns) == 1 and None not in fns:
        return nx.deployed_table(fns.pop(), p_in, p_out)

    def chain(x: np.ndarray) -> np.ndarray:
        env: dict[str, Any] = {start: x.astype(np.float32)}
        with np.errstate(all="ignore"):
            for op in ops:
                args = [env.get(n, g.constants.get(n)) for n in op.inputs]
                env[op.output] = np.asarray(evaluate(op, args), np.float32)
        big = float(np.finfo(np.float32).max)
        return np.nan_to_num(env[ops[-1].output], nan=0.0, posinf=big, neginf=-big)

    if compact and p_in.bits == nx.INTERP_BITS:
        x_break, x_mid = nx.interp_points(p_in)
        return nx.interp_table(chain(x_break), chain(x_mid), p_out)
    lo, hi = nx.dtype_range(p_in.dtype)
    return nx.quantize(chain(nx.dequantize(np.arange(lo, hi + 1), p_in)), p_out)


def _threshold(kind: str, c: float, p: QuantParams) -> tuple[str, int]:
    """Integer form of `x <kind> c` for x on grid p: (kind, t) with x_q <kind> t exact."""
    lo, hi = nx.dtype_range(p.dtype)
    v = p.zero_point[0] + c / p.scale[0]
    if kind in ("greater", "less_equal"):
        t = int(np.floor(v))
    elif kind in ("greater_equal", "less"):
        t = int(np.ceil(v))
    else:  # equal
        t = int(v) if float(v).is_integer() else hi + 1
    if t > hi:  # nothing on the grid reaches t
        return {"greater": ("less", lo), "greater_equal": ("less", lo),
                "less": ("greater_equal", lo), "less_equal": ("greater_equal", lo),
                "equal": ("less", lo)}[kind]
    if t < lo:
        return {"greater": ("greater_equal", lo), "greater_equal": ("greater_equal", lo),
                "less": ("less", lo), "less_equal": ("less", lo), "equal": ("less", lo)}[kind]
    return kind, t


def _lower_fake_quant(b: _IntBuilder, g: Graph, plan: _Plan, op: Op) -> None:
    """QAT: its input already has these parameters; the op itself disappears."""
    x = b.operand(op.inputs[0])
    if op.output in g.outputs:
        b.declare_q(op.output)
        b.emit("identity", [x], op.output, op.source)
    else:
        b.alias[op.output] = x


def _lower_table(b: _IntBuilder, g: Graph, plan: _Plan, op: Op) -> None:
    """The end of a chain of unary functions: one `lut` from the chain's start."""
    out = op.output
    start, chain = plan.chain_of[out]
    x = b.operand(start)
    width = b.kernel_width(out, [x])
    x = b.widened(x, width, op.source)
    target = b.computed_at(out, width)
    p_in, p_out = b.tensors[x].quant, b.tensors[target].quant
    tagged = any(op.attrs.get("table") for op in chain)
    if p_in.bits == nx.INTERP_BITS and not tagged:
        # an int16 chain that is exactly a requantization on every level (a decay, beta * v)
        # stays exact and needs no table, if it is the one between its grids (TFLite's
        # QUANTIZE derives that multiplier from the scales) or the integers unchanged (a
        # copy); any other becomes the compact table
        attrs = fit_requantize(_lut_table(g, start, chain, p_in, p_out, compact=False),
                               p_in, p_out)
        derived = tuple(int(v) for v in nx.requantize_multipliers(p_in, p_out, 0))
        if attrs is not None and (attrs["multiplier"], attrs["shift"]) in (derived,
                                                                           IDENTITY_MULTIPLIER):
            b.emit("requantize", [x], target, op.source, **attrs)
            b.narrowed(target, out, op.source)
            return
    table = _lut_table(g, start, chain, p_in, p_out)
    b.emit("lut", [x, b.const(f"{out}_table", table)], target, op.source)
    b.narrowed(target, out, op.source)


def _lower_add_sub(b: _IntBuilder, g: Graph, plan: _Plan, op: Op) -> None:
    a, c = (b.operand(n) for n in op.inputs)
    width = b.kernel_width(op.output, [a, c])
    a, c = (b.widened(n, width, op.source) for n in (a, c))
    target = b.computed_at(op.output, width)
    pa, pc, po = b.tensors[a].quant, b.tensors[c].quant, b.tensors[target].quant
    b.emit("q" + op.kind, [a, c], target, op.source, **add_params(pa, pc, po))
    b.narrowed(target, op.output, op.source)


def _lower_compare(b: _IntBuilder, g: Graph, plan: _Plan, op: Op) -> None:
    """x > c (and friends) with a scalar constant c: the same test on x's integer grid."""
    out, src = op.output, op.source
    x, c = op.inputs
    if x in g.constants or c not in g.constants or g.constants[c].size != 1:
        raise QuantizationError(f"{op.kind} at {src or out}: only comparisons of a "
                                "tensor with a scalar constant have an integer form")
    xq = b.operand(x)
    px = b.params[x]
    kind, t = _threshold(op.kind, float(g.constants[c]), px)
    b.emit(kind, [xq, b.const(f"{out}_threshold", np.asarray(t, px.dtype))], out, src)


def _lower_cast(b: _IntBuilder, g: Graph, plan: _Plan, op: Op) -> None:
    """bool -> spikes (0/1 on the spike grid); other casts have no integer form."""
    if g.tensors[op.inputs[0]].dtype != "bool":
        _no_integer_form(b, g, plan, op)
    b.declare_q(op.output)
    b.emit("cast", [b.operand(op.inputs[0])], op.output, op.source,
           dtype=b.params[op.output].dtype)


def _lower_shared_grid(b: _IntBuilder, g: Graph, plan: _Plan, op: Op) -> None:
    """Data movement, max/min, where, logical_not: the op itself on one shared grid."""
    like = b.params.get(op.output)
    ins = [b.operand(n, like if g.tensors[n].dtype == "float32" else None)
           for n in op.inputs]
    if like is not None:
        b.declare_q(op.output)
    b.emit(op.kind, ins, op.output, op.source, **op.attrs)


def _no_integer_form(b: _IntBuilder, g: Graph, plan: _Plan, op: Op) -> None:
    raise QuantizationError(f"op {op.kind} at {op.source or op.output} has no integer form "
                            "in ncc")


Lowering = Callable[[_IntBuilder, Graph, _Plan, Op], None]

INTEGER_FORMS: dict[str, Lowering] = {
    "fake_quant": _lower_fake_quant,
    "mul": lambda b, g, plan, op: _lower_mul(b, op),
    "add": _lower_add_sub, "sub": _lower_add_sub,
    **{kind: _lower_compare for kind in sorted(COMPARISONS)},
    "cast": _lower_cast,
    "reduce_sum": lambda b, g, plan, op: _lower_reduce_sum(b, g, op),
    **{kind: _lower_shared_grid for kind in (*SHARE, "where", "logical_not")},
}
"""Float op kind -> its integer form. Matmuls (with their bias) and chains of unary
functions (one table) are recognised by the plan first, in `_lower_op`."""


def _lower_op(b: _IntBuilder, g: Graph, plan: _Plan, op: Op) -> None:
    out = op.output
    if op.kind == "matmul":
        _lower_dense(b, g, plan, op)
        return
    if out in plan.internal or any(out == add.output for add, _ in plan.bias_of.values()):
        return  # inside a table, or a bias emitted with its matmul
    if op.kind != "fake_quant" and out in plan.chain_of:
        _lower_table(b, g, plan, op)
        return
    INTEGER_FORMS.get(op.kind, _no_integer_form)(b, g, plan, op)


def _lower_mul(b: _IntBuilder, op: Op) -> None:
    """`qmul`, with output parameters on which every runtime's multiplier gives the same
    bits (`int_safety.mul_is_portable`): the output's own if it shares them with no other
    tensor (and, int16, feeds no other product: its scale would not be 12-bit), else a
    portable intermediate requantized onto the output's grid. A QAT product keeps the
    arithmetic its training forward computed (tflite-int8 refuses it if not portable)."""
    a, c = (b.operand(n) for n in op.inputs)
    out = op.output
    width = b.kernel_width(out, [a, c])
    a, c = (b.widened(n, width, op.source) for n in (a, c))
    pa, pc = b.tensors[a].quant, b.tensors[c].quant
    product = b.computed_at(out, width)
    po = b.tensors[product].quant
    portable = (None if out in b.qat or mul_is_portable(pa, pc, po)
                else portable_mul_params(pa, pc, po))
    feeds_mul = any(u.kind == "mul" for u in b.users[out])
    if portable is not None and (product != out or (
            out in b.free and not (po.dtype == "int16" and feeds_mul))):
        b.tensors[product] = Tensor(product, b.g.tensors[out].shape, portable.dtype, portable)
        if product == out:
            b.params[out] = portable
    elif portable is not None:
        product = f"{out}_product"
        b.tensors[product] = Tensor(product, b.g.tensors[out].shape, portable.dtype, portable)
    pm = b.tensors[product].quant
    m, s = mul_multipliers(pa, pc, pm)["double"]
    b.emit("qmul", [a, c], product, op.source, a_zp=pa.zero_point[0], b_zp=pc.zero_point[0],
           multiplier=m, shift=s, out_zp=pm.zero_point[0], dtype=pm.dtype)
    b.narrowed(product, out, op.source)


def _lower_dense(b: _IntBuilder, g: Graph, plan: _Plan, op: Op) -> None:
    x, w = op.inputs
    if w not in g.constants:
        raise QuantizationError(f"matmul at {op.source or op.output}: both operands are "
                                "activations; only activation x constant weight is supported")
    add, bias_name = plan.bias_of.get(op.output, (None, None))
    out = add.output if add is not None else op.output
    xq = b.operand(x)
    width = b.kernel_width(out, [xq])
    xq = b.widened(xq, width, op.source)
    target = b.computed_at(out, width)
    px, po = b.tensors[xq].quant, b.tensors[target].quant
    weights = g.constants[w]
    pw = g.tensors[w].quant or nx.params_for_tensor(weights, 8, symmetric=True, axis=1)
    if any(z != 0 for z in pw.zero_point) or pw.axis not in (None, 1) or pw.dtype != "int8":
        raise QuantizationError(f"matmul at {op.source or op.output}: weights {w!r} carry "
                                "fake-quant parameters that are not int8 symmetric per output "
                                "channel (axis 1) or per tensor")
    if pw.axis is None:  # per tensor: the same scale for every output channel
        n = weights.shape[1]
        pw = QuantParams(pw.scale * n, (0,) * n, pw.bits, True, axis=1)
    wq = b.const(f"{w}_q", nx.quantize(weights, pw), pw)
    bias = (np.zeros(weights.shape[1], np.float32) if bias_name is None
            else g.constants[bias_name].reshape(-1))
    bias_scale, mult, shift = nx.dense_multipliers(px, pw, po)
    bias_q = nx.quantize_bias(bias, bias_scale)
    bq = b.const(f"{out}_bias", bias_q, QuantParams(tuple(bias_scale), (0,) * len(bias_scale),
                                                     bits=32, axis=0))
    spikes = x in b.spikes and px.zero_point[0] == 0  # 0/1 values: |x - zp| <= 1
    check_accumulator(px.dtype, weights.shape[0], bias_q, shift, op.source or out,
                      x_span=1 if spikes else None)
    b.emit("fully_connected", [xq, wq, bq], target, op.source, x_zp=px.zero_point[0],
           multiplier=tuple(int(m) for m in mult), shift=tuple(int(s) for s in shift),
           out_zp=po.zero_point[0], dtype=po.dtype)
    b.narrowed(target, out, op.source)


def _lower_reduce_sum(b: _IntBuilder, g: Graph, op: Op) -> None:
    """sum over axes = transpose them last, flatten, multiply by a ones vector."""
    x = op.inputs[0]
    xq = b.operand(x)
    width = b.kernel_width(op.output, [xq])
    xq = b.widened(xq, width, op.source)
    target = b.computed_at(op.output, width)
    shape = g.tensors[x].shape
    axes = sorted(a % len(shape) for a in op.attrs["axes"])
    keep = [i for i in range(len(shape)) if i not in axes]
    name = xq
    if keep + axes != list(range(len(shape))):
        name = b.emit("transpose", [name], f"{op.output}_t", op.source, perm=tuple(keep + axes))
        b.tensors[name] = Tensor(name, tuple(shape[i] for i in keep + axes),
                                 b.tensors[xq].dtype, b.tensors[xq].quant)
    k = int(np.prod([shape[i] for i in axes]))
    rows = tuple(shape[i] for i in keep)
    flat = b.emit("reshape", [name], f"{op.output}_flat", op.source, shape=rows + (k,))
    b.tensors[flat] = Tensor(flat, rows + (k,), b.tensors[xq].dtype, b.tensors[xq].quant)
    px, po = b.tensors[xq].quant, b.tensors[target].quant
    p_ones = QuantParams((1.0,), (0,), bits=8, axis=1)
    ones = b.const(f"{op.output}_ones", np.ones((k, 1), np.int8), p_ones)
    bias_scale, (m,), (s,) = nx.dense_multipliers(px, p_ones, po)
    zero = b.const(f"{op.output}_zero_bias", np.zeros(1, np.int32),
                   QuantParams(tuple(bias_scale), (0,), bits=32, axis=0))
    m, s = int(m), int(s)
    check_accumulator(px.dtype, k, np.zeros(1), s, op.source or op.output)
    summed = f"{op.output}_sum"
    b.tensors[summed] = Tensor(summed, rows + (1,), po.dtype, po)
    b.emit("fully_connected", [flat, ones, zero], summed, op.source, x_zp=px.zero_point[0],
           multiplier=(m,), shift=(s,), out_zp=po.zero_point[0], dtype=po.dtype)
    b.emit("reshape", [summed], target, op.source, shape=rows)
    b.narrowed(target, op.output, op.source)


def quantize(g: Graph, ranges: dict[str, TensorRange],
             opts: QuantOptions = DEFAULT_OPTIONS) -> Graph:
    """Integer IR for float graph `g` (from `prepare`) given calibrated `ranges`."""
    if opts.activations == "auto":
        raise ValueError("precision auto: choose the widths first (compiler/precision)")
    plan = _plan(g)
    params = choose_params(g, plan, ranges, opts)
    presets, members, spikes = _presets(g), _members(g, plan), spike_tensors(g)
    qat = {n for names in members if set(names) & presets.keys() for n in names}
    free = {names[0] for names in members if len(names) == 1} - qat - spikes
    b = _IntBuilder(g, params, opts, free, qat, spikes)
    for name in g.inputs:
        b.declare_q(name)
    for op in g.ops:
        _lower_op(b, g, plan, op)
    initial = {n: nx.quantize(v, params[n]) for n, v in g.initial_state.items()}
    q = Graph(g.name, b.tensors, list(g.inputs), list(g.outputs), dict(g.roles),
              list(g.state_pairs), b.constants, b.ops, initial,
              {**g.metadata, "quantized": True, "activations": _activations(params, opts),
               "quantization_sources": quantization_sources(g, params, qat, spikes)})
    # mixed widths: an int8 tensor whose every consumer reads its int16 original is dead
    return verify(eliminate_dead(q) if opts.widths else q)


def _activations(params: dict[str, QuantParams], opts: QuantOptions) -> str:
    """"int8", "int16", or "mixed" where groups differ."""
    if not opts.widths:
        return opts.activations
    dtypes = {p.dtype for p in params.values()}
    return dtypes.pop() if len(dtypes) == 1 else "mixed"


QWIX_PREFIX = "qwix_w"
"""Name prefix of the weight constants `compiler/qwix_qat.py` puts on qwix's grid."""


def quantization_sources(g: Graph, params: dict[str, QuantParams], qat: set[str],
                         spikes: set[str]) -> dict[str, list[str]]:
    """Where each quantized tensor's parameters came from, for report.json: qwix's
    fake-quant (`qwix`), ncc's own fake-quant (`fake_quant`), the 0/1 spike grid
    (`spikes`), calibration ranges (`calibrated`), or ncc's absmax weight rule (`weights`)."""
    fixed = {n for n in g.constants if g.tensors[n].quant is not None}
    qwix = {n for n in fixed if n.startswith(QWIX_PREFIX)}
    weights = {op.inputs[1] for op in g.ops
               if op.kind == "matmul" and op.inputs[1] in g.constants} - fixed
    return {"qwix": sorted(qwix), "fake_quant": sorted((fixed | qat) - qwix),
            "spikes": sorted(set(params) & spikes - qat),
            "calibrated": sorted(set(params) - qat - spikes),
            "weights": sorted(weights)}



def annotate(g: Graph, q: Graph) -> Graph:
    """Float graph `g` with each tensor's quantization from integer graph `q`, where the
    tensor exists in both: the QDQ form of the model, and a readable record of `q`."""
    tensors = {n: (Tensor(n, t.shape, t.dtype, q.tensors[n].quant)
                   if n in q.tensors and t.dtype == "float32" else t)
               for n, t in g.tensors.items()}
    return g.replace(tensors=tensors)
