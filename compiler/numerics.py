"""Integer arithmetic for the quantizer, the golden kernels and the targets.

The arithmetic itself is the numeric core `ncc.models.quantization` (the same
functions the training side's fake-quant uses, so the two cannot drift):
TFLite's reference rounding, double rounding as in the default build without
TFLITE_SINGLE_ROUNDING. This module adapts it to the IR's `QuantParams` and
adds what only the compiler needs: TFLite ADD/SUB parameters and the proof
that accumulators fit int32.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ncc.compiler.ir import QuantParams
from ncc.models import quantization as core

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
ADD_LEFT_SHIFT = 20  # TFLite's int8 ADD/SUB input left shift


class OverflowRisk(ValueError):
    """An integer accumulation could leave its range; the message names the op."""


def dtype_range(dtype: str) -> tuple[int, int]:
    info = np.iinfo(np.dtype(dtype))
    return int(info.min), int(info.max)


def to_core(p: QuantParams) -> core.QuantParams:
    """The IR's parameters as the numeric core's (bits and signedness from the dtype)."""
    return core.QuantParams.from_dict(p.to_dict())


def from_core(p: core.QuantParams) -> QuantParams:
    return QuantParams(tuple(p.scale), tuple(p.zero_point), p.dtype, p.axis)


round_half_away = core.round_half_away
saturating_rounding_doubling_high_mul = core.saturating_rounding_doubling_high_mul
rounding_divide_by_pot = core.rounding_divide_by_pot


def multiply_by_quantized_multiplier(x: Any, multiplier: Any, shift: Any) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplier (numeric core), as int64 for further math.
    Callers guarantee x * 2^max(shift, 0) fits int32 (see `check_accumulator`)."""
    return core.multiply_by_quantized_multiplier(x, multiplier, shift).astype(np.int64)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """(m, shift) with real ~= m * 2^(shift - 31), m in [2^30, 2^31) (or 0)."""
    try:
        return core.quantize_multiplier(real)
    except ValueError as e:
        raise OverflowRisk(str(e)) from None


def params_from_range(lo: float, hi: float, dtype: str = "int8") -> QuantParams:
    """Asymmetric per-tensor parameters covering [lo, hi] (always including 0)."""
    bits = np.iinfo(np.dtype(dtype)).bits
    try:
        return from_core(core.asymmetric_params(lo, hi, bits))
    except ValueError as e:
        raise OverflowRisk(str(e)) from None


def symmetric_per_channel(w: np.ndarray, axis: int, dtype: str = "int8") -> QuantParams:
    """Weights: zero point 0, one scale per slice along `axis`, range [-qmax, qmax]."""
    other = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
    peak = np.max(np.abs(w), axis=other) if other else np.abs(w)
    bits = np.iinfo(np.dtype(dtype)).bits
    return from_core(core.symmetric_params(peak, bits, axis % w.ndim))


def quantize(x: np.ndarray, p: QuantParams) -> np.ndarray:
    """float -> integer on grid p (numeric core: multiply by fl32(1/scale), round half
    away from zero, saturate)."""
    return core.quantize(x, to_core(p))


def dequantize(q: np.ndarray, p: QuantParams) -> np.ndarray:
    return core.dequantize(q, to_core(p))


def quantize_bias(bias: np.ndarray, scale: np.ndarray) -> np.ndarray:
    q = core.quantize_bias(bias, scale)
    if np.any(np.abs(q.astype(np.int64)) >= INT32_MAX):
        raise OverflowRisk("a bias does not fit int32 at scale s_x * s_w")
    return q


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
