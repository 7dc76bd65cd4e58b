"""ncc integer semantics and deployment-exact fake-quant: the single source of truth.

The compiler's golden integer model imports the numpy functions here; training imports
the JAX (and `keras.ops`) fake-quant built on the same formulas, so the two cannot drift.

Affine quantization: real = scale * (q - zero_point), q an integer of `bits` bits
(signed: [-2^(b-1), 2^(b-1) - 1], unsigned: [0, 2^b - 1]).

Rounding, step by step (TFLite reference kernels, default double-rounding build):

- float -> int (`quantize`): q = saturate(round_half_away(fl32(x * fl32(1 / scale))) + zp).
  Float32 throughout, multiplying by the float32 reciprocal of the scale as TFLite's
  optimized AffineQuantize does (the reference kernel divides; the two can differ by one
  step when x / scale is within one ulp of a half-integer). Multiplication, unlike XLA's
  float division, is correctly rounded on every backend, so numpy and JAX agree bit for bit.
- int -> float (`dequantize`): fl32(fl32(q - zp) * scale).
- `quantize_multiplier(real)`: real ~= m * 2^(shift - 31), m in [2^30, 2^31), m rounded
  half away from zero (TfLiteRound); shift < -31 flushes to (0, 0).
- `multiply_by_quantized_multiplier(x, m, shift)` = RoundingDivideByPOT(
  SaturatingRoundingDoublingHighMul(x * 2^max(shift, 0), m), max(-shift, 0)) on int32:
  the doubling high multiply rounds half away from zero (nudge, then C truncating
  division) and saturates only for INT32_MIN * INT32_MIN; the power-of-two division
  rounds half away from zero. The left shift wraps modulo 2^32 like the int32 multiply
  in C on every real core; callers keep x * 2^shift inside int32.
- lookup tables (`build_table`): entry = saturate(round_half_away(f(dequant(q)) / s_out)
  + zp_out) computed in float64 (deterministic, independent of any runtime's libm).

JAX versions (suffix `_jax`) give the same bits without jax x64: 32x32 -> 64-bit
products are formed from 16-bit halves in uint32.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "INT32_MIN", "INT32_MAX", "FAKE_QUANT_MARKER", "FAKE_QUANT_TABLE_MARKER",
    "FAKE_QUANT_DYNAMIC_MARKER", "TABLE_FUNCTIONS", "QuantParams", "QuantConfig",
    "FakeQuantSpec", "int_range", "round_half_away", "saturate", "symmetric_params",
    "asymmetric_params", "params_from_range", "params_for_tensor",
    "quantize_multiplier", "quantize_multiplier_array", "saturating_rounding_doubling_high_mul",
    "rounding_divide_by_pot", "multiply_by_quantized_multiplier", "quantize", "dequantize",
    "requantize", "quantize_bias", "build_table", "lookup", "round_half_away_jax",
    "saturate_jax", "quantize_multiplier_jax", "saturating_rounding_doubling_high_mul_jax",
    "rounding_divide_by_pot_jax", "multiply_by_quantized_multiplier_jax",
    "multiply_by_quantized_multiplier_int64_jax", "quantize_jax",
    "dequantize_jax", "requantize_jax", "lookup_jax", "fake_quant", "fake_quant_table",
    "fake_quant_dynamic", "fake_quant_spec_from_jaxpr_eqn", "fake_quant_params_from_jaxpr_eqn",
    "keras_fake_quant", "keras_fake_quant_table", "fake_quant_dense", "fake_quant_binary",
    "BINARY_MARKER",
]

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
    m = np.asarray(multiplier, np.int64)
    reduced = np.where(m < 0x7FFF0000, (m + (1 << 15)) >> 16, 0x7FFF).astype(np.int32)
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


def _broadcast_jax(p: QuantParams, ndim: int, values: tuple, dtype: Any) -> jax.Array:
    return jnp.asarray(_broadcast(p, ndim, values), dtype)


def _quantize_float_jax(x: jax.Array, p: QuantParams) -> tuple[jax.Array, jax.Array]:
    """(q as float32 after saturation, unsaturated rounded q as float32)."""
    x = jnp.asarray(x, jnp.float32)
    inv = _broadcast_jax(p, x.ndim, p.inv_scale, jnp.float32)
    zp = _broadcast_jax(p, x.ndim, p.zero_point, jnp.float32)
    r = round_half_away_jax(x * inv) + zp
    return jnp.clip(r, p.qmin, p.qmax), r


def quantize_jax(x: jax.Array, p: QuantParams) -> jax.Array:
    """`quantize` in JAX; returns int32 values on p's grid (bits <= 24)."""
    if p.bits > 24:
        raise ValueError("quantize_jax computes in float32: at most 24 bits")
    return _quantize_float_jax(x, p)[0].astype(jnp.int32)


def dequantize_jax(q: jax.Array, p: QuantParams) -> jax.Array:
    """`dequantize` in JAX: fl32(fl32(q - zp) * scale)."""
    q = jnp.asarray(q, jnp.int32)
    scale = _broadcast_jax(p, q.ndim, p.scale, jnp.float32)
    zp = _broadcast_jax(p, q.ndim, p.zero_point, jnp.int32)
    return (q - zp).astype(jnp.float32) * scale


def requantize_jax(q: jax.Array, p_in: QuantParams, p_out: QuantParams) -> jax.Array:
    """`requantize` in JAX; int32 out."""
    q = jnp.asarray(q, jnp.int32)
    ratio = np.asarray(p_in.scale, np.float64) / np.asarray(p_out.scale, np.float64)
    m, s = quantize_multiplier_array(ratio)
    ref = p_in if p_in.per_axis else p_out
    m = _broadcast_jax(ref, q.ndim, tuple(m.tolist()), jnp.int32)
    s = _broadcast_jax(ref, q.ndim, tuple(s.tolist()), jnp.int32)
    zp_in = _broadcast_jax(p_in, q.ndim, p_in.zero_point, jnp.int32)
    zp_out = _broadcast_jax(p_out, q.ndim, p_out.zero_point, jnp.int32)
    out = multiply_by_quantized_multiplier_jax(q - zp_in, m, s) + zp_out
    return saturate_jax(out, p_out.bits, p_out.signed)


def lookup_jax(q: jax.Array, table: Any, p_in: QuantParams) -> jax.Array:
    """table[q - qmin_in] in JAX; int32 out."""
    return jnp.take(jnp.asarray(np.asarray(table), jnp.int32),
                    jnp.asarray(q, jnp.int32) - p_in.qmin, mode="clip")


# --- fake-quant (JAX custom_jvp, recognizable in jaxprs) -----------------------------------

FAKE_QUANT_MARKER = "ncc_fake_quant"
"""Name prefix of a fake-quant `custom_jvp_call`; the JSON of its QuantParams follows."""
FAKE_QUANT_TABLE_MARKER = "ncc_fake_quant_table"
"""Name prefix of a table nonlinearity: JSON {"fn", "in", "out"} follows."""
FAKE_QUANT_DYNAMIC_MARKER = "ncc_fake_quant_dynamic"
"""Name prefix of a fake-quant whose scale / zero point are operands (QAT weights)."""


def _json(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


def _named(fn: Callable, name: str) -> Callable:
    fn.__name__ = fn.__qualname__ = name
    return fn


@functools.lru_cache(maxsize=4096)
def _fake_quant_fn(p: QuantParams) -> Callable:
    def forward(x: jax.Array) -> jax.Array:
        q, _ = _quantize_float_jax(x, p)
        zp = _broadcast_jax(p, x.ndim, p.zero_point, jnp.float32)
        return (q - zp) * _broadcast_jax(p, x.ndim, p.scale, jnp.float32)

    fq = jax.custom_jvp(_named(forward, FAKE_QUANT_MARKER + _json(p.to_dict())))

    @fq.defjvp
    def _jvp(primals: tuple, tangents: tuple) -> tuple:
        (x,), (tx,) = primals, tangents
        _, r = _quantize_float_jax(x, p)
        inside = (r >= p.qmin) & (r <= p.qmax)
        return fq(x), jnp.where(inside, tx, jnp.zeros_like(tx))

    return fq


def fake_quant(x: jax.Array, p: QuantParams) -> jax.Array:
    """dequantize(quantize(x, p)) in float32, bit for bit; straight-through gradient.

    The gradient is 1 where round(x / scale) + zp lies in [qmin, qmax] and 0 outside.
    In a jaxpr it is one `custom_jvp_call` named FAKE_QUANT_MARKER + JSON(p).
    """
    return _fake_quant_fn(p)(jnp.asarray(x, jnp.float32))


@functools.lru_cache(maxsize=1024)
def _fake_quant_table_fn(fn: str, p_in: QuantParams, p_out: QuantParams) -> Callable:
    table = build_table(fn, p_in, p_out)
    jax_fn = TABLE_FUNCTIONS[fn][1]

    def forward(x: jax.Array) -> jax.Array:
        q = quantize_jax(x, p_in)
        return dequantize_jax(lookup_jax(q, table, p_in), p_out)

    name = FAKE_QUANT_TABLE_MARKER + _json({"fn": fn, "in": p_in.to_dict(),
                                            "out": p_out.to_dict()})
    fq = jax.custom_jvp(_named(forward, name))

    @fq.defjvp
    def _jvp(primals: tuple, tangents: tuple) -> tuple:
        (x,), (tx,) = primals, tangents
        _, r = _quantize_float_jax(x, p_in)
        inside = (r >= p_in.qmin) & (r <= p_in.qmax)
        _, slope = jax.jvp(jax_fn, (x,), (jnp.ones_like(x),))
        return fq(x), jnp.where(inside, tx * slope, jnp.zeros_like(tx))

    return fq


def fake_quant_table(x: jax.Array, fn: str, p_in: QuantParams, p_out: QuantParams) -> jax.Array:
    """f(x) through the deployed table: dequant(table[quantize(x, p_in) - qmin], p_out).

    Gradient: f'(x) where x is inside p_in's range, 0 outside (straight-through).
    """
    return _fake_quant_table_fn(fn, p_in, p_out)(jnp.asarray(x, jnp.float32))


@functools.lru_cache(maxsize=64)
def _fake_quant_dynamic_fn(bits: int, signed: bool) -> Callable:
    qmin, qmax = int_range(bits, signed)

    def rounded(x: jax.Array, scale: jax.Array, zp: jax.Array) -> jax.Array:
        inv = (1.0 / scale.astype(jnp.float32))
        return round_half_away_jax(x * inv) + zp

    def forward(x: jax.Array, scale: jax.Array, zp: jax.Array) -> jax.Array:
        return (jnp.clip(rounded(x, scale, zp), qmin, qmax) - zp) * scale

    name = FAKE_QUANT_DYNAMIC_MARKER + _json({"bits": bits, "signed": signed})
    fq = jax.custom_jvp(_named(forward, name))

    @fq.defjvp
    def _jvp(primals: tuple, tangents: tuple) -> tuple:
        (x, scale, zp), (tx, _, _) = primals, tangents
        r = rounded(x, scale, zp)
        inside = (r >= qmin) & (r <= qmax)
        return fq(x, scale, zp), jnp.where(inside, tx, jnp.zeros_like(tx))

    return fq


def fake_quant_dynamic(x: jax.Array, scale: jax.Array, zero_point: jax.Array, bits: int = 8,
                       signed: bool = True) -> jax.Array:
    """Fake-quant with traced scale / zero point (broadcast against x), e.g. QAT weights.

    On the grid of the given scale, straight-through gradient for x only (scale and
    zero point get none). The reciprocal is computed by XLA, so only `fake_quant` with
    frozen (static) parameters is bit-exact against `quantize`; freeze before export.
    """
    x = jnp.asarray(x, jnp.float32)
    scale = jnp.broadcast_to(jnp.asarray(scale, jnp.float32), x.shape)
    zp = jnp.broadcast_to(jnp.asarray(zero_point, jnp.float32), x.shape)
    return _fake_quant_dynamic_fn(int(bits), bool(signed))(x, scale, zp)


@dataclass(frozen=True)
class FakeQuantSpec:
    """What a recognized fake-quant eqn means.

    kind: "quant" (params), "table" (fn, in_params -> params), "dynamic" (bits, signed;
    scale and zero point are the eqn's 2nd and 3rd operands).
    """

    kind: str
    params: QuantParams | None = None
    in_params: QuantParams | None = None
    fn: str | None = None
    bits: int | None = None
    signed: bool | None = None


def _eqn_name(eqn: Any) -> str | None:
    if getattr(eqn.primitive, "name", None) != "custom_jvp_call":
        return None
    closed = eqn.params.get("call_jaxpr")
    dbg = getattr(getattr(closed, "jaxpr", closed), "debug_info", None)
    name = getattr(dbg, "func_name", None)
    src = getattr(dbg, "func_src_info", None)
    for text in (name, src):
        if isinstance(text, str) and text.startswith(FAKE_QUANT_MARKER):
            return text
    return None


def fake_quant_spec_from_jaxpr_eqn(eqn: Any) -> FakeQuantSpec | None:
    """Recognize any ncc fake-quant `custom_jvp_call` eqn; None for every other eqn."""
    text = _eqn_name(eqn)
    if text is None:
        return None
    decoder = json.JSONDecoder()
    for marker, kind in ((FAKE_QUANT_DYNAMIC_MARKER, "dynamic"),
                         (FAKE_QUANT_TABLE_MARKER, "table"), (FAKE_QUANT_MARKER, "quant")):
        if text.startswith(marker + "{"):
            payload, _ = decoder.raw_decode(text[len(marker):])
            if kind == "quant":
                return FakeQuantSpec("quant", params=QuantParams.from_dict(payload))
            if kind == "table":
                return FakeQuantSpec("table", params=QuantParams.from_dict(payload["out"]),
                                     in_params=QuantParams.from_dict(payload["in"]),
                                     fn=payload["fn"])
            return FakeQuantSpec("dynamic", bits=int(payload["bits"]),
                                 signed=bool(payload["signed"]))
    return None


def fake_quant_params_from_jaxpr_eqn(eqn: Any) -> QuantParams | None:
    """The output QuantParams of an ncc fake-quant eqn (static or table), else None."""
    spec = fake_quant_spec_from_jaxpr_eqn(eqn)
    return None if spec is None else spec.params


# --- keras.ops fake-quant (for the Keras layers' `quantization=`) ---------------------------


def keras_fake_quant(x: Any, p: QuantParams) -> Any:
    """`fake_quant` for Keras 3 tensors. JAX backend: the very same custom_jvp; other
    backends: the same float32 formula with keras.ops and a straight-through gradient."""
    import keras

    if keras.backend.backend() == "jax":
        return fake_quant(x, p)
    ops = keras.ops
    x = ops.cast(x, "float32")
    inv = ops.convert_to_tensor(_broadcast(p, len(x.shape), p.inv_scale), "float32")
    scale = ops.convert_to_tensor(_broadcast(p, len(x.shape), p.scale), "float32")
    zp = ops.convert_to_tensor(_broadcast(p, len(x.shape), p.zero_point), "float32")

    @ops.custom_gradient
    def fq(v: Any) -> Any:
        y = v * inv
        t = ops.sign(y) * ops.floor(ops.abs(y))
        r = t + ops.where(ops.abs(y - t) >= 0.5, ops.sign(y), ops.zeros_like(y)) + zp
        out = (ops.clip(r, p.qmin, p.qmax) - zp) * scale
        inside = ops.logical_and(r >= p.qmin, r <= p.qmax)

        def grad(*args: Any, upstream: Any = None) -> Any:
            g = upstream if upstream is not None else args[0]
            return ops.where(inside, g, ops.zeros_like(g))

        return out, grad

    return fq(x)


def keras_fake_quant_table(x: Any, fn: str, p_in: QuantParams, p_out: QuantParams) -> Any:
    """`fake_quant_table` for Keras 3 tensors (same table; straight-through f'(x) gradient)."""
    import keras

    if keras.backend.backend() == "jax":
        return fake_quant_table(x, fn, p_in, p_out)
    ops = keras.ops
    table = ops.convert_to_tensor(build_table(fn, p_in, p_out).astype(np.float32))
    smooth_fn = {"sigmoid": ops.sigmoid, "tanh": ops.tanh, "exp": ops.exp,
                 "lecun_tanh": "lecun_tanh"}[fn]
    inv = float(np.float32(p_in.inv_scale[0]))

    @ops.custom_gradient
    def fq(v: Any) -> Any:
        y = v * inv
        t = ops.sign(y) * ops.floor(ops.abs(y))
        r = t + ops.where(ops.abs(y - t) >= 0.5, ops.sign(y), ops.zeros_like(y))
        r = r + p_in.zero_point[0]
        idx = ops.cast(ops.clip(r, p_in.qmin, p_in.qmax) - p_in.qmin, "int32")
        out = (ops.take(table, idx) - p_out.zero_point[0]) * p_out.scale[0]
        inside = ops.logical_and(r >= p_in.qmin, r <= p_in.qmax)

        def grad(*args: Any, upstream: Any = None) -> Any:
            g = upstream if upstream is not None else args[0]
            slope = ops.convert_to_tensor(0.0)
            with_slope = g * _keras_slope(smooth_fn, v)
            return ops.where(inside, with_slope, ops.zeros_like(g) + slope)

        return out, grad

    return fq(ops.cast(x, "float32"))


def _keras_slope(fn: Any, v: Any) -> Any:
    import keras

    ops = keras.ops
    if fn is ops.sigmoid:
        s = ops.sigmoid(v)
        return s * (1.0 - s)
    if fn is ops.tanh:
        return 1.0 - ops.tanh(v) ** 2
    if fn == "lecun_tanh":
        return 1.7159 * 0.666 * (1.0 - ops.tanh(0.666 * v) ** 2)
    return ops.exp(v)


# --- configuration ---------------------------------------------------------------------------

PARTS = ("weights", "activations", "state", "nonlinearities", "membrane", "inputs")


@dataclass(frozen=True)
class QuantConfig:
    """How a model is quantized; shared by NNX modules and Keras layers (`quantization=`).

    weight_bits: 8 or 4 (symmetric, signed). activation_bits: 8 or 16 (asymmetric).
    state_bits: 8 or 16 for liquid states. membrane_bits: 16 for spiking membranes.
    per_channel: weights per output channel (else per tensor).
    power_of_two: round every chosen scale up to a power of two.
    keep_float: parts left in float, any of PARTS.
    observer: "minmax" or "percentile"; momentum: EMA factor (None = running min/max);
    percentile: for the percentile observer.
    """

    weight_bits: int = 8
    activation_bits: int = 8
    state_bits: int = 8
    membrane_bits: int = 16
    per_channel: bool = True
    power_of_two: bool = False
    keep_float: frozenset[str] = field(default_factory=frozenset)
    observer: str = "minmax"
    momentum: float | None = None
    percentile: float = 99.99

    def __post_init__(self) -> None:
        object.__setattr__(self, "keep_float", frozenset(self.keep_float))
        if self.weight_bits not in (4, 8):
            raise ValueError(f"weight_bits must be 4 or 8, got {self.weight_bits}")
        if self.activation_bits not in (8, 16):
            raise ValueError(f"activation_bits must be 8 or 16, got {self.activation_bits}")
        if self.state_bits not in (8, 16):
            raise ValueError(f"state_bits must be 8 or 16, got {self.state_bits}")
        if self.membrane_bits not in (8, 16):
            raise ValueError(f"membrane_bits must be 8 or 16, got {self.membrane_bits}")
        unknown = self.keep_float - set(PARTS)
        if unknown:
            raise ValueError(f"unknown parts {sorted(unknown)}; choose from {PARTS}")
        if self.observer not in ("minmax", "percentile"):
            raise ValueError(f"observer must be 'minmax' or 'percentile', got {self.observer}")
        if self.momentum is not None and not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")

    def quantizes(self, part: str) -> bool:
        """True if `part` (one of PARTS) is quantized."""
        if part not in PARTS:
            raise ValueError(f"unknown part {part!r}; choose from {PARTS}")
        return part not in self.keep_float

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["keep_float"] = sorted(self.keep_float)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown QuantConfig fields {sorted(unknown)}")
        return cls(**{**d, "keep_float": frozenset(d.get("keep_float", ()))})


# --- the integer-exact fake-quant dense layer ----------------------------------------------
# fake_quant(x @ fake_quant(W) + b) cannot equal the deployed fully-connected kernel: float
# sums round, the float bias is not the int32 bias, and the kernel's requantization rounds
# twice (TFLite). This computes the integer kernel itself, with a straight-through gradient.

DENSE_MARKER = "ncc_fake_quant_dense"
"""Name prefix of `fake_quant_dense`'s custom_jvp_call: JSON {"x", "w", "out"} follows."""
_INT32_F32_MAX = 2147483520.0  # the largest float32 below 2^31


def dense_multipliers(p_x: QuantParams, p_w: QuantParams,
                      p_out: QuantParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bias scale (N,) float64, multiplier (N,), shift (N,)) exactly as the quantizer
    computes them for a fully_connected op (`ncc.compiler.quantize._lower_dense`)."""
    bias_scale = np.asarray(p_w.scale, np.float64) * p_x.scale[0]
    pairs = [quantize_multiplier(float(s) / p_out.scale[0]) for s in bias_scale]
    return (bias_scale, np.array([m for m, _ in pairs], np.int32),
            np.array([s for _, s in pairs], np.int32))


def quantize_dense_bias(bias: np.ndarray, bias_scale: np.ndarray) -> np.ndarray:
    """int32 bias: round_half_away(fl32(b * fl32(1 / s))), saturated (numpy twin of the JAX
    formula in `fake_quant_dense`, float32 so both give the same integers)."""
    inv = (1.0 / bias_scale).astype(np.float32)
    r = round_half_away(np.asarray(bias, np.float32).reshape(-1) * inv)
    return np.clip(r, -_INT32_F32_MAX, _INT32_F32_MAX).astype(np.int32)


@functools.lru_cache(maxsize=256)
def _dense_fn(p_x: QuantParams, p_w: QuantParams, p_out: QuantParams) -> Any:
    bias_scale, mult, shift = dense_multipliers(p_x, p_w, p_out)
    inv_bias = (1.0 / bias_scale).astype(np.float32)  # numpy: no arrays cached across traces
    name = DENSE_MARKER + json.dumps({"x": p_x.to_dict(), "w": p_w.to_dict(),
                                      "out": p_out.to_dict()},
                                     separators=(",", ":"), sort_keys=True)

    def forward(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
        qx = quantize_jax(x, p_x) - p_x.zero_point[0]
        wq = quantize_jax(kernel, p_w)
        bq = round_half_away_jax(bias.reshape(-1) * jnp.asarray(inv_bias))
        bq = jnp.clip(bq, -_INT32_F32_MAX, _INT32_F32_MAX).astype(jnp.int32)
        acc = jnp.matmul(qx, wq, preferred_element_type=jnp.int32) + bq
        if p_x.bits > 8:  # 16x8: TFLite's int64 requantization (ncc.compiler.golden)
            if kernel.shape[0] * 65535 * 127 >= INT32_MAX:
                raise ValueError(f"a {kernel.shape[0]}-term 16x8 dense layer can leave "
                                 "int32; fake_quant_dense takes at most 257 inputs at 16 bits")
            out = multiply_by_quantized_multiplier_int64_jax(acc, mult, shift)
        else:
            out = multiply_by_quantized_multiplier_jax(acc, jnp.asarray(mult),
                                                       jnp.asarray(shift))
        out = saturate_jax(out + p_out.zero_point[0], p_out.bits, p_out.signed)
        return dequantize_jax(out, p_out)

    forward.__name__ = forward.__qualname__ = name
    fq = jax.custom_jvp(forward)

    @fq.defjvp
    def _jvp(primals: tuple, tangents: tuple) -> tuple:
        x, w, b = primals
        tx, tw, tb = tangents
        return fq(x, w, b), tx @ w + x @ tw + tb.reshape(-1)  # straight-through

    return fq


def fake_quant_dense(x: jax.Array, kernel: jax.Array, bias: jax.Array, p_x: QuantParams,
                     p_w: QuantParams, p_out: QuantParams) -> jax.Array:
    """The deployed int8 fully-connected kernel in float32, bit for bit.

    x (..., K) float (quantized on p_x), kernel (K, N) (on p_w: symmetric, per tensor or per
    output channel, axis 1), bias (N,) (int32 at s_x s_w) -> (..., N) on p_out's grid.
    Gradient: that of x @ kernel + bias (straight-through).
    """
    return _dense_fn(p_x, p_w, p_out)(jnp.asarray(x, jnp.float32),
                                      jnp.asarray(kernel, jnp.float32),
                                      jnp.asarray(bias, jnp.float32))


# --- the integer-exact fake-quant add / sub / mul of two activations -----------------------
# fake_quant(a * b) rounds a float product once; the deployed int8 MUL (and ADD/SUB, which
# first rescale both inputs with a left shift of 20) requantize through fixed-point
# multipliers, which round differently near half-steps. These compute the TFLite int8
# (16x8) kernels themselves (`ncc.compiler.golden.qmul / qadd / qsub`), straight-through gradient.

BINARY_MARKER = "ncc_fake_quant_binary"
"""Name prefix of `fake_quant_binary`'s custom_jvp_call: JSON {"kind", "a", "b", "out"}."""
BINARY_KINDS = ("add", "sub", "mul")


def add_left_shift(*params: QuantParams) -> int:
    """TFLite's ADD/SUB input left shift: 20 for int8, 15 when a side is 16-bit, so that
    (q - zero_point) << left_shift stays below 2^31."""
    return 15 if any(p.bits > 8 for p in params) else 20


def binary_multipliers(kind: str, p_a: QuantParams, p_b: QuantParams,
                       p_out: QuantParams) -> dict[str, int]:
    """Fixed-point parameters of the int8 kernel for `kind`, exactly as the quantizer
    chooses them (`ncc.compiler.numerics.add_params`, `quantize._lower_op` for mul)."""
    if kind == "mul":
        m, s = quantize_multiplier(p_a.scale[0] * p_b.scale[0] / p_out.scale[0])
        return {"multiplier": m, "shift": s}
    left_shift = add_left_shift(p_a, p_b, p_out)
    twice_max = 2 * max(p_a.scale[0], p_b.scale[0])
    a_m, a_s = quantize_multiplier(p_a.scale[0] / twice_max)
    b_m, b_s = quantize_multiplier(p_b.scale[0] / twice_max)
    o_m, o_s = quantize_multiplier(twice_max / ((1 << left_shift) * p_out.scale[0]))
    return {"a_multiplier": a_m, "a_shift": a_s, "b_multiplier": b_m, "b_shift": b_s,
            "multiplier": o_m, "shift": o_s, "left_shift": left_shift}


@functools.lru_cache(maxsize=512)
def _binary_fn(kind: str, p_a: QuantParams, p_b: QuantParams, p_out: QuantParams) -> Any:
    at = binary_multipliers(kind, p_a, p_b, p_out)
    name = BINARY_MARKER + _json({"kind": kind, "a": p_a.to_dict(), "b": p_b.to_dict(),
                                  "out": p_out.to_dict()})

    def mbqm(x: jax.Array, m: int, s: int) -> jax.Array:
        return multiply_by_quantized_multiplier_jax(x, jnp.int32(m), jnp.int32(s))

    def forward(a: jax.Array, b: jax.Array) -> jax.Array:
        qa = quantize_jax(a, p_a) - p_a.zero_point[0]
        qb = quantize_jax(b, p_b) - p_b.zero_point[0]
        if kind == "mul":
            out = mbqm(qa * qb, at["multiplier"], at["shift"])
        else:
            sa = mbqm(qa * (1 << at["left_shift"]), at["a_multiplier"], at["a_shift"])
            sb = mbqm(qb * (1 << at["left_shift"]), at["b_multiplier"], at["b_shift"])
            out = mbqm(sa + sb if kind == "add" else sa - sb, at["multiplier"], at["shift"])
        out = saturate_jax(out + p_out.zero_point[0], p_out.bits, p_out.signed)
        return dequantize_jax(out, p_out)

    fq = jax.custom_jvp(_named(forward, name))

    @fq.defjvp
    def _jvp(primals: tuple, tangents: tuple) -> tuple:
        (a, b), (ta, tb) = primals, tangents
        if kind == "mul":
            return fq(a, b), ta * b + a * tb
        return fq(a, b), ta + tb if kind == "add" else ta - tb

    return fq


def fake_quant_binary(kind: str, a: jax.Array, b: jax.Array, p_a: QuantParams,
                      p_b: QuantParams, p_out: QuantParams) -> jax.Array:
    """The deployed int8 ADD / SUB / MUL of two activations in float32, bit for bit.

    kind: "add", "sub" or "mul". a on p_a's grid, b on p_b's (same shape, 8-bit, per
    tensor) -> a (op) b on p_out's grid. Gradient: that of the float op (straight-through).
    """
    if kind not in BINARY_KINDS:
        raise ValueError(f"kind must be one of {BINARY_KINDS}, got {kind!r}")
    for p in (p_a, p_b, p_out):
        if p.bits != 8 or p.per_axis:
            raise ValueError("fake_quant_binary models the int8 per-tensor kernels; got "
                             f"{p.bits}-bit{' per-axis' if p.per_axis else ''} parameters")
    a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    if a.shape != b.shape:
        raise ValueError(f"fake_quant_binary needs equal shapes, got {a.shape} and {b.shape}")
    return _binary_fn(kind, p_a, p_b, p_out)(a, b)
