"""A cache of traced float IR, so that compiling one model file again (another target,
other options) skips importing Keras, rebuilding the model and tracing it.

An entry is the canonical float graph as JSON + npz (`serialize`: no pickle), keyed by
the model file's sha256, the input shape, and a fingerprint of everything that shapes a
trace: ncc's own training-side and compiler sources, and the versions of jax, jaxlib,
keras, flax, spyx and ncps. Change any of them and the entry is simply not found.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from ncc.compiler.ir import Graph
from ncc.compiler.serialize import graph_arrays, graph_to_json, load_graph
from ncc.models.archive import ArchiveError, json_bytes, npz_bytes

TRACE_PACKAGES = ("jax", "jaxlib", "keras", "flax", "spyx", "ncps")


def cache_root() -> Path | None:
    """NCC_CACHE_DIR, else $XDG_CACHE_HOME/ncc or ~/.cache/ncc; None if NCC_NO_CACHE=1."""
    if os.environ.get("NCC_NO_CACHE") == "1":
        return None
    if os.environ.get("NCC_CACHE_DIR"):
        return Path(os.environ["NCC_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ncc"


@lru_cache(maxsize=1)
def _fingerprint() -> str:
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent  # compiler/; its siblings models/, numerics/
    for folder in (here, here.parent / "models", here.parent / "numerics"):
        for path in sorted(folder.rglob("*.py")):
            h.update(str(path.relative_to(folder.parent)).encode() + b"\0" + path.read_bytes())
    for name in TRACE_PACKAGES:
        try:
            h.update(f"{name}={metadata.version(name)}".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{name}=-".encode())
    return h.hexdigest()


def _entry(model_file: Path, input_shape: tuple[int, ...] | None) -> Path | None:
    root = cache_root()
    if root is None or not model_file.is_file():
        return None
    h = hashlib.sha256(model_file.read_bytes())
    h.update(repr(input_shape).encode() + _fingerprint().encode())
    return root / "ir" / h.hexdigest()[:40]


def cached_graph(model_file: Path, input_shape: tuple[int, ...] | None) -> Graph | None:
    """The float IR traced earlier from this very file and environment, or None."""
    entry = _entry(model_file, input_shape)
    if entry is None or not (entry / "float.json").is_file():
        return None
    try:
        return load_graph(entry / "float")
    except ArchiveError:  # a damaged entry is a miss; it is rewritten below
        return None


def store_graph(model_file: Path, input_shape: tuple[int, ...] | None, g: Graph) -> None:
    """Keep `g` for `cached_graph`; a cache that cannot be written is skipped silently."""
    entry = _entry(model_file, input_shape)
    if entry is None:
        return
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=".tmp-"))
    except OSError:
        return
    try:
        (tmp / "float.json").write_bytes(json_bytes(graph_to_json(g)))
        (tmp / "float.npz").write_bytes(npz_bytes(graph_arrays(g)))
        shutil.rmtree(entry, ignore_errors=True)
        tmp.rename(entry)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
