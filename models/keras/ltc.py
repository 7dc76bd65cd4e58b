"""Liquid time-constant (LTC) cell and layer, the ncps.keras maths over ncc wirings."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from ncc.models import wirings
from ncc.models.keras.base import LiquidCell, LiquidRNN, step_input_dim
from ncc.models.keras.cfc import wiring_or_units
from ncc.models.keras.quant import (
    QuantPoint,
    WeightQuant,
    as_quant_config,
    deployable_activation,
    table_or_float,
)
from ncc.models.quantization import QuantConfig

MAPPINGS = ("affine", "linear", None)
INIT_RANGES = {
    "gleak": (0.001, 1.0), "vleak": (-0.2, 0.2), "cm": (0.4, 0.6),
    "w": (0.001, 1.0), "sigma": (3.0, 8.0), "mu": (0.3, 0.8),
    "sensory_w": (0.001, 1.0), "sensory_sigma": (3.0, 8.0), "sensory_mu": (0.3, 0.8),
}
POSITIVE = ("gleak", "cm", "w", "sensory_w")  # conductances and capacitance: kept >= 0
QUANT_POINTS = ("x", "x_w", "x_mapped", "dt", "dt_k", "cm_t_inv", "cm_t", "s_diff", "s_arg",
                "s_syn", "s_act", "s_act_erev", "num_sensory", "den_sensory", "diff", "arg",
                "syn", "act", "act_erev", "sum_act_erev", "sum_act", "cm_v", "num_leak",
                "num_syn", "num", "den_leak", "den_syn", "den", "den_inv", "y_w", "y")
"""Fake-quant points (`q_<name>`, one grid per intermediate, shared by the ODE unfolds),
as `ncc.models.nnx.LTCCell`."""


@keras.saving.register_keras_serializable(package="ncc")
class LTCCell(LiquidCell):
    """One LTC step (Hasani et al. 2021): a semi-implicit Euler ODE solve, ncps.keras maths.

    **Architecture**:
    ```
    x_t [batch, F]    dt_t [batch, 1] (default 1)    v [batch, units]
           ↓
    (optional) backbone on x_t → [batch, backbone_units[-1]]
           ↓
    input mapping: x·input_w (+ input_b)      (affine | linear | None)
           ↓
    sensory synapses (computed once):  s = sensory_w ⊙ sigmoid(sensory_sigma (x - sensory_mu))
                                        ⊙ |sensory adjacency|         [batch, F, units]
           ↓
    ┌──────────────────────────────────────────────────────────────────────────┐
    │ ode_unfolds × :  a = w ⊙ sigmoid(sigma (v - mu)) ⊙ |adjacency|           │
    │   v ← (cm/(dt/K) v + gleak vleak + Σ_src a erev + Σ s sensory_erev)      │
    │       / (cm/(dt/K) + gleak + Σ_src a + Σ s + epsilon)                    │
    └──────────────────────────────────────────────────────────────────────────┘
           ↓
    y_t = v[:, :output_dim]·output_w (+ output_b)   [batch, output_dim];  h_t = v
    ```
    gleak, cm, w, sensory_w carry `NonNeg` constraints (as ncps); erev starts at the
    wiring's signed adjacency.

    **One step**, as the compiler traces it:
    ```
    y, [v] = cell(x, [v], training=False)            # dt = 1
    y, [v] = cell((x, dt), [v], training=False)      # dt: (batch, 1) or (batch,)
    ```

    Args:
        wiring: ncc wiring, int (FullyConnected) or ncps wiring.
        activation: backbone activation (default "tanh"); the LTC synapses are sigmoids.
        backbone_units, backbone_layers, backbone_dropout: optional dense layers on x_t.
        input_mapping, output_mapping: "affine", "linear" or None.
        ode_unfolds: solver steps per time step, >= 1.
        epsilon: added to the denominator, >= 0.
        initialization_ranges: {name: (low, high)} overrides of `INIT_RANGES`.
        quantization: a `ncc.models.quantization.QuantConfig` (or its dict) adds a fake-quant
            point on every intermediate (`QUANT_POINTS`, those of `ncc.models.nnx.LTCCell`)
            and on the backbone's kernels; the sigmoids go through the deployed tables.
            The arithmetic between points stays float (divisions as a * (1 / b)), so a
            frozen LTC compiles with its own parameters but is not bit-exact.
    """

    def __init__(self, wiring: Any, activation: Any = "tanh", backbone_units: Any = None,
                 backbone_layers: int = 0, backbone_dropout: float = 0.0,
                 input_mapping: str | None = "affine", output_mapping: str | None = "affine",
                 ode_unfolds: int = 6, epsilon: float = 1e-8,
                 initialization_ranges: dict[str, Any] | None = None,
                 quantization: QuantConfig | dict | None = None, **kwargs: Any) -> None:
        super().__init__(wiring, activation, backbone_units, backbone_layers,
                         backbone_dropout, **kwargs)
        for name, value in (("input_mapping", input_mapping),
                            ("output_mapping", output_mapping)):
            if value not in MAPPINGS:
                raise ValueError(f"{name} must be one of {MAPPINGS}, got {value!r}")
        if isinstance(ode_unfolds, bool) or not isinstance(ode_unfolds, int) or ode_unfolds < 1:
            raise ValueError(f"ode_unfolds must be an integer >= 1, got {ode_unfolds!r}")
        if not isinstance(epsilon, (int, float)) or epsilon < 0:
            raise ValueError(f"epsilon must be >= 0, got {epsilon!r}")
        self.input_mapping = input_mapping
        self.output_mapping = output_mapping
        self.ode_unfolds = ode_unfolds
        self.epsilon = float(epsilon)
        self.initialization_ranges = _check_ranges(initialization_ranges or {})
        self.quantization = as_quant_config(quantization)
        if self.quantization is not None:
            self._create_quant_points(self.quantization)

    def _create_quant_points(self, cfg: QuantConfig) -> None:
        self.act_name = deployable_activation(self.activation, "LTC")
        self.tables = cfg.quantizes("nonlinearities")

        def point(name: str) -> QuantPoint:
            part = "state" if name == "state" else "inputs" if name in ("x", "dt") \
                else "activations"
            bits = cfg.state_bits if part == "state" else cfg.activation_bits
            return QuantPoint.for_part(cfg, part, bits, name=f"q_{name}")

        self.q_state = point("state")
        for name in QUANT_POINTS:
            setattr(self, f"q_{name}", point(name))
        self.q_backbone = [point(f"backbone{j}") for j in range(self.backbone_layers)]
        self.wq_backbone = [WeightQuant.for_config(cfg, w, name=f"wq_backbone{j}")
                            for j, w in enumerate(self.backbone_units)]

    def quant_points(self) -> list[QuantPoint]:
        """Every activation / state point (empty without quantization)."""
        if self.quantization is None:
            return []
        return [self.q_state, *(getattr(self, f"q_{n}") for n in QUANT_POINTS),
                *self.q_backbone]

    def quant_kernels(self) -> list[tuple[WeightQuant, Any]]:
        """(weight quantizer, current backbone kernel) pairs, for `freeze`."""
        if self.quantization is None:
            return []
        return [(wq, ops.convert_to_numpy(d.kernel))
                for wq, d in zip(self.wq_backbone, self.backbone, strict=True)]

    def _initializer(self, name: str) -> Any:
        low, high = {**INIT_RANGES, **self.initialization_ranges}[name]
        if low == high:
            return keras.initializers.Constant(low)
        return keras.initializers.RandomUniform(low, high)

    def build(self, input_shape: Any) -> None:
        width = self.build_backbone(step_input_dim(input_shape))
        self.wiring.build(width)
        self.sensory_mask, self.mask = self.sparsity_masks()
        n, s, m = self.state_size, width, self.output_size
        self.params: dict[str, Any] = {}

        def add(name: str, shape: tuple[int, ...], initializer: Any = None) -> None:
            self.params[name] = self.add_weight(
                name=name, shape=shape, initializer=initializer or self._initializer(name),
                constraint=keras.constraints.NonNeg() if name in POSITIVE else None)

        # Same names and order as ncps.keras.LTCCell, so get/set_weights line up.
        add("gleak", (n,))
        add("vleak", (n,))
        add("cm", (n,))
        add("sigma", (n, n))
        add("mu", (n, n))
        add("w", (n, n))
        add("erev", (n, n), self.wiring.erev_initializer)
        add("sensory_sigma", (s, n))
        add("sensory_mu", (s, n))
        add("sensory_w", (s, n))
        add("sensory_erev", (s, n), self.wiring.sensory_erev_initializer)
        if self.input_mapping in ("affine", "linear"):
            add("input_w", (s,), "ones")
        if self.input_mapping == "affine":
            add("input_b", (s,), "zeros")
        if self.output_mapping in ("affine", "linear"):
            add("output_w", (m,), "ones")
        if self.output_mapping == "affine":
            add("output_b", (m,), "zeros")
        if self.quantization is not None:
            for layer in (*self.quant_points(), *self.wq_backbone):
                layer.build(None)
        super().build(input_shape)

    @staticmethod
    def _synapse(v_pre: Any, mu: Any, sigma: Any) -> Any:
        """sigmoid(sigma (v_pre - mu)): (batch, src) x (src, dst) -> (batch, src, dst)."""
        return ops.sigmoid(sigma * (ops.expand_dims(v_pre, -1) - mu))

    def call(self, inputs: Any, states: Any, training: bool = False) -> tuple[Any, list[Any]]:
        x, dt = self.split_inputs(inputs)
        v = states[0] if isinstance(states, (list, tuple)) else states
        if self.quantization is not None:
            return self._call_quantized(x, dt, v)
        p = self.params
        x = self.apply_backbone(x, training=training)
        if self.input_mapping in ("affine", "linear"):
            x = x * p["input_w"]
        if self.input_mapping == "affine":
            x = x + p["input_b"]

        sensory_w = p["sensory_w"] * self._synapse(x, p["sensory_mu"], p["sensory_sigma"]) \
            * self.sensory_mask
        num_sensory = ops.sum(sensory_w * p["sensory_erev"], axis=1)
        den_sensory = ops.sum(sensory_w, axis=1)
        cm_t = p["cm"] / (dt / self.ode_unfolds)
        for _ in range(self.ode_unfolds):  # unrolled: a fixed number of solver steps
            w = p["w"] * self._synapse(v, p["mu"], p["sigma"]) * self.mask
            numerator = cm_t * v + p["gleak"] * p["vleak"] \
                + ops.sum(w * p["erev"], axis=1) + num_sensory
            denominator = cm_t + p["gleak"] + ops.sum(w, axis=1) + den_sensory
            v = numerator / (denominator + self.epsilon)

        y = v[:, :self.output_size] if self.output_size < self.state_size else v
        if self.output_mapping in ("affine", "linear"):
            y = y * p["output_w"]
        if self.output_mapping == "affine":
            y = y + p["output_b"]
        return y, [v]

    # --- the quantized step (`ncc.models.nnx.LTCCell.__call__`, in keras.ops) ---------------

    def _sigmoid(self, x: Any, point_in: QuantPoint, point_out: QuantPoint) -> Any:
        if self.tables:  # the table's output grid follows from its input's
            return table_or_float(x, "sigmoid", point_in, True)
        return point_out(ops.sigmoid(point_in(x)))

    @staticmethod
    def _divide(a: Any, b: Any, inv: QuantPoint, out: QuantPoint) -> Any:
        """a / b; quantized as a * (1 / b) with a grid for the reciprocal (the integer form)."""
        if inv.mode == "fake_quant" and inv.enabled:
            return out(a * inv(1.0 / b))
        inv(1.0 / b)  # observe the reciprocal's range
        return out(a / b)

    def _call_quantized(self, x: Any, dt: Any, v: Any) -> tuple[Any, list[Any]]:
        """x (B, F), dt 1.0 or (B, 1), v (B, units) -> (y (B, output_dim), [v' (B, units)])."""
        p = self.params
        x = self.q_x(x)
        for dense, wq, point in zip(self.backbone, self.wq_backbone, self.q_backbone,
                                    strict=True):
            pre = point(ops.matmul(x, wq.fake_quantize(dense.kernel)) + dense.bias)
            x = ops.relu(pre) if self.act_name == "relu" else \
                table_or_float(pre, self.act_name, point, self.tables)
        if self.input_mapping in ("affine", "linear"):
            x = self.q_x_w(x * p["input_w"])
        if self.input_mapping == "affine":
            x = self.q_x_mapped(x + p["input_b"])
        diff = self.q_s_diff(ops.expand_dims(x, -1) - p["sensory_mu"])
        syn = self._sigmoid(self.q_s_arg(p["sensory_sigma"] * diff), self.q_s_arg, self.q_s_syn)
        s_act = self.q_s_act(p["sensory_w"] * self.sensory_mask * syn)
        num_sensory = self.q_num_sensory(ops.sum(self.q_s_act_erev(s_act * p["sensory_erev"]),
                                                 axis=1))
        den_sensory = self.q_den_sensory(ops.sum(s_act, axis=1))
        t = ops.broadcast_to(ops.reshape(ops.cast(dt, v.dtype), (-1, 1)), ops.shape(v))
        t = self.q_dt(t)
        cm_t = self._divide(p["cm"], self.q_dt_k(t / self.ode_unfolds), self.q_cm_t_inv,
                            self.q_cm_t)
        w = p["w"] * self.mask
        for _ in range(self.ode_unfolds):  # unrolled: a fixed number of solver steps
            diff = self.q_diff(ops.expand_dims(v, -1) - p["mu"])
            syn = self._sigmoid(self.q_arg(p["sigma"] * diff), self.q_arg, self.q_syn)
            act = self.q_act(w * syn)
            numerator = self.q_num(self.q_num_syn(
                self.q_num_leak(self.q_cm_v(cm_t * v) + p["gleak"] * p["vleak"])
                + self.q_sum_act_erev(ops.sum(self.q_act_erev(act * p["erev"]), axis=1)))
                + num_sensory)
            denominator = self.q_den(self.q_den_syn(self.q_den_leak(cm_t + p["gleak"])
                                                    + self.q_sum_act(ops.sum(act, axis=1)))
                                     + den_sensory)
            v = self._divide(numerator, denominator + self.epsilon, self.q_den_inv,
                             self.q_state)
        y = v[:, :self.output_size] if self.output_size < self.state_size else v
        if self.output_mapping in ("affine", "linear"):
            y = self.q_y_w(y * p["output_w"])
        if self.output_mapping == "affine":
            y = self.q_y(y + p["output_b"])
        return y, [v]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({
            "input_mapping": self.input_mapping, "output_mapping": self.output_mapping,
            "ode_unfolds": self.ode_unfolds, "epsilon": self.epsilon,
            "initialization_ranges": {k: list(v) for k, v in
                                      self.initialization_ranges.items()} or None,
            "quantization": None if self.quantization is None else self.quantization.to_dict(),
        })
        return config


def _check_ranges(ranges: dict[str, Any]) -> dict[str, tuple[float, float]]:
    out = {}
    for name, value in ranges.items():
        if name not in INIT_RANGES:
            raise ValueError(f"initialization_ranges: unknown parameter {name!r}; expected "
                             f"one of {sorted(INIT_RANGES)}")
        low, high = (float(v) for v in value)
        if low > high:
            raise ValueError(f"initialization_ranges[{name!r}]: low {low} > high {high}")
        if name in POSITIVE and low < 0:
            raise ValueError(f"initialization_ranges[{name!r}] must be non-negative")
        out[name] = (low, high)
    return out


@keras.saving.register_keras_serializable(package="ncc")
class LTC(LiquidRNN):
    """An LTC network over a sequence: `LTCCell` scanned by `LiquidRNN`.

    **Architecture**:
    ```
    x [batch, T, F]   (optional) dt [batch, T] | [batch, T, 1]
           ↓
    T × LTCCell(wiring, ode_unfolds)   (and a backward copy if bidirectional)
           ↓
    y [batch, T, output_dim] (return_sequences) or [batch, output_dim]
    ```

    `LTC(32)` or `LTC(units=32)` means `LTC(FullyConnected(32))`. Unlike
    `ncps.keras.LTC`, time spans work (ncps maps the (x, dt) tuple as if it were x)
    and return_sequences defaults to True. Convert with `LTC.from_ncps(layer)`.

    Args:
        wiring: ncc wiring, int or ncps wiring (`units=` is an alias).
        activation, backbone_*, input_mapping, output_mapping, ode_unfolds, epsilon,
            initialization_ranges, quantization: see `LTCCell`.
        return_sequences, return_state, go_backwards, bidirectional, merge_mode, stateful,
            unroll, zero_output_for_mask: see `LiquidRNN`.
    """

    CELL_ARGUMENTS = ("wiring", "activation", "backbone_units", "backbone_layers",
                      "backbone_dropout", "input_mapping", "output_mapping", "ode_unfolds",
                      "epsilon", "initialization_ranges", "quantization")

    def __init__(self, wiring: Any = None, activation: Any = "tanh",
                 backbone_units: Any = None, backbone_layers: int = 0,
                 backbone_dropout: float = 0.0, input_mapping: str | None = "affine",
                 output_mapping: str | None = "affine", ode_unfolds: int = 6,
                 epsilon: float = 1e-8, initialization_ranges: dict[str, Any] | None = None,
                 return_sequences: bool = True, return_state: bool = False,
                 go_backwards: bool = False, bidirectional: bool = False,
                 merge_mode: str | None = "concat", stateful: bool = False,
                 unroll: bool = False, zero_output_for_mask: bool = False, units: Any = None,
                 quantization: QuantConfig | dict | None = None, **kwargs: Any) -> None:
        cell = LTCCell(wiring_or_units(wiring, units), activation=activation,
                       backbone_units=backbone_units, backbone_layers=backbone_layers,
                       backbone_dropout=backbone_dropout, input_mapping=input_mapping,
                       output_mapping=output_mapping, ode_unfolds=ode_unfolds, epsilon=epsilon,
                       initialization_ranges=initialization_ranges, quantization=quantization,
                       name="ltc_cell")
        super().__init__(cell, return_sequences=return_sequences, return_state=return_state,
                         go_backwards=go_backwards, stateful=stateful, unroll=unroll,
                         zero_output_for_mask=zero_output_for_mask,
                         bidirectional=bidirectional, merge_mode=merge_mode, **kwargs)

    @property
    def wiring(self) -> wirings.Wiring:
        return self.cell.wiring

    @classmethod
    def from_ncps(cls, layer: Any, **kwargs: Any) -> LTC:
        """An ncc LTC with the weights of a built `ncps.keras.LTC` (same outputs)."""
        from ncc.models.keras.ncps_compat import ltc_from_ncps

        return ltc_from_ncps(layer, **kwargs)
