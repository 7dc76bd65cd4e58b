"""Flax NNX liquid cells, numerically equal to the Keras layers of `ncc.models.keras`.

`CfCCell` (closed-form continuous-time, the ncps.keras maths, dense or wired) and
`LTCCell` (liquid time-constant, semi-implicit ODE solve) share the framework-neutral
wirings of `ncc.models.wirings`. Step: `cell(x, h, dt=1.0) -> (y, h')`, x (B, input_dim),
h (B, units), y (B, output_dim), dt a scalar, (B,) or (B, 1).

With a QuantConfig the cells carry observed fake-quant points (`ncc.models.nnx.fake_quant`):
`set_mode(cell, "calibrate")`, run data, `freeze(cell, weights=True)`. A frozen int8 CfC
cell (modes "default" and "no_gate", tables on) then computes the deployed integer
arithmetic itself, bit for bit (`CfCCell.exact`), so what training sees is what ncc
compiles. Backbone dropout is not modelled (inference semantics).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ncc.models import wirings
from ncc.models.nnx.fake_quant import (
    FakeQuant,
    QuantDense,
    table_or_float,
    table_out_params,
)
from ncc.models.quantization import (
    QuantConfig,
    QuantParams,
    fake_quant_binary,
    fake_quant_dense,
    fake_quant_table,
)

__all__ = ["CfCCell", "LTCCell", "run_cell"]

_TABLES = ("lecun_tanh", "tanh", "sigmoid")
Grid = QuantParams | None  # the grid a value lies on (exact path), None otherwise


def _freeze_matrix(m: np.ndarray) -> tuple[tuple[float, ...], ...]:
    """A static (hashable) copy of a 0/1 mask for an nnx attribute."""
    return tuple(map(tuple, np.asarray(m, np.float32).tolist()))


def _config_of(quantization: QuantConfig | dict | None) -> QuantConfig | None:
    if isinstance(quantization, dict):
        return QuantConfig.from_dict(quantization)
    return quantization


def _backbone_widths(backbone_units: int | Sequence[int], backbone_layers: int) -> list[int]:
    if isinstance(backbone_units, (list, tuple)):
        if backbone_layers not in (0, len(backbone_units)):
            raise ValueError(f"backbone_layers ({backbone_layers}) must equal "
                             f"len(backbone_units) ({len(backbone_units)})")
        return [int(w) for w in backbone_units]
    return [int(backbone_units)] * int(backbone_layers)


class CfCCell(nnx.Module):
    """CfC cell over a wiring, `ncc.models.keras.CfCCell` (and ncps.keras) weight layout.

    One sub-cell per wiring layer i (one for FullyConnected / Random, inter -> command ->
    motor for NCP), u_0 = x, u_{i+1} = h_i':
    ```
    z = [u_i, h_i]          ff1 = z (W1 * M_i) + b1      ff2 = z (W2 * M_i) + b2
    g = sigmoid(time_b(z) - time_a(z) dt)                M_i: the wiring's 0/1 synapses
    default: h_i' = ff1 (1 - g) + g ff2   no_gate: h_i' = ff1 + g ff2
    pure:    h_i' = A - A exp(-dt (|w_tau| + |ff1|)) ff1
    y = h_last'[:, :output_dim]       h' = [h_0', h_1', ...]   (state ordered by layer)
    ```
    A backbone (dense layers with `activation`) maps z on a dense wiring (ncps); on a
    sparse wiring it maps [x, h] (B, input_dim + units) to S = backbone_units[-1] features
    that are the wiring's sensory inputs (u_0 = backbone([x, h]); the wiring is built with
    input_dim = S), as `ncc.models.keras.CfCCell` documents. Not yet with quantization.

    Args:
        input_dim: features per step.
        units: an int (FullyConnected(units)), a `ncc.models.wirings.Wiring` or its
            serialized dict.
        mode: "default" | "pure" | "no_gate".
        activation: backbone activation ("lecun_tanh", "tanh", "sigmoid" or "relu").
        backbone_units, backbone_layers: the backbone (an int width per layer, or a list);
            backbone_layers None = 1 layer for a dense wiring (ncps default), else 0.
        fully_recurrent: each sub-cell sees all of its own layer's neurons (ncps default).
        quantization: a QuantConfig (or its dict) to enable fake-quant (None = float only).
    """

    def __init__(self, input_dim: int, units: Any, *, mode: str = "default",
                 activation: str = "lecun_tanh", backbone_units: int | Sequence[int] = 128,
                 backbone_layers: int | None = None, fully_recurrent: bool = True,
                 quantization: QuantConfig | dict | None = None, rngs: nnx.Rngs) -> None:
        if mode not in ("default", "pure", "no_gate"):
            raise ValueError(f"unknown mode {mode!r}; valid: default, pure, no_gate")
        if activation not in (*_TABLES, "relu"):
            raise ValueError(f"unsupported backbone activation {activation!r}")
        wiring = wirings.as_wiring(units)
        dense_wiring = isinstance(wiring, wirings.FullyConnected) and (
            fully_recurrent or wiring.self_connections)
        if backbone_layers is None:
            backbone_layers = 1 if dense_wiring else 0
        widths = _backbone_widths(backbone_units, backbone_layers)
        # on a sparse wiring the backbone maps [x, h] to the wiring's sensory inputs
        self.wired_backbone = bool(widths) and not dense_wiring
        if self.wired_backbone and quantization is not None:
            raise ValueError("quantization (QAT) of a backbone on a sparse wiring is not "
                             "supported yet: train it in float and compile with calibration "
                             "(post-training quantization)")
        wiring.build(widths[-1] if self.wired_backbone else int(input_dim))
        self.input_dim, self.mode, self.activation = int(input_dim), mode, activation
        self.units, self.output_size = wiring.units, int(wiring.output_dim)
        self.wiring_spec = _freeze_spec(wirings.serialize(wiring))
        self.fully_recurrent = bool(fully_recurrent)
        self.backbone_units = tuple(widths)
        quantization = _config_of(quantization)
        self.config = quantization if quantization is not None else QuantConfig()
        on = quantization is not None
        cfg = self.config
        dense = {"bits": cfg.weight_bits, "per_channel": cfg.per_channel,
                 "enabled": on and cfg.quantizes("weights")}

        def point(part: str, bits: int) -> FakeQuant:
            fq = FakeQuant.for_part(cfg, part, bits)
            fq.enabled = on and fq.enabled
            return fq

        def points(*modes: str) -> nnx.List:  # one per wiring layer, if `mode` uses them
            used = mode in modes
            return nnx.List([point("activations", cfg.activation_bits)
                             for _ in self.layer_sizes if used])

        self.layer_sizes = tuple(len(wiring.get_neurons_of_layer(i))
                                 for i in range(wiring.num_layers))
        masks = _layer_masks(wiring, self.fully_recurrent)
        width = self.input_dim + (self.units if self.wired_backbone else self.layer_sizes[0])
        self.backbone = nnx.List()
        self.q_backbone = nnx.List()
        for w in widths:
            self.backbone.append(QuantDense(width, w, rngs=rngs, **dense))
            self.q_backbone.append(point("activations", cfg.activation_bits))
            width = w
        self.ff1, self.ff2, self.time_a, self.time_b = (nnx.List() for _ in range(4))
        self.w_tau, self.A = nnx.List(), nnx.List()
        in_width = widths[-1] if self.wired_backbone else self.input_dim
        for i, n in enumerate(self.layer_sizes):
            width = widths[-1] if widths and not self.wired_backbone else in_width + n
            self.ff1.append(QuantDense(width, n, mask=masks[i], rngs=rngs, **dense))
            if mode == "pure":
                self.w_tau.append(nnx.Param(jnp.zeros((1, n))))
                self.A.append(nnx.Param(jnp.ones((1, n))))
            else:
                self.ff2.append(QuantDense(width, n, mask=masks[i], rngs=rngs, **dense))
                self.time_a.append(QuantDense(width, n, rngs=rngs, **dense))
                self.time_b.append(QuantDense(width, n, rngs=rngs, **dense))
            in_width = n
        # One grid for x, the state and every concatenation of them: the integer IR
        # needs concatenated tensors (and state in / out) on one grid.
        self.q_state = point("state", cfg.state_bits)
        self.q_dt = point("inputs", cfg.activation_bits)
        every, gated = ("default", "no_gate", "pure"), ("default", "no_gate")
        self.q_ff1, self.q_ff2 = points(*every), points(*gated)
        self.q_time_a, self.q_time_b = points(*gated), points(*gated)
        self.q_time_a_dt, self.q_gate_in = points(*gated), points(*gated)  # t_a dt; sigmoid in
        self.q_one_minus_gate = points("default")  # 1 - g
        self.q_mix = points(*gated)  # both products
        self.nonlinear_tables = on and cfg.quantizes("nonlinearities")

    # --- configuration ---------------------------------------------------------------------

    @property
    def wiring(self) -> wirings.Wiring:
        """The wiring (rebuilt from its exact matrices)."""
        return wirings.deserialize(_thaw_spec(self.wiring_spec))

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (for `ncc.models.save_checkpoint`)."""
        return {"input_dim": self.input_dim, "units": _thaw_spec(self.wiring_spec),
                "mode": self.mode, "activation": self.activation,
                "backbone_units": list(self.backbone_units),
                "backbone_layers": len(self.backbone_units),
                "fully_recurrent": self.fully_recurrent,
                "quantization": self.config.to_dict() if self._quantized() else None}

    def _quantized(self) -> bool:
        return any(p.enabled for _, p in nnx.iter_modules(self)
                   if isinstance(p, FakeQuant | QuantDense))

    def initial_state(self, batch_size: int) -> jax.Array:
        return jnp.zeros((batch_size, self.units))

    def exact(self) -> bool:
        """True when the forward is the deployed integer arithmetic, bit for bit: every
        point and weight frozen and in "quant" mode, int8 grids, tables on, not "pure"."""
        modules = [m for _, m in nnx.iter_modules(self) if isinstance(m, FakeQuant | QuantDense)]
        return (self.mode != "pure" and self.nonlinear_tables and all(
            m.enabled and m.mode == "quant" and m.params is not None
            and (isinstance(m, QuantDense) or m.bits == 8) for m in modules))

    # --- the step ---------------------------------------------------------------------------

    def __call__(self, x: jax.Array, h: jax.Array, dt: Any = 1.0) -> tuple[jax.Array, jax.Array]:
        exact = self.exact()
        t = jnp.reshape(jnp.asarray(dt, jnp.float32), (-1, 1))
        u, p_u = x, None
        if self.wired_backbone:  # f = backbone([x, h]): the wiring's sensory inputs
            u, p_u = self._backbone(jnp.concatenate([x, h], -1), None, exact)
        new_states, start = [], 0
        for i, n in enumerate(self.layer_sizes):
            z, p_z = _point(self.q_state, jnp.concatenate([u, h[:, start:start + n]], -1),
                            exact)
            start += n
            if not self.wired_backbone:
                z, p_z = self._backbone(z, p_z, exact)
            u, p_u = self._subcell(i, z, p_z, t, exact)
            new_states.append(u)
        del p_u  # on the state grid
        y = u[:, :self.output_size] if self.output_size < self.layer_sizes[-1] else u
        state = new_states[0] if len(new_states) == 1 else jnp.concatenate(new_states, -1)
        return y, state

    def _backbone(self, z: jax.Array, p_z: Grid, exact: bool) -> tuple[jax.Array, Grid]:
        """The backbone's dense layers (each onto its point's grid, then `activation`)."""
        for layer, point in zip(self.backbone, self.q_backbone, strict=True):
            pre, p_pre = _dense(layer, z, p_z, point, exact)
            z, p_z = self._activate(pre, p_pre, self.activation, point, exact)
        return z, p_z

    def _subcell(self, i: int, z: jax.Array, p_z: Grid, t: jax.Array,
                 exact: bool) -> tuple[jax.Array, Grid]:
        """One wiring layer: z (B, width) -> h_i' (B, n_i) on the state grid."""
        ff1, p1 = _dense(self.ff1[i], z, p_z, self.q_ff1[i], exact)
        if self.mode == "pure":
            A = self.A[i][...]
            new = -A * jnp.exp(-t * (jnp.abs(self.w_tau[i][...]) + jnp.abs(ff1))) * ff1 + A
            return _point(self.q_state, new, exact)
        ff2, p2 = _dense(self.ff2[i], z, p_z, self.q_ff2[i], exact)
        ta, p_ta = _dense(self.time_a[i], z, p_z, self.q_time_a[i], exact)
        tb, p_tb = _dense(self.time_b[i], z, p_z, self.q_time_b[i], exact)
        dt, p_dt = _point(self.q_dt, jnp.broadcast_to(t, ta.shape), exact)
        ta_dt, p_ta_dt = _binary("mul", ta, p_ta, dt, p_dt, self.q_time_a_dt[i], exact)
        pre, p_pre = _binary("sub", tb, p_tb, ta_dt, p_ta_dt, self.q_gate_in[i], exact)
        gate, p_g = self._activate(pre, p_pre, "sigmoid", self.q_gate_in[i], exact)
        if self.mode == "no_gate":
            mix, p_mix = _binary("mul", gate, p_g, ff2, p2, self.q_mix[i], exact)
            return _binary("add", ff1, p1, mix, p_mix, self.q_state, exact)
        keep, p_keep = _point(self.q_one_minus_gate[i], 1.0 - gate, exact)
        old, p_old = _binary("mul", ff1, p1, keep, p_keep, self.q_mix[i], exact)
        mix, p_mix = _binary("mul", gate, p_g, ff2, p2, self.q_mix[i], exact)
        return _binary("add", old, p_old, mix, p_mix, self.q_state, exact)

    def _activate(self, x: jax.Array, p_x: Grid, fn: str, point: FakeQuant,
                  exact: bool) -> tuple[jax.Array, Grid]:
        """fn(x); `point` is x's fake-quant (a table's input grid when tables are on)."""
        if fn == "relu":
            y = jax.nn.relu(point(x))
            return (point(y), p_x) if exact else (y, None)
        if exact:
            p_out = table_out_params(fn, p_x)
            return fake_quant_table(x, fn, p_x, p_out), p_out
        if self.nonlinear_tables:
            return table_or_float(x, fn, point), None
        from ncc.models.quantization import JAX_TABLE_FUNCTIONS

        return JAX_TABLE_FUNCTIONS[fn](point(x)), None

    # --- weights from Keras -----------------------------------------------------------------

    def load_keras(self, layer: Any) -> CfCCell:
        """Copy the weights of a built `ncc.models.keras` CfC layer or CfCCell (same wiring,
        mode and backbone)."""
        cell = getattr(layer, "cell", layer)
        if tuple(cell.layer_sizes) != self.layer_sizes or cell.mode != self.mode:
            raise ValueError(f"Keras cell (layers {cell.layer_sizes}, mode {cell.mode}) does "
                             f"not match this cell (layers {self.layer_sizes}, {self.mode})")
        for ours, theirs in zip(self.backbone, cell.backbone, strict=True):
            _set(ours, theirs.kernel, theirs.bias)
        for i in range(len(self.layer_sizes)):
            _set(self.ff1[i], cell.ff1_kernel[i], cell.ff1_bias[i])
            if self.mode == "pure":
                self.w_tau[i][...] = jnp.asarray(np.asarray(cell.w_tau[i]))
                self.A[i][...] = jnp.asarray(np.asarray(cell.A[i]))
                continue
            _set(self.ff2[i], cell.ff2_kernel[i], cell.ff2_bias[i])
            _set(self.time_a[i], cell.time_a[i].kernel, cell.time_a[i].bias)
            _set(self.time_b[i], cell.time_b[i].kernel, cell.time_b[i].bias)
        return self

    @classmethod
    def from_keras(cls, layer: Any, *, quantization: QuantConfig | None = None) -> CfCCell:
        """An NNX cell with the configuration and weights of a built Keras CfC / CfCCell."""
        cell = getattr(layer, "cell", layer)
        act = getattr(cell.activation, "__name__", cell.activation)
        features = getattr(cell, "step_features", None) or cell.wiring.input_dim
        return cls(features, cell.wiring, mode=cell.mode, activation=act,
                   backbone_units=list(cell.backbone_units),
                   backbone_layers=len(cell.backbone_units),
                   fully_recurrent=cell.fully_recurrent, quantization=quantization,
                   rngs=nnx.Rngs(0)).load_keras(cell)

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
            _set(layer, find(f"backbone{i}", "kernel"), find(f"backbone{i}", "bias"))
        _set(self.ff1[0], find("ff1_weight"), find("ff1_bias"))
        if self.mode == "pure":
            self.w_tau[0][...] = find("w_tau")
            self.A[0][...] = find("/A") if any(k.endswith("/A") for k in weights) else find("A")
            return self
        _set(self.ff2[0], find("ff2_weight"), find("ff2_bias"))
        for name in ("time_a", "time_b"):
            _set(getattr(self, name)[0], find(name, "kernel"), find(name, "bias"))
        return self


# --- LTC ---------------------------------------------------------------------------------------

LTC_INIT_RANGES = {
    "gleak": (0.001, 1.0), "vleak": (-0.2, 0.2), "cm": (0.4, 0.6),
    "w": (0.001, 1.0), "sigma": (3.0, 8.0), "mu": (0.3, 0.8),
    "sensory_w": (0.001, 1.0), "sensory_sigma": (3.0, 8.0), "sensory_mu": (0.3, 0.8),
}
"""Uniform initialization ranges, as `ncc.models.keras.ltc.INIT_RANGES` (and ncps)."""
LTC_POSITIVE = ("gleak", "cm", "w", "sensory_w")
"""Conductances and capacitance: kept >= 0 (Keras: a NonNeg constraint)."""
_LTC_POINTS = ("x", "x_w", "x_mapped", "dt", "dt_k", "cm_t_inv", "cm_t", "s_diff", "s_arg",
               "s_syn", "s_act", "s_act_erev", "num_sensory", "den_sensory", "diff", "arg",
               "syn", "act", "act_erev", "sum_act_erev", "sum_act", "cm_v", "num_leak",
               "num_syn", "num", "den_leak", "den_syn", "den", "den_inv", "y_w", "y")
"""LTC fake-quant points (one grid per intermediate, shared by the ODE unfolds)."""


class LTCCell(nnx.Module):
    """LTC cell (Hasani et al. 2021) over a wiring, `ncc.models.keras.LTCCell` maths/layout.

    ```
    x' = backbone(x) * input_w + input_b                 (input_mapping affine | linear | None)
    s  = sensory_w sigmoid(sensory_sigma (x' - sensory_mu)) * |sensory adjacency|  (B, F, n)
    ode_unfolds x:  a = w sigmoid(sigma (v - mu)) * |adjacency|                  (B, n, n)
        v <- (cm_t v + gleak vleak + sum_src a erev + sum s sensory_erev)
             / (cm_t + gleak + sum_src a + sum s + epsilon),   cm_t = cm / (dt / ode_unfolds)
    y = v[:, :output_dim] * output_w + output_b          (output_mapping)
    ```
    gleak, cm, w and sensory_w are used as max(., 0) (Keras keeps them >= 0 with a NonNeg
    constraint after each update: call `constrain()` after an optimizer step for the same).

    Args:
        input_dim: features per step. units: an int (FullyConnected), a Wiring or its dict.
        activation, backbone_units, backbone_layers: optional dense layers on x (default
            none; activation "tanh", "lecun_tanh", "sigmoid" or "relu").
        input_mapping, output_mapping: "affine", "linear" or None.
        ode_unfolds: solver steps per time step (>= 1). epsilon: added to the denominator.
        initialization_ranges: {name: (low, high)} overrides of `LTC_INIT_RANGES`.
        quantization: a QuantConfig (or its dict) for fake-quant points (None = float).
    """

    def __init__(self, input_dim: int, units: Any, *, activation: str = "tanh",
                 backbone_units: int | Sequence[int] = 128, backbone_layers: int = 0,
                 input_mapping: str | None = "affine", output_mapping: str | None = "affine",
                 ode_unfolds: int = 6, epsilon: float = 1e-8,
                 initialization_ranges: dict[str, Any] | None = None,
                 quantization: QuantConfig | dict | None = None, rngs: nnx.Rngs) -> None:
        for name, value in (("input_mapping", input_mapping), ("output_mapping", output_mapping)):
            if value not in ("affine", "linear", None):
                raise ValueError(f"{name} must be 'affine', 'linear' or None, got {value!r}")
        if isinstance(ode_unfolds, bool) or not isinstance(ode_unfolds, int) or ode_unfolds < 1:
            raise ValueError(f"ode_unfolds must be an integer >= 1, got {ode_unfolds!r}")
        if activation not in (*_TABLES, "relu"):
            raise ValueError(f"unsupported backbone activation {activation!r}")
        ranges = {**LTC_INIT_RANGES, **{k: tuple(map(float, v)) for k, v in
                                        (initialization_ranges or {}).items()}}
        unknown = set(ranges) - set(LTC_INIT_RANGES)
        if unknown:
            raise ValueError(f"initialization_ranges: unknown parameters {sorted(unknown)}")
        widths = _backbone_widths(backbone_units, backbone_layers)
        self.input_dim, self.activation = int(input_dim), activation
        self.backbone_units = tuple(widths)
        self.input_mapping, self.output_mapping = input_mapping, output_mapping
        self.ode_unfolds, self.epsilon = ode_unfolds, float(epsilon)
        self.initialization_ranges = _freeze_spec(initialization_ranges or {})
        quantization = _config_of(quantization)
        self.config = quantization if quantization is not None else QuantConfig()
        on, cfg = quantization is not None, self.config
        dense = {"bits": cfg.weight_bits, "per_channel": cfg.per_channel,
                 "enabled": on and cfg.quantizes("weights")}
        self.backbone, self.q_backbone = nnx.List(), nnx.List()
        width = self.input_dim
        for w in widths:
            self.backbone.append(QuantDense(width, w, rngs=rngs, **dense))
            self.q_backbone.append(self._point(cfg, on, "activations"))
            width = w
        wiring = wirings.as_wiring(units)
        wiring.build(width)
        self.wiring_spec = _freeze_spec(wirings.serialize(wiring))
        n, m = wiring.units, int(wiring.output_dim)
        self.units, self.output_size, self.sensory_size = n, m, width
        self.sensory_mask = _freeze_matrix(np.abs(wiring.sensory_adjacency_matrix))
        self.mask = _freeze_matrix(np.abs(wiring.adjacency_matrix))

        def uniform(name: str, shape: tuple[int, ...]) -> nnx.Param:
            low, high = ranges[name]
            return nnx.Param(jax.random.uniform(rngs.params(), shape, jnp.float32, low, high))

        self.gleak, self.vleak, self.cm = (uniform(k, (n,)) for k in ("gleak", "vleak", "cm"))
        self.sigma, self.mu, self.w = (uniform(k, (n, n)) for k in ("sigma", "mu", "w"))
        self.erev = nnx.Param(jnp.asarray(wiring.erev_initializer()))
        self.sensory_sigma, self.sensory_mu, self.sensory_w = (
            uniform(k, (width, n)) for k in ("sensory_sigma", "sensory_mu", "sensory_w"))
        self.sensory_erev = nnx.Param(jnp.asarray(wiring.sensory_erev_initializer()))
        if input_mapping in ("affine", "linear"):
            self.input_w = nnx.Param(jnp.ones((width,)))
        if input_mapping == "affine":
            self.input_b = nnx.Param(jnp.zeros((width,)))
        if output_mapping in ("affine", "linear"):
            self.output_w = nnx.Param(jnp.ones((m,)))
        if output_mapping == "affine":
            self.output_b = nnx.Param(jnp.zeros((m,)))
        self.q_state = self._point(cfg, on, "state")
        for name in _LTC_POINTS:
            setattr(self, f"q_{name}", self._point(cfg, on, "inputs" if name in ("x", "dt")
                                                   else "activations"))
        self.nonlinear_tables = on and cfg.quantizes("nonlinearities")

    @staticmethod
    def _point(cfg: QuantConfig, on: bool, part: str) -> FakeQuant:
        bits = cfg.state_bits if part == "state" else cfg.activation_bits
        fq = FakeQuant.for_part(cfg, part, bits)
        fq.enabled = on and fq.enabled
        return fq

    @property
    def wiring(self) -> wirings.Wiring:
        return wirings.deserialize(_thaw_spec(self.wiring_spec))

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (for `ncc.models.save_checkpoint`)."""
        quantized = any(p.enabled for _, p in nnx.iter_modules(self)
                        if isinstance(p, FakeQuant | QuantDense))
        return {"input_dim": self.input_dim, "units": _thaw_spec(self.wiring_spec),
                "activation": self.activation, "backbone_units": list(self.backbone_units),
                "backbone_layers": len(self.backbone_units),
                "input_mapping": self.input_mapping, "output_mapping": self.output_mapping,
                "ode_unfolds": self.ode_unfolds, "epsilon": self.epsilon,
                "initialization_ranges": _thaw_spec(self.initialization_ranges) or None,
                "quantization": self.config.to_dict() if quantized else None}

    def initial_state(self, batch_size: int) -> jax.Array:
        return jnp.zeros((batch_size, self.units))

    def constrain(self) -> None:
        """Project gleak, cm, w, sensory_w onto >= 0 (Keras' NonNeg, after an update)."""
        for name in LTC_POSITIVE:
            param = getattr(self, name)
            param[...] = jnp.maximum(param[...], 0.0)

    def _positive(self, name: str) -> jax.Array:
        return jnp.maximum(getattr(self, name)[...], 0.0)

    def _sigmoid(self, x: jax.Array, point_in: FakeQuant, point_out: FakeQuant) -> jax.Array:
        if self.nonlinear_tables:  # the table's output grid follows from its input's
            return table_or_float(x, "sigmoid", point_in)
        return point_out(jax.nn.sigmoid(point_in(x)))

    def _divide(self, a: jax.Array, b: jax.Array, inv: FakeQuant,
                out: FakeQuant) -> jax.Array:
        """a / b; quantized as a * (1 / b) with a grid for the reciprocal (the integer form)."""
        if inv.mode == "quant" and inv.enabled:
            return out(a * inv(1.0 / b))
        inv(1.0 / b)  # calibrate: observe the reciprocal's range
        return out(a / b)

    def __call__(self, x: jax.Array, v: jax.Array, dt: Any = 1.0) -> tuple[jax.Array, jax.Array]:
        t = jnp.reshape(jnp.asarray(dt, jnp.float32), (-1, 1))
        x = self.q_x(x)
        for layer, point in zip(self.backbone, self.q_backbone, strict=True):
            x = self._activate(layer(x), point)
        if self.input_mapping in ("affine", "linear"):
            x = self.q_x_w(x * self.input_w[...])
        if self.input_mapping == "affine":
            x = self.q_x_mapped(x + self.input_b[...])
        sensory_mask = jnp.asarray(self.sensory_mask)
        mask = jnp.asarray(self.mask)
        syn = self._sigmoid(self.q_s_arg(self.sensory_sigma[...] * self.q_s_diff(
            x[:, :, None] - self.sensory_mu[...])), self.q_s_arg, self.q_s_syn)
        s_act = self.q_s_act(self._positive("sensory_w") * sensory_mask * syn)
        num_sensory = self.q_num_sensory(jnp.sum(
            self.q_s_act_erev(s_act * self.sensory_erev[...]), axis=1))
        den_sensory = self.q_den_sensory(jnp.sum(s_act, axis=1))
        t = self.q_dt(jnp.broadcast_to(t, v.shape))
        cm_t = self._divide(self._positive("cm"), self.q_dt_k(t / self.ode_unfolds),
                            self.q_cm_t_inv, self.q_cm_t)
        gleak = self._positive("gleak")
        w = self._positive("w") * mask
        for _ in range(self.ode_unfolds):  # unrolled: a fixed number of solver steps
            syn = self._sigmoid(self.q_arg(self.sigma[...] * self.q_diff(
                v[:, :, None] - self.mu[...])), self.q_arg, self.q_syn)
            act = self.q_act(w * syn)
            numerator = self.q_num(self.q_num_syn(
                self.q_num_leak(self.q_cm_v(cm_t * v) + gleak * self.vleak[...])
                + self.q_sum_act_erev(jnp.sum(self.q_act_erev(act * self.erev[...]), axis=1)))
                + num_sensory)
            denominator = self.q_den(self.q_den_syn(self.q_den_leak(cm_t + gleak)
                                                    + self.q_sum_act(jnp.sum(act, axis=1)))
                                     + den_sensory)
            v = self._divide(numerator, denominator + self.epsilon, self.q_den_inv,
                             self.q_state)
        y = v[:, :self.output_size] if self.output_size < self.units else v
        if self.output_mapping in ("affine", "linear"):
            y = self.q_y_w(y * self.output_w[...])
        if self.output_mapping == "affine":
            y = self.q_y(y + self.output_b[...])
        return y, v

    def _activate(self, x: jax.Array, point: FakeQuant) -> jax.Array:
        if self.activation == "relu":
            return jax.nn.relu(point(x))
        if self.nonlinear_tables:
            return table_or_float(x, self.activation, point)
        from ncc.models.quantization import JAX_TABLE_FUNCTIONS

        return JAX_TABLE_FUNCTIONS[self.activation](point(x))

    # --- weights from Keras -----------------------------------------------------------------

    def load_keras(self, layer: Any) -> LTCCell:
        """Copy the weights of a built `ncc.models.keras` LTC layer or LTCCell (same wiring,
        mappings and backbone)."""
        cell = getattr(layer, "cell", layer)
        for ours, theirs in zip(self.backbone, cell.backbone, strict=True):
            _set(ours, theirs.kernel, theirs.bias)
        for name, value in cell.params.items():
            param = getattr(self, name, None)
            if param is None or tuple(param[...].shape) != tuple(value.shape):
                raise ValueError(f"Keras LTC weight {name} {tuple(value.shape)} has no match "
                                 "in this cell: build both with the same wiring and mappings")
            param[...] = jnp.asarray(np.asarray(value))
        return self

    @classmethod
    def from_keras(cls, layer: Any, *, quantization: QuantConfig | None = None) -> LTCCell:
        """An NNX cell with the configuration and weights of a built Keras LTC / LTCCell."""
        cell = getattr(layer, "cell", layer)
        act = getattr(cell.activation, "__name__", cell.activation)
        input_dim = cell.backbone[0].kernel.shape[0] if cell.backbone else \
            cell.wiring.input_dim
        return cls(input_dim, cell.wiring, activation=act,
                   backbone_units=list(cell.backbone_units),
                   backbone_layers=len(cell.backbone_units),
                   input_mapping=cell.input_mapping, output_mapping=cell.output_mapping,
                   ode_unfolds=cell.ode_unfolds, epsilon=cell.epsilon,
                   quantization=quantization, rngs=nnx.Rngs(0)).load_keras(cell)


# --- helpers shared by the cells ---------------------------------------------------------------


def _point(point: FakeQuant, x: jax.Array, exact: bool) -> tuple[jax.Array, Grid]:
    """x through an observed fake-quant point; the grid it lands on when exact."""
    return point(x), (point.params if exact else None)


def _dense(layer: QuantDense, z: jax.Array, p_z: Grid, point: FakeQuant,
           exact: bool) -> tuple[jax.Array, Grid]:
    """layer(z) onto `point`'s grid: the int8 fully-connected kernel when exact."""
    if exact:
        return fake_quant_dense(z, layer.masked_kernel(), layer.bias[...], p_z, layer.params,
                                point.params), point.params
    return point(layer(z)), None


def _binary(kind: str, a: jax.Array, p_a: Grid, b: jax.Array, p_b: Grid, point: FakeQuant,
            exact: bool) -> tuple[jax.Array, Grid]:
    """a (add | sub | mul) b onto `point`'s grid: the int8 kernel when exact."""
    if exact:
        return fake_quant_binary(kind, a, b, p_a, p_b, point.params), point.params
    return point({"add": jnp.add, "sub": jnp.subtract, "mul": jnp.multiply}[kind](a, b)), None


def _set(layer: QuantDense, kernel: Any, bias: Any) -> None:
    layer.kernel[...] = jnp.asarray(np.asarray(kernel))
    layer.bias[...] = jnp.asarray(np.asarray(bias))


def _layer_masks(wiring: wirings.Wiring, fully_recurrent: bool) -> list[Any]:
    """Per CfC sub-cell (in_i + n_i, n_i) 0/1 masks (None where every synapse exists),
    as `ncc.models.keras.CfCCell._layer_masks`."""
    sensory = np.abs(wiring.sensory_adjacency_matrix).astype(np.float32)
    internal = np.abs(wiring.adjacency_matrix).astype(np.float32)
    masks = []
    for i in range(wiring.num_layers):
        ids = wiring.get_neurons_of_layer(i)
        feed = sensory[:, ids] if i == 0 else internal[np.ix_(
            wiring.get_neurons_of_layer(i - 1), ids)]
        rec = np.ones((len(ids), len(ids)), np.float32) if fully_recurrent \
            else internal[np.ix_(ids, ids)]
        mask = np.concatenate([feed, rec], axis=0)
        masks.append(None if mask.all() else mask)
    return masks


def _freeze_spec(obj: Any) -> Any:
    """JSON-like data -> nested tuples (hashable: nnx keeps it as a static attribute)."""
    if isinstance(obj, dict):
        return ("__dict__", tuple((k, _freeze_spec(v)) for k, v in sorted(obj.items())))
    if isinstance(obj, (list, tuple)):
        return tuple(_freeze_spec(v) for v in obj)
    return obj


def _thaw_spec(obj: Any) -> Any:
    if isinstance(obj, tuple) and len(obj) == 2 and obj[0] == "__dict__":
        return {k: _thaw_spec(v) for k, v in obj[1]}
    if isinstance(obj, tuple):
        return [_thaw_spec(v) for v in obj]
    return obj


def run_cell(cell: nnx.Module, xs: jax.Array, dts: Any = None,
             h0: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Unrolled loop over time (batch-major xs (B, T, F)): -> (outputs (B, T, out), last h).

    A Python loop so calibration observers may update; wrap in `nnx.jit` for speed.
    """
    h = cell.initial_state(xs.shape[0]) if h0 is None else h0
    outs = []
    for step in range(xs.shape[1]):
        dt = 1.0 if dts is None else dts[:, step]
        y, h = cell(xs[:, step], h, dt)
        outs.append(y)
    return jnp.stack(outs, axis=1), h
