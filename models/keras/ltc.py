"""Liquid time-constant (LTC) cell and layer, the ncps.keras maths over ncc wirings."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from ncc.models import wirings
from ncc.models.keras.base import LiquidCell, LiquidRNN, step_input_dim
from ncc.models.keras.cfc import _wiring_or_units

MAPPINGS = ("affine", "linear", None)
INIT_RANGES = {
    "gleak": (0.001, 1.0), "vleak": (-0.2, 0.2), "cm": (0.4, 0.6),
    "w": (0.001, 1.0), "sigma": (3.0, 8.0), "mu": (0.3, 0.8),
    "sensory_w": (0.001, 1.0), "sensory_sigma": (3.0, 8.0), "sensory_mu": (0.3, 0.8),
}
POSITIVE = ("gleak", "cm", "w", "sensory_w")  # conductances and capacitance: kept >= 0


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
    """

    def __init__(self, wiring: Any, activation: Any = "tanh", backbone_units: Any = None,
                 backbone_layers: int = 0, backbone_dropout: float = 0.0,
                 input_mapping: str | None = "affine", output_mapping: str | None = "affine",
                 ode_unfolds: int = 6, epsilon: float = 1e-8,
                 initialization_ranges: dict[str, Any] | None = None, **kwargs: Any) -> None:
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
        super().build(input_shape)

    @staticmethod
    def _synapse(v_pre: Any, mu: Any, sigma: Any) -> Any:
        """sigmoid(sigma (v_pre - mu)): (batch, src) x (src, dst) -> (batch, src, dst)."""
        return ops.sigmoid(sigma * (ops.expand_dims(v_pre, -1) - mu))

    def call(self, inputs: Any, states: Any, training: bool = False) -> tuple[Any, list[Any]]:
        x, dt = self.split_inputs(inputs)
        v = states[0] if isinstance(states, (list, tuple)) else states
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

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({
            "input_mapping": self.input_mapping, "output_mapping": self.output_mapping,
            "ode_unfolds": self.ode_unfolds, "epsilon": self.epsilon,
            "initialization_ranges": {k: list(v) for k, v in
                                      self.initialization_ranges.items()} or None,
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
            initialization_ranges: see `LTCCell`.
        return_sequences, return_state, go_backwards, bidirectional, merge_mode, stateful,
            unroll, zero_output_for_mask: see `LiquidRNN`.
    """

    CELL_ARGUMENTS = ("wiring", "activation", "backbone_units", "backbone_layers",
                      "backbone_dropout", "input_mapping", "output_mapping", "ode_unfolds",
                      "epsilon", "initialization_ranges")

    def __init__(self, wiring: Any = None, activation: Any = "tanh",
                 backbone_units: Any = None, backbone_layers: int = 0,
                 backbone_dropout: float = 0.0, input_mapping: str | None = "affine",
                 output_mapping: str | None = "affine", ode_unfolds: int = 6,
                 epsilon: float = 1e-8, initialization_ranges: dict[str, Any] | None = None,
                 return_sequences: bool = True, return_state: bool = False,
                 go_backwards: bool = False, bidirectional: bool = False,
                 merge_mode: str | None = "concat", stateful: bool = False,
                 unroll: bool = False, zero_output_for_mask: bool = False, units: Any = None,
                 **kwargs: Any) -> None:
        cell = LTCCell(_wiring_or_units(wiring, units), activation=activation,
                       backbone_units=backbone_units, backbone_layers=backbone_layers,
                       backbone_dropout=backbone_dropout, input_mapping=input_mapping,
                       output_mapping=output_mapping, ode_unfolds=ode_unfolds, epsilon=epsilon,
                       initialization_ranges=initialization_ranges, name="ltc_cell")
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
