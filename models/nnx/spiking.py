"""Quantized spiking neurons with spyx's step interface: LIF, IF, LI (readout), CuBaLIF.

Each neuron is an `nnx.Module` with `initial_state(batch_size)` and
`__call__(x, state) -> (out, state)`, so it drops into `spyx.nn.Sequential` and
`spyx.nn.run`. With `quantized=False` it computes exactly what the spyx neuron of the
same name and parameters computes. With `quantized=True` the membrane lives on an
integer grid and the forward pass is the deployed integer arithmetic, bit for bit
(`*_step_int` below are the numpy integer references):

- membrane V (and synaptic current I) on a symmetric `membrane_bits` grid (int16
  default), scale s_v = threshold / threshold_q, zero point 0;
- integer threshold theta_q (default 2^(bits-4): 4096 for int16, so V spans +-8
  thresholds); spike = V_q > theta_q, exactly spyx's Heaviside(V - threshold) > 0;
- input current quantized onto the membrane grid (the previous layer requantizes its
  accumulator to s_v);
- decay as a fixed-point multiplier, V_q -> MBQM(V_q, m, shift) with (m, shift) =
  quantize_multiplier(beta), or as a bit shift, V_q -> V_q - RDBP(V_q, n) (beta = 1 - 2^-n);
- reset by subtraction (spyx) or to zero; saturation to the grid after every update.

Gradients: spyx's surrogate (`spyx.axn`) for spikes, straight-through for every
rounding (decay: d/dV = beta, d/dbeta = V), zero where the membrane saturates.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import spyx.axn
from flax import nnx

from ncc.models.quantization import (
    INT_DECAY_MARKER,
    QuantConfig,
    QuantParams,
    dequantize_jax,
    fake_quant,
    multiply_by_quantized_multiplier_jax,
    quantize_jax,
    quantize_multiplier_jax,
    rounding_divide_by_pot_jax,
    saturate,
)
from ncc.numerics import canonical_json
from ncc.numerics import int_decay as decay_int

__all__ = ["QuantLIF", "QuantIF", "QuantLI", "QuantCuBaLIF", "INT_DECAY_MARKER",
           "membrane_params", "decay_int", "lif_step_int", "if_step_int", "li_step_int",
           "cuba_lif_step_int", "set_quantized", "link_grids", "SPIKE_GRID"]


_DEFAULT_ACTIVATION = spyx.axn.superspike()


def membrane_params(threshold: float, threshold_q: int, bits: int = 16) -> QuantParams:
    """Symmetric membrane grid with scale threshold / threshold_q (zero point 0)."""
    if threshold <= 0:
        raise ValueError(f"threshold must be > 0 for a quantized neuron, got {threshold}")
    if not 0 < threshold_q < (1 << (bits - 1)) - 1:
        raise ValueError(f"threshold_q {threshold_q} does not fit a {bits}-bit membrane")
    return QuantParams((threshold / threshold_q,), (0,), bits, True)


# --- integer references (numpy): the deployed arithmetic -----------------------------------


def lif_step_int(v: Any, x: Any, *, beta: Any, theta: int, bits: int = 16,
                 reset: str = "subtract", shift: int | None = None) -> tuple:
    """One LIF step on integers. v, x: membrane and input on the grid. -> (spikes, v').

    Each integer op saturates, as deployed: subtract reset is sat(sat(d + x) - s theta)."""
    v = np.asarray(v, np.int64)
    s = (v > theta).astype(np.int64)
    d = decay_int(v, beta, shift)
    new = saturate(d + x, bits) - s * theta if reset == "subtract" else (1 - s) * d + x
    return s, saturate(new, bits)


def if_step_int(v: Any, x: Any, *, theta: int, bits: int = 16,
                reset: str = "subtract") -> tuple:
    v = np.asarray(v, np.int64)
    s = (v > theta).astype(np.int64)
    new = saturate(v + x, bits) - s * theta if reset == "subtract" else (1 - s) * v + x
    return s, saturate(new, bits)


def li_step_int(v: Any, x: Any, *, beta: Any, bits: int = 16,
                shift: int | None = None) -> tuple:
    new = saturate(decay_int(v, beta, shift) + np.asarray(x, np.int64), bits)
    return new, new


def cuba_lif_step_int(v: Any, i: Any, x: Any, *, alpha: Any, beta: Any, theta: int,
                      bits: int = 16, reset: str = "subtract") -> tuple:
    """-> (spikes, v', i'). spyx order: reset, then I' = alpha I + x, V' = beta V + I'."""
    v = np.asarray(v, np.int64)
    s = (v > theta).astype(np.int64)
    v = v - s * theta if reset == "subtract" else (1 - s) * v
    i = saturate(decay_int(i, alpha) + np.asarray(x, np.int64), bits)
    return s, saturate(decay_int(v, beta) + i, bits), i


# --- the same in JAX with straight-through gradients ---------------------------------------


@functools.lru_cache(maxsize=256)
def _decay_fn(p: QuantParams, shift: int | None) -> Any:
    def forward(v: jax.Array, beta: jax.Array) -> jax.Array:
        vq = quantize_jax(v, p)
        if shift is not None:
            out = vq - rounding_divide_by_pot_jax(vq, jnp.int32(shift))
        else:
            m, s = quantize_multiplier_jax(beta)
            out = multiply_by_quantized_multiplier_jax(vq, m, s)
        return dequantize_jax(out, p)

    name = INT_DECAY_MARKER + canonical_json({"membrane": p.to_dict(), "shift": shift})
    forward.__name__ = forward.__qualname__ = name
    fn = jax.custom_jvp(forward)

    @fn.defjvp
    def _jvp(primals: tuple, tangents: tuple) -> tuple:
        (v, beta), (tv, tb) = primals, tangents
        return fn(v, beta), beta * tv + v * tb

    return fn


def _decay(v: jax.Array, beta: jax.Array, p: QuantParams, shift: int | None) -> jax.Array:
    beta = jnp.broadcast_to(jnp.asarray(beta, jnp.float32), v.shape)
    return _decay_fn(p, shift)(jnp.asarray(v, jnp.float32), beta)


class _QuantNeuron(nnx.Module):
    """Shared parts: membrane grid, integer threshold, quantization switch."""

    def _setup(self, threshold: float, activation: Any, quantized: bool,
               config: QuantConfig | dict | None, threshold_q: int | None, reset: str) -> None:
        if reset not in ("subtract", "zero"):
            raise ValueError(f"reset must be 'subtract' or 'zero', got {reset!r}")
        self.threshold = threshold
        self.spike = activation if activation is not None else _DEFAULT_ACTIVATION
        self.config = _config(config)
        bits = self.config.membrane_bits
        self.threshold_q = int(threshold_q if threshold_q is not None else 1 << (bits - 4))
        self.reset = reset
        self.quantized = bool(quantized)
        self.membrane = membrane_params(float(threshold), self.threshold_q, bits)

    @property
    def theta(self) -> float:
        """The real threshold of the integer one: theta_q * s_v (float32)."""
        return float(np.float32(self.threshold_q) * np.float32(self.membrane.scale[0]))

    def _grid(self, v: jax.Array) -> jax.Array:
        return fake_quant(v, self.membrane)

    def _fire(self, v: jax.Array) -> jax.Array:
        """Spikes of a membrane on the grid: Heaviside(V - theta), V - theta on the grid."""
        return self.spike(self._grid(v - self.theta))

    def _update(self, d: jax.Array, x: jax.Array, spikes: jax.Array) -> jax.Array:
        """The reset, every partial result on the membrane grid, as the integer ops do:
        subtract: sat(sat(d + x) - s theta); zero: sat((d - s d) + x)."""
        if self.reset == "subtract":
            return self._grid(self._grid(d + x) - self._grid(spikes * self.theta))
        return self._grid(self._grid(d - self._grid(spikes * d)) + x)

    def _quant_on(self) -> bool:
        return self.quantized and self.config.quantizes("membrane")

    def _base_config(self) -> dict[str, Any]:
        """The constructor arguments every neuron shares (the surrogate `activation` is not
        saved: it only shapes gradients; a rebuilt neuron uses the default)."""
        return {"threshold": float(self.threshold), "quantized": self.quantized,
                "config": self.config.to_dict(), "threshold_q": self.threshold_q,
                "reset": self.reset}


def _config(config: QuantConfig | dict | None) -> QuantConfig:
    if isinstance(config, dict):
        return QuantConfig.from_dict(config)
    return config if config is not None else QuantConfig()


def _param_value(param: nnx.Param, shape: tuple) -> float | None:
    """A scalar decay's value, or None for a per-neuron (learned-shape) one."""
    value = np.asarray(param[...])
    return None if value.shape == tuple(shape) and value.ndim else float(value)


def _beta_param(beta: Any, shape: tuple, rngs: nnx.Rngs | None) -> nnx.Param:
    if beta is None:  # spyx's initializer, same draws
        return nnx.Param(nnx.initializers.truncated_normal(stddev=0.25)(rngs.params(), shape)
                         + 0.5)
    return nnx.Param(jnp.full((), beta))


class QuantLIF(_QuantNeuron):
    """Leaky integrate-and-fire; float mode equals `spyx.nn.LIF`.

    hidden_shape: neurons per sample. beta: decay (None = learned per unit, spyx init).
    decay_shift: use V - (V >> n) instead of a multiplier (beta fixed to 1 - 2^-n).
    threshold_q: integer threshold on the membrane grid. reset: "subtract" or "zero".
    """

    def __init__(self, hidden_shape: tuple, beta: Any = None, threshold: float = 1.0,
                 activation: Any = None, *, quantized: bool = False,
                 config: QuantConfig | dict | None = None, threshold_q: int | None = None,
                 reset: str = "subtract", decay_shift: int | None = None,
                 rngs: nnx.Rngs | None = None) -> None:
        self.hidden_shape = tuple(hidden_shape)
        self.decay_shift = decay_shift
        if decay_shift is not None:
            beta = 1.0 - 2.0 ** -decay_shift
        self.beta = _beta_param(beta, self.hidden_shape, rngs)
        self._setup(threshold, activation, quantized, config, threshold_q, reset)

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (for `ncc.models.save_checkpoint`)."""
        return {"hidden_shape": list(self.hidden_shape),
                "beta": _param_value(self.beta, self.hidden_shape),
                "decay_shift": self.decay_shift, **self._base_config()}

    def initial_state(self, batch_size: int) -> jax.Array:
        return jnp.zeros((batch_size,) + self.hidden_shape)

    def __call__(self, x: jax.Array, v: jax.Array) -> tuple[jax.Array, jax.Array]:
        beta = jnp.clip(self.beta[...], 0, 1)
        if not self._quant_on():
            spikes = self.spike(v - self.threshold)
            if self.reset == "subtract":
                return spikes, beta * v + x - spikes * self.threshold
            return spikes, (1 - spikes) * beta * v + x
        spikes, d, x = self._fire(v), _decay(v, beta, self.membrane, self.decay_shift), \
            self._grid(x)
        return spikes, self._update(d, x, spikes)


class QuantIF(_QuantNeuron):
    """Integrate-and-fire; float mode equals `spyx.nn.IF`."""

    def __init__(self, hidden_shape: tuple, threshold: float = 1.0, activation: Any = None, *,
                 quantized: bool = False, config: QuantConfig | dict | None = None,
                 threshold_q: int | None = None, reset: str = "subtract",
                 rngs: nnx.Rngs | None = None) -> None:
        del rngs  # parameterless, like spyx.nn.IF
        self.hidden_shape = tuple(hidden_shape)
        self._setup(threshold, activation, quantized, config, threshold_q, reset)

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (for `ncc.models.save_checkpoint`)."""
        return {"hidden_shape": list(self.hidden_shape), **self._base_config()}

    def initial_state(self, batch_size: int) -> jax.Array:
        return jnp.zeros((batch_size,) + self.hidden_shape)

    def __call__(self, x: jax.Array, v: jax.Array) -> tuple[jax.Array, jax.Array]:
        if not self._quant_on():
            spikes = self.spike(v - self.threshold)
            if self.reset == "subtract":
                return spikes, v + x - spikes * self.threshold
            return spikes, (1 - spikes) * v + x
        spikes = self._fire(v)
        return spikes, self._update(v, self._grid(x), spikes)


class QuantLI(_QuantNeuron):
    """Leaky integrator readout, V' = beta V + x, output V'; float mode equals `spyx.nn.LI`.

    The membrane grid is symmetric with scale `scale` (default 2^-8: int16 spans +-128).
    """

    def __init__(self, layer_shape: tuple, beta: Any = None, *, quantized: bool = False,
                 config: QuantConfig | dict | None = None, scale: float = 2.0 ** -8,
                 decay_shift: int | None = None, rngs: nnx.Rngs | None = None) -> None:
        del rngs
        self.layer_shape = tuple(layer_shape)
        self.decay_shift = decay_shift
        if decay_shift is not None:
            beta = 1.0 - 2.0 ** -decay_shift
        self.beta = nnx.Param(jnp.full(self.layer_shape, 0.8) if beta is None
                              else jnp.full((), beta))
        self.config = _config(config)
        self.quantized = bool(quantized)
        self.membrane = QuantParams((scale,), (0,), self.config.membrane_bits, True)

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (for `ncc.models.save_checkpoint`)."""
        return {"layer_shape": list(self.layer_shape),
                "beta": _param_value(self.beta, self.layer_shape), "quantized": self.quantized,
                "config": self.config.to_dict(), "scale": float(self.membrane.scale[0]),
                "decay_shift": self.decay_shift}

    def initial_state(self, batch_size: int) -> jax.Array:
        return jnp.zeros((batch_size,) + self.layer_shape)

    def __call__(self, x: jax.Array, v: jax.Array) -> tuple[jax.Array, jax.Array]:
        beta = jnp.clip(self.beta[...], 0, 1)
        if not (self.quantized and self.config.quantizes("membrane")):
            out = beta * v + x
            return out, out
        out = fake_quant(_decay(v, beta, self.membrane, self.decay_shift)
                         + fake_quant(x, self.membrane), self.membrane)
        return out, out


class QuantCuBaLIF(_QuantNeuron):
    """Current-based LIF; state concat([V, I], -1); float mode equals `spyx.nn.CuBaLIF`.

    V and the synaptic current I share the membrane grid.
    """

    def __init__(self, hidden_shape: tuple, alpha: Any = None, beta: Any = None,
                 threshold: float = 1.0, activation: Any = None, *, quantized: bool = False,
                 config: QuantConfig | dict | None = None, threshold_q: int | None = None,
                 reset: str = "subtract", rngs: nnx.Rngs | None = None) -> None:
        self.hidden_shape = tuple(hidden_shape)
        self.alpha = _beta_param(alpha, self.hidden_shape, rngs)
        self.beta = _beta_param(beta, self.hidden_shape, rngs)
        self._setup(threshold, activation, quantized, config, threshold_q, reset)

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (for `ncc.models.save_checkpoint`)."""
        return {"hidden_shape": list(self.hidden_shape),
                "alpha": _param_value(self.alpha, self.hidden_shape),
                "beta": _param_value(self.beta, self.hidden_shape), **self._base_config()}

    def initial_state(self, batch_size: int) -> jax.Array:
        return jnp.zeros((batch_size,) + tuple(2 * v for v in self.hidden_shape))

    def __call__(self, x: jax.Array, vi: jax.Array) -> tuple[jax.Array, jax.Array]:
        v, i = jnp.split(vi, 2, -1)
        alpha = jnp.clip(self.alpha[...], 0, 1)
        beta = jnp.clip(self.beta[...], 0, 1)
        if not self._quant_on():
            spikes = self.spike(v - self.threshold)
            v = v - spikes * self.threshold if self.reset == "subtract" else (1 - spikes) * v
            i = alpha * i + x
            v = beta * v + i
            return spikes, jnp.concatenate([v, i], axis=-1)
        spikes = self._fire(v)
        drop = spikes * self.theta if self.reset == "subtract" else spikes * v
        v = self._grid(v - self._grid(drop))
        i = self._grid(_decay(i, alpha, self.membrane, None) + self._grid(x))
        v = self._grid(_decay(v, beta, self.membrane, None) + i)
        return spikes, jnp.concatenate([v, i], axis=-1)


SPIKE_GRID = QuantParams((1.0,), (0,), 8, True)
"""Spikes on the integer side: exactly 0 / 1, int8 with scale 1."""


def link_grids(model: Any) -> int:
    """Give each QuantDense of a `spyx.nn.Sequential` between two known grids those grids,
    so that once frozen it computes the deployed int8 kernel (`fake_quant_dense`) bit for
    bit: input = spikes (after a spiking neuron) or a FakeQuant's frozen grid, output = the
    next quantized neuron's membrane. Call after `freeze(model, weights=True)`; returns how
    many layers were linked."""
    from ncc.models.nnx.fake_quant import FakeQuant, QuantDense

    layers, linked = list(model.layers), 0
    for i, layer in enumerate(layers):
        if not isinstance(layer, QuantDense) or i == 0 or i + 1 == len(layers):
            continue
        before, after = layers[i - 1], layers[i + 1]
        if isinstance(before, _QuantNeuron) and not isinstance(before, QuantLI):
            p_in = SPIKE_GRID
        elif isinstance(before, FakeQuant) and before.mode == "quant":
            p_in = before.params
        else:
            continue
        quantized = getattr(after, "quantized", False) and after.config.quantizes("membrane")
        if p_in is not None and quantized:
            layer.io_params = (p_in, after.membrane)
            linked += 1
    return linked


def set_quantized(model: nnx.Module, on: bool = True) -> int:
    """Switch every quantizable module inside `model` to (or out of) fake-quant mode.

    Returns how many modules were switched.
    """
    count = 0
    for _, module in model.iter_modules():
        if hasattr(module, "quantized") and isinstance(module.quantized, bool):
            module.quantized = bool(on)
            count += 1
    return count
