"""Quantization parameters: the one `QuantParams` and the choosers that turn a real range
into parameters. Affine quantization: real = scale * (q - zero_point)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ncc.numerics.fixed_point import int_range, round_half_away

_F32_TINY = float(np.finfo(np.float32).tiny)
MIN_SCALE = 2.0 ** -60
"""Smallest scale the range-based choosers return (a narrower range gets this step)."""
SCALE_BITS_16 = 12
"""Significant bits of an int16 activation scale: a product of two is float32-exact."""


def dtype_range(dtype: str) -> tuple[int, int]:
    """(min, max) of a numpy integer storage dtype ("int8", "int16", "uint8", ...)."""
    info = np.iinfo(np.dtype(dtype))
    return int(info.min), int(info.max)


def f32_at_least(value: float) -> float:
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
    bits, signed: the integer grid, e.g. (8, True) is int8, (16, True) int16, (32, True)
        an int32 bias, (4, True) int4 (stored as int8).
    axis: the quantized axis for per-axis parameters (None = per tensor).
    """

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    bits: int = 8
    signed: bool = True
    axis: int | None = None

    def __post_init__(self) -> None:
        scale = tuple(f32_at_least(float(s)) for s in np.atleast_1d(self.scale))
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

    @classmethod
    def of_dtype(cls, scale: Any, zero_point: Any, dtype: str = "int8",
                 axis: int | None = None) -> QuantParams:
        """Parameters on the full grid of a storage dtype ("int8", "int16", "int32", "uint8")."""
        info = np.iinfo(np.dtype(dtype))
        return cls(tuple(np.atleast_1d(scale)), tuple(np.atleast_1d(zero_point)), info.bits,
                   info.min < 0, axis)

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

    def broadcast(self, values: Any, ndim: int) -> np.ndarray:
        """`values` (one per scale) shaped to broadcast against an `ndim`-d array: a scalar
        per tensor, a vector along `axis` per axis."""
        arr = np.asarray(values)
        if self.axis is None:
            return arr.reshape(())
        if ndim == 0:
            raise ValueError("per-axis parameters need an array with that axis")
        shape = [1] * ndim
        shape[self.axis] = -1
        return arr.reshape(shape)

    def real_range(self) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) float64 reals of qmin and qmax, one entry per scale."""
        s, z = np.asarray(self.scale), np.asarray(self.zero_point)
        return (self.qmin - z) * s, (self.qmax - z) * s

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; also carries the storage `dtype`."""
        return {"scale": [float(s) for s in self.scale],
                "zero_point": [int(z) for z in self.zero_point],
                "bits": self.bits, "signed": self.signed, "axis": self.axis,
                "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantParams:
        """Inverse of `to_dict`; also reads the older {"scale", "zero_point", "dtype", "axis"}."""
        if "bits" in d:
            return cls(tuple(d["scale"]), tuple(d["zero_point"]), int(d["bits"]),
                       bool(d.get("signed", True)), d.get("axis"))
        return cls.of_dtype(d["scale"], d["zero_point"], d.get("dtype", "int8"), d.get("axis"))


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
    scale = np.array([f32_at_least(s) for s in scale])
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
    """Min/max parameters for a concrete tensor, per tensor or per slice along `axis`
    (symmetric per output channel, axis 1 of a (K, N) kernel, is the weights' default)."""
    x = np.asarray(x, np.float64)
    if axis is None:
        lo, hi = x.min(initial=0.0), x.max(initial=0.0)
    else:
        axis = axis % x.ndim
        other = tuple(i for i in range(x.ndim) if i != axis)
        lo, hi = x.min(axis=other, initial=0.0), x.max(axis=other, initial=0.0)
    return params_from_range(lo, hi, bits, symmetric=symmetric, axis=axis,
                             power_of_two=power_of_two)


def short_scale(scale: float, bits: int = SCALE_BITS_16) -> float:
    """The smallest float with `bits` significant bits >= scale (never shrinks a range)."""
    mantissa, exponent = np.frexp(scale)
    return float(np.ldexp(np.ceil(np.ldexp(mantissa, bits)), exponent - bits))


def int16_activation_params(lo: float, hi: float) -> QuantParams:
    """int16 activations (TFLite's 16x8 mode): symmetric, zero point 0, a 12-bit scale
    (`short_scale`) covering [lo, hi], so that MULs of two such tensors stay portable."""
    scale = symmetric_params(max(-lo, hi, 0.0), 16).scale[0]
    return QuantParams((short_scale(scale),), (0,), 16, True)
