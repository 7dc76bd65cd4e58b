"""Validation: run an artifact and its float reference on the same sequences, measure.

Metrics per output, over all sequences and steps:
- finite: no NaN or Inf in either the artifact's or the reference's values;
- peak_abs: max |reference|;
- max_abs_error: max |artifact - reference|;
- rel_error: max_abs_error / max |reference| (0 when the reference is all zero);
- sqnr_db: 10 log10(sum ref^2 / sum (artifact - ref)^2), inf when identical;
- error_growth: max abs error in each of 10 equal spans of time, first to last,
  to show whether error accumulates through the recurrence; error_growth_steps gives
  each span's steps as [first, last] (0-based, inclusive).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np

from ncc.compiler.ir import Graph
from ncc.numerics import dequantize, quantize

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
    ends = np.cumsum([len(s) for s in spans])
    return {
        "finite": bool(np.all(np.isfinite(ref)) and np.all(np.isfinite(got))),
        "peak_abs": peak,
        "max_abs_error": float(err.max()) if err.size else 0.0,
        "rel_error": float(err.max() / peak) if peak > 0 else 0.0,
        "sqnr_db": float("inf") if noise == 0 else (
            float(10 * np.log10(signal / noise)) if signal > 0 else float("-inf")),
        "error_growth": [float(s.max()) for s in spans],
        "error_growth_steps": [[int(e - len(s)), int(e - 1)] for s, e in zip(spans, ends,
                                                                            strict=True)],
    }


Runner = Callable[[np.ndarray, np.ndarray | None], dict[str, np.ndarray]]
ManyRunner = Callable[[np.ndarray, np.ndarray | None], list[dict[str, np.ndarray]]]
"""Runs N sequences at once, (N, T, ...) -> one result per sequence (a session whose
runtime has a high fixed cost per run, the Cortex-M4 under QEMU, offers one)."""


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


def quantized_inputs(g: Graph, xs: np.ndarray, dts: np.ndarray | None
                      ) -> tuple[np.ndarray, np.ndarray | None]:
    (x_name,) = g.by_role("input")
    xq = quantize(xs, g.tensors[x_name].quant)
    if not g.by_role("dt"):
        return xq, None
    (dt_name,) = g.by_role("dt")
    dts = np.ones(xs.shape[:2], np.float32) if dts is None else dts
    return xq, quantize(dts, g.tensors[dt_name].quant)


_GOLDEN_CACHE: dict[tuple[str, str], dict[str, np.ndarray]] = {}


def _golden_runs(g: Graph, g_hash: str, xq: np.ndarray,
                 dtq: np.ndarray | None) -> dict[str, np.ndarray]:
    """The golden model over all sequences xq (N, T, ...) at once (rebatched), remembered:
    validating one artifact in several runtimes on the same data interprets it once."""
    from ncc.compiler.interpret import run_batch

    h = hashlib.sha256(xq.tobytes())
    if dtq is not None:
        h.update(dtq.tobytes())
    key = (g_hash, h.hexdigest())
    if key not in _GOLDEN_CACHE:
        if len(_GOLDEN_CACHE) > 64:
            _GOLDEN_CACHE.clear()
        _GOLDEN_CACHE[key] = run_batch(g, xq, dtq)
    return _GOLDEN_CACHE[key]


def validate_quantized(run_artifact: Runner, golden: Graph, run_float: Runner,
                       data: dict[str, np.ndarray],
                       progress: Callable[[int], None] | None = None,
                       run_many: ManyRunner | None = None) -> dict[str, Any]:
    """Integer artifact vs the golden model (bits) and vs the float reference (accuracy).
    run_many: runs the artifact over every sequence at once, instead of `run_artifact`.

    Per output and state: `identical` (fraction of values equal to golden) and
    `max_lsb` (largest difference in integer steps); per output, the float metrics
    of `compare` on the dequantized artifact output.
    """
    from ncc.compiler.serialize import graph_hash

    g_hash = graph_hash(golden)
    names = list(golden.outputs)
    outputs = [n for n in names if golden.roles[n] == "output"]
    same = {n: 0 for n in names}
    total = {n: 0 for n in names}
    lsb = {n: 0 for n in names}
    got: dict[str, list[np.ndarray]] = {n: [] for n in outputs}
    ref: dict[str, list[np.ndarray]] = {n: [] for n in outputs}
    xq_all, dtq_all = quantized_inputs(golden, data["x"], data.get("dt"))
    gold_all = _golden_runs(golden, g_hash, xq_all, dtq_all)
    artifact_all = run_many(xq_all, dtq_all) if run_many is not None else None
    for i, xs in enumerate(data["x"]):
        dts = data["dt"][i] if "dt" in data else None
        xq, dtq = xq_all[i], None if dtq_all is None else dtq_all[i]
        a = artifact_all[i] if artifact_all is not None else run_artifact(xq, dtq)
        gold = {n: v[i] for n, v in gold_all.items()}
        f = run_float(xs, dts)
        for n in names:
            diff = np.abs(a[n].astype(np.int64) - gold[n].reshape(a[n].shape).astype(np.int64))
            same[n] += int(np.sum(diff == 0))
            total[n] += diff.size
            lsb[n] = max(lsb[n], int(diff.max()))
        for n in outputs:
            got[n].append(dequantize(a[n], golden.tensors[n].quant).reshape(len(xs), -1))
            ref[n].append(f[n].reshape(len(xs), -1))
        if progress:
            progress(i + 1)
    report: dict[str, Any] = {
        "sequences": int(data["x"].shape[0]), "steps": int(data["x"].shape[1]),
        "golden": {n: {"identical": same[n] / total[n], "max_lsb": lsb[n]} for n in names},
        "outputs": {n: compare(np.stack(ref[n]), np.stack(got[n])) for n in outputs},
    }
    if "y" in data:
        labels = np.asarray(data["y"]).reshape(-1)
        first = outputs[0]
        report["accuracy"] = {
            "reference": float(np.mean(np.stack(ref[first])[:, -1].argmax(-1) == labels)),
            "artifact": float(np.mean(np.stack(got[first])[:, -1].argmax(-1) == labels))}
    return report
