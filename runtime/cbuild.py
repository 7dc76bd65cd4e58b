"""Build a C artifact folder (target c) with the system compiler and drive it with ctypes.

`build_library(dir)` compiles model.c + ncc_kernels.c into a shared library;
`CModel` wraps its API (ncc_init, ncc_step / ncc_step_dt, ncc_state) over numpy arrays.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

SOURCES = ("model.c", "ncc_kernels.c")
WARNINGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic")


def find_compiler(name: str | None = None) -> str:
    """A C compiler on PATH: `name`, else $CC, else cc, gcc or clang; raises if none."""
    for candidate in ([name] if name else [os.environ.get("CC"), "cc", "gcc", "clang"]):
        if candidate and shutil.which(candidate):
            return candidate
    raise RuntimeError(f"no C compiler found ({name or 'cc, gcc, clang'}); install gcc "
                       "(apt-get install gcc) or set CC")


def build_library(art_dir: str | Path, out: str | Path | None = None, cc: str | None = None,
                  flags: tuple[str, ...] = ("-O2",)) -> Path:
    """Compile the artifact's C sources into a shared library; returns its path.

    Warnings are errors (C99, -Wall -Wextra -pedantic): a generated file that warns fails."""
    art_dir = Path(art_dir)
    out = Path(out) if out else Path(tempfile.mkdtemp(prefix="ncc-c-")) / "libncc_model.so"
    cmd = [find_compiler(cc), *WARNINGS, *flags, "-shared", "-fPIC", "-o", str(out),
           *(str(art_dir / s) for s in SOURCES)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return out


class CModel:
    """ctypes over a built library. Tensors are passed as contiguous numpy arrays of the
    manifest's dtypes; state i is read and written through ncc_state(ctx, i)."""

    def __init__(self, library: str | Path, has_dt: bool):
        self.lib = ctypes.CDLL(str(library))
        self.lib.ncc_ctx_size.restype = ctypes.c_int32
        self.lib.ncc_state.restype = ctypes.c_void_p
        self.lib.ncc_state.argtypes = [ctypes.c_void_p, ctypes.c_int32]
        self.lib.ncc_state_bytes.restype = ctypes.c_int32
        self.ctx = ctypes.create_string_buffer(max(int(self.lib.ncc_ctx_size()), 1))
        self.step_fn = self.lib.ncc_step_dt if has_dt else self.lib.ncc_step
        self.ctx_ptr = ctypes.c_void_p(ctypes.addressof(self.ctx))
        self.lib.ncc_init(self.ctx_ptr)

    def reset(self) -> None:
        self.lib.ncc_reset(self.ctx_ptr)

    def _state_view(self, i: int, dtype: str) -> np.ndarray:
        size = int(self.lib.ncc_state_bytes(i))
        raw = (ctypes.c_char * size).from_address(self.lib.ncc_state(self.ctx_ptr, i))
        return np.frombuffer(raw, np.uint8 if dtype == "bool" else np.dtype(dtype))

    def get_state(self, i: int, dtype: str) -> np.ndarray:
        return self._state_view(i, dtype).copy()

    def set_state(self, i: int, value: np.ndarray) -> None:
        view = self._state_view(i, str(value.dtype))
        view[...] = np.asarray(value).reshape(-1)

    def step(self, x: np.ndarray, dts: list[np.ndarray], outputs: list[np.ndarray]) -> None:
        """One step; writes into the preallocated contiguous `outputs`."""
        arrays = [np.ascontiguousarray(x), *(np.ascontiguousarray(d) for d in dts), *outputs]
        self.step_fn(self.ctx_ptr, *(a.ctypes.data_as(ctypes.c_void_p) for a in arrays))
