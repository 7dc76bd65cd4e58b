"""Integer arithmetic shared by the quantizer, the golden kernels and the targets.

Rounding follows TFLite's reference kernels (double rounding, the default
build without TFLITE_SINGLE_ROUNDING):

- `quantize_multiplier(real)`: real = m * 2^(shift - 31) with m in [2^30, 2^31),
  m rounded half away from zero (TfLiteRound);
- `multiply_by_quantized_multiplier(x, m, shift)`: RoundingDivideByPOT(
  SaturatingRoundingDoublingHighMul(x * 2^max(shift, 0), m), max(-shift, 0)):
  the doubling high multiply rounds half away from zero through a nudge and a
  truncating division; the power-of-two divide rounds half away from zero.
- `quantize(x, params)`: round(x / scale) half away from zero, plus zero point,
  saturated (TFLite's float -> int8 QUANTIZE).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ncc.compiler.ir import QuantParams

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
ADD_LEFT_SHIFT = 20  # TFLite's int8 ADD/SUB input left shift


class OverflowRisk(ValueError):
    """An integer accumulation could leave its range; the message names the op."""


def dtype_range(dtype: str) -> tuple[int, int]:
    info = np.iinfo(np.dtype(dtype))
    return int(info.min), int(info.max)


def round_half_away(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


# --- fixed-point multipliers -------------------------------------------------------------


def quantize_multiplier(real: float) -> tuple[int, int]:
    """(m, shift) with real ~= m * 2^(shift - 31), m in [2^30, 2^31) (or 0)."""
    if real < 0:
        raise ValueError(f"multiplier {real} must be non-negative")
    if real == 0:
        return 0, 0
    q, shift = np.frexp(real)
    m = int(round_half_away(q * (1 << 31)))
    if m == 1 << 31:
        m //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        raise OverflowRisk(f"multiplier {real:g} is too large for a 32-bit fixed-point form")
    return m, int(shift)


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp SRDHM on int32 values held in int64: round(a * b / 2^31), saturating."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    total = ab + nudge
    high = np.where(total >= 0, total >> 31, -((-total) >> 31))  # C truncating division
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, high)


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """x / 2^exponent rounded half away from zero (gemmlowp RoundingDivideByPOT)."""
    x, exponent = np.asarray(x, np.int64), np.asarray(exponent, np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(x: Any, multiplier: Any, shift: Any) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplier on int32 values; per-channel params broadcast
    along the last axis. Callers guarantee x * 2^max(shift, 0) fits int32."""
    multiplier = np.asarray(multiplier, np.int64)
    shift = np.asarray(shift, np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    scaled = np.asarray(x, np.int64) * (np.int64(1) << left)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(scaled, multiplier),
                                  right)


# --- parameters ------------------------------------------------------------------------------


def params_from_range(lo: float, hi: float, dtype: str = "int8") -> QuantParams:
    """Asymmetric per-tensor parameters covering [lo, hi] (always including 0)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    qmin, qmax = dtype_range(dtype)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise OverflowRisk(f"range [{lo}, {hi}] is not finite")
    if hi == lo:
        return QuantParams((1.0,), (0,), dtype)
    scale = (hi - lo) / (qmax - qmin)
    zero_point = int(np.clip(round_half_away(qmin - lo / scale), qmin, qmax))
    return QuantParams((float(np.float32(scale)),), (zero_point,), dtype)


def symmetric_per_channel(w: np.ndarray, axis: int, dtype: str = "int8") -> QuantParams:
    """Weights: zero point 0, one scale per slice along `axis`, range [-qmax, qmax]."""
    qmax = dtype_range(dtype)[1]
    other = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
    peak = np.max(np.abs(w), axis=other) if other else np.abs(w)
    scale = np.where(peak > 0, peak / qmax, 1.0).astype(np.float32)
    return QuantParams(tuple(float(s) for s in scale), (0,) * len(scale), dtype, axis % w.ndim)


def _broadcast_params(p: QuantParams, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    scale = np.asarray(p.scale, np.float64)
    zp = np.asarray(p.zero_point, np.int64)
    if p.axis is not None and len(p.scale) > 1:
        shape = [1] * ndim
        shape[p.axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    elif len(p.scale) == 1:
        scale, zp = scale.reshape(()), zp.reshape(())
    return scale, zp


def quantize(x: np.ndarray, p: QuantParams) -> np.ndarray:
    x = np.asarray(x, np.float64)
    scale, zp = _broadcast_params(p, x.ndim)
    lo, hi = dtype_range(p.dtype)
    return np.clip(round_half_away(x / scale) + zp, lo, hi).astype(p.dtype)


def dequantize(q: np.ndarray, p: QuantParams) -> np.ndarray:
    q = np.asarray(q, np.int64)
    scale, zp = _broadcast_params(p, q.ndim)
    return ((q - zp) * scale).astype(np.float32)


def quantize_bias(bias: np.ndarray, scale: np.ndarray) -> np.ndarray:
    q = round_half_away(np.asarray(bias, np.float64) / np.asarray(scale, np.float64))
    if np.any(np.abs(q) > INT32_MAX):
        raise OverflowRisk("a bias does not fit int32 at scale s_x * s_w")
    return q.astype(np.int32)


def add_params(pa: QuantParams, pb: QuantParams, po: QuantParams) -> dict[str, Any]:
    """Attributes of TFLite's int8 ADD/SUB for inputs a, b and output o."""
    twice_max = 2 * max(pa.scale[0], pb.scale[0])
    a_m, a_s = quantize_multiplier(pa.scale[0] / twice_max)
    b_m, b_s = quantize_multiplier(pb.scale[0] / twice_max)
    o_m, o_s = quantize_multiplier(twice_max / ((1 << ADD_LEFT_SHIFT) * po.scale[0]))
    return {"a_zp": pa.zero_point[0], "b_zp": pb.zero_point[0], "a_multiplier": a_m,
            "a_shift": a_s, "b_multiplier": b_m, "b_shift": b_s, "multiplier": o_m,
            "shift": o_s, "out_zp": po.zero_point[0], "left_shift": ADD_LEFT_SHIFT,
            "dtype": po.dtype}


def check_accumulator(x_dtype: str, depth: int, bias: np.ndarray, shifts: Any,
                      where: str) -> int:
    """Prove |sum_k (x - zp) w + bias| * 2^max(shift, 0) < 2^31 for every int8 input.

    Returns the bound; raises OverflowRisk naming `where` and what to change.
    """
    lo, hi = dtype_range(x_dtype)
    bound = depth * (hi - lo) * 127 + int(np.max(np.abs(bias.astype(np.int64)), initial=0))
    bound <<= int(max(np.max(shifts), 0))
    if bound > INT32_MAX:
        raise OverflowRisk(f"{where}: a {depth}-term int8 dot product can reach {bound}, "
                           "beyond int32; split the layer or narrow its output range")
    return bound
