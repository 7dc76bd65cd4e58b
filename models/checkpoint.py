"""ncc checkpoints (`.ckpt`): a self-describing zip of `spec.json` + `weights.npz`.

- Keras models: the spec holds `keras.saving.serialize_keras_object(model)`;
  loading deserializes it with `safe_mode=True` and assigns the weights in
  `model.weights` order.
- Flax NNX modules: the spec holds a tree of {"class", "kwargs"} (and
  "layers" for `spyx.nn.Sequential`); loading rebuilds the module and restores
  its state, and the fake-quant status of its submodules (each point's mode and
  frozen parameters, each spiking neuron's `quantized` switch), so a QAT model
  compiles with its own parameters after loading.

What a spec may name and hold, and the limits, are `ncc.models.checkpoint_spec`; every
refusal is an `ArchiveError` (one line: the file, the field, what is wrong).
"""

from __future__ import annotations

import importlib
import inspect
import io
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ncc.models.archive import (
    ArchiveError,
    atomic_write,
    check_members,
    npz_bytes,
    npz_from_bytes,
    one_line,
    open_zip,
    read_member,
)
from ncc.models.checkpoint_spec import (
    FORMAT,
    MAX_SPEC_BYTES,
    MAX_WEIGHTS_BYTES,
    NNX_CLASSES,
    check_spec,
    parse_json,
    shorten,
    sub_field,
    unknown_class_message,
)

# spyx neurons: constructor arguments that live as plain attributes
_SPYX_ARGS = {
    "LIF": ("hidden_shape", "threshold"), "IF": ("hidden_shape", "threshold"),
    "LI": ("layer_shape",), "CuBaLIF": ("hidden_shape", "threshold"),
    "ALIF": ("hidden_shape", "threshold"), "RLIF": ("hidden_shape", "threshold"),
    "RIF": ("hidden_shape", "threshold"), "RCuBaLIF": ("hidden_shape", "threshold"),
}

# --- reading ---------------------------------------------------------------------------------


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The spec and the weight arrays, validated; ArchiveError on any defect.

    The spec is checked (registries, types, sizes) before the weights are read.
    """
    path = Path(path)
    if not path.is_file():
        raise ArchiveError(f"{path}: no such file")
    with open_zip(path, str(path)) as zf:
        names = set(zf.namelist())
        for name in ("spec.json", "weights.npz"):
            if name not in names:
                raise ArchiveError(f"{path}: not an ncc checkpoint (missing {name!r})")
        infos = check_members(zf, str(path), limit=MAX_SPEC_BYTES + MAX_WEIGHTS_BYTES,
                              expected=("spec.json", "weights.npz"),
                              limits={"spec.json": MAX_SPEC_BYTES,
                                      "weights.npz": MAX_WEIGHTS_BYTES})
        members = {info.filename: info for info in infos}
        spec = check_spec(parse_json(read_member(zf, members["spec.json"], str(path)),
                                     str(path), "spec.json"), str(path))
        weights = read_member(zf, members["weights.npz"], str(path))
    arrays = npz_from_bytes(weights, f"{path}:weights.npz", max_bytes=MAX_WEIGHTS_BYTES,
                            finite=True)
    return spec, arrays


# --- saving ----------------------------------------------------------------------------------


def _class_path(obj: Any) -> str:
    cls = type(obj)
    module = cls.__module__
    if module == "__main__":  # a script run with `python -m package.module`
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec is not None and spec.name else module
    if module.startswith("flax.nnx"):
        module = "flax.nnx"
    elif module.startswith("spyx.nn"):
        module = "spyx.nn"
    return f"{module}:{cls.__qualname__}"


def _nnx_spec(module: Any) -> dict[str, Any]:
    from flax import nnx

    path = _class_path(module)
    name = type(module).__name__
    if path not in NNX_CLASSES:
        raise ArchiveError(f"cannot checkpoint NNX module {path}: it is not in the registry "
                           "of allowed classes (add it to ncc.models.checkpoint_spec.NNX_CLASSES)")
    if name == "Sequential" and path.startswith("spyx"):
        return {"class": path, "layers": [_nnx_spec(m) for m in module.layers]}
    if isinstance(module, nnx.Linear):
        return {"class": path, "kwargs": {"in_features": module.in_features,
                                          "out_features": module.out_features,
                                          "use_bias": module.use_bias}}
    if path.startswith("spyx") and name in _SPYX_ARGS:
        kwargs = {k: getattr(module, k) for k in _SPYX_ARGS[name]}
        return {"class": path, "kwargs": _jsonable(kwargs)}
    if hasattr(module, "get_config"):
        return {"class": path, "kwargs": _jsonable(module.get_config())}
    raise ArchiveError(f"cannot checkpoint NNX module {path}: give it get_config() returning "
                       "its constructor arguments")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, tuple):
        return {"__tuple__": [_jsonable(v) for v in obj]}
    if isinstance(obj, list):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _unjson(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tuple__"}:
            return tuple(_unjson(v) for v in obj["__tuple__"])
        return {k: _unjson(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unjson(v) for v in obj]
    return obj


def _state_arrays(module: Any) -> dict[str, np.ndarray]:
    from flax import nnx

    flat = nnx.to_flat_state(nnx.state(module))
    return {"/".join(map(str, path)): np.asarray(var.get_value()) for path, var in flat}


def _fake_quant_status(module: Any) -> dict[str, dict[str, Any]]:
    """{submodule path: {"mode", "params", "quantized"}} for the fake-quant parts."""
    from flax import nnx

    from ncc.models.quantization import QuantParams

    status: dict[str, dict[str, Any]] = {}
    for path, sub in nnx.iter_modules(module):
        entry: dict[str, Any] = {}
        if isinstance(getattr(sub, "mode", None), str) and hasattr(sub, "params"):
            params = sub.params
            entry["mode"] = sub.mode
            entry["params"] = params.to_dict() if isinstance(params, QuantParams) else None
        if isinstance(getattr(sub, "quantized", None), bool):
            entry["quantized"] = sub.quantized
        if getattr(sub, "io_params", None) is not None:
            entry["io_params"] = [p.to_dict() for p in sub.io_params]
        if entry:
            status["/".join(map(str, path))] = entry
    return status


def save_checkpoint(model: Any, path: str | Path) -> Path:
    """Write `model` (Keras model or Flax NNX module) to `path` (.ckpt), atomically.

    Refuses (ArchiveError) a model that `load_checkpoint` would refuse: a class outside
    the registry, sizes over the limits.
    """
    import keras

    path = Path(path)
    if isinstance(model, keras.Model):
        arrays = {f"{i:04d}": np.asarray(w) for i, w in enumerate(model.get_weights())}
        spec = {"format": FORMAT, "framework": "keras",
                "config": keras.saving.serialize_keras_object(model),
                "weights": [v.path for v in model.weights]}
    else:
        arrays = _state_arrays(model)
        spec = {"format": FORMAT, "framework": "nnx", "module": _nnx_spec(model),
                "input_shape": _jsonable(getattr(model, "input_shape", None)),
                "fake_quant": _fake_quant_status(model)}
    # compact (sorted) JSON: wiring matrices stay small; the same checks as loading
    spec_bytes = json.dumps(spec, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    check_spec(parse_json(spec_bytes, str(path), "spec.json"), f"cannot checkpoint to {path}")
    weight_bytes = npz_bytes(arrays)
    for what, data, limit in (("spec.json", spec_bytes, MAX_SPEC_BYTES),
                              ("weights.npz", weight_bytes, MAX_WEIGHTS_BYTES)):
        if len(data) > limit:
            raise ArchiveError(f"cannot checkpoint to {path}: {what} would take {len(data)} "
                               f"bytes, over the loading limit {limit}")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in (("spec.json", spec_bytes), ("weights.npz", weight_bytes)):
            zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    atomic_write(path, buf.getvalue())
    return path


# --- loading ---------------------------------------------------------------------------------


def _resolve(name: str) -> type:
    """The class registered under `name` (an exact NNX_CLASSES key): import its module,
    take one attribute. Nothing else is imported or looked up."""
    if name not in NNX_CLASSES:  # check_spec refused it already; kept as a second lock
        raise ArchiveError(unknown_class_message(name))
    module, _, attr = name.partition(":")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ArchiveError(f"allowed class {name!r} cannot be imported here "
                           f"({one_line(e)})") from None
    if not isinstance(obj, type):
        raise ArchiveError(f"allowed class {name!r} is not a class")
    return obj


def _check_signature(cls: type, name: str, kwargs: dict[str, Any], where: str,
                     field: str) -> None:
    """Registry arguments must be real parameters; required parameters must be given."""
    params = inspect.signature(cls.__init__).parameters
    allowed = NNX_CLASSES[name] or {}
    for key in kwargs:
        if key not in params or key not in allowed or key in ("self", "rngs"):
            raise ArchiveError(f"{where}: spec.json {sub_field(f'{field}.kwargs', key)}: {name} "
                               f"takes no argument {key!r}")
    for pname, p in list(params.items())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or pname == "rngs":
            continue
        if p.default is p.empty and pname not in kwargs:
            raise ArchiveError(f"{where}: spec.json {field}.kwargs: {name} needs argument "
                               f"{pname!r}")


def _build_nnx(spec: dict[str, Any], where: str, field: str = "module") -> Any:
    from flax import nnx

    name = spec["class"]
    cls = _resolve(name)
    if NNX_CLASSES[name] is None:
        layers = [_build_nnx(s, where, f"{field}.layers[{i}]")
                  for i, s in enumerate(spec["layers"])]
        try:
            return cls(*layers)
        except Exception as e:
            raise ArchiveError(f"{where}: spec.json {field}: cannot build {name} "
                               f"({type(e).__name__}: {one_line(e)})") from None
    kwargs = spec.get("kwargs", {})
    _check_signature(cls, name, kwargs, where, field)
    try:
        return cls(**_unjson(kwargs), rngs=nnx.Rngs(0))
    except Exception as e:
        raise ArchiveError(f"{where}: spec.json {field}: cannot build {name} "
                           f"({type(e).__name__}: {one_line(e)})") from None


def _restore_fake_quant(module: Any, status: dict[str, dict[str, Any]], where: str) -> None:
    from flax import nnx

    from ncc.models.quantization import QuantParams

    def params(d: dict[str, Any], field: str) -> Any:
        try:
            return QuantParams.from_dict(d)
        except Exception as e:
            raise ArchiveError(f"{where}: spec.json {field}: invalid quantization parameters "
                               f"({type(e).__name__}: {one_line(e)})") from None

    subs = {"/".join(map(str, path)): sub for path, sub in nnx.iter_modules(module)}
    for path, entry in status.items():
        field = sub_field("fake_quant", path)
        sub = subs.get(path)
        if sub is None:
            raise ArchiveError(f"{where}: checkpoint has fake-quant status for {path!r}, which "
                               "the rebuilt module lacks")
        if "mode" in entry:
            if not (isinstance(getattr(sub, "mode", None), str) and hasattr(sub, "params")):
                raise ArchiveError(f"{where}: spec.json {field}.mode: {path!r} has no "
                                   "fake-quant mode")
            sub.mode = entry["mode"]
            sub.params = None if entry["params"] is None else \
                params(entry["params"], f"{field}.params")
        if "quantized" in entry:
            if not isinstance(getattr(sub, "quantized", None), bool):
                raise ArchiveError(f"{where}: spec.json {field}.quantized: {path!r} has no "
                                   "quantized switch")
            sub.quantized = bool(entry["quantized"])
        if "io_params" in entry:
            if not hasattr(sub, "io_params"):
                raise ArchiveError(f"{where}: spec.json {field}.io_params: {path!r} has no "
                                   "io_params")
            sub.io_params = tuple(params(p, f"{field}.io_params[{i}]")
                                  for i, p in enumerate(entry["io_params"]))


def _load_keras(spec: dict[str, Any], arrays: dict[str, np.ndarray], where: str) -> Any:
    import keras

    from ncc.models.keras.loading import placeholder_initializers

    register_keras_layers()
    names = sorted(arrays)
    if names != [f"{i:04d}" for i in range(len(names))]:
        raise ArchiveError(f"{where}: weights.npz arrays {names[:4]}... are not named "
                           "0000, 0001, ... as a Keras checkpoint's are")
    if "weights" in spec and len(spec["weights"]) != len(names):
        raise ArchiveError(f"{where}: spec.json weights lists {len(spec['weights'])} variables "
                           f"but weights.npz holds {len(names)} arrays")
    config = dict(spec["config"])
    config.pop("compile_config", None)  # never trained here: no optimizer, no loss
    try:
        with placeholder_initializers():  # set_weights below assigns every variable
            model = keras.saving.deserialize_keras_object(config, safe_mode=True)
    except Exception as e:
        raise ArchiveError(f"{where}: cannot rebuild the Keras model ({type(e).__name__}: "
                           f"{one_line(e)})") from None
    if not isinstance(model, keras.Model):
        raise ArchiveError(f"{where}: spec.json config does not describe a Keras model "
                           f"(got {type(model).__name__})")
    values = [arrays[k] for k in names]
    shapes = [tuple(v.shape) for v in model.weights]
    if shapes != [tuple(a.shape) for a in values]:
        raise ArchiveError(f"{where}: weights do not match the model's variables")
    from ncc.models.keras.quant import sync_quant_state

    try:
        model.set_weights(values)
        sync_quant_state(model)  # static fake-quant modes / parameters from the weights
    except Exception as e:
        raise ArchiveError(f"{where}: cannot restore the weights ({type(e).__name__}: "
                           f"{one_line(e)})") from None
    return model


def _load_nnx(spec: dict[str, Any], arrays: dict[str, np.ndarray], where: str) -> Any:
    from flax import nnx

    module = _build_nnx(spec["module"], where)
    current = _state_arrays(module)
    if set(current) != set(arrays):
        raise ArchiveError(f"{where}: weights {shorten(sorted(arrays), 200)} do not match the "
                           f"module's state {shorten(sorted(current), 200)}")
    # shapes may differ from a fresh module's (a spyx neuron saved with a scalar decay is
    # rebuilt with a per-neuron one): the saved arrays are the state, as saved
    try:
        state = nnx.state(module)
        for p, var in nnx.to_flat_state(state):
            var.set_value(arrays["/".join(map(str, p))])
        nnx.update(module, state)
    except Exception as e:
        raise ArchiveError(f"{where}: cannot restore the weights ({type(e).__name__}: "
                           f"{one_line(e)})") from None
    _restore_fake_quant(module, spec.get("fake_quant", {}), where)
    if spec.get("input_shape") is not None:
        module.input_shape = _unjson(spec["input_shape"])
    return module


def load_checkpoint(path: str | Path) -> Any:
    """Rebuild the model saved by `save_checkpoint`; ArchiveError (one line) on any defect."""
    spec, arrays = read_checkpoint(path)
    if spec["framework"] == "keras":
        return _load_keras(spec, arrays, str(path))
    return _load_nnx(spec, arrays, str(path))


def register_keras_layers() -> None:
    """Import the packages whose layers a saved model may use, so Keras finds them."""
    for name in ("ncc.models.keras", "ncps.keras"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass
