"""Validation: run an artifact and its float reference on the same sequences, measure.

Metrics per output, over all sequences and steps:
- max_abs_error: max |artifact - reference|;
- rel_error: max_abs_error / max |reference| (0 when the reference is all zero);
- sqnr_db: 10 log10(sum ref^2 / sum (artifact - ref)^2), inf when identical;
- error_growth: max abs error in each of 10 equal spans of time, first to last,
  to show whether error accumulates through the recurrence.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ncc.models.archive import ArchiveError, read_npz

SPANS = 10


def compare(ref: np.ndarray, got: np.ndarray) -> dict[str, Any]:
    """ref, got: (N, T, ...) float arrays of one output."""
    ref = ref.astype(np.float64)
    err = np.abs(got.astype(np.float64) - ref)
    peak = float(np.max(np.abs(ref))) if ref.size else 0.0
    noise = float(np.sum(err ** 2))
    signal = float(np.sum(ref ** 2))
    steps = err.reshape(err.shape[0], err.shape[1], -1).max(axis=(0, 2))
    spans = np.array_split(steps, min(SPANS, len(steps)))
    return {
        "max_abs_error": float(err.max()) if err.size else 0.0,
        "rel_error": float(err.max() / peak) if peak > 0 else 0.0,
        "sqnr_db": float("inf") if noise == 0 else (
            float(10 * np.log10(signal / noise)) if signal > 0 else float("-inf")),
        "error_growth": [float(s.max()) for s in spans],
    }


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
    if not np.all(np.isfinite(x)):
        raise ArchiveError(f"{path}: x contains NaN or Inf")
    data = {"x": x.astype(np.float32)}
    if "dt" in arrays:
        dt = arrays["dt"]
        if dt.shape[:2] != x.shape[:2] or dt.size != x.shape[0] * x.shape[1]:
            raise ArchiveError(f"{path}: dt has shape {list(dt.shape)}, expected "
                               f"({x.shape[0]}, {x.shape[1]}) to match x")
        data["dt"] = dt.reshape(x.shape[:2]).astype(np.float32)
    if "y" in arrays:
        data["y"] = arrays["y"]
    return data


Runner = Callable[[np.ndarray, np.ndarray | None], dict[str, np.ndarray]]


def validate(run_artifact: Runner, run_reference: Runner, data: dict[str, np.ndarray],
             outputs: list[str], progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Run both over every sequence in `data`; per-output metrics (see module doc)."""
    got: dict[str, list[np.ndarray]] = {n: [] for n in outputs}
    ref: dict[str, list[np.ndarray]] = {n: [] for n in outputs}
    for i, xs in enumerate(data["x"]):
        dts = data["dt"][i] if "dt" in data else None
        a, r = run_artifact(xs, dts), run_reference(xs, dts)
        for n in outputs:
            got[n].append(a[n].reshape(len(xs), -1))
            ref[n].append(r[n].reshape(len(xs), -1))
        if progress:
            progress(i + 1)
    report: dict[str, Any] = {
        "sequences": int(data["x"].shape[0]), "steps": int(data["x"].shape[1]),
        "outputs": {n: compare(np.stack(ref[n]), np.stack(got[n])) for n in outputs},
    }
    if "y" in data:
        labels = np.asarray(data["y"]).reshape(-1)
        first = outputs[0]
        pred_ref = np.stack(ref[first])[:, -1].argmax(-1)
        pred_got = np.stack(got[first])[:, -1].argmax(-1)
        report["accuracy"] = {"reference": float(np.mean(pred_ref == labels)),
                              "artifact": float(np.mean(pred_got == labels))}
    return report
