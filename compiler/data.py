"""Sequence data files: `x` (N, T, *features), optional `dt` (N, T[, 1]) and labels `y`.

Used for calibration (`ncc compile --calibration`) and validation (`ncc verify --data`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ncc.models.archive import ArchiveError, read_npz

F32_MAX = float(np.finfo(np.float32).max)


def random_data(x_shape: tuple[int, ...], uses_dt: bool, sequences: int, steps: int,
                seed: int = 0) -> dict[str, np.ndarray]:
    """Standard-normal inputs (N, T, F) and, if needed, dt uniform in [0.5, 1.5)."""
    rng = np.random.default_rng(seed)
    data = {"x": rng.standard_normal((sequences, steps, *x_shape)).astype(np.float32)}
    if uses_dt:
        data["dt"] = rng.uniform(0.5, 1.5, (sequences, steps)).astype(np.float32)
    return data


def load_data(path: str | Path, features: tuple[int, ...]) -> dict[str, np.ndarray]:
    """A user's `.npz` with `x` (N, T, *features) and optional `dt` (N, T[, 1])."""
    arrays = read_npz(path)
    if "x" not in arrays:
        dims = ", ".join(map(str, features))
        raise ArchiveError(f"{path}: needs an array 'x' shaped (N, T, {dims})")
    x = arrays["x"]
    if x.ndim != 2 + len(features) or tuple(x.shape[2:]) != tuple(features):
        raise ArchiveError(f"{path}: x has shape {list(x.shape)}, expected (N, T, "
                           f"{', '.join(map(str, features))}): wrong feature count?")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ArchiveError(f"{path}: x is empty; need at least one sequence of one step")
    if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
        raise ArchiveError(f"{path}: x has dtype {x.dtype}; give real numbers (float or int)")
    if not np.all(np.isfinite(x)):
        raise ArchiveError(f"{path}: x contains NaN or Inf")
    if np.any(np.abs(x.astype(np.float64)) > F32_MAX):
        raise ArchiveError(f"{path}: x has values beyond float32's range (|x| > 3.4e38); the "
                           "model computes in float32")
    data = {"x": x.astype(np.float32)}
    if "dt" in arrays:
        dt = arrays["dt"]
        if dt.shape[:2] != x.shape[:2] or dt.size != x.shape[0] * x.shape[1]:
            raise ArchiveError(f"{path}: dt has shape {list(dt.shape)}, expected "
                               f"({x.shape[0]}, {x.shape[1]}) to match x")
        if (not np.issubdtype(dt.dtype, np.number) or not np.all(np.isfinite(dt))
                or np.any(dt <= 0) or np.any(dt > F32_MAX)):
            raise ArchiveError(f"{path}: dt must be finite, positive real numbers")
        data["dt"] = dt.reshape(x.shape[:2]).astype(np.float32)
    if "y" in arrays:
        y = arrays["y"]
        if y.size != x.shape[0] or not np.issubdtype(y.dtype, np.integer):
            raise ArchiveError(f"{path}: labels y have shape {list(y.shape)} and dtype "
                               f"{y.dtype}; expected {x.shape[0]} integer class labels, one "
                               "per sequence")
        data["y"] = y.reshape(-1)
    return data


def stress_ints(steps: int, features: int, dtype: str = "int8", seed: int = 7) -> np.ndarray:
    """(steps, features) integer inputs that exercise integer kernels: random steps, then a
    slow sine over the full range, both rails, alternating rails and zeros (the extremes
    are where saturation and rounding bite). dtype: "int8" or "int16"."""
    info = np.iinfo(np.dtype(dtype))
    rng = np.random.default_rng(seed)
    n = steps // 4
    t = np.arange(n)[:, None]
    half = (int(info.max) - int(info.min)) / 2
    sine = np.round(half * np.sin(t / (7.0 + np.arange(features))) - 0.5)
    rails = np.where((t // 50) % 2 == 0, info.max, info.min) * np.ones((1, features))
    alternating = np.where(t % 2 == 0, info.max, info.min) * np.ones((1, features))
    zeros = np.zeros((n // 4, features))
    structured = np.concatenate([sine, rails, alternating, zeros])
    random = rng.integers(info.min, int(info.max) + 1, (steps - len(structured), features))
    return np.concatenate([random, structured]).astype(dtype)


def stress_int8(steps: int, features: int, seed: int = 7) -> np.ndarray:
    """`stress_ints` for int8 inputs."""
    return stress_ints(steps, features, "int8", seed)
