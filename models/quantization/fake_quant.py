"""Fake-quant points as JAX custom_jvp functions (straight-through gradients) whose names carry
their parameters, so the tracer reads them back from a jaxpr."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from ncc.models.quantization.integer_jax import (
    broadcast_jax,
    dequantize_jax,
    lookup_jax,
    quantize_float_jax,
    quantize_jax,
    round_half_away_jax,
)
from ncc.numerics import (
    LECUN_TANH_AMPLITUDE,
    LECUN_TANH_GAIN,
    RSQRT_FLOOR,
    QuantParams,
    canonical_json,
    deployed_table,
    int_range,
)

# --- fake-quant (JAX custom_jvp, recognizable in jaxprs) -----------------------------------

FAKE_QUANT_MARKER = "ncc_fake_quant"
"""Name prefix of a fake-quant `custom_jvp_call`; the JSON of its QuantParams follows."""
FAKE_QUANT_TABLE_MARKER = "ncc_fake_quant_table"
"""Name prefix of a table nonlinearity: JSON {"fn", "in", "out"} follows."""
FAKE_QUANT_DYNAMIC_MARKER = "ncc_fake_quant_dynamic"
"""Name prefix of a fake-quant whose scale / zero point are operands (QAT weights)."""
INT_DECAY_MARKER = "ncc_int_decay"
"""Name prefix of a spiking neuron's integer decay `custom_jvp_call` (`ncc.models.nnx.spiking`):
JSON {"membrane", "shift"} follows; operands (v, beta)."""


def _jax_lecun_tanh(x: jax.Array) -> jax.Array:
    return LECUN_TANH_AMPLITUDE * jnp.tanh(LECUN_TANH_GAIN * x)


JAX_TABLE_FUNCTIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "exp": jnp.exp,
    "lecun_tanh": _jax_lecun_tanh,
    "cospi": lambda x: jnp.cos(jnp.pi * x),
    "sinpi": lambda x: jnp.sin(jnp.pi * x),
    "rsqrt": lambda x: jax.lax.rsqrt(jnp.maximum(x, RSQRT_FLOOR)),
    "softplus": jax.nn.softplus,
}
"""The float functions of `ncc.numerics.TABLE_FUNCTIONS` in JAX (a table's gradient)."""


def with_name(fn: Callable, name: str) -> Callable:
    """fn, renamed: the name a jaxpr shows for its custom_jvp_call (marker + JSON)."""
    fn.__name__ = fn.__qualname__ = name
    return fn


@functools.lru_cache(maxsize=4096)
def _fake_quant_fn(p: QuantParams) -> Callable:
    def forward(x: jax.Array) -> jax.Array:
        q, _ = quantize_float_jax(x, p)
        zp = broadcast_jax(p, x.ndim, p.zero_point, jnp.float32)
        return (q - zp) * broadcast_jax(p, x.ndim, p.scale, jnp.float32)

    fq = jax.custom_jvp(with_name(forward, FAKE_QUANT_MARKER + canonical_json(p.to_dict())))

    @fq.defjvp
    def _jvp(primals: tuple, tangents: tuple) -> tuple:
        (x,), (tx,) = primals, tangents
        _, r = quantize_float_jax(x, p)
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
    table = deployed_table(fn, p_in, p_out)
    jax_fn = JAX_TABLE_FUNCTIONS[fn]

    def forward(x: jax.Array) -> jax.Array:
        q = quantize_jax(x, p_in)
        return dequantize_jax(lookup_jax(q, table, p_in), p_out)

    name = FAKE_QUANT_TABLE_MARKER + canonical_json({"fn": fn, "in": p_in.to_dict(),
                                            "out": p_out.to_dict()})
    fq = jax.custom_jvp(with_name(forward, name))

    @fq.defjvp
    def _jvp(primals: tuple, tangents: tuple) -> tuple:
        (x,), (tx,) = primals, tangents
        _, r = quantize_float_jax(x, p_in)
        inside = (r >= p_in.qmin) & (r <= p_in.qmax)
        _, slope = jax.jvp(jax_fn, (x,), (jnp.ones_like(x),))
        return fq(x), jnp.where(inside, tx * slope, jnp.zeros_like(tx))

    return fq


def fake_quant_table(x: jax.Array, fn: str, p_in: QuantParams, p_out: QuantParams) -> jax.Array:
    """f(x) through the deployed table: dequant(table[quantize(x, p_in) - qmin], p_out)
    (`deployed_table`: for an int16 p_in the compact table, interpolated).

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

    name = FAKE_QUANT_DYNAMIC_MARKER + canonical_json({"bits": bits, "signed": signed})
    fq = jax.custom_jvp(with_name(forward, name))

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


