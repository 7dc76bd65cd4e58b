"""The numeric core's integer arithmetic (`ncc.numerics`) in JAX, bit-exact without jax
x64: 32x32 -> 64-bit products are formed from 16-bit halves in uint32. Each function
re-spells the numpy function of the same name without `_jax` (tested bit-equal)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ncc.numerics import (
    INT32_F32_MAX,
    INT32_MAX,
    INT32_MIN,
    INTERP_BITS,
    INTERP_SEGMENT_BITS,
    QuantParams,
    bias_reciprocal,
    int_range,
    is_interpolated,
    reduced_multiplier,
    requantize_multipliers,
)

# --- the same in JAX, exact without x64 ----------------------------------------------------


def round_half_away_jax(x: jax.Array) -> jax.Array:
    """Round to nearest, ties away from zero, exactly (no x + 0.5 double rounding)."""
    t = jnp.trunc(x)
    return t + jnp.where(jnp.abs(x - t) >= 0.5, jnp.sign(x), jnp.zeros_like(x))


def saturate_jax(x: jax.Array, bits: int, signed: bool = True) -> jax.Array:
    qmin, qmax = int_range(bits, signed)
    return jnp.clip(x, qmin, qmax)


def quantize_multiplier_jax(real: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`quantize_multiplier` for float32 reals >= 0 (traceable, e.g. a learned decay).

    Exact: a float32 mantissa has 24 bits, so m = mantissa * 2^31 needs no rounding
    and equals the numpy result for float(real). Returns (m int32, shift int32).
    """
    real = jnp.asarray(real, jnp.float32)
    mant, exp = jnp.frexp(real)
    m = lax.shift_left((mant * (1 << 24)).astype(jnp.int32), jnp.int32(7))
    zero = (real <= 0) | (exp < -31)
    return jnp.where(zero, 0, m).astype(jnp.int32), jnp.where(zero, 0, exp).astype(jnp.int32)


def _u32(x: jax.Array) -> jax.Array:
    return lax.bitcast_convert_type(jnp.asarray(x, jnp.int32), jnp.uint32)


def saturating_rounding_doubling_high_mul_jax(a: jax.Array, b: jax.Array) -> jax.Array:
    """`saturating_rounding_doubling_high_mul` in int32/uint32 only (16-bit half products)."""
    a, b = jnp.broadcast_arrays(jnp.asarray(a, jnp.int32), jnp.asarray(b, jnp.int32))
    au, bu = _u32(a), _u32(b)
    m16 = jnp.uint32(0xFFFF)
    a0, a1, b0, b1 = au & m16, au >> 16, bu & m16, bu >> 16
    p00, p01, p10, p11 = a0 * b0, a0 * b1, a1 * b0, a1 * b1
    mid = (p00 >> 16) + (p01 & m16) + (p10 & m16)
    hi_u = p11 + (p01 >> 16) + (p10 >> 16) + (mid >> 16)
    lo = (mid << 16) | (p00 & m16)
    # unsigned -> signed high word: subtract b if a < 0 and a if b < 0 (mod 2^32)
    hi_u = hi_u - jnp.where(a < 0, bu, jnp.uint32(0)) - jnp.where(b < 0, au, jnp.uint32(0))
    hi = lax.bitcast_convert_type(hi_u, jnp.int32)
    neg = hi < 0
    lo2 = lo + jnp.where(neg, jnp.uint32(0xC0000001), jnp.uint32(0x40000000))
    hi2 = hi + jnp.where(neg, -1, 0) + (lo2 < lo).astype(jnp.int32)
    floor = lax.shift_left(hi2, jnp.int32(1)) + (lo2 >> 31).astype(jnp.int32)
    inexact = (lo2 & jnp.uint32(0x7FFFFFFF)) != 0
    high = floor + ((hi2 < 0) & inexact).astype(jnp.int32)
    return jnp.where((a == INT32_MIN) & (b == INT32_MIN), jnp.int32(INT32_MAX), high)


def rounding_divide_by_pot_jax(x: jax.Array, exponent: Any) -> jax.Array:
    """`rounding_divide_by_pot` in int32; exponent in [0, 31]."""
    x = jnp.asarray(x, jnp.int32)
    e = jnp.asarray(exponent, jnp.int32)
    mask = lax.shift_left(jnp.ones_like(e), e) - 1
    threshold = lax.shift_right_arithmetic(mask, jnp.int32(1)) + (x < 0).astype(jnp.int32)
    x, e = jnp.broadcast_arrays(x, e)
    return lax.shift_right_arithmetic(x, e) + ((x & mask) > threshold).astype(jnp.int32)


def multiply_by_quantized_multiplier_jax(x: jax.Array, multiplier: Any, shift: Any) -> jax.Array:
    """`multiply_by_quantized_multiplier` in int32 (left shift wraps like C)."""
    x = jnp.asarray(x, jnp.int32)
    shift = jnp.asarray(shift, jnp.int32)
    left, right = jnp.maximum(shift, 0), jnp.maximum(-shift, 0)
    x, left = jnp.broadcast_arrays(x, left)
    scaled = lax.shift_left(x, left)
    return rounding_divide_by_pot_jax(
        saturating_rounding_doubling_high_mul_jax(scaled, multiplier), right)


def multiply_by_quantized_multiplier_int64_jax(x: jax.Array, multiplier: np.ndarray,
                                               shift: np.ndarray) -> jax.Array:
    """`multiply_by_quantized_multiplier_int64` for int32 x, in int32/uint32 arithmetic only
    (JAX runs without 64-bit integers). multiplier, shift: concrete (numpy), per channel.

    x * reduced + 2^(t-1) (t = 15 - shift) is split at bit 16: x = hi 2^16 + lo, so
    hi * reduced < 2^30 and lo * reduced < 2^31. For t >= 17 the low 16 bits cannot reach
    the result: (hi * reduced + (lo * reduced >> 16) + 2^(t-17)) >> (t - 16). For t <= 16:
    hi * reduced * 2^(16-t) + (lo * reduced + 2^(t-1)) >> t, exact modulo 2^32, hence
    exact whenever the result fits int32 (`check_accumulator` proves it does).
    """
    reduced = reduced_multiplier(multiplier).astype(np.int32)
    t = (15 - np.asarray(shift, np.int64)).astype(np.int32)
    x = jnp.asarray(x, jnp.int32)
    hi = jnp.right_shift(x, jnp.int32(16))
    lo = _u32(x) & jnp.uint32(0xFFFF)
    a = hi * jnp.asarray(reduced)
    low = lo * jnp.asarray(reduced).astype(jnp.uint32)  # int32 constants only (traced)
    wide_t = jnp.asarray(np.maximum(t, 17))
    big = jnp.right_shift(  # arithmetic: int32
        a + (low >> 16).astype(jnp.int32) + jnp.left_shift(jnp.int32(1), wide_t - 17),
        wide_t - 16)
    narrow_t = jnp.asarray(np.minimum(t, 16))
    rounded = (low + jnp.left_shift(jnp.uint32(1), (narrow_t - 1).astype(jnp.uint32))) \
        >> narrow_t.astype(jnp.uint32)
    small = jnp.left_shift(a, 16 - narrow_t) + rounded.astype(jnp.int32)
    return jnp.where(jnp.asarray(t >= 17), big, small)


def broadcast_jax(p: QuantParams, ndim: int, values: Any, dtype: Any) -> jax.Array:
    """`QuantParams.broadcast` as a JAX constant of `dtype`."""
    return jnp.asarray(p.broadcast(values, ndim), dtype)


def quantize_float_jax(x: jax.Array, p: QuantParams) -> tuple[jax.Array, jax.Array]:
    """`quantize` in float32: (q after saturation, q before saturation), both float32
    (the second tells a straight-through gradient where x is inside the grid)."""
    x = jnp.asarray(x, jnp.float32)
    inv = broadcast_jax(p, x.ndim, p.inv_scale, jnp.float32)
    zp = broadcast_jax(p, x.ndim, p.zero_point, jnp.float32)
    r = round_half_away_jax(x * inv) + zp
    return jnp.clip(r, p.qmin, p.qmax), r


def quantize_jax(x: jax.Array, p: QuantParams) -> jax.Array:
    """`quantize` in JAX; returns int32 values on p's grid (bits <= 24)."""
    if p.bits > 24:
        raise ValueError("quantize_jax computes in float32: at most 24 bits")
    return quantize_float_jax(x, p)[0].astype(jnp.int32)


def dequantize_jax(q: jax.Array, p: QuantParams) -> jax.Array:
    """`dequantize` in JAX: fl32(fl32(q - zp) * scale)."""
    q = jnp.asarray(q, jnp.int32)
    scale = broadcast_jax(p, q.ndim, p.scale, jnp.float32)
    zp = broadcast_jax(p, q.ndim, p.zero_point, jnp.int32)
    return (q - zp).astype(jnp.float32) * scale


def requantize_jax(q: jax.Array, p_in: QuantParams, p_out: QuantParams) -> jax.Array:
    """`requantize` in JAX; int32 out."""
    q = jnp.asarray(q, jnp.int32)
    m, s = requantize_multipliers(p_in, p_out, q.ndim)
    m, s = jnp.asarray(m, jnp.int32), jnp.asarray(s, jnp.int32)
    zp_in = broadcast_jax(p_in, q.ndim, p_in.zero_point, jnp.int32)
    zp_out = broadcast_jax(p_out, q.ndim, p_out.zero_point, jnp.int32)
    out = multiply_by_quantized_multiplier_jax(q - zp_in, m, s) + zp_out
    return saturate_jax(out, p_out.bits, p_out.signed)


def lookup_jax(q: jax.Array, table: Any, p_in: QuantParams) -> jax.Array:
    """`lookup` in JAX: table[q - qmin_in], or `interpolated_lookup_jax` for a compact
    int16 table; int32 out."""
    if is_interpolated(table, p_in.bits):
        return interpolated_lookup_jax(q, jnp.asarray(np.asarray(table), jnp.int32))
    return jnp.take(jnp.asarray(np.asarray(table), jnp.int32),
                    jnp.asarray(q, jnp.int32) - p_in.qmin, mode="clip")


def interpolated_lookup_jax(q: jax.Array, table: jax.Array) -> jax.Array:
    """`interpolated_lookup` in JAX: int16 values q (any int dtype), table (513,) int32
    (may be traced); int32 out. Every intermediate is below 2^23 in magnitude."""
    u = jnp.asarray(q, jnp.int32) + jnp.int32(1 << (INTERP_BITS - 1))
    i = jnp.right_shift(u, INTERP_SEGMENT_BITS)
    f = jnp.bitwise_and(u, (1 << INTERP_SEGMENT_BITS) - 1)
    base = jnp.take(table, i, mode="clip")
    nxt = jnp.take(table, i + 1, mode="clip")
    num = jnp.left_shift(base, INTERP_SEGMENT_BITS) + (nxt - base) * f \
        + jnp.int32(1 << (INTERP_SEGMENT_BITS - 1))
    return jnp.right_shift(num, INTERP_SEGMENT_BITS)


def quantize_bias_jax(bias: jax.Array, scale: np.ndarray) -> jax.Array:
    """`quantize_bias` in JAX: round_half_away(fl32(b * fl32(1 / scale))), saturated to
    +-INT32_F32_MAX; scale (N,) concrete float64. int32 out."""
    inv = jnp.asarray(bias_reciprocal(scale))  # numpy: no arrays cached across traces
    r = round_half_away_jax(jnp.asarray(bias, jnp.float32) * inv)
    return jnp.clip(r, -INT32_F32_MAX, INT32_F32_MAX).astype(jnp.int32)
