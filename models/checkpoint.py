"""ncc checkpoints (`.ckpt`): a self-describing zip of `spec.json` + `weights.npz`.

- Keras models: the spec holds `keras.saving.serialize_keras_object(model)`;
  loading deserializes it with `safe_mode=True` and assigns the weights in
  `model.weights` order.
- Flax NNX modules: the spec holds a tree of {"class", "kwargs"} (and
  "layers" for `spyx.nn.Sequential`); loading rebuilds the module from an
  allowlist of packages (spyx, flax.nnx, ncc.models) and restores its state,
  and the fake-quant status of its submodules (each point's mode and frozen
  parameters, each spiking neuron's `quantized` switch), so a QAT model
  compiles with its own parameters after loading.

No pickle anywhere: weights load with `allow_pickle=False`, and a spec can only
name classes from the allowlist, so a checkpoint cannot run arbitrary code.
"""

from __future__ import annotations

import importlib
import io
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ncc.models.archive import ArchiveError, atomic_write, json_bytes, npz_bytes, npz_from_bytes

FORMAT = "ncc-ckpt/1"
ALLOWED_PACKAGES = ("spyx.", "flax.nnx", "ncc.models.")

# spyx neurons: constructor arguments that live as plain attributes
_SPYX_ARGS = {
    "LIF": ("hidden_shape", "threshold"), "IF": ("hidden_shape", "threshold"),
    "LI": ("layer_shape",), "CuBaLIF": ("hidden_shape", "threshold"),
    "ALIF": ("hidden_shape", "threshold"), "RLIF": ("hidden_shape", "threshold"),
    "RIF": ("hidden_shape", "threshold"), "RCuBaLIF": ("hidden_shape", "threshold"),
}


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


def _resolve(path: str) -> Any:
    module, _, qualname = path.partition(":")
    if not any(module == p.rstrip(".") or module.startswith(p) for p in ALLOWED_PACKAGES):
        raise ArchiveError(f"checkpoint names class {path!r} outside the allowed packages "
                           f"{', '.join(p.rstrip('.') for p in ALLOWED_PACKAGES)}; refusing")
    try:
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        raise ArchiveError(f"checkpoint names class {path!r}, which does not exist") from None
    return obj


def _build_nnx(spec: dict[str, Any]) -> Any:
    from flax import nnx

    cls = _resolve(spec["class"])
    if "layers" in spec:
        return cls(*[_build_nnx(s) for s in spec["layers"]])
    return cls(**_unjson(spec.get("kwargs", {})), rngs=nnx.Rngs(0))


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


def _restore_fake_quant(module: Any, status: dict[str, dict[str, Any]]) -> None:
    from flax import nnx

    from ncc.models.quantization import QuantParams

    subs = {"/".join(map(str, path)): sub for path, sub in nnx.iter_modules(module)}
    for path, entry in status.items():
        sub = subs.get(path)
        if sub is None:
            raise ArchiveError(f"checkpoint has fake-quant status for {path!r}, which the "
                               "rebuilt module lacks")
        if "mode" in entry:
            sub.mode = entry["mode"]
            sub.params = None if entry["params"] is None else \
                QuantParams.from_dict(entry["params"])
        if "quantized" in entry:
            sub.quantized = bool(entry["quantized"])
        if "io_params" in entry:
            sub.io_params = tuple(QuantParams.from_dict(p) for p in entry["io_params"])


def save_checkpoint(model: Any, path: str | Path) -> Path:
    """Write `model` (Keras model or Flax NNX module) to `path` (.ckpt), atomically."""
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
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in (("spec.json", json_bytes(spec)), ("weights.npz", npz_bytes(arrays))):
            zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    atomic_write(path, buf.getvalue())
    return path


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The spec and the weight arrays, validated; ArchiveError on any defect."""
    path = Path(path)
    if not path.is_file():
        raise ArchiveError(f"{path}: no such file")
    try:
        with zipfile.ZipFile(path) as zf:
            spec = json.loads(zf.read("spec.json"))
            weights = zf.read("weights.npz")
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ArchiveError(f"{path}: corrupt or truncated checkpoint ({e})") from None
    except KeyError as e:
        raise ArchiveError(f"{path}: not an ncc checkpoint (missing {e.args[0]})") from None
    except json.JSONDecodeError as e:
        raise ArchiveError(f"{path}: spec.json is not valid JSON ({e})") from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise ArchiveError(f"{path}: unknown checkpoint format {spec.get('format')!r}")
    return spec, npz_from_bytes(weights, f"{path}:weights.npz")


def load_checkpoint(path: str | Path) -> Any:
    """Rebuild the model saved by `save_checkpoint`."""
    spec, arrays = read_checkpoint(path)
    if spec["framework"] == "keras":
        import keras

        _register_keras_layers()
        try:
            model = keras.saving.deserialize_keras_object(spec["config"], safe_mode=True)
        except Exception as e:
            raise ArchiveError(f"{path}: cannot rebuild the Keras model ({e})") from None
        values = [arrays[k] for k in sorted(arrays)]
        shapes = [tuple(v.shape) for v in model.weights]
        if shapes != [tuple(a.shape) for a in values]:
            raise ArchiveError(f"{path}: weights do not match the model's variables")
        model.set_weights(values)
        from ncc.models.keras.quant import sync_quant_state

        sync_quant_state(model)  # static fake-quant modes / parameters from the weights
        return model
    if spec["framework"] == "nnx":
        from flax import nnx

        module = _build_nnx(spec["module"])
        current = _state_arrays(module)
        if set(current) != set(arrays):
            raise ArchiveError(f"{path}: weights {sorted(arrays)} do not match the module's "
                               f"state {sorted(current)}")
        state = nnx.state(module)
        for p, var in nnx.to_flat_state(state):
            var.set_value(arrays["/".join(map(str, p))])
        nnx.update(module, state)
        _restore_fake_quant(module, spec.get("fake_quant", {}))
        if spec.get("input_shape") is not None:
            module.input_shape = _unjson(spec["input_shape"])
        return module
    raise ArchiveError(f"{path}: unknown framework {spec['framework']!r}")


def _register_keras_layers() -> None:
    """Import the packages whose layers a saved model may use, so Keras finds them."""
    for name in ("ncc.models.keras", "ncps.keras"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass
