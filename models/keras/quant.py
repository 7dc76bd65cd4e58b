"""Keras fake-quant: observed quantization points, weight quantizers, `QuantDense`, switches.

The Keras side of `ncc.models.nnx.fake_quant`, on the same numeric core
(`ncc.models.quantization`). Every point has a mode:

- "off": identity (float training);
- "observe": identity while an observer records the range (min / max, EMA or
  percentile, as `QuantConfig.observer` / `momentum` say);
- "fake_quant": the frozen QuantParams (deployment-exact forward, straight-through
  gradient). Under the JAX backend these are the very `custom_jvp` functions ncc's
  tracer recognizes, so a frozen model compiles with its own parameters.

Range statistics, frozen scale / zero point and the mode live in non-trainable
weights (saved in `.keras` files); the frozen QuantParams are also kept as static
Python values, which the fake-quant functions need, and are rebuilt from the weights
on load (`load_own_variables`; after `set_weights` call `sync_quant_state(model)`).

Workflow:
```
set_quant_mode(model, "observe"); model.predict(x)   # or model(x): record ranges
freeze(model)                                        # -> "fake_quant", weights too
model.fit(...)                                       # QAT fine-tuning
freeze(model)                                        # weight grids follow the kernels
```
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from ncc.models.keras.base import lecun_tanh
from ncc.models.observers import make_observer
from ncc.models.quantization import (
    QuantConfig,
    QuantParams,
    int_range,
    keras_fake_quant,
    keras_fake_quant_table,
    symmetric_params,
)

__all__ = ["QuantPoint", "WeightQuant", "QuantDense", "set_quant_mode", "freeze",
           "sync_quant_state", "quant_layers", "as_quant_config", "MODES"]

MODES = ("off", "observe", "fake_quant")
TABLE_ACTIVATIONS = ("lecun_tanh", "tanh", "sigmoid")
Grid = QuantParams | None  # the grid a value lies on (exact path), None otherwise


def as_quant_config(quantization: QuantConfig | dict | None) -> QuantConfig | None:
    """A QuantConfig from a QuantConfig, its dict (`to_dict`) or None."""
    if quantization is None or isinstance(quantization, QuantConfig):
        return quantization
    if isinstance(quantization, dict):
        return QuantConfig.from_dict(quantization)
    raise TypeError(f"quantization must be a QuantConfig, its dict or None, got "
                    f"{type(quantization).__name__}")


def _np(value: Any) -> np.ndarray:
    return ops.convert_to_numpy(value)


def _scalar_weight(layer: keras.layers.Layer, name: str, dtype: str = "float32",
                   init: str = "zeros", shape: tuple[int, ...] = ()) -> Any:
    return layer.add_weight(name=name, shape=shape, dtype=dtype, initializer=init,
                            trainable=False)


@keras.saving.register_keras_serializable(package="ncc")
class QuantPoint(keras.layers.Layer):
    """An observed activation / state fake-quant point: x (any shape) -> x, same shape.

    Args:
        bits: grid width (8 or 16). symmetric: zero point 0 (else asymmetric).
        observer: "minmax" or "percentile"; momentum: EMA factor (None = running min /
            max; percentile defaults to 0.9); percentile: for "percentile".
        power_of_two: power-of-two scales. enabled: False keeps the point in float in
            every mode (it still observes): a part the QuantConfig leaves float.
    """

    def __init__(self, bits: int = 8, symmetric: bool = False, observer: str = "minmax",
                 momentum: float | None = None, percentile: float = 99.99,
                 power_of_two: bool = False, enabled: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bits, self.symmetric = int(bits), bool(symmetric)
        self.observer, self.percentile = observer, float(percentile)
        self.momentum = None if momentum is None else float(momentum)
        self.power_of_two, self.enabled = bool(power_of_two), bool(enabled)
        self._observer = make_observer(observer, momentum, percentile)
        self.mode = "off"
        self.params: QuantParams | None = None

    @classmethod
    def for_part(cls, config: QuantConfig, part: str, bits: int, on: bool = True,
                 name: str | None = None) -> QuantPoint:
        """A point for `part` of `config` (enabled unless the config keeps it float)."""
        return cls(bits, observer=config.observer, momentum=config.momentum,
                   percentile=config.percentile, power_of_two=config.power_of_two,
                   enabled=on and config.quantizes(part), name=name)

    def build(self, input_shape: Any = None) -> None:
        self.lo, self.hi = _scalar_weight(self, "lo"), _scalar_weight(self, "hi")
        self.count = _scalar_weight(self, "count", "int32")
        self.scale = _scalar_weight(self, "scale", init="ones")
        self.zero_point = _scalar_weight(self, "zero_point", "int32")
        self.frozen = _scalar_weight(self, "frozen", "int32")
        self.mode_code = _scalar_weight(self, "mode", "int32")

    def call(self, x: Any) -> Any:
        if self.mode == "observe":
            self._observe(x)
            return x
        if self.mode == "fake_quant" and self.enabled:
            if self.params is None:
                raise ValueError(f"QuantPoint {self.name!r} in 'fake_quant' mode has no "
                                 "parameters: observe data and freeze first")
            return keras_fake_quant(x, self.params)
        return x

    def _observe(self, x: Any) -> None:
        """Update lo / hi / count from a batch (as `ncc.models.observers`, in keras.ops)."""
        x = ops.reshape(ops.cast(x, "float32"), (-1,))
        momentum = self._observer.momentum
        if self.observer == "percentile":
            lo = ops.quantile(x, 1.0 - self.percentile / 100.0)
            hi = ops.quantile(x, self.percentile / 100.0)
        else:
            lo, hi = ops.min(x), ops.max(x)
        if momentum is None:
            new_lo, new_hi = ops.minimum(self.lo, lo), ops.maximum(self.hi, hi)
        else:
            new_lo = momentum * self.lo + (1.0 - momentum) * lo
            new_hi = momentum * self.hi + (1.0 - momentum) * hi
        first = ops.equal(self.count, 0)
        self.lo.assign(ops.where(first, lo, new_lo))
        self.hi.assign(ops.where(first, hi, new_hi))
        self.count.assign(self.count + 1)

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        self.mode_code.assign(MODES.index(mode))

    def freeze(self) -> QuantParams | None:
        """Parameters from the observed range (unchanged if nothing was observed)."""
        state = {"lo": _np(self.lo), "hi": _np(self.hi),
                 "count": _np(self.count)}
        if int(state["count"]) == 0:
            return self.params
        self.params = self._observer.params(state, self.bits, symmetric=self.symmetric,
                                            power_of_two=self.power_of_two)
        self.scale.assign(self.params.scale[0])
        self.zero_point.assign(self.params.zero_point[0])
        self.frozen.assign(1)
        return self.params

    def sync(self) -> None:
        """Static mode and QuantParams from the weights (after loading them)."""
        self.mode = MODES[int(_np(self.mode_code))]
        self.params = QuantParams((float(_np(self.scale)),),
                                  (int(_np(self.zero_point)),), self.bits, True) \
            if int(_np(self.frozen)) else None

    def load_own_variables(self, store: Any) -> None:
        super().load_own_variables(store)
        if self.built:  # (an unused backward cell's points hold nothing)
            self.sync()

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"bits": self.bits, "symmetric": self.symmetric,
                       "observer": self.observer, "momentum": self.momentum,
                       "percentile": self.percentile, "power_of_two": self.power_of_two,
                       "enabled": self.enabled})
        return config


@keras.saving.register_keras_serializable(package="ncc")
class WeightQuant(keras.layers.Layer):
    """Fake-quant of a kernel (in, units): symmetric, per output channel or per tensor.

    In "fake_quant" mode before `freeze`, the scale follows the kernel (max |w| per
    channel, straight-through); frozen, the static per-channel parameters (what the
    compiler reads). The owner applies it with `fake_quantize(kernel)` (Keras reserves
    `quantize`).
    """

    def __init__(self, units: int, bits: int = 8, per_channel: bool = True,
                 enabled: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units, self.bits = int(units), int(bits)
        self.per_channel, self.enabled = bool(per_channel), bool(enabled)
        self.mode = "off"
        self.params: QuantParams | None = None

    @classmethod
    def for_config(cls, config: QuantConfig, units: int, on: bool = True,
                   name: str | None = None) -> WeightQuant:
        return cls(units, config.weight_bits, config.per_channel,
                   on and config.quantizes("weights"), name=name)

    def build(self, input_shape: Any = None) -> None:
        shape = (self.units,) if self.per_channel else ()
        self.scale = _scalar_weight(self, "scale", init="ones", shape=shape)
        self.frozen = _scalar_weight(self, "frozen", "int32")
        self.mode_code = _scalar_weight(self, "mode", "int32")

    def fake_quantize(self, kernel: Any) -> Any:
        """kernel (in, units) on its weight grid (identity unless "fake_quant")."""
        if self.mode != "fake_quant" or not self.enabled:
            return kernel
        if self.params is not None:
            return keras_fake_quant(kernel, self.params)
        qmax = int_range(self.bits, True)[1]
        peak = ops.max(ops.abs(kernel), axis=0) if self.per_channel \
            else ops.max(ops.abs(kernel))
        scale = ops.stop_gradient(ops.where(peak > 0, peak / qmax, ops.ones_like(peak)))
        y = kernel / scale
        rounded = ops.sign(y) * ops.floor(ops.abs(y) + 0.5)  # half away from zero
        q = ops.clip(rounded, -qmax - 1, qmax) * scale
        return kernel + ops.stop_gradient(q - kernel)  # straight-through

    def call(self, kernel: Any) -> Any:
        return self.fake_quantize(kernel)

    def set_mode(self, mode: str) -> None:
        self.mode = "off" if mode == "observe" else mode  # weights need no observer
        self.mode_code.assign(MODES.index(self.mode))

    def freeze(self, kernel: np.ndarray) -> QuantParams:
        """Static parameters from the current (masked) kernel values."""
        w = np.abs(np.asarray(kernel, np.float32))
        self.params = symmetric_params(w.max(axis=0), self.bits, axis=1) if self.per_channel \
            else symmetric_params(w.max(), self.bits)
        self.scale.assign(np.asarray(self.params.scale if self.per_channel
                                     else self.params.scale[0], np.float32))
        self.frozen.assign(1)
        return self.params

    def sync(self) -> None:
        """Static mode and QuantParams from the weights (after loading them)."""
        self.mode = MODES[int(_np(self.mode_code))]
        if not int(_np(self.frozen)):
            self.params = None
            return
        scale = np.atleast_1d(_np(self.scale).astype(np.float32))
        self.params = QuantParams(tuple(float(s) for s in scale), (0,) * scale.size,
                                  self.bits, True, 1 if self.per_channel else None)

    def load_own_variables(self, store: Any) -> None:
        super().load_own_variables(store)
        if self.built:  # (an unused backward cell's points hold nothing)
            self.sync()

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"units": self.units, "bits": self.bits,
                       "per_channel": self.per_channel, "enabled": self.enabled})
        return config


# --- the integer kernels in keras.ops ----------------------------------------------------------


def _jax() -> bool:
    return keras.backend.backend() == "jax"


def keras_fake_quant_dense(x: Any, kernel: Any, bias: Any, p_x: QuantParams, p_w: QuantParams,
                           p_out: QuantParams) -> Any:
    """The int8 fully-connected kernel: x (B, K), kernel (K, N), bias (N,) -> (B, N).

    JAX: `fake_quant_dense` itself (bit-exact, recognized by ncc). Other backends: the
    float approximation fake_quant(fq(x) @ fq(W) + b) (not bit-exact).
    """
    if _jax():
        from ncc.models.quantization import fake_quant_dense

        return fake_quant_dense(x, ops.convert_to_tensor(kernel),
                                ops.convert_to_tensor(bias), p_x, p_w, p_out)
    y = ops.matmul(keras_fake_quant(x, p_x), keras_fake_quant(kernel, p_w)) + bias
    return keras_fake_quant(y, p_out)


def keras_fake_quant_binary(kind: str, a: Any, b: Any, p_a: QuantParams, p_b: QuantParams,
                            p_out: QuantParams) -> Any:
    """The int8 ADD / SUB / MUL kernel (JAX: `fake_quant_binary`, bit-exact; other
    backends: the float op onto p_out's grid)."""
    if _jax():
        from ncc.models.quantization import fake_quant_binary

        return fake_quant_binary(kind, a, b, p_a, p_b, p_out)
    return keras_fake_quant(_BINARY[kind](a, b), p_out)


_BINARY = {"add": ops.add, "sub": ops.subtract, "mul": ops.multiply}


def table_out_params(fn: str, p_in: QuantParams, out_bits: int = 8) -> QuantParams:
    """Output grid of the table for `fn` on input grid p_in (as the NNX cells choose it)."""
    from ncc.models.nnx.fake_quant import table_out_params as nnx_table_out_params

    return nnx_table_out_params(fn, p_in, out_bits)


def float_activation(fn: str, x: Any) -> Any:
    """fn(x) in keras.ops for a table activation name or "relu"."""
    if fn == "lecun_tanh":
        return lecun_tanh(x)
    return {"tanh": ops.tanh, "sigmoid": ops.sigmoid, "relu": ops.relu}[fn](x)


def table_or_float(x: Any, fn: str, point: QuantPoint, tables: bool) -> Any:
    """fn(x): through its deployed table when `point` (x's fake-quant) is frozen and in
    "fake_quant" mode and `tables` is on; else fn(point(x)) in float."""
    if tables and point.mode == "fake_quant" and point.enabled and point.params is not None:
        p_in = point.params
        return keras_fake_quant_table(point(x), fn, p_in, table_out_params(fn, p_in))
    return float_activation(fn, point(x))


# --- grid-tracking steps shared by the quantized cells (the NNX cells' helpers) ---------------


def on_point(point: QuantPoint, x: Any, exact: bool) -> tuple[Any, Grid]:
    """x through a fake-quant point; the grid it lands on when exact."""
    return point(x), (point.params if exact else None)


def dense_on_point(z: Any, p_z: Grid, kernel: Any, bias: Any, wq: WeightQuant,
                   point: QuantPoint, exact: bool) -> tuple[Any, Grid]:
    """z @ kernel + bias onto `point`'s grid: the int8 fully-connected kernel when exact."""
    if exact:
        return keras_fake_quant_dense(z, kernel, bias, p_z, wq.params, point.params), \
            point.params
    return point(ops.matmul(z, wq.fake_quantize(kernel)) + bias), None


def binary_on_point(kind: str, a: Any, p_a: Grid, b: Any, p_b: Grid, point: QuantPoint,
                    exact: bool) -> tuple[Any, Grid]:
    """a (add | sub | mul) b onto `point`'s grid: the int8 kernel when exact."""
    if exact:
        return keras_fake_quant_binary(kind, a, b, p_a, p_b, point.params), point.params
    return point(_BINARY[kind](a, b)), None


def activate_on_point(x: Any, p_x: Grid, fn: str, point: QuantPoint, tables: bool,
                      exact: bool) -> tuple[Any, Grid]:
    """fn(x); `point` is x's fake-quant (the table's input grid when tables are on)."""
    if fn == "relu":
        y = ops.relu(point(x))
        return (point(y), p_x) if exact else (y, None)
    if exact:
        p_out = table_out_params(fn, p_x)
        return keras_fake_quant_table(x, fn, p_x, p_out), p_out
    return table_or_float(x, fn, point, tables), None


def activation_name(activation: Any) -> str:
    """The table name of a Keras activation (function or name); "linear" for None."""
    name = getattr(activation, "__name__", activation) or "linear"
    return str(name)


def deployable_activation(activation: Any, layer: str) -> str:
    """`activation_name(activation)` if a quantized `layer` can deploy it (a table or
    relu); otherwise a ValueError naming the choices."""
    name = activation_name(activation)
    if name not in (*TABLE_ACTIVATIONS, "relu"):
        raise ValueError(f"a quantized {layer} needs a backbone activation among "
                         f"{(*TABLE_ACTIVATIONS, 'relu')}, got {name!r}")
    return name


def all_exact(points: list[QuantPoint], weights: list[WeightQuant]) -> bool:
    """Every point / weight quantizer enabled, frozen and in "fake_quant" mode (8-bit)."""
    return all(p.enabled and p.mode == "fake_quant" and p.params is not None and p.bits == 8
               for p in points) and all(
        w.enabled and w.mode == "fake_quant" and w.params is not None for w in weights)


# --- a Dense layer with quantization= ----------------------------------------------------------


@keras.saving.register_keras_serializable(package="ncc")
class QuantDense(keras.layers.Layer):
    """Dense with optional fake-quant: y = act(x @ kernel + bias), x (..., K) -> (..., units).

    With `quantization` the input, the kernel (symmetric, per channel) and the output get
    fake-quant points; frozen, the forward is the deployed int8 fully-connected kernel
    (`fake_quant_dense`). Without it, a plain Dense. activation: None, "linear" or
    "relu" when quantized (relu keeps the output grid), any Keras activation otherwise.
    """

    def __init__(self, units: int, activation: Any = None, use_bias: bool = True,
                 kernel_initializer: Any = "glorot_uniform", bias_initializer: Any = "zeros",
                 quantization: QuantConfig | dict | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units, self.use_bias = int(units), bool(use_bias)
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.quantization = as_quant_config(quantization)
        self.act_name = activation_name(self.activation)
        cfg = self.quantization
        if cfg is not None:
            if self.act_name not in ("linear", "relu"):
                raise ValueError(f"a quantized QuantDense takes activation None or 'relu', "
                                 f"got {self.act_name!r}")
            self.q_in = QuantPoint.for_part(cfg, "activations", cfg.activation_bits,
                                            name="q_in")
            self.q_out = QuantPoint.for_part(cfg, "activations", cfg.activation_bits,
                                             name="q_out")
            self.wq = WeightQuant.for_config(cfg, self.units, name="wq")

    def build(self, input_shape: Any) -> None:
        k = int(input_shape[-1])
        self.kernel = self.add_weight(name="kernel", shape=(k, self.units),
                                      initializer=self.kernel_initializer)
        self.bias = self.add_weight(name="bias", shape=(self.units,),
                                    initializer=self.bias_initializer) if self.use_bias \
            else None
        if self.quantization is not None:
            for layer in (self.q_in, self.q_out, self.wq):
                layer.build(None)

    def call(self, x: Any) -> Any:
        bias = self.bias if self.bias is not None else ops.zeros((self.units,))
        if self.quantization is None:
            return self.activation(ops.matmul(x, self.kernel) + bias)
        if all_exact([self.q_in, self.q_out], [self.wq]):
            shape = ops.shape(x)
            flat = ops.reshape(x, (-1, shape[-1]))
            y = keras_fake_quant_dense(flat, self.kernel, bias, self.q_in.params,
                                       self.wq.params, self.q_out.params)
            y = ops.reshape(y, (*shape[:-1], self.units))
        else:
            y = self.q_out(ops.matmul(self.q_in(x), self.wq.fake_quantize(self.kernel)) + bias)
        return ops.relu(y) if self.act_name == "relu" else y

    def quant_kernels(self) -> list[tuple[WeightQuant, np.ndarray]]:
        """(weight quantizer, current kernel) pairs, for `freeze`."""
        return [] if self.quantization is None else [(self.wq, _np(self.kernel))]

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (*input_shape[:-1], self.units)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({
            "units": self.units, "use_bias": self.use_bias,
            "activation": keras.activations.serialize(self.activation),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "quantization": None if self.quantization is None else self.quantization.to_dict(),
        })
        return config


# --- model-wide switches ---------------------------------------------------------------------


def quant_layers(model: keras.layers.Layer) -> list[keras.layers.Layer]:
    """Every QuantPoint / WeightQuant inside `model` (a layer or a model)."""
    return [layer for layer in model._flatten_layers(include_self=True, recursive=True)
            if isinstance(layer, QuantPoint | WeightQuant) and layer.built]


def _retrace(model: keras.layers.Layer) -> None:
    """Drop compiled fit / evaluate / predict functions: they baked in the old modes."""
    for attr in ("train_function", "test_function", "predict_function"):
        if getattr(model, attr, None) is not None:
            setattr(model, attr, None)


def set_quant_mode(model: keras.layers.Layer, mode: str) -> int:
    """Set every quantization point of `model` to "off", "observe" or "fake_quant" (weight
    quantizers: "observe" means "off"); returns how many. "observe" steps an RNN in a
    Python loop (observers update variables), so feed fixed-length sequences."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    layers = quant_layers(model)
    for layer in layers:
        layer.set_mode(mode)
    _retrace(model)
    return len(layers)


def freeze(model: keras.layers.Layer, *, weights: bool = True) -> dict[str, QuantParams | None]:
    """Freeze observed ranges (and, if `weights`, the kernels' grids) into QuantParams and
    switch everything to "fake_quant". Returns {layer path: params}."""
    frozen: dict[str, QuantParams | None] = {}
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if not layer.built:  # e.g. the unused backward cell of a forward-only RNN
            continue
        if isinstance(layer, QuantPoint):
            frozen[layer.path] = layer.freeze()
            layer.set_mode("fake_quant")
        elif weights and hasattr(layer, "quant_kernels"):
            for wq, kernel in layer.quant_kernels():
                frozen[wq.path] = wq.freeze(kernel)
    for layer in quant_layers(model):
        if isinstance(layer, WeightQuant):
            layer.set_mode("fake_quant")
    _retrace(model)
    return frozen


def sync_quant_state(model: keras.layers.Layer) -> None:
    """Rebuild static modes and QuantParams from the weights (after `set_weights`)."""
    for layer in quant_layers(model):
        layer.sync()


def is_observing(layer: keras.layers.Layer) -> bool:
    """True if any point inside `layer` is observing (an RNN then unrolls its loop)."""
    return any(isinstance(p, QuantPoint) and p.mode == "observe" for p in quant_layers(layer))
