"""Build a C artifact folder (target c) with the system compiler and drive it.

`build_library(dir)` compiles model.c + ncc_kernels.c into a shared library;
`CModel` wraps its API (ncc_init, ncc_step / ncc_step_dt, ncc_state) over numpy arrays.
`build_executable(dir)` links the same sources with the stdin/stdout driver
`runtime/c/host/ncc_main.c` into a program (what sanitizers and valgrind run);
`run_executable` feeds it a sequence. `encode_steps` / `decode_trace` are the byte
formats of that driver and of the Cortex-M one (`ncc.runtime.cortex_m`).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ncc.compiler.ir import QuantParams
from ncc.compiler.requires import MissingDependency
from ncc.models.archive import ArchiveError
from ncc.numerics import quantize
from ncc.targets.c_toolchain import SOURCES, WARNINGS


class NoCompiler(MissingDependency):
    """No C compiler on this machine: the c target compiles, but cannot be run here."""


def find_compiler(name: str | None = None) -> str:
    """A C compiler on PATH: `name`, else $CC, else cc, gcc or clang; raises NoCompiler."""
    for candidate in ([name] if name else [os.environ.get("CC"), "cc", "gcc", "clang"]):
        if candidate and shutil.which(candidate):
            return candidate
    raise NoCompiler(f"no C compiler found ({name or 'cc, gcc, clang'}); install gcc "
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


def check_generated(art_dir: str | Path) -> None:
    """Compiling an artifact runs its code: refuse (ArchiveError) unless its C files are
    exactly what ncc generates from the artifact's IR, whose checksum the manifest holds.
    A hostile or edited artifact folder cannot get its own C compiled by `ncc verify`."""
    from ncc.compiler.artifact import load_artifact_graph
    from ncc.targets.c import generate

    art_dir = Path(art_dir)
    expected, _, _ = generate(load_artifact_graph(art_dir))
    for name, data in expected.items():
        path = art_dir / name
        if not path.is_file() or path.read_bytes() != data:
            raise ArchiveError(f"{path}: differs from the C that this ncc generates from the "
                               "artifact's IR; refusing to compile it (recompile the model)")


def load_model_library(art_dir: str | Path, has_dt: bool, cc: str | None = None) -> CModel:
    """Build the artifact's shared library in a temporary folder, load it, remove the
    folder (the loaded library stays mapped): nothing is left in the temp dir."""
    with tempfile.TemporaryDirectory(prefix="ncc-c-") as tmp:
        return CModel(build_library(art_dir, Path(tmp) / "libncc_model.so", cc), has_dt)


def runtime_file(*parts: str) -> Path:
    """Path of a file of the C runtime folder (`runtime/c/...`), installed or not."""
    return Path(str(resources.files("ncc.runtime").joinpath("c", *parts)))


def build_executable(art_dir: str | Path, out: str | Path, cc: str | None = None,
                     flags: tuple[str, ...] = ("-O2",), driver: str = "ncc_main.c") -> Path:
    """Compile the artifact with a host driver (runtime/c/host/: ncc_main.c, the
    stdin/stdout filter, or ncc_bench.c, the timing loop) into the program `out`;
    warnings are errors. flags: e.g. sanitizers, -g."""
    art_dir, out = Path(art_dir), Path(out)
    cmd = [find_compiler(cc), *WARNINGS, *flags, "-I", str(art_dir), "-o", str(out),
           *(str(art_dir / s) for s in SOURCES), str(runtime_file("host", driver))]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return out


def _nbytes(t: dict[str, Any]) -> int:
    return int(np.prod(t["shape"], dtype=np.int64)) * _dtype(t["dtype"]).itemsize


def _dtype(name: str) -> np.dtype:
    return np.dtype(np.uint8 if name == "bool" else name)


def trace_layout(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The tensors a driver writes per step, in order: every output (manifest order),
    then every state after the step (manifest state order)."""
    by_name = {t["name"]: t for t in manifest["tensors"]}
    outputs = [t for t in manifest["tensors"] if t["role"] == "output"]
    return outputs + [by_name[s["state_out"]] for s in manifest["state"]]


def encode_steps(manifest: dict[str, Any], xs: np.ndarray,
                 dts: np.ndarray | None = None) -> np.ndarray:
    """(T, step bytes) uint8: per step x's bytes, then dt's (1.0 on dt's grid if None)."""
    tensors = manifest["tensors"]
    (x,) = [t for t in tensors if t["role"] == "input"]
    steps = len(xs)
    parts = [np.asarray(xs, x["dtype"]).reshape(steps, -1).view(np.uint8)]
    for t in (t for t in tensors if t["role"] == "dt"):
        if dts is not None:
            value = np.asarray(dts).reshape(steps, -1).astype(t["dtype"])
        else:
            one = (quantize(np.ones(t["shape"], np.float32),
                            QuantParams.from_dict(t["quantization"]))
                   if t["quantization"] else np.ones(t["shape"], t["dtype"]))
            value = np.broadcast_to(np.asarray(one, t["dtype"]).reshape(1, -1),
                                    (steps, one.size))
        parts.append(np.ascontiguousarray(value).view(np.uint8))
    return np.ascontiguousarray(np.concatenate(parts, axis=1))


def decode_trace(manifest: dict[str, Any], raw: bytes, steps: int) -> dict[str, np.ndarray]:
    """A driver's output bytes -> {ir_name: (steps, *shape)} for outputs and states."""
    layout = trace_layout(manifest)
    widths = [_nbytes(t) for t in layout]
    if len(raw) != steps * sum(widths):
        raise RuntimeError(f"driver wrote {len(raw)} bytes, expected {steps} steps of "
                           f"{sum(widths)}")
    rows = np.frombuffer(raw, np.uint8).reshape(steps, sum(widths))
    result, at = {}, 0
    for t, width in zip(layout, widths, strict=True):
        chunk = np.ascontiguousarray(rows[:, at:at + width]).view(_dtype(t["dtype"]))
        result[t["ir_name"]] = chunk.reshape(steps, *t["shape"])
        at += width
    return result


def run_executable(exe: str | Path, manifest: dict[str, Any], xs: np.ndarray,
                   dts: np.ndarray | None = None, wrapper: tuple[str, ...] = (),
                   timeout: float = 300) -> dict[str, np.ndarray]:
    """Run a `build_executable` program (under `wrapper`, e.g. valgrind) over xs."""
    steps = encode_steps(manifest, xs, dts)
    done = subprocess.run([*wrapper, str(exe)], input=steps.tobytes(), capture_output=True,
                          timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"{exe} exited {done.returncode}:\n"
                           f"{done.stderr.decode(errors='replace')[-4000:]}")
    return decode_trace(manifest, done.stdout, len(xs))


def step_ns_in_c(art_dir: str | Path, xs: np.ndarray, dts: np.ndarray | None = None,
                 steps: int = 100_000, flags: tuple[str, ...] = ("-O2",)) -> float:
    """Processor ns per ncc_step measured by a loop inside C (runtime/c/host/ncc_bench.c)
    over `steps` steps, cycling over the first 256 of xs (artifact dtype), built with
    `flags`."""
    from ncc.compiler.artifact import read_manifest

    art_dir = Path(art_dir)
    with tempfile.TemporaryDirectory(prefix="ncc-c-bench-") as tmp:
        exe = build_executable(art_dir, Path(tmp) / "bench", flags=flags, driver="ncc_bench.c")
        feed = encode_steps(read_manifest(art_dir), xs[:256],
                            None if dts is None else dts[:256])
        done = subprocess.run([str(exe), str(steps)], input=feed.tobytes(),
                              capture_output=True, timeout=600)
    if done.returncode:
        raise RuntimeError(f"ncc_bench exited {done.returncode}: "
                           f"{done.stderr.decode(errors='replace')[-2000:]}")
    return float(done.stdout.split()[0])


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
