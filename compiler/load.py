"""Model inputs: a `.keras` file, an ncc `.ckpt`, or a Python reference `module:factory`.

Files are untrusted data and load without running their code:

- `.ckpt`: `ncc.models.checkpoint.load_checkpoint` (a registry of allowed classes,
  checked arguments and sizes, bounded zip members, npz without pickle, finite weights).
- `.keras`: the zip's members are checked first (safe names, only the members Keras
  writes, declared sizes within limits); its `config.json` goes through the same class
  registry and size limits as a checkpoint's Keras config; Keras then loads it with
  `safe_mode=True` (no lambdas), and NaN / inf weights are refused.
- `package.module:factory` is code the user names on the command line: it is imported
  and called, as asked.

Every refusal is a `ModelLoadError` with a one-line message (exit code 2 in the CLI).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ncc.compiler.requires import PIP_NAMES, install_hint
from ncc.models.archive import ArchiveError, check_members, one_line, open_zip, read_member

#: Members a `.keras` file may hold (what `keras.saving` writes).
KERAS_MEMBERS = re.compile(r"(config\.json|metadata\.json|model\.weights[\w.-]*\.(h5|npz|json)"
                           r"|assets/.*)\Z")
#: Room for what an HDF5 weights file adds to the weights themselves.
_H5_OVERHEAD = 16 << 20


class ModelLoadError(ValueError):
    """The model argument cannot be loaded; the message says which input and why."""


def load_model(ref: str) -> Any:
    """Load what `ncc compile MODEL` names. Raises ModelLoadError with a one-line reason."""
    path = Path(ref)
    if path.suffix == ".keras":
        return _load_keras(path)
    if path.suffix == ".ckpt":
        from ncc.models.checkpoint import load_checkpoint

        try:
            return load_checkpoint(path)
        except ArchiveError as e:
            raise ModelLoadError(str(e)) from None
    if ":" in ref and not path.exists():
        return _load_factory(ref)
    if path.exists():
        raise ModelLoadError(f"{ref}: unknown model file type {path.suffix!r}; expected .keras, "
                             ".ckpt or a Python reference package.module:factory")
    raise ModelLoadError(f"{ref}: no such file (expected .keras, .ckpt or package.module:factory)")


def check_keras_file(path: Path) -> None:
    """A `.keras` zip checked before Keras opens it: member names and sizes, then its
    config.json against the checkpoint registry and limits. ModelLoadError otherwise."""
    from ncc.models.checkpoint_spec import (
        MAX_SPEC_BYTES,
        MAX_WEIGHTS_BYTES,
        check_keras_config,
        parse_json,
    )

    where = str(path)
    try:
        with open_zip(path, where) as zf:
            infos = check_members(zf, where, limit=MAX_SPEC_BYTES + MAX_WEIGHTS_BYTES
                                  + _H5_OVERHEAD, limits={"config.json": MAX_SPEC_BYTES,
                                                          "metadata.json": 1 << 20},
                                  allow_dirs=True)
            for info in infos:
                if not KERAS_MEMBERS.match(info.filename):
                    raise ArchiveError(f"{where}: unexpected member {info.filename!r} (a "
                                       ".keras file holds config.json, metadata.json, "
                                       "model.weights.* and assets/); refusing")
            config = next((i for i in infos if i.filename == "config.json"), None)
            if config is None:
                raise ArchiveError(f"{where}: no config.json; not a Keras 3 model file")
            data = read_member(zf, config, where)
    except ArchiveError as e:
        raise ModelLoadError(str(e)) from None
    try:
        check_keras_config(parse_json(data, where, "config.json"), where)
    except ArchiveError as e:
        reason = str(e).removeprefix(f"{where}: ")
        raise ModelLoadError(f"{where}: cannot load the Keras model ({reason})") from None


def _load_keras(path: Path) -> Any:
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    from ncc.models.checkpoint import register_keras_layers
    from ncc.models.keras.loading import placeholder_initializers

    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(f"{path}: corrupt or truncated .keras file (not a zip archive)")
    check_keras_file(path)
    register_keras_layers()
    try:
        with placeholder_initializers():  # every weight is read from the file
            model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as e:
        raise ModelLoadError(f"{path}: cannot load the Keras model ({one_line(e)})") from None
    for v in getattr(model, "weights", []):
        value = np.asarray(v)
        if value.dtype.kind == "f":
            bad = int(value.size - np.count_nonzero(np.isfinite(value)))
            if bad:
                raise ModelLoadError(f"{path}: weight {v.path!r} has {bad} NaN or infinite "
                                     f"value{'s' if bad > 1 else ''}; refusing")
    return model


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # e.g. a None entry in sys.modules: import fails
        return False


def _load_factory(ref: str) -> Any:
    module_name, _, attr = ref.partition(":")
    added = os.getcwd() not in sys.path
    if added:
        sys.path.insert(0, os.getcwd())  # let users name modules next to them
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ModelLoadError(f"{ref}: cannot import module {module_name!r} ({e})") from None
    finally:
        if added:
            sys.path.remove(os.getcwd())
    factory = getattr(module, attr, None)
    if factory is None:
        raise ModelLoadError(f"{ref}: module {module_name!r} has no attribute {attr!r}")
    if inspect.isfunction(factory) or inspect.isclass(factory):
        try:
            return factory()
        except ImportError as e:  # e.g. spyx.quant without qwix: one line, the pip command
            missing = e.name or next((m for m in PIP_NAMES if m in str(e)
                                      and not _installed(m)), None)
            if missing is None:
                raise ModelLoadError(f"{ref}: the factory raised ImportError: {e}") from None
            raise ModelLoadError(f"{ref}: the model needs the Python package "
                                 f"{missing.split('.')[0]!r}, which is not installed: "
                                 f"{install_hint(missing)}") from None
        except Exception as e:
            raise ModelLoadError(f"{ref}: the factory raised {type(e).__name__}: {e}") from None
    return factory
