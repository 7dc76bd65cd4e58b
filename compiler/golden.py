"""The golden integer kernels: the definition of the bits every target must produce.

One pure numpy function per integer op, integer parameters explicit, following
the TFLite reference kernels (FullyConnected per-channel, ADD/SUB, MUL, requant
by fixed-point multiplier and shift with `MultiplyByQuantizedMultiplier`
rounding). Intermediates are int64 numpy arrays; each kernel states its ranges.
Data-movement ops (concat, reshape, slice, ...) and comparisons reuse the
float interpreter's kernels, which are exact on integers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ncc import numerics as nx


def _saturate(x: np.ndarray, dtype: str) -> np.ndarray:
    lo, hi = nx.dtype_range(dtype)
    return np.clip(x, lo, hi).astype(dtype)


def fully_connected(x: np.ndarray, w: np.ndarray, bias: np.ndarray, *, x_zp: int,
                    multiplier: tuple[int, ...], shift: tuple[int, ...], out_zp: int,
                    dtype: str = "int8") -> np.ndarray:
    """x (..., K) int8 or int16, w (K, N) int8 symmetric, bias (N,) int32 -> (..., N).

    acc = sum_k (x_k - x_zp) w_kn + bias_n. int8 x: |acc| <= K * 255 * 127 + |bias|,
    proven below 2^31 (`int_safety.check_accumulator`), and out = saturate(MBQM(acc,
    multiplier_n, shift_n) + out_zp). int16 x (TFLite 16x8): an int64 accumulator,
    proven below 2^47, and TFLite's int64 MBQM (16-bit multiplier, one rounding).
    """
    acc = (x.astype(np.int64) - x_zp) @ w.astype(np.int64) + bias.astype(np.int64)
    mbqm = (nx.multiply_by_quantized_multiplier_int64 if x.dtype == np.int16
            else nx.multiply_by_quantized_multiplier)
    scaled = mbqm(acc, np.asarray(multiplier), np.asarray(shift))
    return _saturate(scaled + out_zp, dtype)


def _add_sub(a: np.ndarray, b: np.ndarray, sign: int, at: dict[str, Any]) -> np.ndarray:
    """TFLite int8 ADD/SUB: both inputs shifted left by `left_shift` (20), rescaled to a
    common scale, added, rescaled to the output. (a - a_zp) << 20 fits int32 for int8."""
    a_shifted = (a.astype(np.int64) - at["a_zp"]) * (1 << at["left_shift"])
    b_shifted = (b.astype(np.int64) - at["b_zp"]) * (1 << at["left_shift"])
    a_scaled = nx.multiply_by_quantized_multiplier(a_shifted, at["a_multiplier"], at["a_shift"])
    b_scaled = nx.multiply_by_quantized_multiplier(b_shifted, at["b_multiplier"], at["b_shift"])
    raw = a_scaled + sign * b_scaled
    out = nx.multiply_by_quantized_multiplier(raw, at["multiplier"], at["shift"])
    return _saturate(out + at["out_zp"], at["dtype"])


def qadd(a: np.ndarray, b: np.ndarray, **at: Any) -> np.ndarray:
    return _add_sub(a, b, 1, at)


def qsub(a: np.ndarray, b: np.ndarray, **at: Any) -> np.ndarray:
    return _add_sub(a, b, -1, at)


def qmul(a: np.ndarray, b: np.ndarray, *, a_zp: int, b_zp: int, multiplier: int, shift: int,
         out_zp: int, dtype: str = "int8") -> np.ndarray:
    """TFLite int8 MUL: (a - a_zp)(b - b_zp) (|.| <= 255^2) requantized to the output."""
    prod = (a.astype(np.int64) - a_zp) * (b.astype(np.int64) - b_zp)
    return _saturate(nx.multiply_by_quantized_multiplier(prod, multiplier, shift) + out_zp,
                     dtype)


def lut(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    """table[x - min(dtype)]: one entry per input level (256 for int8); or, for int16 x
    and a compact table of `nx.INTERP_ENTRIES`, the core's `interpolated_lookup`."""
    if x.dtype == np.int16 and nx.is_interpolated(table, 16):
        return nx.interpolated_lookup(x, table).astype(table.dtype)
    lo, _ = nx.dtype_range(str(x.dtype))
    return table[x.astype(np.int64) - lo]


def requantize(x: np.ndarray, *, in_zp: int, multiplier: int, shift: int, out_zp: int,
               dtype: str = "int8") -> np.ndarray:
    """TFLite QUANTIZE int8 -> int8: saturate(MBQM(x - in_zp) + out_zp)."""
    scaled = nx.multiply_by_quantized_multiplier(x.astype(np.int64) - in_zp, multiplier, shift)
    return _saturate(scaled + out_zp, dtype)


def _kernel(fn: Any) -> Any:
    return lambda xp, args, attrs: fn(*args, **attrs)


INT_KERNELS = {
    "fully_connected": _kernel(fully_connected),
    "qadd": _kernel(qadd),
    "qsub": _kernel(qsub),
    "qmul": _kernel(qmul),
    "lut": _kernel(lut),
    "requantize": _kernel(requantize),
}
