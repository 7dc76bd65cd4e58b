"""Complex numbers in the tracer: each complex64 value becomes a pair of float32 IR tensors.

The IR and every target stay real. A complex jaxpr variable is held as a `Pair`
(real part, imaginary part; `im=None` is an exact zero, so a real value cast to complex
costs nothing), and each complex primitive is spelled in real ops:

    (a + ib)(c + id) = (ac - bd) + i(ad + bc)         mul, dot_general (bilinear)
    exp(a + ib)      = e^a cos b + i e^a sin b        exp
    |a + ib|         = sqrt(a^2 + b^2)                abs
    real, imag, conj, complex(a, b), add, sub, neg, div; shape ops part by part.

An equation whose inputs are all constants (a layer's eigenvalues, its discretised
input matrix) is evaluated at trace time by JAX itself and becomes constants, so only
the data path reaches the IR. A complex primitive without a spelling here is an
`UnsupportedPrimitive` naming it and the user's source line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from ncc.compiler.builder import GraphBuilder, UnsupportedPrimitive
from ncc.compiler.qat import constant_value


@dataclass(frozen=True)
class Pair:
    """A complex value as IR tensor names: `re` and `im` (None: identically zero)."""

    re: str
    im: str | None


Value = str | Pair
RealRule = Callable[[GraphBuilder, Any, list[str]], list[str]]


def is_complex(aval: Any) -> bool:
    return np.issubdtype(np.dtype(aval.dtype), np.complexfloating)


def involves_complex(eqn: Any) -> bool:
    """True when an input or output of `eqn` is complex."""
    return any(is_complex(v.aval) for v in (*eqn.invars, *eqn.outvars))


def constant_pair(b: GraphBuilder, value: Any, hint: str | None = None) -> Pair:
    """A complex constant as two float32 constants."""
    value = np.asarray(value)
    return Pair(b.constant(value.real.astype(np.float32), hint and f"{hint}_re"),
                b.constant(value.imag.astype(np.float32), hint and f"{hint}_im"))


def _known(b: GraphBuilder, v: Value) -> Any:
    """The concrete value of `v` (complex for a Pair), or None when it depends on data."""
    if isinstance(v, str):
        return constant_value(b, v)
    re = constant_value(b, v.re)
    im = np.zeros_like(re) if v.im is None or re is None else constant_value(b, v.im)
    return None if re is None or im is None else (re + 1j * im).astype(np.complex64)


def _fold(b: GraphBuilder, eqn: Any, values: list[Any]) -> list[Value]:
    """Evaluate `eqn` on concrete inputs with JAX: its outputs as constants."""
    with jax.ensure_compile_time_eval():
        outs = eqn.primitive.bind(*values, **eqn.params)
    outs = outs if eqn.primitive.multiple_results else [outs]
    return [constant_pair(b, o) if is_complex(var.aval) else b.constant(np.asarray(o))
            for o, var in zip(outs, eqn.outvars, strict=True)]


# --- arithmetic on pairs -------------------------------------------------------------


def _add(b: GraphBuilder, x: str | None, y: str | None, kind: str = "add") -> str | None:
    if y is None:
        return x
    if x is None:
        return y if kind == "add" else b.emit("neg", [y])
    return b.emit(kind, [x, y])


def _mul(b: GraphBuilder, x: str | None, y: str | None, kind: str = "mul",
         real: RealRule | None = None, eqn: Any = None) -> str | None:
    if x is None or y is None:
        return None
    if real is not None:
        return real(b, eqn, [x, y])[0]
    return b.emit(kind, [x, y])


def _bilinear(b: GraphBuilder, x: Pair, y: Pair, real: RealRule | None = None,
              eqn: Any = None) -> Pair:
    """(a + ib)(c + id) for elementwise mul (real=None) or a real bilinear rule."""
    rr = _mul(b, x.re, y.re, real=real, eqn=eqn)
    ii = _mul(b, x.im, y.im, real=real, eqn=eqn)
    ri = _mul(b, x.re, y.im, real=real, eqn=eqn)
    ir = _mul(b, x.im, y.re, real=real, eqn=eqn)
    return Pair(_add(b, rr, ii, "sub"), _add(b, ri, ir))


def _zeros_like(b: GraphBuilder, name: str) -> str:
    t = b.tensors[name]
    return b.constant(np.zeros(t.shape, np.float32))


def _exp(b: GraphBuilder, x: Pair) -> Pair:
    if x.im is None:
        return Pair(b.emit("exp", [x.re]), None)
    cos, sin = b.emit("cos", [x.im]), b.emit("sin", [x.im])
    if x.re is None:
        return Pair(cos, sin)
    mag = b.emit("exp", [x.re])
    return Pair(b.emit("mul", [mag, cos]), b.emit("mul", [mag, sin]))


def _abs(b: GraphBuilder, x: Pair) -> str:
    if x.im is None:
        return b.emit("abs", [x.re])
    squares = b.emit("add", [b.emit("mul", [x.re, x.re]), b.emit("mul", [x.im, x.im])])
    return b.emit("sqrt", [squares])


def _div(b: GraphBuilder, x: Pair, y: Pair) -> Pair:
    if y.im is None:
        return Pair(b.emit("div", [x.re, y.re]),
                    None if x.im is None else b.emit("div", [x.im, y.re]))
    num = _bilinear(b, x, Pair(y.re, b.emit("neg", [y.im])))
    den = b.emit("add", [b.emit("mul", [y.re, y.re]), b.emit("mul", [y.im, y.im])])
    return Pair(b.emit("div", [num.re, den]),
                None if num.im is None else b.emit("div", [num.im, den]))


def _as_pair(v: Value) -> Pair:
    return v if isinstance(v, Pair) else Pair(v, None)


def _partwise(rule: RealRule, b: GraphBuilder, eqn: Any, ins: list[Value]) -> Pair:
    """A data-movement primitive (reshape, broadcast, slice, ...) applied to each part;
    other operands (e.g. select_n's predicate) pass as they are."""
    parts = []
    for part in ("re", "im"):
        if part == "im" and all(not isinstance(v, Pair) or v.im is None for v in ins):
            parts.append(None)
            continue
        args = [v if not isinstance(v, Pair) else
                (getattr(v, part) if getattr(v, part) is not None
                 else _zeros_like(b, v.re)) for v in ins]
        parts.append(rule(b, eqn, args)[0])
    return Pair(parts[0], parts[1])


MOVEMENT = ("broadcast_in_dim", "reshape", "squeeze", "expand_dims", "slice", "transpose",
            "concatenate", "select_n", "copy", "copy_p", "reduce_sum", "optimization_barrier")


def lower(b: GraphBuilder, eqn: Any, ins: list[Value], real_rules: dict[str, RealRule]
          ) -> list[Value]:
    """IR values for the outputs of complex equation `eqn` (inputs `ins`, Pairs where
    complex). `real_rules`: the tracer's rules, reused for shapes and contractions."""
    prim = eqn.primitive.name
    known = [_known(b, v) for v in ins]
    if all(k is not None for k in known):
        return _fold(b, eqn, known)
    out_complex = is_complex(eqn.outvars[0].aval)
    if prim == "convert_element_type":
        x = ins[0]
        if out_complex:
            return [_as_pair(x)]
        return [x.re if isinstance(x, Pair) else x]  # complex -> real keeps the real part
    if prim == "complex":
        return [Pair(ins[0], ins[1])]
    if prim == "real":
        return [_as_pair(ins[0]).re]
    if prim == "imag":
        x = _as_pair(ins[0])
        return [x.im if x.im is not None else _zeros_like(b, x.re)]
    p = [_as_pair(v) if is_complex(var.aval) else v
         for v, var in zip(ins, eqn.invars, strict=True)]
    if prim == "conj":
        x = p[0] if isinstance(p[0], Pair) else Pair(p[0], None)
        return [Pair(x.re, None if x.im is None else b.emit("neg", [x.im]))]
    if prim in ("add", "add_any", "sub"):
        x, y = (_as_pair(v) for v in p)
        kind = "sub" if prim == "sub" else "add"
        return [Pair(_add(b, x.re, y.re, kind), _add(b, x.im, y.im, kind))]
    if prim == "neg":
        x = p[0]
        return [Pair(b.emit("neg", [x.re]), None if x.im is None else b.emit("neg", [x.im]))]
    if prim == "mul":
        return [_bilinear(b, _as_pair(p[0]), _as_pair(p[1]))]
    if prim == "dot_general":
        return [_bilinear(b, _as_pair(p[0]), _as_pair(p[1]), real_rules["dot_general"], eqn)]
    if prim == "integer_pow" and eqn.params["y"] == 2:
        return [_bilinear(b, p[0], p[0])]
    if prim == "div":
        return [_div(b, _as_pair(p[0]), _as_pair(p[1]))]
    if prim == "exp":
        return [_exp(b, p[0])]
    if prim == "abs":
        return [_abs(b, p[0])]
    if prim in MOVEMENT:
        if eqn.primitive.multiple_results:
            raise UnsupportedPrimitive(f"{prim} on complex numbers", b.source)
        return [_partwise(real_rules[prim], b, eqn, p)]
    raise UnsupportedPrimitive(f"{prim} on complex numbers (ncc spells add, sub, mul, div, "
                               "dot_general, exp, abs, real, imag, conj and shape ops)",
                               b.source)
