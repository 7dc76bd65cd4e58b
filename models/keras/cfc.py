"""Closed-form continuous-time (CfC) cell and layer, the ncps.keras maths over ncc wirings."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from ncc.models import wirings
from ncc.models.keras.base import LiquidCell, LiquidRNN

MODES = ("default", "pure", "no_gate")


@keras.saving.register_keras_serializable(package="ncc")
class CfCCell(LiquidCell):
    """One CfC step (Hasani et al. 2022), ncps.keras maths, one sub-cell per wiring layer.

    **Architecture** (sub-cell i of the wiring's layers: one for FullyConnected/Random,
    inter → command → motor for NCP; u_0 = x_t):
    ```
    u_i [batch, in_i] ⊕ h_i [batch, n_i]  →  z [batch, in_i + n_i]
           ↓
    (optional, dense wirings only) backbone → z [batch, backbone_units[-1]]
           ↓
    ff1 = z @ (W1 ⊙ M_i) + b1          M_i = |wiring adjacency| into layer i
    ┌─────────────────────────────────────────────────────────────────────┐
    │ default: σ = sigmoid(-time_a(z) dt + time_b(z))                     │
    │          h_i' = ff1 (1 - σ) + σ ff2,   ff2 = z @ (W2 ⊙ M_i) + b2     │
    │ no_gate: h_i' = ff1 + σ ff2                                         │
    │ pure:    h_i' = A - A exp(-dt (|w_tau| + |ff1|)) ff1                │
    └─────────────────────────────────────────────────────────────────────┘
           ↓  u_{i+1} = h_i'
    y_t = h_last'[:, :output_dim] [batch, output_dim]     h_t = ⊕_i h_i' [batch, units]
    ```
    The state is ordered by wiring layer (inter, command, motor for NCP), as ncps does.

    **One step**, as the compiler traces it:
    ```
    y, [h] = cell(x, [h], training=False)            # dt = 1
    y, [h] = cell((x, dt), [h], training=False)      # dt: (batch, 1) or (batch,)
    ```
    x: (batch, input_dim); h: (batch, units); y: (batch, output_dim).

    Args:
        wiring: ncc wiring, int (FullyConnected) or ncps wiring.
        mode: "default", "pure" (direct solution) or "no_gate".
        activation: backbone activation (default "lecun_tanh").
        backbone_units, backbone_layers, backbone_dropout: see `LiquidCell`; a backbone
            needs a dense wiring (FullyConnected, as ncps).
        fully_recurrent: each sub-cell sees all of its own layer's neurons (ncps default);
            False uses the wiring's recurrent synapses inside the layer.
    """

    def __init__(self, wiring: Any, mode: str = "default", activation: Any = "lecun_tanh",
                 backbone_units: Any = None, backbone_layers: int = 0,
                 backbone_dropout: float = 0.0, fully_recurrent: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(wiring, activation, backbone_units, backbone_layers,
                         backbone_dropout, **kwargs)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.fully_recurrent = bool(fully_recurrent)
        dense = isinstance(self.wiring, wirings.FullyConnected) and (
            self.fully_recurrent or self.wiring.self_connections)
        if self.backbone_layers and not dense:
            raise ValueError("backbone_units/backbone_layers need a dense wiring "
                             "(FullyConnected); a sparse wiring masks the CfC kernels instead")
        self.layer_sizes = [len(self.wiring.get_neurons_of_layer(i))
                            for i in range(self.wiring.num_layers)]
        self.time_a = [keras.layers.Dense(n, name=f"time_a{i}")
                       for i, n in enumerate(self.layer_sizes)]
        self.time_b = [keras.layers.Dense(n, name=f"time_b{i}")
                       for i, n in enumerate(self.layer_sizes)]

    def _layer_masks(self) -> list[np.ndarray | None]:
        """Per sub-cell (in_i + n_i, n_i) 0/1 masks; None where every synapse exists."""
        w = self.wiring
        sensory, internal = self.sparsity_masks()
        masks = []
        for i in range(w.num_layers):
            ids = w.get_neurons_of_layer(i)
            feed = sensory[:, ids] if i == 0 else internal[np.ix_(
                w.get_neurons_of_layer(i - 1), ids)]
            rec = np.ones((len(ids), len(ids)), np.float32) if self.fully_recurrent \
                else internal[np.ix_(ids, ids)]
            mask = np.concatenate([feed, rec], axis=0)
            masks.append(None if mask.all() else mask)
        return masks

    def build(self, input_shape: Any) -> None:
        from ncc.models.keras.base import step_input_dim

        input_dim = step_input_dim(input_shape)
        self.wiring.build(input_dim)
        self.masks = self._layer_masks()
        in_width = input_dim
        self.ff1_kernel, self.ff1_bias, self.ff2_kernel, self.ff2_bias = [], [], [], []
        self.w_tau, self.A = [], []
        for i, n in enumerate(self.layer_sizes):
            width = in_width + n
            if self.backbone_layers:
                width = self.build_backbone(width)
            self.ff1_kernel.append(self.add_weight(shape=(width, n), name=f"ff1_kernel{i}",
                                                   initializer="glorot_uniform"))
            self.ff1_bias.append(self.add_weight(shape=(n,), name=f"ff1_bias{i}",
                                                 initializer="zeros"))
            if self.mode == "pure":
                self.w_tau.append(self.add_weight(shape=(1, n), name=f"w_tau{i}",
                                                  initializer="zeros"))
                self.A.append(self.add_weight(shape=(1, n), name=f"A{i}", initializer="ones"))
            else:
                self.ff2_kernel.append(self.add_weight(shape=(width, n), name=f"ff2_kernel{i}",
                                                       initializer="glorot_uniform"))
                self.ff2_bias.append(self.add_weight(shape=(n,), name=f"ff2_bias{i}",
                                                     initializer="zeros"))
                self.time_a[i].build((None, width))
                self.time_b[i].build((None, width))
            in_width = n
        super().build(input_shape)

    def _masked(self, kernel: Any, mask: np.ndarray | None) -> Any:
        return kernel if mask is None else kernel * mask

    def call(self, inputs: Any, states: Any, training: bool = False) -> tuple[Any, list[Any]]:
        x, dt = self.split_inputs(inputs)
        h = states[0] if isinstance(states, (list, tuple)) else states
        new_states, start = [], 0
        for i, n in enumerate(self.layer_sizes):
            z = ops.concatenate([x, h[:, start:start + n]], axis=-1)
            start += n
            if self.backbone_layers:
                z = self.apply_backbone(z, training=training)
            ff1 = ops.matmul(z, self._masked(self.ff1_kernel[i], self.masks[i])) \
                + self.ff1_bias[i]
            if self.mode == "pure":
                new = -self.A[i] * ops.exp(-dt * (ops.abs(self.w_tau[i]) + ops.abs(ff1))) \
                    * ff1 + self.A[i]
            else:
                ff2 = ops.matmul(z, self._masked(self.ff2_kernel[i], self.masks[i])) \
                    + self.ff2_bias[i]
                gate = ops.sigmoid(-self.time_a[i](z) * dt + self.time_b[i](z))
                new = ff1 + gate * ff2 if self.mode == "no_gate" \
                    else ff1 * (1.0 - gate) + gate * ff2
            new_states.append(new)
            x = new
        output = x[:, :self.output_size] if self.output_size != self.layer_sizes[-1] else x
        state = new_states[0] if len(new_states) == 1 else ops.concatenate(new_states, axis=-1)
        return output, [state]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"mode": self.mode, "fully_recurrent": self.fully_recurrent})
        return config


@keras.saving.register_keras_serializable(package="ncc")
class CfC(LiquidRNN):
    """A CfC network over a sequence: `CfCCell` scanned by `LiquidRNN`.

    **Architecture**:
    ```
    x [batch, T, F]   (optional) dt [batch, T] | [batch, T, 1]
           ↓
    T × CfCCell(wiring, mode)   (and a backward copy if bidirectional)
           ↓
    y [batch, T, output_dim] (return_sequences) or [batch, output_dim]
    ```

    `CfC(32)` or `CfC(units=32)` means `CfC(FullyConnected(32))`. Differences from
    `ncps.keras.CfC`: wiring first; no backbone unless asked (ncps: 128 units);
    return_sequences defaults to True; a backbone on a sparse wiring is an error.
    Convert an ncps layer with `CfC.from_ncps(layer)`.

    Args:
        wiring: ncc wiring, int or ncps wiring (`units=` is an alias).
        mode, activation, backbone_*, fully_recurrent: see `CfCCell`.
        return_sequences, return_state, go_backwards, bidirectional, merge_mode, stateful,
            unroll, zero_output_for_mask: see `LiquidRNN`.
    """

    CELL_ARGUMENTS = ("wiring", "mode", "activation", "backbone_units", "backbone_layers",
                      "backbone_dropout", "fully_recurrent")

    def __init__(self, wiring: Any = None, mode: str = "default",
                 activation: Any = "lecun_tanh", backbone_units: Any = None,
                 backbone_layers: int = 0, backbone_dropout: float = 0.0,
                 fully_recurrent: bool = True, return_sequences: bool = True,
                 return_state: bool = False, go_backwards: bool = False,
                 bidirectional: bool = False, merge_mode: str | None = "concat",
                 stateful: bool = False, unroll: bool = False,
                 zero_output_for_mask: bool = False, units: Any = None,
                 **kwargs: Any) -> None:
        wiring = _wiring_or_units(wiring, units)
        cell = CfCCell(wiring, mode=mode, activation=activation, backbone_units=backbone_units,
                       backbone_layers=backbone_layers, backbone_dropout=backbone_dropout,
                       fully_recurrent=fully_recurrent, name="cfc_cell")
        super().__init__(cell, return_sequences=return_sequences, return_state=return_state,
                         go_backwards=go_backwards, stateful=stateful, unroll=unroll,
                         zero_output_for_mask=zero_output_for_mask,
                         bidirectional=bidirectional, merge_mode=merge_mode, **kwargs)

    @property
    def wiring(self) -> wirings.Wiring:
        return self.cell.wiring

    @classmethod
    def from_ncps(cls, layer: Any, **kwargs: Any) -> CfC:
        """An ncc CfC with the weights of a built `ncps.keras.CfC` (same outputs)."""
        from ncc.models.keras.ncps_compat import cfc_from_ncps

        return cfc_from_ncps(layer, **kwargs)


def _wiring_or_units(wiring: Any, units: Any) -> Any:
    if wiring is not None and units is not None:
        raise ValueError("give either wiring or units, not both")
    if wiring is None and units is None:
        raise ValueError("wiring (or units) is required")
    return wiring if wiring is not None else units
