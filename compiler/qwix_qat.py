"""qwix QAT (`spyx.quant`): qwix's own fake-quant parameters become ncc's.

qwix (Google's JAX quantization library, which `spyx.quant` wraps) spells its quantize ->
dequantize round trip in plain JAX primitives, not in a named call:

    scale = where(absmax / B < sqrt(tiny), 1, absmax / B)   # B = qmax + 0.5 for int8/int4
    q     = convert_element_type(round(w / scale), intN)    # XLA's conversion saturates
    w_dq  = convert_element_type(q, float32) * scale

The tracer calls `recognize` on every equation (`trace.SPECIAL_CALLS`, after ncc's own
fake-quant recognizer). On constants (trained weights) it folds `round` and the float -> int
conversion by binding the very JAX primitive (so the rounding mode and the saturation are
JAX's, not a re-implementation), follows the integers through the conversion back to float,
and at the multiplication by the scale emits the on-grid constant `q * scale` annotated with
`QuantParams(scale, 0, bits, axis)`: the quantizer then keeps exactly qwix's integers (they
include -128 / -8, which qwix's half-even rounding of -absmax/scale = -(qmax + 0.5) gives).

Activations: a `round` of a traced value is a `TraceError` saying what to change. A scale
computed from the activation at run time (qwix's default, dynamic range) has no
integer-target equivalent; a static scale (`act_static_scale=True`) could have one, but qwix
then rescales the integer product after the matmul, which is not mapped yet.

Tiled (sub-channel) scales, several scaled axes and asymmetric weights (zero points) are not
recognised: their chain folds to a plain float constant, which the quantizer then calibrates
like any PTQ weight (the report says so).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from ncc.compiler.builder import GraphBuilder, TraceError
from ncc.compiler.ir import QuantParams, Tensor
from ncc.compiler.qat import constant_value
from ncc.compiler.quantize import QWIX_PREFIX


def _bind(eqn: Any, values: list[np.ndarray]) -> np.ndarray:
    out = eqn.primitive.bind(*(jnp.asarray(v) for v in values), **eqn.params)
    return np.asarray(out)


def _fold_div(b: GraphBuilder, eqn: Any, ins: list[str]) -> list[str] | None:
    """A constant divided by a literal, computed as XLA computes it: XLA turns x / c (c a
    compile-time constant) into x * fl32(1 / c), so qwix's absmax / 127.5 is not numpy's
    correctly rounded quotient; binding a one-equation jaxpr that keeps the literal gives
    XLA's own bits."""
    if not any(isinstance(v, jcore.Literal) for v in eqn.invars):
        return None
    values = [constant_value(b, n) for n, v in zip(ins, eqn.invars, strict=True)
              if not isinstance(v, jcore.Literal)]
    if any(v is None for v in values):
        return None
    jaxpr = jcore.Jaxpr([], [v for v in eqn.invars if not isinstance(v, jcore.Literal)],
                        list(eqn.outvars), [eqn])
    out = jax.jit(jcore.jaxpr_as_fun(jcore.ClosedJaxpr(jaxpr, [])))(*values)
    return [b.constant(np.asarray(out[0]))]


def _int_bits(dtype: Any) -> int | None:
    """Bits of a signed integer dtype of at most 8 bits (int8, int4, int2), else None."""
    try:
        info = jnp.iinfo(dtype)
    except ValueError:
        return None
    return int(info.bits) if info.min < 0 and info.bits <= 8 else None


def _scale_axis(scale: np.ndarray, shape: tuple[int, ...]) -> tuple[tuple[float, ...], int | None]:
    """qwix's broadcast scale array -> (per-channel scales, axis) or (one scale, None)."""
    s = np.asarray(scale, np.float32)
    if s.size == 1:
        return (float(s.reshape(-1)[0]),), None
    s = s.reshape((1,) * (len(shape) - s.ndim) + s.shape)
    axes = [i for i, d in enumerate(s.shape) if d != 1]
    if len(axes) != 1 or s.shape[axes[0]] != shape[axes[0]]:
        raise TraceError(f"qwix scale of shape {scale.shape} on a weight of shape {shape}: "
                         "tiled (sub-channel) or multi-axis scales have no ncc form; quantize "
                         "per channel (tile_size=None)")
    return tuple(float(x) for x in s.reshape(-1)), axes[0]


def _round(b: GraphBuilder, eqn: Any, ins: list[str]) -> list[str] | None:
    (x,) = ins
    value = constant_value(b, x)
    made = next((op for op in reversed(b.ops) if op.output == x), None)
    if value is not None and made is not None and made.kind == "div":
        num, den = (constant_value(b, n) for n in made.inputs)
        # XLA's algebraic simplifier computes A / broadcast(B) as A * broadcast(fl32(1/B))
        # (measured against qwix's forward on CPU, jax 0.10: the true quotient puts some
        # weights one step off, e.g. -127.5 -> -128 where qwix's forward gives -127)
        value = (np.asarray(num, np.float32)
                 * (np.float32(1) / np.asarray(den, np.float32))).astype(np.float32)
    if value is not None:
        name = b.constant(_bind(eqn, [value]).astype(np.float32))
        b.facts[name] = ("rounded",)
        return [name]
    scale = None
    if made is not None and made.kind == "div":
        scale = constant_value(b, made.inputs[1])
    if scale is not None:
        # measured: with act_static_scale=True qwix multiplies the integer product by
        # s_x * s_w after the matmul, which this recognizer does not map to the
        # fully-connected kernel yet; refusing beats a model 3.1 (of peak ~7) off qwix's
        raise TraceError(f"round at {b.source}: qwix static activation quantization "
                         "(act_static_scale=True) is not supported yet; quantize weights only "
                         "(spyx.quant.weights_only_rules) before compiling")
    raise TraceError(f"round at {b.source}: a quantizer whose scale is computed from the "
                     "activation at run time (qwix's dynamic-range activation "
                     "quantization) cannot be deployed on integer targets; quantize "
                     "weights only (spyx.quant.weights_only_rules) before compiling")


def _convert(b: GraphBuilder, eqn: Any, ins: list[str]) -> list[str] | None:
    (x,) = ins
    fact = b.facts.get(x)
    bits = _int_bits(eqn.params["new_dtype"])
    if bits is not None:
        value = constant_value(b, x)
        if value is None:
            return None
        q = _bind(eqn, [value]).astype(np.int8)
        name = b.constant(q)
        b.facts[name] = ("int", bits)
        return [name]
    if np.dtype(eqn.params["new_dtype"]) != np.float32 or x not in b.constants:
        return None
    if fact is None:  # a PTQ-converted module's stored integers (qwix's `qvalue`)
        stored = _int_bits(eqn.invars[0].aval.dtype)
        fact = ("int", stored) if stored is not None else None
    if fact is not None and fact[0] == "int":
        name = b.constant(b.constants[x].astype(np.float32))
        b.facts[name] = ("grid", fact[1])
        return [name]
    return None


def _mul(b: GraphBuilder, eqn: Any, ins: list[str]) -> list[str] | None:
    facts = [b.facts.get(n) for n in ins]
    for i in (0, 1):
        f, other = facts[i], ins[1 - i]
        if f is not None and f[0] == "grid":
            scale = constant_value(b, other)
            if scale is None:
                return None
            q = b.constants[ins[i]]
            grid = _bind(eqn, [q, scale] if i == 0 else [scale, q]).astype(np.float32)
            scales, axis = _scale_axis(np.asarray(scale), grid.shape)
            p = QuantParams(scales, (0,) * len(scales), bits=f[1], axis=axis)
            name = b.constant(grid, QWIX_PREFIX)
            t = b.tensors[name]
            b.tensors[name] = Tensor(name, t.shape, t.dtype, p)
            b.facts[name] = ("qwix", f[1])
            return [name]
    return None


def recognize(b: GraphBuilder, eqn: Any, ins: list[str]) -> list[str] | None:
    """IR for one step of qwix's fake-quant chain (see the module docstring), else None."""
    prim = getattr(eqn.primitive, "name", None)
    if prim == "round":
        return _round(b, eqn, ins)
    if prim == "convert_element_type":
        return _convert(b, eqn, ins)
    if prim == "mul":
        return _mul(b, eqn, ins)
    if prim == "div":
        return _fold_div(b, eqn, ins)
    return None
