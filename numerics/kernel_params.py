"""Compile-time parameters of the integer kernels: the dense layer's int32 bias and
per-channel multipliers, the ADD / SUB / MUL multipliers (TFLite's Prepare, in double)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ncc.numerics.fixed_point import INT32_F32_MAX, quantize_multiplier, round_half_away
from ncc.numerics.params import QuantParams


def bias_scale(p_x: QuantParams, p_w: QuantParams) -> np.ndarray:
    """The int32 bias grid of a dense layer: s_w[n] * s_x in float64 (exact: a product of
    two float32 values), one entry per output channel of p_w (one if p_w is per tensor)."""
    return np.asarray(p_w.scale, np.float64) * p_x.scale[0]


def bias_reciprocal(scale: Any) -> np.ndarray:
    """fl32(1 / scale) of a float64 bias scale: the factor `quantize_bias` multiplies by."""
    return (1.0 / np.asarray(scale, np.float64)).astype(np.float32)


def quantize_bias(bias: Any, scale: Any) -> np.ndarray:
    """int32 bias at scale s_x * s_w: round_half_away(fl32(b * fl32(1 / scale))).

    Float32 math like `quantize` (and TFLite's converter), so that the training side's
    `fake_quant_dense` computes the same integers in JAX; saturated to +-INT32_F32_MAX
    (a saturated bias is refused by the compiler). bias, scale broadcast, (N,) float64
    scale from `bias_scale`. Returns int32."""
    r = round_half_away(np.asarray(bias, np.float32) * bias_reciprocal(scale))
    return np.clip(r, -INT32_F32_MAX, INT32_F32_MAX).astype(np.int32)


def dense_multipliers(p_x: QuantParams, p_w: QuantParams,
                      p_out: QuantParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bias scale (N,) float64, multiplier (N,) int32, shift (N,) int32) of a fully
    connected layer: (m_n, shift_n) = quantize_multiplier(s_x * s_w[n] / s_out), double."""
    scale = bias_scale(p_x, p_w)
    pairs = [quantize_multiplier(float(s) / p_out.scale[0]) for s in scale]
    return (scale, np.array([m for m, _ in pairs], np.int32),
            np.array([s for _, s in pairs], np.int32))


def add_left_shift(*params: QuantParams) -> int:
    """TFLite's ADD/SUB input left shift: 20 for int8, 15 when a side is 16-bit, so that
    (q - zero_point) << left_shift stays below 2^31."""
    return 15 if any(p.bits > 8 for p in params) else 20


def binary_multipliers(kind: str, p_a: QuantParams, p_b: QuantParams,
                       p_out: QuantParams) -> dict[str, int]:
    """Fixed-point parameters of TFLite's int8 / int16 kernel for `kind` (per tensor).

    "mul": (multiplier, shift) of s_a * s_b / s_o in double (TFLite Micro's Prepare).
    "add" / "sub": both inputs shifted left by `add_left_shift`, each rescaled to
    2 max(s_a, s_b) (a_multiplier, a_shift, b_multiplier, b_shift), the sum rescaled to
    the output (multiplier, shift); left_shift is returned too.
    """
    if kind == "mul":
        m, s = quantize_multiplier(p_a.scale[0] * p_b.scale[0] / p_out.scale[0])
        return {"multiplier": m, "shift": s}
    if kind not in ("add", "sub"):
        raise ValueError(f"kind must be 'add', 'sub' or 'mul', got {kind!r}")
    left_shift = add_left_shift(p_a, p_b, p_out)
    twice_max = 2 * max(p_a.scale[0], p_b.scale[0])
    a_m, a_s = quantize_multiplier(p_a.scale[0] / twice_max)
    b_m, b_s = quantize_multiplier(p_b.scale[0] / twice_max)
    o_m, o_s = quantize_multiplier(twice_max / ((1 << left_shift) * p_out.scale[0]))
    return {"a_multiplier": a_m, "a_shift": a_s, "b_multiplier": b_m, "b_shift": b_s,
            "multiplier": o_m, "shift": o_s, "left_shift": left_shift}
