"""Flax NNX CfC cell (closed-form continuous-time), numerically equal to `ncps.keras.CfCCell`.

Step: `cell(x, h, dt=1.0) -> (h', h')`, x (B, input_dim), h (B, units), dt scalar or (B,).
Modes (ncps): "default"  h' = ff1 (1 - g) + g ff2,  "no_gate"  h' = ff1 + g ff2,
"pure"  h' = -A exp(-dt (|w_tau| + |ff1|)) ff1 + A, with g = sigmoid(-t_a dt + t_b),
ff1 = z W1 + b1, ff2 = z W2 + b2 (no tanh: ncps.keras, unlike ncps.torch), t_a, t_b
dense, z = backbone([x, h]).

With a QuantConfig every matmul input, output and the recurrent state pass through
observed fake-quant points (`ncc.models.nnx.fake_quant`), and tanh / sigmoid /
lecun_tanh go through the deployed 256-entry tables once the points are frozen.
Backbone dropout is not modelled (inference semantics).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ncc.models.nnx.fake_quant import FakeQuant, QuantDense, table_or_float
from ncc.models.quantization import QuantConfig

__all__ = ["CfCCell", "run_cell"]

_ACTIVATIONS = {"lecun_tanh": "lecun_tanh", "tanh": "tanh", "sigmoid": "sigmoid"}


class CfCCell(nnx.Module):
    """CfC cell over `units` neurons (dense wiring), ncps.keras weight layout.

    input_dim: features per step. mode: "default" | "pure" | "no_gate".
    activation: backbone activation ("lecun_tanh", "tanh", "sigmoid", or "relu").
    backbone_units / backbone_layers: the backbone MLP (0 layers = none).
    quantization: a QuantConfig to enable fake-quant points (None = float only).
    """

    def __init__(self, input_dim: int, units: int, *, mode: str = "default",
                 activation: str = "lecun_tanh", backbone_units: int = 128,
                 backbone_layers: int = 1, quantization: QuantConfig | None = None,
                 rngs: nnx.Rngs) -> None:
        if mode not in ("default", "pure", "no_gate"):
            raise ValueError(f"unknown mode {mode!r}; valid: default, pure, no_gate")
        if activation not in (*_ACTIVATIONS, "relu"):
            raise ValueError(f"unsupported backbone activation {activation!r}")
        self.input_dim, self.units, self.mode = int(input_dim), int(units), mode
        self.activation = activation
        self.config = quantization if quantization is not None else QuantConfig()
        cfg, wb = self.config, self.config.weight_bits
        dense = {"bits": wb, "per_channel": cfg.per_channel,
                 "enabled": quantization is not None and cfg.quantizes("weights")}
        width = self.input_dim + self.units
        self.backbone = nnx.List()
        for _ in range(backbone_layers):
            self.backbone.append(QuantDense(width, backbone_units, rngs=rngs, **dense))
            width = backbone_units
        self.ff1 = QuantDense(width, self.units, rngs=rngs, **dense)
        if mode == "pure":
            self.w_tau = nnx.Param(jnp.zeros((1, self.units)))
            self.A = nnx.Param(jnp.ones((1, self.units)))
        else:
            self.ff2 = QuantDense(width, self.units, rngs=rngs, **dense)
            self.time_a = QuantDense(width, self.units, rngs=rngs, **dense)
            self.time_b = QuantDense(width, self.units, rngs=rngs, **dense)
            for d in (self.time_a, self.time_b):  # keras Dense default init
                d.kernel[...] = nnx.initializers.glorot_uniform()(rngs.params(),
                                                                  d.kernel[...].shape)
        on = quantization is not None

        def point(part: str, bits: int) -> FakeQuant:
            fq = FakeQuant.for_part(cfg, part, bits)
            fq.enabled = on and fq.enabled
            return fq

        ab, sb = cfg.activation_bits, cfg.state_bits
        self.q_input = point("inputs", ab)
        self.q_state = point("state", sb)
        self.q_backbone = nnx.List([point("activations", ab) for _ in range(backbone_layers)])
        self.q_backbone_out = point("activations", ab)
        self.q_ff1, self.q_ff2 = point("activations", ab), point("activations", ab)
        self.q_gate = point("activations", ab)
        self.q_mix = point("activations", ab)
        self.nonlinear_tables = on and cfg.quantizes("nonlinearities")

    def initial_state(self, batch_size: int) -> jax.Array:
        return jnp.zeros((batch_size, self.units))

    def _act(self, x: jax.Array, fn: str, point: FakeQuant) -> jax.Array:
        if fn == "relu":
            return jax.nn.relu(point(x))
        if self.nonlinear_tables:
            return table_or_float(x, fn, point)
        x = point(x)
        return {"lecun_tanh": lambda v: 1.7159 * jnp.tanh(0.666 * v), "tanh": jnp.tanh,
                "sigmoid": jax.nn.sigmoid}[fn](x)

    def __call__(self, x: jax.Array, h: jax.Array, dt: Any = 1.0) -> tuple[jax.Array, jax.Array]:
        t = jnp.reshape(jnp.asarray(dt, jnp.float32), (-1, 1))
        z = jnp.concatenate([self.q_input(x), self.q_state(h)], axis=-1)
        for layer, point in zip(self.backbone, self.q_backbone, strict=True):
            z = self._act(layer(z), self.activation, point)
        if len(self.backbone):
            z = self.q_backbone_out(z)
        ff1 = self.q_ff1(self.ff1(z))
        if self.mode == "pure":
            new = (-self.A[...] * jnp.exp(-t * (jnp.abs(self.w_tau[...]) + jnp.abs(ff1))) * ff1
                   + self.A[...])
            new = self.q_state(new)
            return new, new
        ff2 = self.q_ff2(self.ff2(z))
        gate = self._act(-self.time_a(z) * t + self.time_b(z), "sigmoid", self.q_gate)
        if self.mode == "no_gate":
            new = ff1 + self.q_mix(gate * ff2)
        else:
            new = self.q_mix(ff1 * (1.0 - gate)) + self.q_mix(gate * ff2)
        new = self.q_state(new)
        return new, new

    def load_ncps_keras(self, cell: Any) -> CfCCell:
        """Copy the weights of a built `ncps.keras.CfCCell` (or a `CfC` layer's cell)."""
        cell = getattr(cell, "rnn_cell", getattr(cell, "cell", cell))
        weights = {w.path.split("/", 1)[-1] if "/" in w.path else w.path: np.asarray(w)
                   for w in cell.weights}

        def find(*names: str) -> np.ndarray:
            for key, value in weights.items():
                if all(n in key for n in names):
                    return value
            raise KeyError(f"no ncps weight matching {names} among {sorted(weights)}")

        for i, layer in enumerate(self.backbone):
            layer.kernel[...] = jnp.asarray(find(f"backbone{i}", "kernel"))
            layer.bias[...] = jnp.asarray(find(f"backbone{i}", "bias"))
        self.ff1.kernel[...], self.ff1.bias[...] = find("ff1_weight"), find("ff1_bias")
        if self.mode == "pure":
            self.w_tau[...], self.A[...] = find("w_tau"), find("/A") if any(
                k.endswith("/A") for k in weights) else find("A")
            return self
        self.ff2.kernel[...], self.ff2.bias[...] = find("ff2_weight"), find("ff2_bias")
        for name in ("time_a", "time_b"):
            dense = getattr(self, name)
            dense.kernel[...], dense.bias[...] = find(name, "kernel"), find(name, "bias")
        return self


def run_cell(cell: nnx.Module, xs: jax.Array, dts: Any = None,
             h0: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Unrolled loop over time (batch-major xs (B, T, F)): -> (outputs (B, T, U), last h).

    A Python loop so calibration observers may update; wrap in `nnx.jit` for speed.
    """
    h = cell.initial_state(xs.shape[0]) if h0 is None else h0
    outs = []
    for step in range(xs.shape[1]):
        dt = 1.0 if dts is None else dts[:, step]
        y, h = cell(xs[:, step], h, dt)
        outs.append(y)
    return jnp.stack(outs, axis=1), h
