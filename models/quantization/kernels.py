"""Integer-exact fake-quant of whole kernels (dense layers; add / sub / mul of two
activations): the deployed integer arithmetic in JAX, straight-through gradients. Their
parameters are the numeric core's (`ncc.numerics.dense_multipliers`, `quantize_bias`,
`binary_multipliers`)."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from ncc.models.quantization.fake_quant import with_name
from ncc.models.quantization.integer_jax import (
    dequantize_jax,
    multiply_by_quantized_multiplier_int64_jax,
    multiply_by_quantized_multiplier_jax,
    quantize_bias_jax,
    quantize_jax,
    saturate_jax,
)
from ncc.numerics import (
    INT32_MAX,
    QuantParams,
    binary_multipliers,
    canonical_json,
    dense_multipliers,
)

# --- the integer-exact fake-quant dense layer ----------------------------------------------
# fake_quant(x @ fake_quant(W) + b) cannot equal the deployed fully-connected kernel: float
# sums round, the float bias is not the int32 bias, and the kernel's requantization rounds
# twice (TFLite). This computes the integer kernel itself, with a straight-through gradient.

DENSE_MARKER = "ncc_fake_quant_dense"
"""Name prefix of `fake_quant_dense`'s custom_jvp_call: JSON {"x", "w", "out"} follows."""


@functools.lru_cache(maxsize=256)
def _dense_fn(p_x: QuantParams, p_w: QuantParams, p_out: QuantParams) -> Any:
    bias_scale, mult, shift = dense_multipliers(p_x, p_w, p_out)
    name = DENSE_MARKER + canonical_json({"x": p_x.to_dict(), "w": p_w.to_dict(),
                                          "out": p_out.to_dict()})

    def forward(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
        qx = quantize_jax(x, p_x) - p_x.zero_point[0]
        wq = quantize_jax(kernel, p_w)
        bq = quantize_bias_jax(bias.reshape(-1), bias_scale)
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

    fq = jax.custom_jvp(with_name(forward, name))

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
    output channel, axis 1), bias (N,) (int32 at s_x s_w, `ncc.numerics.quantize_bias`)
    -> (..., N) on p_out's grid. Gradient: that of x @ kernel + bias (straight-through).
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


@functools.lru_cache(maxsize=512)
def _binary_fn(kind: str, p_a: QuantParams, p_b: QuantParams, p_out: QuantParams) -> Any:
    at = binary_multipliers(kind, p_a, p_b, p_out)
    name = BINARY_MARKER + canonical_json({"kind": kind, "a": p_a.to_dict(),
                                           "b": p_b.to_dict(), "out": p_out.to_dict()})

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

    fq = jax.custom_jvp(with_name(forward, name))

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
