"""Fake-quant in `keras.ops` for the Keras layers' `quantization=` (any backend)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ncc.models.quantization.fake_quant import fake_quant, fake_quant_table
from ncc.numerics import (
    INTERP_BITS,
    INTERP_SEGMENT_BITS,
    LECUN_TANH_AMPLITUDE,
    LECUN_TANH_GAIN,
    RSQRT_FLOOR,
    QuantParams,
    deployed_table,
    is_interpolated,
)

# --- keras.ops fake-quant (for the Keras layers' `quantization=`) ---------------------------


def keras_fake_quant(x: Any, p: QuantParams) -> Any:
    """`fake_quant` for Keras 3 tensors. JAX backend: the very same custom_jvp; other
    backends: the same float32 formula with keras.ops and a straight-through gradient."""
    import keras

    if keras.backend.backend() == "jax":
        return fake_quant(x, p)
    ops = keras.ops
    x = ops.cast(x, "float32")
    inv = ops.convert_to_tensor(p.broadcast(p.inv_scale, len(x.shape)), "float32")
    scale = ops.convert_to_tensor(p.broadcast(p.scale, len(x.shape)), "float32")
    zp = ops.convert_to_tensor(p.broadcast(p.zero_point, len(x.shape)), "float32")

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
    values = deployed_table(fn, p_in, p_out)
    interpolated = is_interpolated(values, p_in.bits)
    table = ops.convert_to_tensor(values.astype(np.float32))
    smooth_fn = {"sigmoid": ops.sigmoid, "tanh": ops.tanh, "exp": ops.exp,
                 "softplus": ops.softplus}.get(fn, fn)
    inv = float(np.float32(p_in.inv_scale[0]))

    @ops.custom_gradient
    def fq(v: Any) -> Any:
        y = v * inv
        t = ops.sign(y) * ops.floor(ops.abs(y))
        r = t + ops.where(ops.abs(y - t) >= 0.5, ops.sign(y), ops.zeros_like(y))
        r = r + p_in.zero_point[0]
        q = ops.clip(r, p_in.qmin, p_in.qmax)
        looked = (_keras_interpolated(table, q) if interpolated
                  else ops.take(table, ops.cast(q - p_in.qmin, "int32")))
        out = (looked - p_out.zero_point[0]) * p_out.scale[0]
        inside = ops.logical_and(r >= p_in.qmin, r <= p_in.qmax)

        def grad(*args: Any, upstream: Any = None) -> Any:
            g = upstream if upstream is not None else args[0]
            slope = ops.convert_to_tensor(0.0)
            with_slope = g * _keras_slope(smooth_fn, v)
            return ops.where(inside, with_slope, ops.zeros_like(g) + slope)

        return out, grad

    return fq(ops.cast(x, "float32"))


def _keras_interpolated(table: Any, q: Any) -> Any:
    """`interpolated_lookup` in keras.ops: q float32 holding int16 values, table (513,)
    float32 holding int16 values. Every value is an integer below 2^23 in magnitude, so
    float32 computes it exactly; floor(n / 128) is exact (a power of two)."""
    import keras

    ops = keras.ops
    step = float(1 << INTERP_SEGMENT_BITS)
    u = q + float(1 << (INTERP_BITS - 1))
    i = ops.floor(u / step)
    f = u - i * step
    idx = ops.cast(i, "int32")
    base, nxt = ops.take(table, idx), ops.take(table, idx + 1)
    return ops.floor((base * step + (nxt - base) * f + step / 2) / step)


def _keras_slope(fn: Any, v: Any) -> Any:
    import keras

    ops = keras.ops
    if fn is ops.sigmoid:
        s = ops.sigmoid(v)
        return s * (1.0 - s)
    if fn is ops.tanh:
        return 1.0 - ops.tanh(v) ** 2
    if fn == "lecun_tanh":
        return LECUN_TANH_AMPLITUDE * LECUN_TANH_GAIN * (1.0 - ops.tanh(LECUN_TANH_GAIN * v) ** 2)
    if fn == "cospi":
        return -np.pi * ops.sin(np.pi * v)
    if fn == "sinpi":
        return np.pi * ops.cos(np.pi * v)
    if fn == "rsqrt":
        return -0.5 * ops.maximum(v, RSQRT_FLOOR) ** -1.5
    if fn is ops.softplus:
        return ops.sigmoid(v)
    return ops.exp(v)


