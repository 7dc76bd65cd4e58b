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


def multiply_by_quantized_multiplier_int64(x: Any, multiplier: Any, shift: Any) -> np.ndarray:
    """TFLite's int64 MultiplyByQuantizedMultiplier (16x8 dense layers, numeric core)."""
    return core.multiply_by_quantized_multiplier_int64(x, multiplier, shift)


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


def symmetric_params(absmax: float, dtype: str) -> QuantParams:
    """Symmetric per-tensor parameters: zero point 0, [-absmax, absmax] on [-qmax, qmax]."""
    try:
        return from_core(core.symmetric_params(absmax, np.iinfo(np.dtype(dtype)).bits))
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


SCALE_BITS_16 = 12  # int16 scales keep 12 significant bits: a product of two is float32-exact


def short_scale(scale: float, bits: int = SCALE_BITS_16) -> float:
    """The smallest float with `bits` significant bits >= scale (never shrinks a range)."""
    mantissa, exponent = np.frexp(scale)
    return float(np.ldexp(np.ceil(np.ldexp(mantissa, bits)), exponent - bits))


def mul_multipliers(pa: QuantParams, pb: QuantParams, po: QuantParams) -> dict[str, tuple]:
    """(multiplier, shift) of MUL as each runtime's Prepare derives it from float32 scales:
    "double" (TFLite Micro, the golden model and the training side's `fake_quant_binary`:
    the numeric core's `binary_multipliers`, s_a * s_b / s_o in double) and "float32"
    (LiteRT 2.x: the same expression evaluated in float, then widened)."""
    double = core.binary_multipliers("mul", to_core(pa), to_core(pb), to_core(po))
    sa, sb, so = (np.float32(p.scale[0]) for p in (pa, pb, po))
    return {"double": (double["multiplier"], double["shift"]),
            "float32": quantize_multiplier(float(sa * sb / so))}


def mul_is_portable(pa: QuantParams, pb: QuantParams, po: QuantParams) -> bool:
    """True if MUL gives the same bits for every input whichever multiplier a runtime
    derives: the two are equal, or (int8, 65,536 input pairs) they never round apart."""
    found = mul_multipliers(pa, pb, po)
    if found["double"] == found["float32"]:
        return True
    if "int16" in (pa.dtype, pb.dtype, po.dtype):
        return False
    a = np.arange(-128, 128, dtype=np.int64) - pa.zero_point[0]
    b = np.arange(-128, 128, dtype=np.int64) - pb.zero_point[0]
    products = np.unique(np.outer(a, b))
    lo, hi = dtype_range(po.dtype)
    outs = [np.clip(multiply_by_quantized_multiplier(products, m, s) + po.zero_point[0], lo, hi)
            for m, s in found.values()]
    return bool(np.array_equal(*outs))


def portable_mul_params(pa: QuantParams, pb: QuantParams,
                        po: QuantParams) -> QuantParams | None:
    """Output parameters near `po` (never a narrower range) for which MUL is portable.

    int16: the scale s_a s_b 2^j (the multiplier is then exactly 2^-j in float and
    double, given 12-bit input scales), up to 2x coarser. int8: `po`'s scale nudged up
    by float32 steps (a few parts per million at most). None if neither works.
    """
    if po.dtype == "int16":
        product = float(np.float32(pa.scale[0])) * float(np.float32(pb.scale[0]))
        j = int(np.ceil(np.log2(po.scale[0] / product)))
        out = QuantParams((float(np.ldexp(product, j)),), po.zero_point, po.dtype)
        return out if mul_is_portable(pa, pb, out) else None
    scale = np.float32(po.scale[0])
    for _ in range(64):
        scale = np.nextafter(scale, np.float32(np.inf))
        out = QuantParams((float(scale),), po.zero_point, po.dtype)
        if mul_is_portable(pa, pb, out):
            return out
    return None


def add_params(pa: QuantParams, pb: QuantParams, po: QuantParams) -> dict[str, Any]:
    """Attributes of TFLite's ADD/SUB for inputs a, b and output o (the numeric core's
    `binary_multipliers`: inputs shifted left by 20, or 15 when a side is int16)."""
    at = core.binary_multipliers("add", to_core(pa), to_core(pb), to_core(po))
    return {"a_zp": pa.zero_point[0], "b_zp": pb.zero_point[0], **at,
            "out_zp": po.zero_point[0], "dtype": po.dtype}


def check_accumulator(x_dtype: str, depth: int, bias: np.ndarray, shifts: Any,
                      where: str, x_span: int | None = None) -> int:
    """Prove the dense layer's integer accumulation cannot overflow, for every input.

    int8 x: |sum_k (x - zp) w + bias| * 2^max(shift, 0) < 2^31 (int32 accumulator and
    MBQM's left shift). int16 x (16x8): the int64 accumulator stays in TFLite's
    [-2^47, 2^47), and the rescaled value (< acc * 2^shift, the multiplier being below
    2^31) fits the int32 that the kernel saturates to int16.
    x_span: the largest |x - zp| if smaller than the dtype allows (spikes: 1).
    Returns the accumulator bound; raises OverflowRisk naming `where` and what to change.
    """
    lo, hi = dtype_range(x_dtype)
    span = hi - lo if x_span is None else x_span
    bound = depth * span * 127 + int(np.max(np.abs(bias.astype(np.int64)), initial=0))
    top = int(np.max(shifts))
    if x_dtype == "int16":
        rescaled = bound << top if top >= 0 else -(-bound >> -top)
        if bound >= 1 << 47 or rescaled > INT32_MAX:
            raise OverflowRisk(f"{where}: a {depth}-term 16x8 dot product can reach {bound} "
                               f"(rescaled {rescaled}), beyond TFLite's int64 accumulator or "
                               "int32 result; split the layer or widen its output range")
        return bound
    bound <<= max(top, 0)
    if bound > INT32_MAX:
        raise OverflowRisk(f"{where}: a {depth}-term int8 dot product can reach {bound}, "
                           "beyond int32; split the layer or narrow its output range")
    return bound
