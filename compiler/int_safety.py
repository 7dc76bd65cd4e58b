"""What the quantizer proves about its integer kernels, beyond the numeric core's formulas
(`ncc.numerics`): dense accumulators that cannot overflow (`check_accumulator`), MUL
parameters on which every runtime's Prepare derives the same multiplier
(`mul_is_portable`, `portable_mul_params`), and the IR attributes of ADD/SUB and MUL."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ncc import numerics as nx
from ncc.numerics import QuantParams


class OverflowRisk(ValueError):
    """An integer accumulation could leave its range; the message names the op."""


def mul_multipliers(pa: QuantParams, pb: QuantParams, po: QuantParams) -> dict[str, tuple]:
    """(multiplier, shift) of MUL as each runtime's Prepare derives it from float32 scales:
    "double" (TFLite Micro, the golden model and the training side's `fake_quant_binary`:
    the numeric core's `binary_multipliers`, s_a * s_b / s_o in double) and "float32"
    (LiteRT 2.x: the same expression evaluated in float, then widened)."""
    double = nx.binary_multipliers("mul", pa, pb, po)
    sa, sb, so = (np.float32(p.scale[0]) for p in (pa, pb, po))
    return {"double": (double["multiplier"], double["shift"]),
            "float32": nx.quantize_multiplier(float(sa * sb / so))}


@functools.lru_cache(maxsize=256)
def _int8_products(a_zp: int, b_zp: int) -> np.ndarray:
    """Every distinct (a - a_zp)(b - b_zp) over int8 a, b (the quantizer asks often)."""
    a = np.arange(-128, 128, dtype=np.int64) - a_zp
    b = np.arange(-128, 128, dtype=np.int64) - b_zp
    products = np.unique(np.outer(a, b))
    products.flags.writeable = False
    return products


def mul_is_portable(pa: QuantParams, pb: QuantParams, po: QuantParams) -> bool:
    """True if MUL gives the same bits for every input whichever multiplier a runtime
    derives: the two are equal, or (int8, 65,536 input pairs) they never round apart."""
    found = mul_multipliers(pa, pb, po)
    if found["double"] == found["float32"]:
        return True
    if "int16" in (pa.dtype, pb.dtype, po.dtype):
        return False
    products = _int8_products(int(pa.zero_point[0]), int(pb.zero_point[0]))
    lo, hi = nx.dtype_range(po.dtype)
    outs = [np.clip(nx.multiply_by_quantized_multiplier(products, m, s) + po.zero_point[0],
                    lo, hi)
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
        out = QuantParams.of_dtype(float(np.ldexp(product, j)), po.zero_point, po.dtype)
        return out if mul_is_portable(pa, pb, out) else None
    scale = np.float32(po.scale[0])
    for _ in range(64):
        scale = np.nextafter(scale, np.float32(np.inf))
        out = QuantParams.of_dtype(float(scale), po.zero_point, po.dtype)
        if mul_is_portable(pa, pb, out):
            return out
    return None


def add_params(pa: QuantParams, pb: QuantParams, po: QuantParams) -> dict[str, Any]:
    """Attributes of the IR's qadd / qsub (TFLite's ADD/SUB) for inputs a, b and output o:
    zero points, output dtype and the numeric core's `binary_multipliers`."""
    at = nx.binary_multipliers("add", pa, pb, po)
    return {"a_zp": pa.zero_point[0], "b_zp": pb.zero_point[0], **at,
            "out_zp": po.zero_point[0], "dtype": po.dtype}


def check_accumulator(x_dtype: str, depth: int, bias: np.ndarray, shifts: Any,
                      where: str, x_span: int | None = None) -> int:
    """Prove the dense layer's integer accumulation cannot overflow, for every input.

    Every bias fits int32 (`quantize_bias` did not saturate). int8 x: |sum_k (x - zp) w +
    bias| * 2^max(shift, 0) < 2^31 (int32 accumulator and MBQM's left shift). int16 x
    (16x8): the int64 accumulator stays in TFLite's [-2^47, 2^47), and the rescaled value
    (< acc * 2^shift, the multiplier being below 2^31) fits the int32 that the kernel
    saturates to int16.
    x_span: the largest |x - zp| if smaller than the dtype allows (spikes: 1).
    Returns the accumulator bound; raises OverflowRisk naming `where` and what to change.
    """
    peak = int(np.max(np.abs(bias.astype(np.int64)), initial=0))
    if peak >= nx.INT32_F32_MAX:
        raise OverflowRisk(f"{where}: a bias does not fit int32 at scale s_x * s_w; "
                           "widen the layer's input or weight range")
    lo, hi = nx.dtype_range(x_dtype)
    span = hi - lo if x_span is None else x_span
    bound = depth * span * 127 + peak
    top = int(np.max(shifts))
    if x_dtype == "int16":
        rescaled = bound << top if top >= 0 else -(-bound >> -top)
        if bound >= 1 << 47 or rescaled > nx.INT32_MAX:
            raise OverflowRisk(f"{where}: a {depth}-term 16x8 dot product can reach {bound} "
                               f"(rescaled {rescaled}), beyond TFLite's int64 accumulator or "
                               "int32 result; split the layer or widen its output range")
        return bound
    bound <<= max(top, 0)
    if bound > nx.INT32_MAX:
        raise OverflowRisk(f"{where}: a {depth}-term int8 dot product can reach {bound}, "
                           "beyond int32; split the layer or narrow its output range")
    return bound
