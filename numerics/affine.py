"""Between reals and integers on a grid: quantize, dequantize, requantize (float32 math as
TFLite's kernels; per-axis parameters broadcast along their axis)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ncc.numerics.fixed_point import (
    multiply_by_quantized_multiplier,
    quantize_multiplier_array,
    round_half_away,
    saturate,
)
from ncc.numerics.params import QuantParams


def quantize(x: Any, p: QuantParams) -> np.ndarray:
    """float -> int: saturate(round_half_away(fl32(x * fl32(1/scale))) + zp), float32 math.

    Multiplying by the float32 reciprocal (TFLite's optimized AffineQuantize) is correctly
    rounded on every backend, so the JAX and keras.ops spellings give the same integers.
    Returns the storage dtype (`p.dtype`), x's shape.
    """
    x = np.asarray(x, np.float32)
    inv = p.broadcast(p.inv_scale, x.ndim).astype(np.float32)
    zp = p.broadcast(p.zero_point, x.ndim).astype(np.int64)
    r = round_half_away(x * inv)
    r = np.clip(r, -(2.0 ** 40), 2.0 ** 40)  # keep the int cast defined; saturates below
    return saturate(r.astype(np.int64) + zp, p.bits, p.signed).astype(p.dtype)


def dequantize(q: Any, p: QuantParams) -> np.ndarray:
    """int -> float32: fl32(fl32(q - zp) * scale)."""
    q = np.asarray(q, np.int64)
    scale = p.broadcast(p.scale, q.ndim).astype(np.float32)
    zp = p.broadcast(p.zero_point, q.ndim).astype(np.int64)
    return (q - zp).astype(np.float32) * scale


def requantize_multipliers(p_in: QuantParams, p_out: QuantParams,
                           ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """(m, shift) int32 of quantize_multiplier(s_in / s_out) (ratio in float64), per axis
    if either side is, shaped to broadcast against an `ndim`-d array."""
    ratio = np.asarray(p_in.scale, np.float64) / np.asarray(p_out.scale, np.float64)
    m, s = quantize_multiplier_array(ratio)
    ref = p_in if p_in.per_axis else p_out
    return ref.broadcast(m, ndim), ref.broadcast(s, ndim)


def requantize(q: Any, p_in: QuantParams, p_out: QuantParams) -> np.ndarray:
    """int -> int between grids: saturate(MBQM(q - zp_in, m, shift) + zp_out), with
    (m, shift) from `requantize_multipliers`. Returns p_out's storage dtype."""
    q = np.asarray(q, np.int64)
    m, s = requantize_multipliers(p_in, p_out, q.ndim)
    zp_in = p_in.broadcast(p_in.zero_point, q.ndim)
    zp_out = p_out.broadcast(p_out.zero_point, q.ndim)
    out = multiply_by_quantized_multiplier(q - zp_in, m, s) + zp_out
    return saturate(out, p_out.bits, p_out.signed).astype(p_out.dtype)
