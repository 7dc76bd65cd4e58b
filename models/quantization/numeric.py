"""The numeric core in numpy: parameters, rounding, fixed-point multipliers, quantize /
dequantize, tables. The golden model's arithmetic (see the package doc for the rules)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
_F32_TINY = float(np.finfo(np.float32).tiny)
MIN_SCALE = 2.0 ** -60
"""Smallest scale the range-based choosers return (a narrower range gets this step)."""


# --- parameters ---------------------------------------------------------------------------


def int_range(bits: int, signed: bool = True) -> tuple[int, int]:
    """(qmin, qmax) of a `bits`-bit integer, 2 <= bits <= 32."""
    if not 2 <= bits <= 32:
        raise ValueError(f"bits must be in [2, 32], got {bits}")
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _f32_at_least(value: float) -> float:
    """The smallest float32 >= value (scales never shrink the range they cover)."""
    v = np.float32(value)
    if float(v) < value:
        v = np.nextafter(v, np.float32(np.inf))
    return float(v)


@dataclass(frozen=True)
class QuantParams:
    """Affine quantization parameters: real = scale * (q - zero_point).

    scale: float32-representable positive values (rounded up to float32 on construction);
        one entry (per tensor) or one per slice along `axis` (per axis).
    zero_point: integers in [qmin, qmax], same length as `scale`.
    bits, signed: the integer grid, e.g. (8, True) is int8, (16, True) int16, (4, True) int4.
    axis: the quantized axis for per-axis parameters (None = per tensor).
    """

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    bits: int = 8
    signed: bool = True
    axis: int | None = None

    def __post_init__(self) -> None:
        scale = tuple(_f32_at_least(float(s)) for s in np.atleast_1d(self.scale))
        zp = tuple(int(z) for z in np.atleast_1d(self.zero_point))
        if len(scale) != len(zp) or not scale:
            raise ValueError(f"scale ({len(scale)}) and zero_point ({len(zp)}) lengths differ")
        if not all(math.isfinite(s) and s >= _F32_TINY for s in scale):
            raise ValueError(f"scales must be finite normal float32 values > 0, got {scale}")
        qmin, qmax = int_range(self.bits, self.signed)
        if not all(qmin <= z <= qmax for z in zp):
            raise ValueError(f"zero points {zp} outside [{qmin}, {qmax}]")
        if self.axis is None and len(scale) != 1:
            raise ValueError("per-tensor parameters need exactly one scale (or set `axis`)")
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "zero_point", zp)
        object.__setattr__(self, "bits", int(self.bits))
        object.__setattr__(self, "signed", bool(self.signed))
        object.__setattr__(self, "axis", None if self.axis is None else int(self.axis))

    @property
    def qmin(self) -> int:
        return int_range(self.bits, self.signed)[0]

    @property
    def qmax(self) -> int:
        return int_range(self.bits, self.signed)[1]

    @property
    def dtype(self) -> str:
        """Smallest numpy storage dtype holding the grid ("int8" for 4- and 8-bit signed)."""
        width = 8 if self.bits <= 8 else 16 if self.bits <= 16 else 32
        return f"{'' if self.signed else 'u'}int{width}"

    @property
    def inv_scale(self) -> tuple[float, ...]:
        """float32(1 / scale), the factor `quantize` multiplies by."""
        return tuple(float(np.float32(1.0 / s)) for s in self.scale)

    @property
    def per_axis(self) -> bool:
        return self.axis is not None

    def real_range(self) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) float64 reals of qmin and qmax, one entry per scale."""
        s, z = np.asarray(self.scale), np.asarray(self.zero_point)
        return (self.qmin - z) * s, (self.qmax - z) * s

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; also carries the storage `dtype` the compiler's IR uses."""
        return {"scale": [float(s) for s in self.scale],
                "zero_point": [int(z) for z in self.zero_point],
                "bits": self.bits, "signed": self.signed, "axis": self.axis,
                "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantParams:
        """Inverse of `to_dict`; also accepts {"scale", "zero_point", "dtype", "axis"}."""
        if "bits" in d:
            bits, signed = int(d["bits"]), bool(d.get("signed", True))
        else:
            info = np.iinfo(np.dtype(d.get("dtype", "int8")))
            bits, signed = info.bits, info.min < 0
        return cls(tuple(d["scale"]), tuple(d["zero_point"]), bits, signed, d.get("axis"))


def _pow2_at_least(x: np.ndarray) -> np.ndarray:
    return np.exp2(np.ceil(np.log2(x)))


def symmetric_params(absmax: Any, bits: int = 8, axis: int | None = None,
                     power_of_two: bool = False) -> QuantParams:
    """Weights: zero point 0, scale = absmax / qmax (qmax = 2^(bits-1) - 1), signed.

    absmax: scalar, or one value per slice along `axis`. A zero absmax gives scale 1.
    """
    qmax = int_range(bits, True)[1]
    peak = np.atleast_1d(np.abs(np.asarray(absmax, np.float64)))
    if not np.all(np.isfinite(peak)):
        raise ValueError(f"range {absmax} is not finite")
    scale = np.where(peak > 0, np.maximum(peak / qmax, MIN_SCALE), 1.0)
    if power_of_two:
        scale = _pow2_at_least(scale)
    return QuantParams(tuple(scale), (0,) * scale.size, bits, True, axis)


def asymmetric_params(lo: Any, hi: Any, bits: int = 8, signed: bool = True,
                      axis: int | None = None, power_of_two: bool = False) -> QuantParams:
    """Activations and states: scale = (hi - lo) / (qmax - qmin) over [min(lo, 0), max(hi, 0)].

    zero_point = round_half_away(qmin - lo / scale), saturated; 0 is always exact.
    lo, hi: scalars, or one value per slice along `axis`. An empty range gives scale 1.
    """
    lo = np.minimum(np.atleast_1d(np.asarray(lo, np.float64)), 0.0)
    hi = np.maximum(np.atleast_1d(np.asarray(hi, np.float64)), 0.0)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise ValueError(f"range [{lo}, {hi}] is not finite")
    qmin, qmax = int_range(bits, signed)
    scale = np.where(hi > lo, np.maximum((hi - lo) / (qmax - qmin), MIN_SCALE), 1.0)
    if power_of_two:
        scale = _pow2_at_least(scale)
    scale = np.array([_f32_at_least(s) for s in scale])
    zp = np.clip(round_half_away(qmin - lo / scale), qmin, qmax).astype(np.int64)
    return QuantParams(tuple(scale), tuple(int(z) for z in zp), bits, signed, axis)


def params_from_range(lo: Any, hi: Any, bits: int = 8, *, symmetric: bool = False,
                      signed: bool = True, axis: int | None = None,
                      power_of_two: bool = False) -> QuantParams:
    """Parameters covering [lo, hi] (0 always included): symmetric or asymmetric."""
    if symmetric:
        peak = np.maximum(np.abs(np.asarray(lo, np.float64)), np.abs(np.asarray(hi, np.float64)))
        return symmetric_params(peak, bits, axis, power_of_two)
    return asymmetric_params(lo, hi, bits, signed, axis, power_of_two)


def params_for_tensor(x: Any, bits: int = 8, *, symmetric: bool = True,
                      axis: int | None = None, power_of_two: bool = False) -> QuantParams:
    """Min/max parameters for a concrete tensor, per tensor or per slice along `axis`."""
    x = np.asarray(x, np.float64)
    if axis is None:
        lo, hi = x.min(initial=0.0), x.max(initial=0.0)
    else:
        axis = axis % x.ndim
        other = tuple(i for i in range(x.ndim) if i != axis)
        lo, hi = x.min(axis=other, initial=0.0), x.max(axis=other, initial=0.0)
    return params_from_range(lo, hi, bits, symmetric=symmetric, axis=axis,
                             power_of_two=power_of_two)


# --- rounding and saturation (numpy) -----------------------------------------------------


def round_half_away(x: Any) -> np.ndarray:
    """Round to nearest, ties away from zero (std::round / TfLiteRound), exactly, in x's dtype."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    t = np.trunc(x)
    return t + np.where(np.abs(x - t) >= 0.5, np.sign(x), 0).astype(x.dtype)


def saturate(x: Any, bits: int, signed: bool = True) -> np.ndarray:
    """Clamp integers to the `bits`-bit grid; int64 in, int64 out."""
    qmin, qmax = int_range(bits, signed)
    return np.clip(np.asarray(x, np.int64), qmin, qmax)


# --- fixed-point multipliers (numpy, int64 intermediates, int32 semantics) ---------------


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite QuantizeMultiplier: (m, shift), real ~= m * 2^(shift - 31), m in [2^30, 2^31).

    real >= 0; real = 0, or a shift below -31, gives (0, 0). Raises if shift > 30
    (the multiplier cannot be applied to int32 values).
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
    """`quantize_multiplier` elementwise: (m int32 array, shift int32 array)."""
    real = np.asarray(real, np.float64)
    pairs = [quantize_multiplier(r) for r in real.ravel()]
    m = np.array([p[0] for p in pairs], np.int64).reshape(real.shape).astype(np.int32)
    s = np.array([p[1] for p in pairs], np.int64).reshape(real.shape).astype(np.int32)
    return m, s


def _wrap32(x: np.ndarray) -> np.ndarray:
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
    The left shift wraps modulo 2^32 (C int32 behaviour). Returns int32.
    """
    shift = np.asarray(shift, np.int64)
    left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
    scaled = _wrap32(np.asarray(x, np.int64) << left)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(scaled, multiplier),
                                  right)


def multiply_by_quantized_multiplier_int64(x: Any, multiplier: Any, shift: Any) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplier (int64 form, 16x8 FULLY_CONNECTED / CONV_2D):
    the multiplier reduced to 16 bits, one rounding (half up), x in [-2^47, 2^47).

    x * reduced < 2^62 fits int64. Returns int64 (the kernel then saturates to int16).
    """
    x = np.asarray(x, np.int64)
    if np.any((x < -(1 << 47)) | (x >= (1 << 47))):
        raise ValueError("accumulator outside [-2^47, 2^47)")
    m = np.asarray(multiplier, np.int64)
    reduced = np.where(m < 0x7FFF0000, (m + (1 << 15)) >> 16, 0x7FFF)
    total_shift = 15 - np.asarray(shift, np.int64)
    return (x * reduced + (np.int64(1) << (total_shift - 1))) >> total_shift


# --- quantize / dequantize / requantize / tables (numpy) ----------------------------------


def _broadcast(p: QuantParams, ndim: int, values: tuple) -> np.ndarray:
    arr = np.asarray(values)
    if p.axis is None:
        return arr.reshape(())
    if ndim == 0:
        raise ValueError("per-axis parameters need an array with that axis")
    shape = [1] * ndim
    shape[p.axis] = -1
    return arr.reshape(shape)


def quantize(x: Any, p: QuantParams) -> np.ndarray:
    """float -> int: saturate(round_half_away(fl32(x * fl32(1/scale))) + zp), float32 math.

    Returns the storage dtype (`p.dtype`). Per-axis parameters broadcast along `p.axis`.
    """
    x = np.asarray(x, np.float32)
    inv = _broadcast(p, x.ndim, p.inv_scale).astype(np.float32)
    zp = _broadcast(p, x.ndim, p.zero_point).astype(np.int64)
    r = round_half_away(x * inv)
    r = np.clip(r, -(2.0 ** 40), 2.0 ** 40)  # keep the int cast defined; saturates below
    return saturate(r.astype(np.int64) + zp, p.bits, p.signed).astype(p.dtype)


def dequantize(q: Any, p: QuantParams) -> np.ndarray:
    """int -> float32: fl32(fl32(q - zp) * scale)."""
    q = np.asarray(q, np.int64)
    scale = _broadcast(p, q.ndim, p.scale).astype(np.float32)
    zp = _broadcast(p, q.ndim, p.zero_point).astype(np.int64)
    return (q - zp).astype(np.float32) * scale


def requantize(q: Any, p_in: QuantParams, p_out: QuantParams) -> np.ndarray:
    """int -> int between grids: saturate(MBQM(q - zp_in, m, shift) + zp_out).

    (m, shift) = quantize_multiplier(s_in / s_out) (per axis if either is per axis).
    """
    q = np.asarray(q, np.int64)
    ratio = np.asarray(p_in.scale, np.float64) / np.asarray(p_out.scale, np.float64)
    m, s = quantize_multiplier_array(ratio)
    ref = p_in if p_in.per_axis else p_out
    m = _broadcast(ref, q.ndim, tuple(m.tolist()))
    s = _broadcast(ref, q.ndim, tuple(s.tolist()))
    zp_in = _broadcast(p_in, q.ndim, p_in.zero_point)
    zp_out = _broadcast(p_out, q.ndim, p_out.zero_point)
    out = multiply_by_quantized_multiplier(q - zp_in, m, s).astype(np.int64) + zp_out
    return saturate(out, p_out.bits, p_out.signed).astype(p_out.dtype)


def quantize_bias(bias: Any, scale: Any) -> np.ndarray:
    """int32 bias at scale s_in * s_w: round_half_away(bias / scale) in float64, saturated."""
    q = round_half_away(np.asarray(bias, np.float64) / np.asarray(scale, np.float64))
    return saturate(q, 32).astype(np.int32)


def _np_sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


def _np_lecun_tanh(x: np.ndarray) -> np.ndarray:
    return 1.7159 * np.tanh(0.666 * x)


def _jax_lecun_tanh(x: jax.Array) -> jax.Array:
    return 1.7159 * jnp.tanh(0.666 * x)


TABLE_FUNCTIONS: dict[str, tuple[Callable, Callable]] = {
    "sigmoid": (_np_sigmoid, jax.nn.sigmoid),
    "tanh": (np.tanh, jnp.tanh),
    "exp": (np.exp, jnp.exp),
    "lecun_tanh": (_np_lecun_tanh, _jax_lecun_tanh),
}
"""Nonlinearities available as tables: name -> (float64 numpy fn, JAX fn for gradients)."""


def build_table(fn: str, p_in: QuantParams, p_out: QuantParams) -> np.ndarray:
    """Lookup table: entry i = saturate(round_half_away(f(dequant(qmin_in + i)) / s_out) + zp_out).

    fn: a TABLE_FUNCTIONS name. 2^bits_in entries (256 for int8 input), float64 math,
    dtype of the output grid. Per-tensor parameters only.
    """
    if fn not in TABLE_FUNCTIONS and not fn.startswith(INT_DECAY_TABLE + "{"):
        raise ValueError(f"no table for {fn!r}; choose from {sorted(TABLE_FUNCTIONS)}")
    if p_in.per_axis or p_out.per_axis:
        raise ValueError("tables need per-tensor parameters")
    if p_in.bits > 16:
        raise ValueError("tables need an input of at most 16 bits")
    q = np.arange(p_in.qmin, p_in.qmax + 1, dtype=np.int64)
    if fn.startswith(INT_DECAY_TABLE + "{"):  # integer in, integer out: no float at all
        decayed = int_decay(q - p_in.zero_point[0], fn)
        return saturate(decayed + p_out.zero_point[0], p_out.bits,
                        p_out.signed).astype(p_out.dtype)
    real = (q - p_in.zero_point[0]) * p_in.scale[0]
    with np.errstate(over="ignore"):
        y = TABLE_FUNCTIONS[fn][0](real) / p_out.scale[0]
    y = np.clip(round_half_away(y), -(2.0 ** 40), 2.0 ** 40)
    return saturate(y.astype(np.int64) + p_out.zero_point[0], p_out.bits,
                    p_out.signed).astype(p_out.dtype)


INT_DECAY_MARKER = "ncc_int_decay"
"""Name prefix of a spiking neuron's integer decay `custom_jvp_call` (`ncc.models.nnx.spiking`):
JSON {"membrane", "shift"} follows; operands (v, beta)."""
INT_DECAY_TABLE = "int_decay"
"""Table name prefix of an integer decay (`int_decay_table_name`)."""


def int_decay_table_name(beta: float | None = None, shift: int | None = None) -> str:
    """The table of v -> MBQM(v, quantize_multiplier(beta)) (or v - RDBP(v, shift))."""
    if shift is not None:
        return INT_DECAY_TABLE + _json({"shift": int(shift)})
    m, e = quantize_multiplier(float(np.float32(beta)))
    return INT_DECAY_TABLE + _json({"multiplier": m, "exponent": e})


def int_decay(v: Any, table_name: str) -> np.ndarray:
    """Integer decay of integers v (int64 out), as named by `int_decay_table_name`."""
    spec = json.loads(table_name[len(INT_DECAY_TABLE):])
    v = np.asarray(v, np.int64)
    if "shift" in spec:
        return v - rounding_divide_by_pot(v, spec["shift"])
    return multiply_by_quantized_multiplier(v, spec["multiplier"],
                                            spec["exponent"]).astype(np.int64)


def lookup(q: Any, table: np.ndarray, p_in: QuantParams) -> np.ndarray:
    """table[q - qmin_in] (q on p_in's grid)."""
    return np.asarray(table)[np.asarray(q, np.int64) - p_in.qmin]




def _json(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)
