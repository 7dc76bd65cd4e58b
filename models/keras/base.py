"""Base classes of the Keras liquid layers: `LiquidCell` (one step) and `LiquidRNN` (a sequence).

A liquid model is a step `(x_t, dt_t, h_{t-1}) -> (y_t, h_t)`. `LiquidCell` is
that step with the standard Keras RNN cell contract, so the ncc compiler can
trace exactly one step under `jax.make_jaxpr`; `LiquidRNN` scans it over time,
adds time spans, masking, reversal and bidirectionality.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops
from keras.src import backend as _backend  # backend.rnn: Keras' own scan with masks
from keras.src import tree

from ncc.models import wirings
from ncc.numerics import LECUN_TANH_AMPLITUDE, LECUN_TANH_GAIN

Shape = tuple[int | None, ...]
MERGE_MODES = ("concat", "sum", "mul", "ave", None)


@keras.saving.register_keras_serializable(package="ncc", name="lecun_tanh")
def lecun_tanh(x: Any) -> Any:
    """LeCun's scaled tanh, 1.7159 tanh(0.666 x) (the ncps CfC default)."""
    return LECUN_TANH_AMPLITUDE * ops.tanh(LECUN_TANH_GAIN * x)


def get_activation(activation: Any) -> Any:
    """keras.activations.get that also knows "lecun_tanh" (without importing ncps)."""
    if activation == "lecun_tanh" or getattr(activation, "__name__", None) == "lecun_tanh":
        return lecun_tanh
    return keras.activations.get(activation)


def step_input_dim(input_shape: Any) -> int:
    """Feature width of one step's input shape: (batch, F) or ((batch, F), (batch, 1))."""
    if isinstance(input_shape, (list, tuple)) and input_shape and \
            isinstance(input_shape[0], (list, tuple)):
        input_shape = input_shape[0]
    dim = input_shape[-1]
    if dim is None:
        raise ValueError(f"the last input dimension must be known, got shape {input_shape}")
    return int(dim)


def normalize_backbone(backbone_units: Any, backbone_layers: int,
                       backbone_dropout: float) -> list[int]:
    """Backbone widths, one per layer, from the ncps-style arguments.

    `backbone_units` int -> that width in every layer (1 layer if `backbone_layers` is 0);
    list -> one width per layer; None -> 128 per layer (ncps default) or no backbone.
    """
    if isinstance(backbone_layers, bool) or not isinstance(backbone_layers, (int, np.integer)) \
            or backbone_layers < 0:
        raise ValueError(f"backbone_layers must be an integer >= 0, got {backbone_layers!r}")
    if not isinstance(backbone_dropout, (int, float)) or not 0.0 <= backbone_dropout < 1.0:
        raise ValueError(f"backbone_dropout must be in [0, 1), got {backbone_dropout!r}")
    if backbone_units is None:
        widths = [128] * int(backbone_layers)
    elif isinstance(backbone_units, (list, tuple)):
        widths = list(backbone_units)
        if backbone_layers not in (0, len(widths)):
            raise ValueError(f"backbone_layers ({backbone_layers}) must equal "
                             f"len(backbone_units) ({len(widths)})")
    else:
        widths = [backbone_units] * max(int(backbone_layers), 1)
    for w in widths:
        if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 1:
            raise ValueError(f"backbone_units must be positive integers, got {backbone_units!r}")
    return [int(w) for w in widths]


class LiquidCell(keras.layers.Layer):
    """One step of a liquid network over a wiring, with an optional dense backbone.

    **Architecture** (what subclasses share):
    ```
    x_t [batch, F]   (dt_t [batch, 1], optional)   h_{t-1} [batch, units]
           ↓
    (optional) backbone: backbone_layers × [Dense(w_i, activation) → dropout]
           ↓
    subclass dynamics (CfC closed form, LTC ODE), masked by the wiring
           ↓
    y_t [batch, output_dim]        h_t [batch, units]
    ```

    Contract (standard Keras RNN cell): `cell(inputs, states, training=False)
    -> (output, [new_state])`, `state_size == wiring.units`,
    `output_size == wiring.output_dim`. `inputs` is `x` (dt = 1) or the pair
    `(x, dt)` with dt of shape (batch, 1) or (batch,), as ncps does.

    Args:
        wiring: a `ncc.models.wirings.Wiring`, an int (-> `FullyConnected(int)`) or an
            ncps wiring (converted with its exact adjacency).
        activation: backbone activation, a Keras activation name/function or "lecun_tanh".
        backbone_units: int, list of ints (one per layer) or None.
        backbone_layers: number of backbone layers; 0 with `backbone_units` set means
            one layer per listed width.
        backbone_dropout: dropout rate after each backbone layer, in [0, 1); one mask
            per sequence when run by `LiquidRNN` (ncps: one per step, which cannot run
            inside a JAX scan).
    """

    def __init__(self, wiring: Any, activation: Any = "tanh", backbone_units: Any = None,
                 backbone_layers: int = 0, backbone_dropout: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.wiring = wirings.as_wiring(wiring)
        self.activation = get_activation(activation)
        self.backbone_units = normalize_backbone(backbone_units, backbone_layers,
                                                 backbone_dropout)
        self.backbone_layers = len(self.backbone_units)
        self.backbone_dropout = float(backbone_dropout)
        self.backbone = [keras.layers.Dense(w, activation=self.activation, name=f"backbone{i}")
                         for i, w in enumerate(self.backbone_units)]
        # Dropout masks are drawn once per sequence (by LiquidRNN, outside the time scan:
        # a random draw inside jax's scan would leak its key); a SeedGenerator holds a
        # variable, so it exists only when there is dropout.
        self.seed_generator = keras.random.SeedGenerator(0) if self.backbone_dropout else None
        self._dropout_masks: tuple[Any, ...] | None = None

    @property
    def state_size(self) -> int:
        return self.wiring.units

    @property
    def output_size(self) -> int:
        return self.wiring.output_dim

    @property
    def input_dim(self) -> int | None:
        return self.wiring.input_dim

    def build_backbone(self, input_dim: int) -> int:
        """Build the backbone on `input_dim` features; returns its output width."""
        width = input_dim
        for dense in self.backbone:
            dense.build((None, width))
            width = dense.units
        return width

    def dropout_masks(self, batch_size: Any) -> tuple[Any, ...]:
        """One scaled keep-mask (batch, width_i) per backbone layer, for a whole sequence."""
        return tuple(keras.random.dropout(ops.ones((batch_size, w), self.compute_dtype),
                                          self.backbone_dropout, seed=self.seed_generator)
                     for w in self.backbone_units)

    def apply_backbone(self, x: Any, training: Any = None) -> Any:
        """Dense layers (+ dropout when training: masks from LiquidRNN, else fresh)."""
        drop = bool(training) and self.backbone_dropout > 0
        masks = (self._dropout_masks or self.dropout_masks(ops.shape(x)[0])) if drop else None
        for i, dense in enumerate(self.backbone):
            x = dense(x)
            if masks is not None:
                x = x * masks[i]
        return x

    @staticmethod
    def split_inputs(inputs: Any) -> tuple[Any, Any]:
        """(x, dt) with dt (batch, 1), or (x, 1.0) for a plain x."""
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != 2:
                raise ValueError(f"a cell takes x or (x, dt), got {len(inputs)} inputs")
            x, dt = inputs
            return x, ops.reshape(ops.cast(dt, x.dtype), (-1, 1))
        return inputs, 1.0

    def sparsity_masks(self) -> tuple[np.ndarray, np.ndarray]:
        """|sensory adjacency| (input_dim, units) and |adjacency| (units, units), float32."""
        w = self.wiring
        return (np.abs(w.sensory_adjacency_matrix).astype(np.float32),
                np.abs(w.adjacency_matrix).astype(np.float32))

    def get_initial_state(self, batch_size: Any = None) -> list[Any]:
        return [ops.zeros((batch_size, self.state_size), dtype=self.compute_dtype)]

    def compute_output_shape(self, inputs_shape: Any, states_shape: Any = None) -> Any:
        """((batch, output_dim), [(batch, units)])."""
        if isinstance(inputs_shape, (list, tuple)) and inputs_shape and \
                isinstance(inputs_shape[0], (list, tuple)):
            inputs_shape = inputs_shape[0]
        batch = inputs_shape[0]
        return (batch, self.output_size), [(batch, self.state_size)]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({
            "wiring": keras.saving.serialize_keras_object(self.wiring),
            "activation": keras.saving.serialize_keras_object(self.activation),
            "backbone_units": list(self.backbone_units) or None,
            "backbone_layers": self.backbone_layers,
            "backbone_dropout": self.backbone_dropout,
        })
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LiquidCell:
        return cls(**_deserialize_arguments(config))


def _observing(cell: Any) -> bool:
    """True if a quantization point of `cell` is observing (`ncc.models.keras.quant`)."""
    points = getattr(cell, "quant_points", None)
    return points is not None and any(p.mode == "observe" for p in points())


def _deserialize_arguments(config: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments from a liquid cell's or layer's config (wiring, activation)."""
    config = dict(config)
    config["wiring"] = deserialize_wiring(config["wiring"])
    if isinstance(config.get("activation"), dict):
        config["activation"] = keras.saving.deserialize_keras_object(config["activation"])
    return config


def deserialize_wiring(spec: Any) -> wirings.Wiring:
    """A wiring from its serialized form (only ncc wiring classes are accepted)."""
    if isinstance(spec, wirings.Wiring):
        return spec
    if isinstance(spec, dict):
        name = spec.get("registered_name") or spec.get("class_name")
        return wirings.deserialize({"class_name": name, "config": spec["config"]})
    return wirings.as_wiring(spec)


@keras.saving.register_keras_serializable(package="ncc")
class LiquidRNN(keras.layers.RNN):
    """Runs a liquid cell over a sequence, with time spans, masking and both directions.

    **Architecture**:
    ```
    x [batch, T, F]        (optional) dt [batch, T] or [batch, T, 1]  (default 1.0)
           ↓
    ┌──────────────────────────────────────────────────────┐
    │ forward:  T × cell((x_t, dt_t), h) → y_t, h          │
    │ (if bidirectional) backward: same, t = T-1 … 0,      │
    │     own weights; outputs re-reversed to time order   │
    └──────────────────────────────────────────────────────┘
           ↓ merge_mode: concat | sum | mul | ave | None (list [fwd, bwd])
    y [batch, T, out] if return_sequences else [batch, out]
    (+ final states [batch, units] per direction if return_state)
    ```
    out = output_dim, or 2 × output_dim for bidirectional "concat".

    Call as `layer(x)` or `layer([x, dt])`; `mask` (batch, T) skips steps (state carried).

    Args:
        cell: a `LiquidCell` (or any Keras RNN cell with `get_config`).
        return_sequences: output every step (True) or only the last.
        return_state: also return the final states.
        go_backwards: run t = T-1 … 0 (not with `bidirectional`).
        bidirectional: add a backward copy of the cell with its own weights.
        merge_mode: how forward and backward outputs merge.
        stateful, unroll, zero_output_for_mask: as `keras.layers.RNN`.
    """

    def __init__(self, cell: Any, return_sequences: bool = True, return_state: bool = False,
                 go_backwards: bool = False, stateful: bool = False, unroll: bool = False,
                 zero_output_for_mask: bool = False, bidirectional: bool = False,
                 merge_mode: str | None = "concat", **kwargs: Any) -> None:
        if merge_mode not in MERGE_MODES:
            raise ValueError(f"merge_mode must be one of {MERGE_MODES}, got {merge_mode!r}")
        if bidirectional and go_backwards:
            raise ValueError("go_backwards cannot be combined with bidirectional=True "
                             "(the backward direction is already included)")
        if bidirectional and stateful:
            raise ValueError("stateful cannot be combined with bidirectional=True")
        super().__init__(cell, return_sequences=return_sequences, return_state=return_state,
                         go_backwards=go_backwards, stateful=stateful, unroll=unroll,
                         zero_output_for_mask=zero_output_for_mask, **kwargs)
        self.bidirectional = bool(bidirectional)
        self.merge_mode = merge_mode
        # Always created (Keras convention); built and used only when bidirectional.
        self.backward_cell = type(cell).from_config(
            {**cell.get_config(), "name": f"backward_{cell.name}"})

    # --- shapes ---------------------------------------------------------------------------

    @staticmethod
    def _sequence_shape(shape: Any) -> Shape:
        if isinstance(shape, (list, tuple)) and shape and isinstance(shape[0], (list, tuple)):
            return tuple(shape[0])
        return tuple(shape)

    def build(self, sequences_shape: Any, initial_state_shape: Any = None) -> None:
        x_shape = self._sequence_shape(sequences_shape)
        step_shape = (x_shape[0], *x_shape[2:])
        self.cell.build(step_shape)
        if self.bidirectional:
            self.backward_cell.build(step_shape)
        if self.stateful:
            if x_shape[0] is None:
                raise ValueError("stateful=True needs a static batch size; got input shape "
                                 f"{x_shape}")
            self._create_state_variables(x_shape[0])
        self.built = True

    def compute_output_shape(self, sequences_shape: Any, initial_state_shape: Any = None) -> Any:
        x_shape = self._sequence_shape(sequences_shape)
        batch, steps = x_shape[0], x_shape[1]
        out = getattr(self.cell, "output_size", None) or self.state_size[0]
        directions = 2 if self.bidirectional else 1
        width = out * 2 if self.bidirectional and self.merge_mode == "concat" else out
        one = (batch, steps, width) if self.return_sequences else (batch, width)
        output: Any = one
        if self.bidirectional and self.merge_mode is None:
            single = (batch, steps, out) if self.return_sequences else (batch, out)
            output = [single, single]
        if not self.return_state:
            return output
        states = [(batch, s) for s in self.state_size] * directions
        if isinstance(output, list):
            return (*output, *states)
        return (output, *states)

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        mask = tree.flatten(mask)[0] if mask is not None else None
        output_mask = mask if self.return_sequences else None
        outputs = [output_mask, output_mask] if (
            self.bidirectional and self.merge_mode is None) else [output_mask]
        if self.return_state:
            outputs += [None] * (len(self.state_size) * (2 if self.bidirectional else 1))
        return outputs if len(outputs) > 1 else outputs[0]

    # --- running --------------------------------------------------------------------------

    @staticmethod
    def _split_sequences(inputs: Any) -> tuple[Any, Any]:
        """(x, dt) with dt (batch, T, 1), or (x, None)."""
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != 2:
                raise ValueError(f"a liquid layer takes x or [x, dt], got {len(inputs)} inputs")
            x, dt = inputs
            dt = ops.cast(dt, x.dtype)
            if len(dt.shape) == 2:
                dt = ops.expand_dims(dt, -1)
            return x, dt
        return inputs, None

    def _scan(self, cell: Any, sequences: Any, initial_state: list[Any], mask: Any,
              training: Any, go_backwards: bool) -> tuple[Any, Any, list[Any]]:
        def step(inputs: Any, states: Any) -> tuple[Any, list[Any]]:
            output, new_states = cell(inputs, states, training=training)
            return output, list(new_states) if tree.is_nested(new_states) else [new_states]

        steps = tree.flatten(sequences)[0].shape[1]
        # observers assign variables: a Python loop, not a scan (which would leak tracers)
        unroll = self.unroll or _observing(cell)
        if unroll and steps is None:
            raise ValueError("unroll=True and quantization observers need a fixed number of "
                             "time steps")
        return _backend.rnn(step, sequences, initial_state, go_backwards=go_backwards,
                            mask=mask, unroll=unroll, input_length=steps,
                            zero_output_for_mask=self.zero_output_for_mask,
                            return_all_outputs=self.return_sequences)

    def _initial_state(self, cell: Any, batch: Any) -> list[Any]:
        return [ops.zeros((batch, s), dtype=self.compute_dtype) for s in
                ([cell.state_size] if isinstance(cell.state_size, int) else cell.state_size)]

    def call(self, sequences: Any, initial_state: Any = None, mask: Any = None,
             training: bool = False) -> Any:
        x, dt = self._split_sequences(sequences)
        seq = x if dt is None else (x, dt)
        if mask is not None:
            mask = tree.flatten(mask)[0]
        if self.unroll and x.shape[1] is None:
            raise ValueError("unroll=True needs a fixed number of time steps")
        n = len(self.state_size)
        batch = ops.shape(x)[0]
        if initial_state is None:
            fwd0 = list(self.states) if self.stateful else self._initial_state(self.cell, batch)
            bwd0 = self._initial_state(self.backward_cell, batch) if self.bidirectional else []
        else:
            initial_state = list(initial_state) if tree.is_nested(initial_state) \
                else [initial_state]
            if len(initial_state) != n * (2 if self.bidirectional else 1):
                raise ValueError(f"initial_state must hold {n} state(s) per direction, got "
                                 f"{len(initial_state)}")
            fwd0, bwd0 = initial_state[:n], initial_state[n:]
        fwd0 = [ops.cast(s, self.compute_dtype) for s in fwd0]
        cells = [self.cell, self.backward_cell] if self.bidirectional else [self.cell]
        for cell in cells:
            if training and getattr(cell, "backbone_dropout", 0):
                cell._dropout_masks = cell.dropout_masks(batch)
        try:
            return self._run(seq, fwd0, bwd0, mask, training)
        finally:
            for cell in cells:
                if hasattr(cell, "_dropout_masks"):
                    cell._dropout_masks = None

    def _run(self, seq: Any, fwd0: list[Any], bwd0: list[Any], mask: Any,
             training: Any) -> Any:
        last, outputs, states = self._scan(self.cell, seq, fwd0, mask, training,
                                           self.go_backwards)
        states = list(states)
        if self.stateful:
            for var, value in zip(self.states, states, strict=True):
                var.assign(value)
        result = outputs if self.return_sequences else last
        if self.bidirectional:
            bwd0 = [ops.cast(s, self.compute_dtype) for s in bwd0]
            b_last, b_outputs, b_states = self._scan(self.backward_cell, seq, bwd0, mask,
                                                     training, True)
            # backend.rnn emits backward outputs in processing order: restore time order
            b_result = ops.flip(b_outputs, axis=1) if self.return_sequences else b_last
            result = self._merge(result, b_result)
            states += list(b_states)
        if self.return_state:
            head = list(result) if isinstance(result, list) else [result]
            return (*head, *states)
        return result

    def _merge(self, fwd: Any, bwd: Any) -> Any:
        if self.merge_mode == "concat":
            return ops.concatenate([fwd, bwd], axis=-1)
        if self.merge_mode == "sum":
            return fwd + bwd
        if self.merge_mode == "mul":
            return fwd * bwd
        if self.merge_mode == "ave":
            return (fwd + bwd) / 2.0
        return [fwd, bwd]

    # --- serialization --------------------------------------------------------------------

    # cell arguments a subclass (CfC, LTC) takes directly and stores flat in its config
    CELL_ARGUMENTS: tuple[str, ...] = ()

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"bidirectional": self.bidirectional, "merge_mode": self.merge_mode})
        if self.CELL_ARGUMENTS:
            cell = config.pop("cell")["config"]
            config.update({key: cell[key] for key in self.CELL_ARGUMENTS})
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LiquidRNN:
        if not cls.CELL_ARGUMENTS:
            return super().from_config(config)
        return cls(**_deserialize_arguments(config))
