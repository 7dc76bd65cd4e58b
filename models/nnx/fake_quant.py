"""NNX quantization points: an observed fake-quant, a fake-quant Dense, and the QAT switches.

Every point has a `mode` (a static attribute):

- "float": identity (float training);
- "calibrate": identity, while the observer records the range (Variables, so run it
  eagerly or under `nnx.jit`, not inside a raw `jax.lax.scan`);
- "quant": `fake_quant` with the frozen QuantParams (deployment-exact forward,
  straight-through gradient).

Workflow: `set_mode(model, "calibrate")`, run a few batches, `freeze(model)` (which
also switches to "quant"), fine-tune; `freeze(model, weights=True)` before export
so the weights' per-channel parameters are static too (a module whose weights are
computed from other parameters, such as `ncc.models.nnx.ssm.LRU`, freezes them in its
`freeze_weights()`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ncc.models.observers import make_observer
from ncc.models.quantization import (
    QuantConfig,
    QuantParams,
    asymmetric_params,
    fake_quant,
    fake_quant_dense,
    fake_quant_dynamic,
    fake_quant_table,
    int_range,
    symmetric_params,
)

__all__ = ["ObserverStat", "FakeQuant", "QuantDense", "table_or_float", "table_out_params",
           "set_mode", "freeze"]

MODES = ("float", "calibrate", "quant")


class ObserverStat(nnx.Variable):
    """Range statistics of an observer (not trained)."""


class FakeQuant(nnx.Module):
    """An observed activation / state fake-quant point.

    bits: grid width; symmetric: zero point 0 (else asymmetric); enabled: False keeps
    the point in float whatever the mode (a part the QuantConfig leaves float).
    """

    def __init__(self, bits: int = 8, *, symmetric: bool = False, observer: str = "minmax",
                 momentum: float | None = None, percentile: float = 99.99,
                 power_of_two: bool = False, enabled: bool = True,
                 rngs: nnx.Rngs | None = None) -> None:
        del rngs  # no parameters; accepted so checkpoints rebuild every module alike
        self.bits, self.symmetric, self.power_of_two = int(bits), bool(symmetric), power_of_two
        self.enabled = bool(enabled)
        self.observer_spec = (observer, momentum, float(percentile))
        self.observer = make_observer(observer, momentum, percentile)
        state = self.observer.init()
        self.lo, self.hi = ObserverStat(state["lo"]), ObserverStat(state["hi"])
        self.count = ObserverStat(state["count"])
        self.mode = "float"
        self.params: QuantParams | None = None
        self.io_params: tuple[QuantParams, QuantParams] | None = None  # (input, output) grids

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (for `ncc.models.save_checkpoint`)."""
        observer, momentum, percentile = self.observer_spec
        return {"bits": self.bits, "symmetric": self.symmetric, "observer": observer,
                "momentum": momentum, "percentile": percentile,
                "power_of_two": self.power_of_two, "enabled": self.enabled}

    @classmethod
    def for_part(cls, config: QuantConfig, part: str, bits: int, *,
                 symmetric: bool = False) -> FakeQuant:
        """The point of `part` at `bits` as `config` says (enabled unless kept float)."""
        return cls(bits, symmetric=symmetric, observer=config.observer,
                   momentum=config.momentum, percentile=config.percentile,
                   power_of_two=config.power_of_two, enabled=config.quantizes(part))

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.mode == "calibrate":
            state = {"lo": self.lo[...], "hi": self.hi[...], "count": self.count[...]}
            state = self.observer.update(state, x)
            self.lo[...], self.hi[...], self.count[...] = state["lo"], state["hi"], state["count"]
            return x
        if self.mode == "quant" and self.enabled:
            if self.params is None:
                raise ValueError("FakeQuant in 'quant' mode has no parameters: calibrate and "
                                 "freeze first")
            return fake_quant(x, self.params)
        return x

    def freeze(self) -> QuantParams | None:
        """Set the parameters from the observed range (None if nothing was observed)."""
        if int(np.asarray(self.count[...])) == 0:
            return self.params
        state = {"lo": self.lo[...], "hi": self.hi[...], "count": self.count[...]}
        self.params = self.observer.params(state, self.bits, symmetric=self.symmetric,
                                           power_of_two=self.power_of_two)
        return self.params


def table_out_params(fn: str, p_in: QuantParams, out_bits: int = 8) -> QuantParams:
    """Output grid of the table for monotone `fn` on input grid p_in: asymmetric over
    f(lo), f(hi) and f(0), lo / hi the ends of p_in's range."""
    from ncc.models.quantization import TABLE_FUNCTIONS

    lo, hi = (float(v[0]) for v in p_in.real_range())
    ends = TABLE_FUNCTIONS[fn](np.array([lo, hi, 0.0]))
    return asymmetric_params(ends.min(), ends.max(), out_bits)


def table_or_float(x: jax.Array, fn: str, point: FakeQuant, out_bits: int = 8) -> jax.Array:
    """f(x) through its deployed table when `point` (x's fake-quant) is in "quant" mode.

    The output parameters cover f over the input grid's range (`table_out_params`).
    """
    from ncc.models.quantization import JAX_TABLE_FUNCTIONS

    if point.mode == "quant" and point.enabled and point.params is not None:
        p_out = table_out_params(fn, point.params, out_bits)
        return fake_quant_table(point(x), fn, point.params, p_out)
    return JAX_TABLE_FUNCTIONS[fn](point(x))


def live_weight(w: jax.Array, bits: int, per_channel: bool) -> jax.Array:
    """Weights w (K, N) fake-quantized on their live symmetric grid (absmax per output
    channel, or per tensor), the scale following training: QAT before a frozen grid."""
    peak = jnp.max(jnp.abs(w), axis=0) if per_channel else jnp.max(jnp.abs(w))
    scale = jax.lax.stop_gradient(jnp.where(peak > 0, peak / int_range(bits, True)[1], 1.0))
    return fake_quant_dynamic(w, scale, 0.0, bits)


class QuantDense(nnx.Module):
    """y = x @ kernel + bias with fake-quant weights (symmetric, per output channel).

    kernel: (in, out), Keras layout. In "quant" mode the weights go through
    `fake_quant_dynamic` (scale follows the training weights) until `freeze(weights=True)`
    fixes static parameters. The bias stays float (int32 at s_in * s_w when deployed,
    below any visible rounding). `mask` (in, out) multiplies the kernel (sparse wirings).
    """

    def __init__(self, in_features: int, out_features: int, *, bits: int = 8,
                 per_channel: bool = True, enabled: bool = True, mask: Any = None,
                 rngs: nnx.Rngs) -> None:
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.kernel = nnx.Param(nnx.initializers.glorot_uniform()(rngs.params(),
                                                                  (in_features, out_features)))
        self.bias = nnx.Param(jnp.zeros((out_features,)))
        self.bits, self.per_channel, self.enabled = int(bits), bool(per_channel), bool(enabled)
        self.mask = None if mask is None else tuple(map(tuple, np.asarray(mask, np.float32)))
        self.mode = "float"
        self.params: QuantParams | None = None

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (for `ncc.models.save_checkpoint`)."""
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bits": self.bits, "per_channel": self.per_channel, "enabled": self.enabled,
                "mask": None if self.mask is None else [list(r) for r in self.mask]}

    def masked_kernel(self) -> jax.Array:
        """kernel * mask (in, out) in float: what the weight fake-quant sees."""
        w = self.kernel[...]
        return w if self.mask is None else w * jnp.asarray(self.mask, w.dtype)

    def weight(self) -> jax.Array:
        w = self.masked_kernel()
        if self.mode != "quant" or not self.enabled:
            return w
        if self.params is not None:
            return fake_quant(w, self.params)
        return live_weight(w, self.bits, self.per_channel)

    def __call__(self, x: jax.Array) -> jax.Array:
        io = getattr(self, "io_params", None)
        if io is not None and self.mode == "quant" and self.enabled and self.params is not None:
            # input and output grids known (`spiking.link_grids`): the int8 kernel itself
            return fake_quant_dense(x, self.masked_kernel(), self.bias[...], io[0],
                                    self.params, io[1])
        return x @ self.weight() + self.bias[...]

    def freeze(self) -> QuantParams:
        """Static per-channel (axis 1) or per-tensor parameters from the current weights."""
        w = np.asarray(self.kernel[...])
        if self.mask is not None:
            w = w * np.asarray(self.mask, np.float32)
        if self.per_channel:
            self.params = symmetric_params(np.abs(w).max(axis=0), self.bits, axis=1)
        else:
            self.params = symmetric_params(np.abs(w).max(), self.bits)
        return self.params


def set_mode(model: nnx.Module, mode: str) -> int:
    """Set every FakeQuant / QuantDense in `model` to `mode`; returns how many."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    count = 0
    for _, module in model.iter_modules():
        if isinstance(module, FakeQuant | QuantDense):
            module.mode = mode if not (isinstance(module, QuantDense) and mode == "calibrate") \
                else "float"
            count += 1
    return count


def freeze(model: nnx.Module, *, weights: bool = False) -> dict[str, QuantParams | None]:
    """Freeze observed activation / state parameters (and weights if asked), switch to
    "quant" mode. Returns {module path: params}."""
    frozen: dict[str, QuantParams | None] = {}
    for path, module in model.iter_modules():
        if isinstance(module, FakeQuant):
            frozen["/".join(map(str, path))] = module.freeze()
            module.mode = "quant"
        elif isinstance(module, QuantDense):
            if weights:
                frozen["/".join(map(str, path))] = module.freeze()
            module.mode = "quant"
        elif weights and callable(getattr(module, "freeze_weights", None)):
            # weights a module computes from its parameters (an SSM's W_h from lam and B)
            for name, params in module.freeze_weights().items():
                frozen["/".join(map(str, (*path, name)))] = params
    return frozen
