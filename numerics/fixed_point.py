"""Fixed-point arithmetic on integers: rounding, saturation, TFLite's quantized multipliers
(numpy, int64 intermediates, int32 semantics; TFLite's default double-rounding build)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
INT32_F32_MAX = 2147483520.0
"""The largest float32 below 2^31: where a float32 value rounded to int32 saturates."""


def round_half_away(x: Any) -> np.ndarray:
    """Round to nearest, ties away from zero (std::round / TfLiteRound), exactly, in x's dtype."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    t = np.trunc(x)
    return t + np.where(np.abs(x - t) >= 0.5, np.sign(x), 0).astype(x.dtype)


def int_range(bits: int, signed: bool = True) -> tuple[int, int]:
    """(qmin, qmax) of a `bits`-bit integer, 2 <= bits <= 32."""
    if not 2 <= bits <= 32:
        raise ValueError(f"bits must be in [2, 32], got {bits}")
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def saturate(x: Any, bits: int, signed: bool = True) -> np.ndarray:
    """Clamp integers to the `bits`-bit grid; int64 in, int64 out."""
    qmin, qmax = int_range(bits, signed)
    return np.clip(np.asarray(x, np.int64), qmin, qmax)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite QuantizeMultiplier: (m, shift), real ~= m * 2^(shift - 31), m in [2^30, 2^31).

    real >= 0; real = 0, or a shift below -31, gives (0, 0). Raises ValueError if
    shift > 30 (the multiplier cannot be applied to int32 values).
    """
    real = float(real)
    if not (math.isfinite(real) and real >= 0):
        raise ValueError(f"multiplier {real} must be finite and non-negative")
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    m = int(round_half_away(q * (1 << 31)))
    if m == 1 << 31:
        m //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        raise ValueError(f"multiplier {real:g} is too large for a 32-bit fixed-point form")
    return m, shift


def quantize_multiplier_array(real: Any) -> tuple[np.ndarray, np.ndarray]:
    """`quantize_multiplier` elementwise: (m int32 array, shift int32 array), real's shape."""
    real = np.asarray(real, np.float64)
    pairs = [quantize_multiplier(r) for r in real.ravel()]
    m = np.array([p[0] for p in pairs], np.int64).reshape(real.shape).astype(np.int32)
    s = np.array([p[1] for p in pairs], np.int64).reshape(real.shape).astype(np.int32)
    return m, s


def wrap32(x: Any) -> np.ndarray:
    """The low 32 bits of integers as two's complement int32 values (C's int32 wraparound),
    returned as int64."""
    return ((np.asarray(x, np.int64) + (1 << 31)) % (1 << 32)) - (1 << 31)


def saturating_rounding_doubling_high_mul(a: Any, b: Any) -> np.ndarray:
    """gemmlowp SRDHM: (a * b + nudge) / 2^31 truncated, nudge = +-2^30 toward the sign.

    a, b: int32 values (any integer dtype, broadcast). Returns int32.
    """
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    ab = a * b
    total = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    high = np.where(total >= 0, total >> 31, -((-total) >> 31))
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, high).astype(np.int32)


def rounding_divide_by_pot(x: Any, exponent: Any) -> np.ndarray:
    """x / 2^exponent, rounded half away from zero. x int32, exponent in [0, 31]. Returns int32."""
    x, exponent = np.asarray(x, np.int64), np.asarray(exponent, np.int64)
    if np.any((exponent < 0) | (exponent > 31)):
        raise ValueError("exponent must be in [0, 31]")
    mask = (np.int64(1) << exponent) - 1
    threshold = (mask >> 1) + (x < 0)
    return ((x >> exponent) + ((x & mask) > threshold)).astype(np.int32)


def multiply_by_quantized_multiplier(x: Any, multiplier: Any, shift: Any) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplier (int32 form): x * m * 2^(shift - 31), rounded.

    x: int32 values; multiplier in [0, 2^31); shift in [-31, 30] (broadcast with x).
    The left shift wraps modulo 2^32 (C int32 behaviour). Returns int64 holding int32
    values (callers add zero points and saturate).
    """
    shift = np.asarray(shift, np.int64)
    left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
    scaled = wrap32(np.asarray(x, np.int64) << left)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(scaled, multiplier),
                                  right).astype(np.int64)


def reduced_multiplier(multiplier: Any) -> np.ndarray:
    """TFLite's 16-bit form of a multiplier m in [0, 2^31) (int64 MBQM of the 16x8 kernels):
    (m + 2^15) >> 16, saturating to 0x7FFF from m >= 0x7FFF0000. int64 out, in [0, 2^15)."""
    m = np.asarray(multiplier, np.int64)
    return np.where(m < 0x7FFF0000, (m + (1 << 15)) >> 16, 0x7FFF)


def multiply_by_quantized_multiplier_int64(x: Any, multiplier: Any, shift: Any) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplier (int64 form, 16x8 FULLY_CONNECTED / CONV_2D):
    the multiplier reduced to 16 bits (`reduced_multiplier`), one rounding (half up),
    x in [-2^47, 2^47); shift in [-31, 14].

    x * reduced < 2^62 fits int64. Returns int64 (the kernel then saturates to int16).
    """
    x = np.asarray(x, np.int64)
    if np.any((x < -(1 << 47)) | (x >= (1 << 47))):
        raise ValueError("accumulator outside [-2^47, 2^47)")
    total_shift = 15 - np.asarray(shift, np.int64)
    return (x * reduced_multiplier(multiplier) + (np.int64(1) << (total_shift - 1))) \
        >> total_shift
