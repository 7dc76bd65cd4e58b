"""Frontends: Keras 3, Flax NNX and plain JAX models -> `StepFunction`.

Every frontend produces the same thing, a pure JAX function of one timestep
over flat arrays, so one tracer serves them all.

- Keras: a model that is a chain of layers with recurrent layers in it
  (`keras.layers.RNN` and subclasses: SimpleRNN, GRU, LSTM, ncps/ncc CfC and
  LTC). Each recurrent layer contributes its cell's step; every other layer is
  applied to the per-step features (Dense heads, activations, dropout as
  identity). Runs under the Keras JAX backend.
- Flax NNX: a module with a step `__call__(x, state) -> (out, state)` and
  `initial_state(batch_size)` (the spyx 1.0 convention).
- JAX: a function `step(x, state) -> (y, state)` with an initial state pytree.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from ncc.compiler.keras_layers import check_per_step, output_semantics, step_failure  # noqa: E402
from ncc.compiler.trace import StepFunction, TraceError  # noqa: E402


def _flatten_state(state: Any) -> tuple[list[np.ndarray], list[str], Any]:
    leaves, treedef = jax.tree_util.tree_flatten_with_path(state)
    names = [jax.tree_util.keystr(path, simple=True, separator="_") or str(i)
             for i, (path, _) in enumerate(leaves)]
    arrays = [np.asarray(leaf, np.float32) if np.asarray(leaf).dtype.kind == "f"
              else np.asarray(leaf) for _, leaf in leaves]
    return arrays, names, jax.tree_util.tree_structure(state)


def _check_x_shape(name: str, x_shape: tuple[int, ...] | None) -> tuple[int, ...]:
    if x_shape is None:
        raise TraceError(f"{name}: the per-step input shape is unknown; pass --input-shape F")
    if any(int(d) <= 0 for d in x_shape):
        raise TraceError(f"{name}: input shape {list(x_shape)} must be positive")
    return (1, *(int(d) for d in x_shape))


def from_jax(fn: Callable[..., Any], x_shape: tuple[int, ...], initial_state: Any,
             name: str = "jax_step", uses_dt: bool = False) -> StepFunction:
    """fn(x, state) -> (y, state), or fn(x, state, dt) when `uses_dt`.

    x_shape: per-step features without batch, e.g. (F,). initial_state: pytree
    of arrays with a leading batch dimension of 1.
    """
    leaves, names, treedef = _flatten_state(initial_state)
    # a complex state leaf (spyx.phasor.ResonateFire's membrane) is two real states
    is_complex = [np.iscomplexobj(v) for v in leaves]
    real_leaves, real_names = [], []
    for leaf, leaf_name, c in zip(leaves, names, is_complex, strict=True):
        parts = [(f"{leaf_name}_re", leaf.real), (f"{leaf_name}_im", leaf.imag)] if c else [
            (leaf_name, leaf)]
        real_names += [n for n, _ in parts]
        real_leaves += [np.asarray(v, np.float32) if c else v for _, v in parts]

    def flat(x: Any, *args: Any) -> list[Any]:
        dt, flat_state = (args[0], list(args[1:])) if uses_dt else (None, list(args))
        state_leaves = []
        for c in is_complex:
            state_leaves.append(jax.lax.complex(flat_state[0], flat_state[1]) if c
                                else flat_state[0])
            flat_state = flat_state[2 if c else 1:]
        state = jax.tree_util.tree_unflatten(treedef, state_leaves)
        y, new_state = fn(x, state, dt) if uses_dt else fn(x, state)
        out = []
        for leaf in jax.tree_util.tree_leaves(new_state):
            out += [jnp.real(leaf), jnp.imag(leaf)] if jnp.iscomplexobj(leaf) else [leaf]
        return [y, *out]

    return StepFunction(name, flat, _check_x_shape(name, x_shape), real_leaves, real_names,
                        uses_dt)


def from_nnx(module: Any, x_shape: tuple[int, ...] | None = None,
             name: str | None = None) -> StepFunction:
    """A Flax NNX module with `__call__(x, state)` (optionally `dt=`) and `initial_state`."""
    from flax import nnx

    name = name or type(module).__name__
    if not hasattr(module, "initial_state"):
        raise TraceError(f"{name}: an NNX step module needs initial_state(batch_size)")
    x_shape = x_shape or getattr(module, "input_shape", None) or _nnx_input_shape(module)
    graphdef, params = nnx.split(module)
    uses_dt = "dt" in inspect.signature(type(module).__call__).parameters

    def step(x: Any, state: Any, dt: Any = None) -> Any:
        model = nnx.merge(graphdef, params)
        return model(x, state, dt=dt) if uses_dt else model(x, state)

    sf = from_jax(step, x_shape and tuple(x_shape), module.initial_state(1), name, uses_dt)
    leaves = jax.tree_util.tree_leaves_with_path(nnx.state(module))
    sf.const_names = {id(leaf): jax.tree_util.keystr(path, simple=True, separator="_")
                      for path, leaf in leaves}
    return sf


def _nnx_input_shape(module: Any) -> tuple[int, ...] | None:
    """Features of the first layer, when it is an nnx.Linear (spyx Sequential nets), or
    the unit shape of a neuron layer that is the whole model."""
    first = module.layers[0] if hasattr(module, "layers") and module.layers else module
    features = getattr(first, "in_features", None)
    if features is None and isinstance(getattr(first, "hidden_shape", None), tuple):
        return tuple(int(d) for d in first.hidden_shape)  # a lone neuron layer: x per unit
    return (int(features),) if features is not None else None


# --- Keras ---------------------------------------------------------------------------------


def _keras_layers(model: Any) -> list[Any]:
    import keras

    if isinstance(model, keras.layers.RNN):
        return [model]
    if not isinstance(model, keras.Model):
        raise TraceError(f"{model!r} is not a Keras model or recurrent layer")
    layers = [la for la in model.layers if not isinstance(la, keras.layers.InputLayer)]
    return layers


def _is_bidirectional(layer: Any) -> bool:
    import keras

    return isinstance(layer, keras.layers.Bidirectional) or bool(
        isinstance(layer, keras.layers.RNN) and getattr(layer, "bidirectional", False))


def needs_window(model: Any) -> bool:
    """True for a Keras model with a bidirectional recurrent layer (ncc's
    `bidirectional=True` or `keras.layers.Bidirectional`): it compiles over a fixed window
    only (`from_keras_window`)."""
    try:
        import keras
    except ImportError:  # pragma: no cover - keras is a dependency
        return False
    if not isinstance(model, (keras.Model, keras.layers.Layer)):
        return False
    layers = [model] if isinstance(model, keras.layers.RNN) or isinstance(
        model, keras.layers.Bidirectional) else _keras_layers(model)
    return any(_is_bidirectional(la) or (isinstance(la, keras.Model) and needs_window(la))
               for la in layers)


def _keras_step_parts(layers: list[Any], window: bool = False) -> list[tuple[str, Any]]:
    """Classify layers: ("rnn", layer) carries state, ("map", layer) maps per step;
    with `window` also ("bidirectional", layer) and backward RNNs."""
    import keras

    parts = []
    for layer in layers:
        if _is_bidirectional(layer):
            if not window:
                raise TraceError(f"layer {layer.name!r} is bidirectional: it needs the whole "
                                 "sequence and cannot run step by step; compile it over a "
                                 "fixed window with --sequence-length T (ncc compile) or "
                                 "sequence_length=T")
            parts.append(("bidirectional", layer))
            continue
        if isinstance(layer, keras.layers.RNN) and window:
            parts.append(("rnn", layer))
            continue
        if isinstance(layer, keras.layers.RNN):
            if layer.go_backwards:
                raise TraceError(f"layer {layer.name!r} runs backwards in time; ncc compiles "
                                 "causal (forward) recurrences only")
            parts.append(("rnn", layer))
        elif isinstance(layer, keras.layers.TimeDistributed):
            parts.append(("map", layer.layer))
        elif isinstance(layer, keras.Model):
            parts.extend(_keras_step_parts(_keras_layers(layer), window))
        else:
            check_per_step(layer)
            parts.append(("map", layer))
    if not any(kind in ("rnn", "bidirectional") for kind, _ in parts):
        raise TraceError("the Keras model has no recurrent layer (keras.layers.RNN): "
                         "nothing to compile step by step")
    return parts


def _cell_initial_state(cell: Any) -> list[np.ndarray]:
    sizes = cell.state_size if isinstance(cell.state_size, (list, tuple)) else [cell.state_size]
    return [np.zeros((1, int(s)), np.float32) for s in sizes]


def _initial_state_inputs(model: Any) -> dict[int, list[str]]:
    """{id(recurrent layer): names of the model inputs it takes as `initial_state`}, for a
    functional model whose RNN layers are called as `layer(x, initial_state=[h0, ...])`.

    An initial state computed inside the model (not a model input) is refused: a step
    artifact's state at t = 0 is a value, not a function of the first input."""
    import keras

    inputs = {id(t): t.name for t in (getattr(model, "inputs", None) or [])}
    found: dict[int, list[str]] = {}
    layers = getattr(model, "layers", None) or []
    for layer in layers:
        if not isinstance(layer, keras.layers.RNN):
            continue
        for node in getattr(layer, "_inbound_nodes", []):
            args = node.arguments
            given = args.kwargs.get("initial_state")
            if given is None and len(args.args) > 1:
                given = args.args[1]
            if given is None:
                continue
            tensors = keras.tree.flatten(given)
            missing = [t.name for t in tensors if id(t) not in inputs]
            if missing:
                raise TraceError(f"layer {layer.name!r} takes an initial state computed inside "
                                 f"the model ({', '.join(missing)}); ncc compiles an initial "
                                 "state that is a model input (keras.Input), whose value "
                                 "becomes the artifact's initial state")
            found[id(layer)] = [inputs[id(t)] for t in tensors]
    return found


def _state_values(names: list[str], init: list[np.ndarray], values: dict[str, Any],
                  layer: str) -> list[np.ndarray]:
    """The initial state of a layer whose state inputs are `names`: `values[name]` (shape
    (size,) or (1, size)) where given, else zeros."""
    if len(names) != len(init):
        raise TraceError(f"layer {layer!r} takes {len(names)} initial state input(s) "
                         f"({', '.join(names)}); its cell has {len(init)} state(s)")
    out = []
    for name, zero in zip(names, init, strict=True):
        if name not in values:
            out.append(zero)
            continue
        value = np.asarray(values[name], np.float32)
        if value.size != zero.size or value.ndim > 2 or (value.ndim == 2
                                                         and value.shape[0] != 1):
            raise TraceError(f"initial state {name!r} of layer {layer!r}: expected shape "
                             f"({zero.size},), got {list(value.shape)}")
        out.append(value.reshape(zero.shape))
    return out


def from_keras(model: Any, x_shape: tuple[int, ...] | None = None,
               name: str | None = None, uses_dt: bool | None = None,
               initial_state: dict[str, Any] | None = None) -> StepFunction:
    """A Keras model or RNN layer as a step: x -> pre-layers -> cells -> head -> y.

    uses_dt: feed a per-step time delta `dt` (batch, 1) to the first recurrent cell as
    `cell((h, dt), state)`, the ncps convention for CfC and LTC time spans. None infers it
    from the model: a model with two inputs (x and time spans) uses dt. Keras 3 `RNN`
    layers cannot take a nested (x, ts) sequence, so a model trained on regular steps
    compiled with `uses_dt=True` is how a device feeds irregular time spans.

    A recurrent layer called with `initial_state=` model inputs (`keras.Input`, as
    `CfC(..., return_state=True)(x, initial_state=h0)`): those inputs are its state at
    t = 0, so they are the artifact's state (named after the input) and not per-step
    inputs; `initial_state` {input name: value (size,)} gives their value, the artifact's
    initial state (zeros for an input it does not name).
    """
    import keras

    if keras.backend.backend() != "jax":
        raise TraceError("ncc traces Keras models under the JAX backend; set KERAS_BACKEND=jax "
                         "before importing keras (the .keras file itself may come from any "
                         "backend)")
    name = name or _stable_path(model.name)
    parts = _keras_step_parts(_keras_layers(model))
    state_inputs = _initial_state_inputs(model) if isinstance(model, keras.Model) else {}
    taken = {n for names in state_inputs.values() for n in names}
    values = dict(initial_state or {})
    unknown = sorted(set(values) - taken)
    if unknown:
        known = ", ".join(sorted(taken)) or "none"
        raise TraceError(f"initial state given for {', '.join(unknown)}, which the model "
                         f"does not take as a recurrent layer's initial_state (those: {known})")
    inputs = [t for t in (getattr(model, "inputs", None) or []) if t.name not in taken]
    if uses_dt is None:
        uses_dt = len(inputs) == 2
    declared = tuple(inputs[0].shape[2:]) if inputs else ()
    if inputs and all(d is not None for d in declared):
        if x_shape is not None and tuple(x_shape) != declared:
            raise TraceError(f"--input-shape {','.join(map(str, x_shape))} does not match "
                             f"the model's per-step input ({','.join(map(str, declared))})")
        x_shape = declared
    state0: list[np.ndarray] = []
    state_names: list[str] = []
    counts = []
    used: set[str] = set()
    for kind, layer in parts:
        if kind == "rnn":
            init = _cell_initial_state(layer.cell)
            base = _stable_path(layer.name)  # stable across compilations, unique here
            base = base if base not in used else f"{base}{len(used)}"
            used.add(base)
            names = [f"{base}_{i}" for i in range(len(init))]
            if id(layer) in state_inputs:  # the model's initial-state inputs: their value
                names = state_inputs[id(layer)]
                init = _state_values(names, init, values, layer.name)
            state0 += init
            state_names += names
            counts.append(len(init))

    def step(x: Any, *args: Any) -> list[Any]:
        dt, state = (args[0], list(args[1:])) if uses_dt else (None, list(args))
        h, new_state, k = x, [], 0
        for kind, layer in parts:
            if kind == "map":
                try:
                    h = layer(h, training=False)
                except TraceError:
                    raise
                except Exception as e:  # Keras's own shape errors do not name the cause
                    raise step_failure(layer, e) from e
                continue
            n = counts[k]
            cell_in = (h, dt) if dt is not None and k == 0 else h
            h, s = layer.cell(cell_in, state[:n], training=False)
            new_state += list(s) if isinstance(s, (list, tuple)) else [s]
            state, k = state[n:], k + 1
        return [jnp.asarray(h, jnp.float32), *new_state]

    sf = StepFunction(name, step, _check_x_shape(name, x_shape), state0, state_names, uses_dt)
    sf.const_names = {id(v.value): _stable_path(v.path) for v in model.weights}
    last_rnn = [layer for kind, layer in parts if kind == "rnn"][-1]
    sf.metadata["output_semantics"] = output_semantics(last_rnn)
    return sf


def _run_rnn(cell: Any, seq: list[Any], backwards: bool,
             return_sequences: bool) -> list[Any] | Any:
    """`cell` over the window `seq` (a list of T (1, F) arrays) from a zero state: the
    outputs in time order (return_sequences) or the last one processed."""
    state = [jnp.asarray(s) for s in _cell_initial_state(cell)]
    outputs = []
    for x in (reversed(seq) if backwards else seq):
        y, state = cell(x, state, training=False)
        state = list(state) if isinstance(state, (list, tuple)) else [state]
        outputs.append(y)
    if not return_sequences:
        return outputs[-1]
    return outputs[::-1] if backwards else outputs


def _merge(mode: str | None, fwd: Any, bwd: Any, layer: str) -> Any:
    if mode == "concat":
        return jnp.concatenate([fwd, bwd], axis=-1)
    if mode == "sum":
        return fwd + bwd
    if mode == "mul":
        return fwd * bwd
    if mode == "ave":
        return (fwd + bwd) / 2.0
    raise TraceError(f"layer {layer!r}: merge_mode {mode!r} returns two outputs; ncc compiles "
                     "concat, sum, mul or ave")


def _bidirectional_directions(layer: Any) -> tuple[Any, Any, str | None, bool]:
    """(forward cell, backward cell, merge mode, return_sequences) of ncc's
    `bidirectional=True` layer or a `keras.layers.Bidirectional` wrapper."""
    import keras

    if isinstance(layer, keras.layers.Bidirectional):
        fwd, bwd = layer.forward_layer, layer.backward_layer
        if fwd.go_backwards or not bwd.go_backwards:
            raise TraceError(f"layer {layer.name!r}: a Bidirectional wrapper whose forward "
                             "layer runs backwards is not supported")
        return fwd.cell, bwd.cell, layer.merge_mode, bool(fwd.return_sequences)
    return layer.cell, layer.backward_cell, layer.merge_mode, bool(layer.return_sequences)


def from_keras_window(model: Any, window: int, x_shape: tuple[int, ...] | None = None,
                      name: str | None = None) -> StepFunction:
    """A Keras model over a fixed window of `window` steps as one stateless function:
    x (1, T, F) -> y (1, T, out) (or (1, out) when the last recurrent layer returns its
    last output only).

    For a model with a bidirectional layer, which needs the whole sequence: every
    recurrent layer runs over the window from a zero state, unrolled (a forward layer
    t = 0 … T-1; a bidirectional layer's forward cell over t = 0 … T-1 and its backward
    cell over t = T-1 … 0 on the reversed input, outputs restored to time order and
    merged as the layer merges them); per-step layers apply at each step. The result is a
    plain graph (no state), which every target lowers as it lowers a step.
    """
    import keras

    if keras.backend.backend() != "jax":
        raise TraceError("ncc traces Keras models under the JAX backend; set KERAS_BACKEND=jax")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise TraceError(f"--sequence-length must be a positive integer, got {window!r}")
    name = name or _stable_path(model.name)
    layers = [model] if isinstance(model, (keras.layers.RNN, keras.layers.Bidirectional)) \
        else _keras_layers(model)
    parts = _keras_step_parts(layers, window=True)
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) > 1:
        raise TraceError(f"{name}: a windowed (bidirectional) model takes one input x; time "
                         "spans and initial states are not supported over a window")
    declared = tuple(inputs[0].shape[2:]) if inputs else ()
    if inputs and all(d is not None for d in declared):
        x_shape = declared
    step_shape = _check_x_shape(name, x_shape)

    def fn(x: Any) -> list[Any]:
        seq: Any = [x[:, t] for t in range(window)]  # T arrays (1, *features)
        for kind, layer in parts:
            if kind == "map":
                seq = [layer(h, training=False) for h in seq] if isinstance(seq, list) \
                    else layer(seq, training=False)
                continue
            if not isinstance(seq, list):
                raise TraceError(f"layer {layer.name!r} follows a recurrent layer that "
                                 "returns its last output only; it needs a sequence")
            if kind == "rnn":
                seq = _run_rnn(layer.cell, seq, bool(layer.go_backwards),
                               bool(layer.return_sequences))
                continue
            fwd_cell, bwd_cell, mode, sequences = _bidirectional_directions(layer)
            fwd = _run_rnn(fwd_cell, seq, False, sequences)
            bwd = _run_rnn(bwd_cell, seq, True, sequences)
            seq = [_merge(mode, a, b, layer.name) for a, b in zip(fwd, bwd, strict=True)] \
                if sequences else _merge(mode, fwd, bwd, layer.name)
        y = jnp.concatenate([jnp.reshape(h, (h.shape[0], 1, *h.shape[1:])) for h in seq],
                            axis=1) if isinstance(seq, list) else seq
        return [jnp.asarray(y, jnp.float32)]

    sf = StepFunction(f"{name}_window{window}", fn, (1, window, *step_shape[1:]), [], [],
                      False, metadata={"window": window})
    sf.const_names = {id(v.value): _stable_path(v.path) for v in model.weights}
    return sf


def _stable_path(path: str) -> str:
    """A weight path without Keras's uniquifying suffixes ("sequential_3/dense_1/kernel" ->
    "sequential/dense/kernel"): they count the layers created so far in the process, so
    keeping them would make two compilations of one model differ. Names that collide are
    told apart by the tracer, in trace order."""
    return "/".join(re.sub(r"_\d+$", "", part) for part in path.split("/"))


def from_model(model: Any, x_shape: tuple[int, ...] | None = None,
               initial_state: dict[str, Any] | None = None) -> StepFunction:
    """Dispatch on the model's kind: StepFunction, Keras, Flax NNX. initial_state: the
    values of a Keras model's initial-state inputs (`from_keras`)."""
    if isinstance(model, StepFunction) and not initial_state:
        return model
    try:
        import keras

        if isinstance(model, (keras.Model, keras.layers.Layer)):
            return from_keras(model, x_shape, initial_state=initial_state)
    except ImportError:  # pragma: no cover - keras is a dependency
        pass
    if initial_state:
        raise TraceError("an initial state value applies to a Keras model whose recurrent "
                         f"layer takes an initial_state input, not to {type(model).__name__}")
    from flax import nnx

    if isinstance(model, nnx.Module):
        if not hasattr(model, "initial_state"):  # a sequence layer (spyx.ssm): its step
            from ncc.compiler.sequence import from_sequence

            return from_sequence(model, x_shape)
        return from_nnx(model, x_shape)
    raise TraceError(f"cannot compile an object of type {type(model).__name__}: expected a "
                     "Keras model, a Flax NNX step module or an ncc StepFunction")
