"""Model inputs: a `.keras` file, an ncc `.ckpt`, or a Python reference `module:factory`."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import zipfile
from pathlib import Path
from typing import Any

from ncc.models.archive import ArchiveError


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


def _load_keras(path: Path) -> Any:
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    from ncc.models.checkpoint import _register_keras_layers

    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(f"{path}: corrupt or truncated .keras file (not a zip archive)")
    _register_keras_layers()
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelLoadError(f"{path}: cannot load the Keras model ({msg})") from None


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
        except Exception as e:
            raise ModelLoadError(f"{ref}: the factory raised {type(e).__name__}: {e}") from None
    return factory
