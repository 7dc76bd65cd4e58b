"""The tracer: a JAX step function -> step IR, through `jax.make_jaxpr`.

`trace(step)` takes a `StepFunction` (see `compiler.frontends`, which builds
one from Keras, Flax NNX or plain JAX), records its jaxpr for batch 1 and
converts it primitive by primitive. Nested jaxprs (jit/pjit, custom_jvp,
custom_vjp such as spyx's surrogate-gradient Heaviside) are inlined: inference
uses their forward function. An unknown primitive is an `UnsupportedPrimitive`
naming the primitive and the user's source line.
"""

from __future__ import annotations

import functools
import os
import sysconfig
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np
from jax._src import source_info_util
from jax.extend import core as jcore

from ncc.compiler.builder import (  # noqa: F401  (TraceError is part of trace's API)
    GraphBuilder,
    TraceError,
    UnsupportedPrimitive,
    dtype_of,
    sanitize,
)
from ncc.compiler.complex_ops import Pair, constant_pair, involves_complex, is_complex
from ncc.compiler.complex_ops import lower as lower_complex
from ncc.compiler.ir import Graph, Op, Tensor, verify
from ncc.compiler.qat import constant_value
from ncc.compiler.qat import recognize as recognize_fake_quant
from ncc.compiler.qwix_qat import recognize as recognize_qwix


@dataclass
class StepFunction:
    """A model's timestep as a pure JAX function over flat arrays.

    fn(x, dt, *state) -> (y, *next_state) if `uses_dt`, else fn(x, *state).
    Shapes include the batch dimension, which is 1.
    """

    name: str
    fn: Callable[..., Sequence[Any]]
    x_shape: tuple[int, ...]
    initial_state: list[np.ndarray]
    state_names: list[str]
    uses_dt: bool = False
    const_names: dict[int, str] = field(default_factory=dict)  # id(array) -> weight name
    metadata: dict[str, Any] = field(default_factory=dict)

    def example_args(self) -> list[np.ndarray]:
        args = [np.zeros(self.x_shape, np.float32)]
        if self.uses_dt:
            args.append(np.ones((self.x_shape[0], 1), np.float32))
        return args + [np.asarray(s) for s in self.initial_state]


Rule = Callable[[GraphBuilder, Any, list[str]], list[str]]


def _unary(kind: str) -> Rule:
    return lambda b, eqn, a: [b.emit(kind, a)]


def _binary(kind: str) -> Rule:
    return lambda b, eqn, a: [b.emit(kind, a)]


def _dot_general(b: GraphBuilder, eqn: Any, a: list[str]) -> list[str]:
    """x @ W (contracting x's last axis with a 2-D W) is a matmul; any other contraction
    (an einsum with batch axes, an outer product, data times data) is `_contract`."""
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lhs, rhs = (b.tensors[n] for n in a)
    if lb or rb or len(lc) != 1 or len(rhs.shape) != 2 or lc[0] != len(lhs.shape) - 1:
        return [_contract(b, a, (tuple(lc), tuple(rc)), (tuple(lb), tuple(rb)))]
    w = a[1] if rc[0] == 0 else b.emit("transpose", [a[1]], perm=(1, 0))
    return [b.emit("matmul", [a[0], w])]


def _contract(b: GraphBuilder, a: list[str], contract: tuple[tuple[int, ...], ...],
              batch: tuple[tuple[int, ...], ...]) -> str:
    """dot_general as broadcast multiply and sum: each operand is laid out as (batch,
    lhs free, rhs free, contracted) with 1s where it has no axis, multiplied, and the
    contracted axes summed; the result is in dot_general's order (batch, lhs free,
    rhs free)."""
    shapes = [b.tensors[n].shape for n in a]
    free = [tuple(d for d in range(len(s)) if d not in c and d not in bt)
            for s, c, bt in zip(shapes, contract, batch, strict=True)]
    laid = []
    for i, (name, shape) in enumerate(zip(a, shapes, strict=True)):
        perm = batch[i] + free[i] + contract[i]
        if perm != tuple(range(len(shape))):
            name = b.emit("transpose", [name], perm=perm)
        ones_l = (1,) * len(free[0]) if i == 1 else ()
        ones_r = (1,) * len(free[1]) if i == 0 else ()
        target = (tuple(shape[d] for d in batch[i]) + ones_l + tuple(shape[d] for d in free[i])
                  + ones_r + tuple(shape[d] for d in contract[i]))
        if target != b.tensors[name].shape:
            name = b.emit("reshape", [name], shape=target)
        laid.append(name)
    product = b.emit("mul", laid)
    n = len(b.tensors[product].shape)
    k = len(contract[0])
    return b.emit("reduce_sum", [product], axes=tuple(range(n - k, n))) if k else product


def _broadcast_in_dim(b: GraphBuilder, eqn: Any, a: list[str]) -> list[str]:
    shape = tuple(eqn.params["shape"])
    dims = eqn.params["broadcast_dimensions"]
    x = b.tensors[a[0]]
    aligned = [1] * len(shape)
    for src, dst in enumerate(dims):
        aligned[dst] = x.shape[src]
    name = a[0]
    if tuple(aligned) != x.shape:
        name = b.emit("reshape", [name], shape=tuple(aligned))
    if tuple(aligned) != shape:
        name = b.emit("broadcast", [name], shape=shape)
    return [name]


def _reshape(b: GraphBuilder, eqn: Any, a: list[str]) -> list[str]:
    shape = tuple(int(d) for d in eqn.outvars[0].aval.shape)
    if b.tensors[a[0]].shape == shape:
        return [a[0]]
    return [b.emit("reshape", [a[0]], shape=shape)]


def _convert(b: GraphBuilder, eqn: Any, a: list[str]) -> list[str]:
    dtype = dtype_of(eqn.outvars[0].aval)
    return [a[0] if b.tensors[a[0]].dtype == dtype else b.emit("cast", [a[0]], dtype=dtype)]


def _select_n(b: GraphBuilder, eqn: Any, a: list[str]) -> list[str]:
    if len(a) != 3:
        raise UnsupportedPrimitive("select_n with more than two cases", b.source)
    pred = a[0]
    if b.tensors[pred].dtype != "bool":
        zero = b.constant(np.zeros((), b.tensors[pred].dtype))
        pred = b.emit("greater", [pred, zero])
    return [b.emit("where", [pred, a[2], a[1]])]  # select_n picks case[pred]


def _slice(b: GraphBuilder, eqn: Any, a: list[str]) -> list[str]:
    p = eqn.params
    steps = p["strides"] or (1,) * len(p["start_indices"])
    return [b.emit("slice", a, starts=tuple(p["start_indices"]),
                   stops=tuple(p["limit_indices"]), steps=tuple(steps))]


def _split(b: GraphBuilder, eqn: Any, a: list[str]) -> list[str]:
    x = b.tensors[a[0]]
    axis, outs, start = eqn.params["axis"], [], 0
    for size in eqn.params["sizes"]:
        starts = [0] * len(x.shape)
        stops = list(x.shape)
        starts[axis], stops[axis] = start, start + size
        outs.append(b.emit("slice", a, starts=tuple(starts), stops=tuple(stops),
                           steps=(1,) * len(x.shape)))
        start += size
    return outs


def _integer_pow(b: GraphBuilder, eqn: Any, a: list[str]) -> list[str]:
    y = eqn.params["y"]
    if y == 1:
        return [a[0]]
    if y == 2:
        return [b.emit("mul", [a[0], a[0]])]
    exponent = b.constant(np.float32(y))
    return [b.emit("pow", [a[0], exponent])]


def _clamp(b: GraphBuilder, eqn: Any, a: list[str]) -> list[str]:
    lo, x, hi = a
    return [b.emit("max", [b.emit("min", [x, hi]), lo])]


def _ne(b: GraphBuilder, eqn: Any, a: list[str]) -> list[str]:
    return [b.emit("logical_not", [b.emit("equal", a)])]


def _square(b: GraphBuilder, eqn: Any, a: list[str]) -> list[str]:
    return [b.emit("mul", [a[0], a[0]])]


def _rsqrt(b: GraphBuilder, eqn: Any, a: list[str]) -> list[str]:
    one = b.constant(np.float32(1))
    return [b.emit("div", [one, b.emit("sqrt", a)])]


def _log1p(b: GraphBuilder, eqn: Any, a: list[str]) -> list[str]:
    one = b.constant(np.ones((), b.tensors[a[0]].dtype))
    return [b.emit("log", [b.emit("add", [a[0], one])])]


def _expm1(b: GraphBuilder, eqn: Any, a: list[str]) -> list[str]:
    one = b.constant(np.ones((), b.tensors[a[0]].dtype))
    return [b.emit("sub", [b.emit("exp", a), one])]


def _reduce(kind: str) -> Rule:
    return lambda b, eqn, a: [b.emit(kind, a, axes=tuple(eqn.params["axes"]))]


def _squeeze_like(b: GraphBuilder, eqn: Any, a: list[str]) -> list[str]:
    return _reshape(b, eqn, a)


RULES: dict[str, Rule] = {
    "dot_general": _dot_general,
    "add": _binary("add"), "add_any": _binary("add"), "sub": _binary("sub"),
    "mul": _binary("mul"), "div": _binary("div"), "max": _binary("max"),
    "min": _binary("min"), "pow": _binary("pow"),
    "gt": _binary("greater"), "ge": _binary("greater_equal"), "lt": _binary("less"),
    "le": _binary("less_equal"), "eq": _binary("equal"), "ne": _ne,
    "neg": _unary("neg"), "abs": _unary("abs"), "exp": _unary("exp"), "log": _unary("log"),
    "sqrt": _unary("sqrt"), "rsqrt": _rsqrt, "logistic": _unary("sigmoid"),
    "tanh": _unary("tanh"), "cos": _unary("cos"), "sin": _unary("sin"),
    "floor": _unary("floor"), "sign": _unary("sign"),
    "not": _unary("logical_not"), "log1p": _log1p, "expm1": _expm1, "square": _square,
    "integer_pow": _integer_pow, "clamp": _clamp, "select_n": _select_n,
    "convert_element_type": _convert, "broadcast_in_dim": _broadcast_in_dim,
    "reshape": _reshape, "squeeze": _squeeze_like, "expand_dims": _squeeze_like,
    "concatenate": lambda b, eqn, a: [b.emit("concat", a, axis=eqn.params["dimension"])],
    "slice": _slice, "split": _split,
    "transpose": lambda b, eqn, a: [b.emit("transpose", a,
                                           perm=tuple(eqn.params["permutation"]))],
    "reduce_sum": _reduce("reduce_sum"), "reduce_max": _reduce("reduce_max"),
    "copy": lambda b, eqn, a: [a[0]], "copy_p": lambda b, eqn, a: [a[0]],
    "stop_gradient": lambda b, eqn, a: [a[0]],
    "optimization_barrier": lambda b, eqn, a: list(a),
}

# primitives holding a jaxpr to inline, and the parameter that holds it
NESTED = {"pjit": "jaxpr", "jit": "jaxpr", "closed_call": "call_jaxpr",
          "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr",
          "custom_vjp_call_jaxpr": "fun_jaxpr", "remat": "jaxpr", "checkpoint": "jaxpr"}

def _softplus(b: GraphBuilder, eqn: Any, ins: list[str]) -> list[str] | None:
    """`jax.nn.softplus(x)`, a custom_jvp `logaddexp(x, 0)`: one `softplus` op. Inlined, its
    NaN test and select would reach the quantizer as a comparison of x with itself."""
    if eqn.primitive.name != "custom_jvp_call":
        return None
    debug = getattr(getattr(eqn.params["call_jaxpr"], "jaxpr", None), "debug_info", None)
    if getattr(debug, "func_name", None) != "logaddexp":
        return None
    zero = [i for i, n in enumerate(ins) if isinstance(n, str) and (
        (v := constant_value(b, n)) is not None and v.size == 1 and float(v) == 0.0)]
    if not zero or len(ins) != 2:
        return None
    x = ins[1 - zero[0]]
    if b.tensors[x].shape != tuple(int(d) for d in eqn.outvars[0].aval.shape):
        return None
    return [b.emit("softplus", [x])]


# Recognizers of special nested calls (fake-quant, softplus): each returns IR names for
# the outputs, or None to inline the call as usual.
SPECIAL_CALLS: tuple[Callable[[GraphBuilder, Any, list[str]], list[str] | None], ...] = (
    recognize_fake_quant, recognize_qwix, _softplus,
)


@functools.cache
def _not_user() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(folders whose frames are never the user's: JAX, Flax, NumPy and ncc's compiler, its
    step wrappers; Python's library folders, whose site-packages still count as user)."""
    import flax

    never = tuple(os.path.dirname(os.path.abspath(m.__file__)) + os.sep
                  for m in (jax, flax, np)) + (os.path.dirname(os.path.abspath(__file__))
                                               + os.sep,)
    paths = sysconfig.get_paths()
    return never, (paths["stdlib"] + os.sep, paths["platstdlib"] + os.sep)


def _is_user_file(name: str) -> bool:
    never, stdlib = _not_user()
    installed = ("site-packages" + os.sep in name) or ("dist-packages" + os.sep in name)
    return not (name.startswith("<") or name.startswith(never)
                or (name.startswith(stdlib) and not installed))


def _where(eqn: Any) -> str:
    """The innermost user frame of `eqn`. JAX's own choice skips every installed package
    (site-packages lies under the stdlib path), so it would name ncc's wrapper rather than
    the line of a model library such as spyx that holds the construct."""
    tb = eqn.source_info.traceback
    code, lasti = tb.raw_frames() if tb else ([], [])
    for c, i in zip(code, lasti, strict=True):
        if _is_user_file(c.co_filename):
            frame = source_info_util.raw_frame_to_frame(c, i)
            return f"{frame.file_name}:{frame.start_line}"
    return "<unknown source>"


def _convert_jaxpr(b: GraphBuilder, jaxpr: Any, consts: Sequence[Any], args: list[str],
                   outer: str = "<unknown source>") -> list[str]:
    """`outer`: the user line of the call being inlined, for inner equations (e.g. the
    primitives inside jnp.cumsum's jit) whose own traceback has no user frame."""
    env: dict[Any, str | Pair] = {}

    def read(v: Any) -> str | Pair:
        if isinstance(v, jcore.Literal):
            value = np.asarray(v.val, dtype=v.aval.dtype)
            return constant_pair(b, value) if is_complex(v.aval) else b.constant(value)
        return env[v]

    for var, value in zip(jaxpr.constvars, consts, strict=True):
        hint = b.const_names.get(id(value))
        env[var] = (constant_pair(b, value, hint) if is_complex(var.aval)
                    else b.constant(value, hint))
    for var, name in zip(jaxpr.invars, args, strict=True):
        env[var] = name
    for eqn in jaxpr.eqns:
        b.source = _where(eqn)
        if b.source == "<unknown source>":
            b.source = outer
        prim = eqn.primitive.name
        ins = [read(v) for v in eqn.invars]
        outs = None
        if prim not in NESTED and involves_complex(eqn):
            outs = lower_complex(b, eqn, ins, RULES)
        for special in () if outs is not None else SPECIAL_CALLS:
            outs = special(b, eqn, ins)
            if outs is not None:
                break
        if outs is None and prim in NESTED:
            inner = eqn.params[NESTED[prim]]
            closed = inner if hasattr(inner, "jaxpr") else jcore.ClosedJaxpr(inner, ())
            saved = b.source
            outs = _convert_jaxpr(b, closed.jaxpr, closed.consts, ins, saved)
            b.source = saved
        elif outs is None:
            rule = RULES.get(prim)
            if rule is None:
                raise UnsupportedPrimitive(prim, b.source)
            outs = rule(b, eqn, ins)
        for var, name in zip(eqn.outvars, outs, strict=True):
            expected = tuple(int(d) for d in var.aval.shape)
            parts = [p for p in (name.re, name.im) if p is not None] if isinstance(
                name, Pair) else [name]
            if any(b.tensors[p].shape != expected for p in parts):
                raise TraceError(f"internal: {prim} at {b.source} gave shape "
                                 f"{[b.tensors[p].shape for p in parts]}, jax says "
                                 f"{expected}")
            env[var] = name
    return [read(v) for v in jaxpr.outvars]


def _cond(b: GraphBuilder, eqn: Any, ins: list[str]) -> list[str]:
    """`lax.cond` / `switch` on a constant index (e.g. qwix's "has the running average seen
    data yet" test on a frozen statistic): the chosen branch, inlined."""
    index = constant_value(b, ins[0])
    if index is None:
        raise UnsupportedPrimitive("cond (a branch chosen at run time)", b.source)
    branches = eqn.params["branches"]
    branch = branches[int(np.clip(np.asarray(index).reshape(-1)[0], 0, len(branches) - 1))]
    return _convert_jaxpr(b, branch.jaxpr, branch.consts, ins[1:], b.source)


RULES["cond"] = _cond


def trace(step: StepFunction) -> Graph:
    """Trace one step of `step` into a verified IR graph (float)."""
    example = step.example_args()
    try:
        closed = jax.make_jaxpr(step.fn)(*example)
    except Exception as e:  # the user's model failed to run: say so in one line
        first_line = (str(e).strip().splitlines() or [""])[0]
        raise TraceError(f"running one step of {step.name} failed: "
                         f"{type(e).__name__}: {first_line}") from e
    b = GraphBuilder(step.const_names)
    names = ["x"] + (["dt"] if step.uses_dt else [])
    names += [sanitize(f"state_{n}") for n in step.state_names]
    roles = {"x": "input", **({"dt": "dt"} if step.uses_dt else {})}
    for name, arg in zip(names, example, strict=True):
        b.declare(name, arg.shape, str(arg.dtype))
        roles.setdefault(name, "state_in")
    outs = _convert_jaxpr(b, closed.jaxpr, closed.consts, names)
    n_state = len(step.initial_state)
    if len(outs) != 1 + n_state:
        raise TraceError(f"{step.name}: step returned {len(outs)} arrays, expected output "
                         f"plus {n_state} state arrays")
    out_names = ["y"] + [f"{n}_next" for n in names[len(names) - n_state:]]
    renamed: dict[str, str] = {}
    for i, (src, dst) in enumerate(zip(outs, out_names, strict=True)):
        src = renamed.get(src, src)
        if src in b.constants or src in roles:
            src = b.emit("identity", [src])  # an output must be its own tensor
        _rename(b, src, dst)
        renamed[src] = dst
        roles[dst] = "output" if i == 0 else "state_out"
    state_in = names[len(names) - n_state:]
    g = Graph(
        name=sanitize(step.name),
        tensors=b.tensors, inputs=names, outputs=out_names, roles=roles,
        state_pairs=list(zip(state_in, out_names[1:], strict=True)),
        constants=b.constants, ops=b.ops,
        initial_state={n: np.asarray(v, np.float32 if np.asarray(v).dtype.kind == "f"
                                     else np.asarray(v).dtype)
                       for n, v in zip(state_in, step.initial_state, strict=True)},
        metadata=dict(step.metadata),
    )
    return verify(g)


def _rename(b: GraphBuilder, old: str, new: str) -> None:
    """Give op output `old` the name `new` everywhere (outputs get stable names)."""
    t = b.tensors.pop(old)
    b.tensors[new] = Tensor(new, t.shape, t.dtype, t.quant)
    b.ops = [Op(op.kind, tuple(new if n == old else n for n in op.inputs),
                new if op.output == old else op.output, op.attrs, op.source) for op in b.ops]
