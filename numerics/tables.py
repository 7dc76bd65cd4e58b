"""Lookup tables: nonlinearities on a grid (256 entries for int8 inputs) and the integer
decays of spiking neurons (the "neuromorphic tables"), numpy float64, deterministic."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

from ncc.numerics.fixed_point import (
    multiply_by_quantized_multiplier,
    quantize_multiplier_array,
    round_half_away,
    rounding_divide_by_pot,
    saturate,
)
from ncc.numerics.params import QuantParams

LECUN_TANH_AMPLITUDE = 1.7159
LECUN_TANH_GAIN = 0.666
"""lecun_tanh(x) = LECUN_TANH_AMPLITUDE * tanh(LECUN_TANH_GAIN * x) (the ncps CfC default)."""


def canonical_json(obj: Any) -> str:
    """Compact, key-sorted JSON: the text that names a table or a fake-quant call."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) as 0.5 (tanh(x / 2) + 1): no overflow for large |x|."""
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


def lecun_tanh(x: np.ndarray) -> np.ndarray:
    """LeCun's scaled tanh, 1.7159 tanh(0.666 x)."""
    return LECUN_TANH_AMPLITUDE * np.tanh(LECUN_TANH_GAIN * x)


RSQRT_FLOOR = 1e-20
"""rsqrt(x) = 1 / sqrt(max(x, RSQRT_FLOOR)): finite (then saturated) at x <= 0, and its
float32 slope there (-x^-1.5 / 2, 5e29) finite, so a straight-through gradient is too."""


def cospi(x: np.ndarray) -> np.ndarray:
    """cos(pi x): the real part of the phasor encoding exp(i pi x)."""
    return np.cos(np.pi * x)


def sinpi(x: np.ndarray) -> np.ndarray:
    """sin(pi x): the imaginary part of the phasor encoding exp(i pi x)."""
    return np.sin(np.pi * x)


def rsqrt(x: np.ndarray) -> np.ndarray:
    """1 / sqrt(x) for x > 0 (a phasor's 1 / |z| from |z|^2), floored at RSQRT_FLOOR."""
    return 1.0 / np.sqrt(np.maximum(x, RSQRT_FLOOR))


def softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + exp(x)) as logaddexp(x, 0): no overflow for large x (a selective SSM's step)."""
    return np.logaddexp(x, 0.0)


TABLE_FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sigmoid": sigmoid,
    "tanh": np.tanh,
    "exp": np.exp,
    "lecun_tanh": lecun_tanh,
    "cospi": cospi,
    "sinpi": sinpi,
    "rsqrt": rsqrt,
    "softplus": softplus,
}
"""Nonlinearities available as tables: name -> float64 numpy function."""

INT_DECAY_TABLE = "int_decay"
"""Table name prefix of an integer decay (`int_decay_table_name`)."""


def build_table(fn: str, p_in: QuantParams, p_out: QuantParams) -> np.ndarray:
    """Lookup table: entry i = saturate(round_half_away(f(dequant(qmin_in + i)) / s_out) + zp_out).

    fn: a TABLE_FUNCTIONS name, or an `int_decay_table_name` (integers in and out, no
    float). 2^bits_in entries (256 for int8 input), float64 math, dtype of the output
    grid. Per-tensor parameters only.
    """
    decay = fn.startswith(INT_DECAY_TABLE + "{")
    if fn not in TABLE_FUNCTIONS and not decay:
        raise ValueError(f"no table for {fn!r}; choose from {sorted(TABLE_FUNCTIONS)}")
    if p_in.per_axis or p_out.per_axis:
        raise ValueError("tables need per-tensor parameters")
    if p_in.bits > 16:
        raise ValueError("tables need an input of at most 16 bits")
    q = np.arange(p_in.qmin, p_in.qmax + 1, dtype=np.int64)
    if decay:
        decayed = table_decay(q - p_in.zero_point[0], fn)
        return saturate(decayed + p_out.zero_point[0], p_out.bits,
                        p_out.signed).astype(p_out.dtype)
    real = (q - p_in.zero_point[0]) * p_in.scale[0]
    with np.errstate(over="ignore"):
        y = TABLE_FUNCTIONS[fn](real) / p_out.scale[0]
    y = np.clip(round_half_away(y), -(2.0 ** 40), 2.0 ** 40)
    return saturate(y.astype(np.int64) + p_out.zero_point[0], p_out.bits,
                    p_out.signed).astype(p_out.dtype)


def lookup(q: Any, table: np.ndarray, p_in: QuantParams) -> np.ndarray:
    """table[q - qmin_in] (q on p_in's grid); an interpolated table (`is_interpolated`)
    is read by `interpolated_lookup`."""
    if is_interpolated(table, p_in.bits):
        return interpolated_lookup(q, table, p_in.bits)
    return np.asarray(table)[np.asarray(q, np.int64) - p_in.qmin]


# --- compact tables for int16 inputs: 513 entries, integer linear interpolation -------------

INTERP_BITS = 16
"""Input width of interpolated tables (int16)."""
INTERP_SEGMENT_BITS = 7
"""log2 of the inputs per segment: 2^16 / 2^7 = 512 segments, 513 entries (1,026 bytes)."""
INTERP_ENTRIES = (1 << (INTERP_BITS - INTERP_SEGMENT_BITS)) + 1


def is_interpolated(table: Any, bits_in: int) -> bool:
    """Whether `table` is the compact (interpolated) form for a `bits_in`-bit input."""
    return bits_in == INTERP_BITS and np.shape(table) == (INTERP_ENTRIES,)


def interpolated_lookup(q: Any, table: Any, bits_in: int = INTERP_BITS) -> np.ndarray:
    """The compact table's function of int16 q: with u = q + 2^15 in [0, 2^16),
    i = u >> 7, f = u & 127 (i in [0, 511], f in [0, 127]):

        y = (T[i] * 128 + (T[i+1] - T[i]) * f + 64) >> 7    (arithmetic shift: floor)

    i.e. T[i] + floor(((T[i+1] - T[i]) f + 64) / 128), TFLite's 16-bit `lut_lookup`
    rounding. The numerator is T[i] (128 - f) + T[i+1] f + 64, |.| <= 2^22 + 64: int32
    everywhere. y lies between T[i]
    and T[i+1]: no saturation. Returns int64 values in the table's range."""
    if bits_in != INTERP_BITS or np.shape(table) != (INTERP_ENTRIES,):
        raise ValueError(f"an interpolated table has {INTERP_ENTRIES} entries for int16 input")
    t = np.asarray(table, np.int64)
    u = np.asarray(q, np.int64) + (1 << (INTERP_BITS - 1))
    i, f = u >> INTERP_SEGMENT_BITS, u & ((1 << INTERP_SEGMENT_BITS) - 1)
    base = t[i]
    num = (base << INTERP_SEGMENT_BITS) + (t[i + 1] - base) * f \
        + (1 << (INTERP_SEGMENT_BITS - 1))
    return num >> INTERP_SEGMENT_BITS


def interp_points(p_in: QuantParams) -> tuple[np.ndarray, np.ndarray]:
    """Real inputs of the compact table's entries and of its segments' midpoints:
    (x_break (513,), x_mid (512,)) float64, from q = -2^15 on; the last break is 2^15 (one step past
    the grid, where the last segment's line ends)."""
    if p_in.bits != INTERP_BITS or p_in.per_axis:
        raise ValueError("interpolated tables need a per-tensor int16 input")
    step = 1 << INTERP_SEGMENT_BITS
    q = -(1 << (INTERP_BITS - 1)) + step * np.arange(INTERP_ENTRIES, dtype=np.int64)
    zp, s = p_in.zero_point[0], p_in.scale[0]
    return (q - zp) * s, (q[:-1] + step // 2 - zp) * s


def interp_table(y_break: np.ndarray, y_mid: np.ndarray, p_out: QuantParams) -> np.ndarray:
    """Compact table from f at `interp_points` (real units, float64): each entry is
    f(x_j) / s_out lowered by half the mean midpoint error (chord minus curve) of the
    segments it bounds, which halves the chord's error on a curved segment, then
    rounded half away and saturated. (513,) of the output's dtype."""
    if p_out.per_axis:
        raise ValueError("tables need per-tensor parameters")
    s, zp = p_out.scale[0], p_out.zero_point[0]
    lo, hi = p_out.qmin - zp, p_out.qmax - zp  # the saturated curve is the one to follow
    with np.errstate(over="ignore", invalid="ignore"):
        yb = np.clip(np.nan_to_num(np.asarray(y_break, np.float64) / s), lo, hi)
        ym = np.clip(np.nan_to_num(np.asarray(y_mid, np.float64) / s), lo, hi)
    err = 0.5 * (yb[:-1] + yb[1:]) - ym
    correction = np.zeros_like(yb)
    correction[:-1] += err
    correction[1:] += err
    correction[1:-1] *= 0.5
    y = round_half_away(yb - 0.5 * correction)
    return saturate(y.astype(np.int64) + zp, p_out.bits, p_out.signed).astype(p_out.dtype)


def build_interp_table(fn: str, p_in: QuantParams, p_out: QuantParams) -> np.ndarray:
    """The compact table of TABLE_FUNCTIONS[fn] (float64) from an int16 grid p_in to p_out."""
    if fn not in TABLE_FUNCTIONS:
        raise ValueError(f"no table for {fn!r}; choose from {sorted(TABLE_FUNCTIONS)}")
    xb, xm = interp_points(p_in)
    f = TABLE_FUNCTIONS[fn]
    with np.errstate(over="ignore"):
        return interp_table(f(xb), f(xm), p_out)


def deployed_table(fn: str, p_in: QuantParams, p_out: QuantParams) -> np.ndarray:
    """The table ncc deploys for fn: compact (`build_interp_table`) for an int16 input,
    else one entry per input level (`build_table`). Integer decays stay exact."""
    if p_in.bits == INTERP_BITS and fn in TABLE_FUNCTIONS:
        return build_interp_table(fn, p_in, p_out)
    return build_table(fn, p_in, p_out)


# --- integer decays of spiking neurons ------------------------------------------------------


def decay_multipliers(beta: Any) -> tuple[np.ndarray, np.ndarray]:
    """(m, shift) int32 of quantize_multiplier(fl32(clip(beta, 0, 1))), beta's shape."""
    return quantize_multiplier_array(np.clip(np.asarray(beta, np.float32), 0, 1))


def int_decay(v: Any, beta: Any = None, shift: int | None = None) -> np.ndarray:
    """beta * v on integers: MBQM(v, `decay_multipliers`(beta)) with beta scalar or one per
    neuron (v's last axis), or, given `shift`, v - RDBP(v, shift) (beta = 1 - 2^-shift).
    v: int32 membrane values. Returns int64."""
    v = np.asarray(v, np.int64)
    if shift is not None:
        return v - rounding_divide_by_pot(v, shift)
    m, s = decay_multipliers(np.broadcast_to(np.asarray(beta, np.float32), v.shape[-1:] or ()))
    return multiply_by_quantized_multiplier(v, m, s)


def int_decay_table_name(beta: float | None = None, shift: int | None = None) -> str:
    """The name of the table v -> `int_decay`(v, beta) (or the bit-shift decay)."""
    if shift is not None:
        return INT_DECAY_TABLE + canonical_json({"shift": int(shift)})
    m, e = decay_multipliers(beta)
    return INT_DECAY_TABLE + canonical_json({"multiplier": int(m), "exponent": int(e)})


def table_decay(v: Any, table_name: str) -> np.ndarray:
    """The integer decay an `int_decay_table_name` stands for, of integers v (int64 out)."""
    spec = json.loads(table_name[len(INT_DECAY_TABLE):])
    if "shift" in spec:
        return int_decay(v, shift=spec["shift"])
    return multiply_by_quantized_multiplier(np.asarray(v, np.int64), spec["multiplier"],
                                            spec["exponent"])
