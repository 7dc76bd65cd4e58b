"""Closed-form continuous-time (CfC) cell and layer, the ncps.keras maths over ncc wirings."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from ncc.models import wirings
from ncc.models.keras.base import LiquidCell, LiquidRNN
from ncc.models.keras.quant import (
    QuantPoint,
    WeightQuant,
    activate_on_point,
    all_exact,
    as_quant_config,
    binary_on_point,
    dense_on_point,
    deployable_activation,
    on_point,
)
from ncc.models.quantization import QuantConfig, QuantParams

MODES = ("default", "pure", "no_gate")


@keras.saving.register_keras_serializable(package="ncc")
class CfCCell(LiquidCell):
    """One CfC step (Hasani et al. 2022), ncps.keras maths, one sub-cell per wiring layer.

    **Architecture** (sub-cell i of the wiring's layers: one for FullyConnected/Random,
    inter → command → motor for NCP; u_0 = x_t):
    ```
    u_i [batch, in_i] ⊕ h_i [batch, n_i]  →  z [batch, in_i + n_i]
           ↓
    (optional, dense wiring) backbone → z [batch, backbone_units[-1]]
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

    **A backbone on a sparse wiring** (NCP, AutoNCP, Random, or FullyConnected without
    self-connections under `fully_recurrent=False`) stands in front of the wiring as a
    dense feature extractor, so the sparse structure is kept behind it:
    ```
    [x_t, h_{t-1}]  [batch, F + units]          (x and the whole state, every neuron)
           ↓  backbone: backbone_layers × [Dense(w_j, activation) → dropout]
    f_t  [batch, S],  S = backbone_units[-1]     the wiring's S sensory inputs
           ↓  u_0 = f_t; sub-cells as above, unchanged:
    layer 0 (inter):   z = [f_t, h_0]   ff = z @ (W ⊙ M_0),  M_0 = [|sensory adj.| (S, n_0);
                                                                   recurrent (n_0, n_0)]
    layer i > 0:       z = [h_{i-1}', h_i]   ff = z @ (W ⊙ M_i), M_i from the wiring's
                                             adjacency (layer i-1 → i; recurrent)
    ```
    So every backbone unit sees all of x and all of h (dense, W_bb (F + units, w_0)); a
    neuron of layer 0 sees the features its sensory synapses select (the wiring is built
    with input_dim = S: AutoNCP draws its sensory fan-out over the S features), and a
    command or motor neuron sees only its wired pre-synaptic neurons, exactly as without
    a backbone. Time constants (time_a, time_b) see z, as without a backbone. On a dense
    wiring the backbone keeps the ncps form (it maps z and replaces it). The wiring's masked
    kernels stay masked, and the compiler lowers them as sparse synapse lists.

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
        backbone_units, backbone_layers, backbone_dropout: see `LiquidCell`; on a sparse
            wiring the backbone maps [x, h] to the wiring's sensory inputs (above; ncps
            refuses a backbone in wired mode). Not yet with `quantization` (QAT).
        fully_recurrent: each sub-cell sees all of its own layer's neurons (ncps default);
            False uses the wiring's recurrent synapses inside the layer.
        quantization: a `ncc.models.quantization.QuantConfig` (or its dict) adds fake-quant
            points where the deployed integer arithmetic has them (`ncc.models.keras.quant`;
            the points of `ncc.models.nnx.CfCCell`). Frozen, int8, tables on and not
            "pure", the step is that integer arithmetic bit for bit (`exact()`); backbone
            dropout is then not applied. None: float only.
    """

    def __init__(self, wiring: Any, mode: str = "default", activation: Any = "lecun_tanh",
                 backbone_units: Any = None, backbone_layers: int = 0,
                 backbone_dropout: float = 0.0, fully_recurrent: bool = True,
                 quantization: QuantConfig | dict | None = None, **kwargs: Any) -> None:
        super().__init__(wiring, activation, backbone_units, backbone_layers,
                         backbone_dropout, **kwargs)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.fully_recurrent = bool(fully_recurrent)
        dense = isinstance(self.wiring, wirings.FullyConnected) and (
            self.fully_recurrent or self.wiring.self_connections)
        # A backbone on a sparse wiring sits in front of it: [x, h] -> features that are the
        # wiring's sensory inputs (see the class docstring); on a dense one it is ncps' z.
        self.wired_backbone = bool(self.backbone_layers) and not dense
        if self.wired_backbone and quantization is not None:
            raise ValueError("quantization (QAT) of a backbone on a sparse wiring is not "
                             "supported yet: train it in float and compile with calibration "
                             "(post-training quantization)")
        self.layer_sizes = [len(self.wiring.get_neurons_of_layer(i))
                            for i in range(self.wiring.num_layers)]
        self.time_a = [keras.layers.Dense(n, name=f"time_a{i}")
                       for i, n in enumerate(self.layer_sizes)]
        self.time_b = [keras.layers.Dense(n, name=f"time_b{i}")
                       for i, n in enumerate(self.layer_sizes)]
        self.quantization = as_quant_config(quantization)
        if self.quantization is not None:
            self._create_quant_points(self.quantization)

    def _create_quant_points(self, cfg: QuantConfig) -> None:
        """The fake-quant points of `ncc.models.nnx.CfCCell` (same names and roles)."""
        self.act_name = deployable_activation(self.activation, "CfC")
        self.tables = cfg.quantizes("nonlinearities")
        sizes = self.layer_sizes

        def point(part: str, name: str) -> QuantPoint:
            bits = cfg.state_bits if part == "state" else cfg.activation_bits
            return QuantPoint.for_part(cfg, part, bits, name=name)

        def points(name: str, *modes: str) -> list[QuantPoint]:  # one per wiring layer
            return [point("activations", f"{name}{i}") for i in range(len(sizes))
                    if self.mode in modes]

        every, gated = ("default", "no_gate", "pure"), ("default", "no_gate")
        # One grid for x, the state and every concatenation of them (the integer IR
        # needs concatenated tensors, state in and state out on one grid).
        self.q_state, self.q_dt = point("state", "q_state"), point("inputs", "q_dt")
        self.q_backbone = [point("activations", f"q_backbone{j}")
                           for j in range(self.backbone_layers)]
        self.q_ff1, self.q_ff2 = points("q_ff1", *every), points("q_ff2", *gated)
        self.q_time_a, self.q_time_b = points("q_time_a", *gated), points("q_time_b", *gated)
        self.q_time_a_dt = points("q_time_a_dt", *gated)  # time_a(z) dt
        self.q_gate_in = points("q_gate_in", *gated)  # the sigmoid's input
        self.q_one_minus_gate = points("q_one_minus_gate", "default")  # 1 - g
        self.q_mix = points("q_mix", *gated)  # both products
        self.wq_backbone = [WeightQuant.for_config(cfg, w, name=f"wq_backbone{j}")
                            for j, w in enumerate(self.backbone_units)]
        self.wq_ff1 = [WeightQuant.for_config(cfg, n, name=f"wq_ff1{i}")
                       for i, n in enumerate(sizes)]
        gated_sizes = sizes if self.mode in gated else []
        self.wq_ff2, self.wq_time_a, self.wq_time_b = (
            [WeightQuant.for_config(cfg, n, name=f"{k}{i}") for i, n in enumerate(gated_sizes)]
            for k in ("wq_ff2", "wq_time_a", "wq_time_b"))

    def quant_points(self) -> list[QuantPoint]:
        """Every activation / state point (empty without quantization)."""
        if self.quantization is None:
            return []
        return [self.q_state, self.q_dt, *self.q_backbone, *self.q_ff1, *self.q_ff2,
                *self.q_time_a, *self.q_time_b, *self.q_time_a_dt, *self.q_gate_in,
                *self.q_one_minus_gate, *self.q_mix]

    def weight_quantizers(self) -> list[WeightQuant]:
        if self.quantization is None:
            return []
        return [*self.wq_backbone, *self.wq_ff1, *self.wq_ff2, *self.wq_time_a,
                *self.wq_time_b]

    def quant_kernels(self) -> list[tuple[WeightQuant, np.ndarray]]:
        """(weight quantizer, current masked kernel (in, out)) pairs, for `freeze`."""
        if self.quantization is None:
            return []
        pairs = [(wq, ops.convert_to_numpy(d.kernel))
                 for wq, d in zip(self.wq_backbone, self.backbone, strict=True)]
        for i in range(len(self.layer_sizes)):
            pairs.append((self.wq_ff1[i], self._masked_value(self.ff1_kernel[i], i)))
            if self.mode != "pure":
                pairs += [(self.wq_ff2[i], self._masked_value(self.ff2_kernel[i], i)),
                          (self.wq_time_a[i], ops.convert_to_numpy(self.time_a[i].kernel)),
                          (self.wq_time_b[i], ops.convert_to_numpy(self.time_b[i].kernel))]
        return pairs

    def _masked_value(self, kernel: Any, i: int) -> np.ndarray:
        mask = self.masks[i]
        value = ops.convert_to_numpy(kernel)
        return value if mask is None else value * mask

    def exact(self) -> bool:
        """True when the step is the deployed integer arithmetic, bit for bit: quantized,
        every point and weight frozen and in "fake_quant" mode, int8, tables on, not pure."""
        return (self.quantization is not None and self.mode != "pure" and self.tables
                and all_exact(self.quant_points(), self.weight_quantizers()))

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
        self.step_features = input_dim
        if self.wired_backbone:  # the backbone's features are the wiring's sensory inputs
            input_dim = self.build_backbone(input_dim + self.state_size)
        self.wiring.build(input_dim)
        self.masks = self._layer_masks()
        in_width = input_dim
        self.ff1_kernel, self.ff1_bias, self.ff2_kernel, self.ff2_bias = [], [], [], []
        self.w_tau, self.A = [], []
        for i, n in enumerate(self.layer_sizes):
            width = in_width + n
            if self.backbone_layers and not self.wired_backbone:
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
        for layer in (*self.quant_points(), *self.weight_quantizers()):
            layer.build(None)
        super().build(input_shape)

    def _masked(self, kernel: Any, mask: np.ndarray | None) -> Any:
        return kernel if mask is None else kernel * mask

    def call(self, inputs: Any, states: Any, training: bool = False) -> tuple[Any, list[Any]]:
        x, dt = self.split_inputs(inputs)
        h = states[0] if isinstance(states, (list, tuple)) else states
        if self.quantization is not None:
            return self._call_quantized(x, dt, h)
        if self.wired_backbone:  # features f = backbone([x, h]) feed the sensory synapses
            x = self.apply_backbone(ops.concatenate([x, h], axis=-1), training=training)
        new_states, start = [], 0
        for i, n in enumerate(self.layer_sizes):
            z = ops.concatenate([x, h[:, start:start + n]], axis=-1)
            start += n
            if self.backbone_layers and not self.wired_backbone:
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

    # --- the quantized step (`ncc.models.nnx.CfCCell.__call__`, in keras.ops) ---------------

    def _call_quantized(self, x: Any, dt: Any, h: Any) -> tuple[Any, list[Any]]:
        """x (B, F), dt 1.0 or (B, 1), h (B, units) -> (y (B, output_dim), [h' (B, units)])."""
        exact = self.exact()
        u, new_states, start = x, [], 0
        for i, n in enumerate(self.layer_sizes):
            z, p_z = on_point(self.q_state, ops.concatenate([u, h[:, start:start + n]], -1),
                              exact)
            start += n
            for dense, wq, point in zip(self.backbone, self.wq_backbone, self.q_backbone,
                                        strict=True):
                pre, p_pre = dense_on_point(z, p_z, dense.kernel, dense.bias, wq, point, exact)
                z, p_z = activate_on_point(pre, p_pre, self.act_name, point, self.tables,
                                           exact)
            u = self._subcell(i, z, p_z, dt, exact)
            new_states.append(u)
        y = u[:, :self.output_size] if self.output_size != self.layer_sizes[-1] else u
        state = new_states[0] if len(new_states) == 1 else ops.concatenate(new_states, axis=-1)
        return y, [state]

    def _subcell(self, i: int, z: Any, p_z: QuantParams | None, dt: Any, exact: bool) -> Any:
        """One wiring layer: z (B, width) -> h_i' (B, n_i) on the state grid."""
        ff1_kernel = self._masked(self.ff1_kernel[i], self.masks[i])
        ff1, p1 = dense_on_point(z, p_z, ff1_kernel, self.ff1_bias[i], self.wq_ff1[i],
                                 self.q_ff1[i], exact)
        if self.mode == "pure":
            new = -self.A[i] * ops.exp(-dt * (ops.abs(self.w_tau[i]) + ops.abs(ff1))) * ff1 \
                + self.A[i]
            return self.q_state(new)
        ff2_kernel = self._masked(self.ff2_kernel[i], self.masks[i])
        ff2, p2 = dense_on_point(z, p_z, ff2_kernel, self.ff2_bias[i], self.wq_ff2[i],
                                 self.q_ff2[i], exact)
        ta, p_ta = dense_on_point(z, p_z, self.time_a[i].kernel, self.time_a[i].bias,
                                  self.wq_time_a[i], self.q_time_a[i], exact)
        tb, p_tb = dense_on_point(z, p_z, self.time_b[i].kernel, self.time_b[i].bias,
                                  self.wq_time_b[i], self.q_time_b[i], exact)
        t = ops.broadcast_to(ops.reshape(ops.cast(dt, ta.dtype), (-1, 1)), ops.shape(ta))
        t, p_t = on_point(self.q_dt, t, exact)
        ta_dt, p_ta_dt = binary_on_point("mul", ta, p_ta, t, p_t, self.q_time_a_dt[i], exact)
        pre, p_pre = binary_on_point("sub", tb, p_tb, ta_dt, p_ta_dt, self.q_gate_in[i], exact)
        gate, p_g = activate_on_point(pre, p_pre, "sigmoid", self.q_gate_in[i], self.tables,
                                      exact)
        mix, p_mix = binary_on_point("mul", gate, p_g, ff2, p2, self.q_mix[i], exact)
        if self.mode == "no_gate":
            return binary_on_point("add", ff1, p1, mix, p_mix, self.q_state, exact)[0]
        keep, p_keep = on_point(self.q_one_minus_gate[i], 1.0 - gate, exact)
        old, p_old = binary_on_point("mul", ff1, p1, keep, p_keep, self.q_mix[i], exact)
        return binary_on_point("add", old, p_old, mix, p_mix, self.q_state, exact)[0]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"mode": self.mode, "fully_recurrent": self.fully_recurrent,
                       "quantization": None if self.quantization is None
                       else self.quantization.to_dict()})
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
    return_sequences defaults to True; a backbone on a sparse wiring maps [x, h] to the
    wiring's sensory inputs (`CfCCell`; ncps refuses it).
    Convert an ncps layer with `CfC.from_ncps(layer)`.

    Args:
        wiring: ncc wiring, int or ncps wiring (`units=` is an alias).
        mode, activation, backbone_*, fully_recurrent, quantization: see `CfCCell`.
        return_sequences, return_state, go_backwards, bidirectional, merge_mode, stateful,
            unroll, zero_output_for_mask: see `LiquidRNN`.
    """

    CELL_ARGUMENTS = ("wiring", "mode", "activation", "backbone_units", "backbone_layers",
                      "backbone_dropout", "fully_recurrent", "quantization")

    def __init__(self, wiring: Any = None, mode: str = "default",
                 activation: Any = "lecun_tanh", backbone_units: Any = None,
                 backbone_layers: int = 0, backbone_dropout: float = 0.0,
                 fully_recurrent: bool = True, return_sequences: bool = True,
                 return_state: bool = False, go_backwards: bool = False,
                 bidirectional: bool = False, merge_mode: str | None = "concat",
                 stateful: bool = False, unroll: bool = False,
                 zero_output_for_mask: bool = False, units: Any = None,
                 quantization: QuantConfig | dict | None = None, **kwargs: Any) -> None:
        wiring = wiring_or_units(wiring, units)
        cell = CfCCell(wiring, mode=mode, activation=activation, backbone_units=backbone_units,
                       backbone_layers=backbone_layers, backbone_dropout=backbone_dropout,
                       fully_recurrent=fully_recurrent, quantization=quantization,
                       name="cfc_cell")
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


def wiring_or_units(wiring: Any, units: Any) -> Any:
    if wiring is not None and units is not None:
        raise ValueError("give either wiring or units, not both")
    if wiring is None and units is None:
        raise ValueError("wiring (or units) is required")
    return wiring if wiring is not None else units
