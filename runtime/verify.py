"""`verify_artifact`: run an artifact folder in its real runtime against the golden model
and the float reference, and write what was measured to its report.json.

Two verdicts, each with its criterion:

- exactness: the artifact computes what ncc says it computes. An integer target must be
  bit-identical to the golden integer model on every output and state; a float target
  must match the float reference within FLOAT_TOLERANCE.
- fidelity: the golden model is still close enough to the float model. With labels,
  the artifact's task accuracy may drop at most `max_accuracy_drop` below the float
  model's; without labels, every output's SQNR against float must reach `min_sqnr`
  (default by activation type, DEFAULT_MIN_SQNR_DB). A float target's fidelity is its
  exactness.

`passed` is exactness, and fidelity too when `strict`; a fidelity shortfall otherwise
is a warning in the report.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ncc.compiler.artifact import load_artifact_graph, load_reference_graph, update_report
from ncc.compiler.data import load_data, random_data
from ncc.compiler.pipeline import phase
from ncc.runtime.session import ReferenceSession, open_session
from ncc.runtime.validate import quantized_inputs, validate, validate_quantized
from ncc.targets.registry import get_target

FLOAT_TOLERANCE = 1e-4
"""A float target must match the float reference to this error, relative to the output's
magnitude where that exceeds 1 (a recurrence that grows to 1e6 keeps float32's relative
precision, not an absolute one)."""


def float_limit(metrics: dict[str, Any]) -> float:
    """The largest max abs error a float target may show on an output (see FLOAT_TOLERANCE)."""
    return FLOAT_TOLERANCE * max(1.0, metrics["peak_abs"])

DEFAULT_MIN_SQNR_DB = {"int8": 20.0, "int16": 30.0}
"""Fidelity without labels: the SQNR (dB) every output must reach against float, by the
compile's activation type. 20 dB is an error of 10% rms of the signal; 16x8 gains ~10 dB."""

DEFAULT_MAX_ACCURACY_DROP = 0.01
"""Fidelity with labels: at most 1 point of task accuracy lost against the float model."""

Progress = Callable[[str, int, int], None]  # (task, done, total)


def fidelity(report: dict[str, Any], activations: str | None, min_sqnr: float | None = None,
             max_accuracy_drop: float | None = None) -> dict[str, Any]:
    """The fidelity verdict of a quantized artifact's validation report (module doc).

    activations: "int8" or "int16" (picks the default SQNR floor). An explicit
    min_sqnr is checked with labels too; without labels it is the only criterion."""
    sqnr = min((m["sqnr_db"] for m in report["outputs"].values()), default=float("inf"))
    rel = max((m["rel_error"] for m in report["outputs"].values()), default=0.0)
    checks: list[tuple[bool, str, str]] = []  # (met, criterion, what was measured)
    if "accuracy" in report:
        drop = DEFAULT_MAX_ACCURACY_DROP if max_accuracy_drop is None else max_accuracy_drop
        acc = report["accuracy"]
        points = f"{100 * drop:g} point" + ("" if drop == 0.01 else "s")
        checks.append((acc["artifact"] >= acc["reference"] - drop - 1e-12,
                       f"task accuracy at most {points} below float",
                       f"artifact {acc['artifact']:.2%}, float {acc['reference']:.2%}"))
    result: dict[str, Any] = {}
    if min_sqnr is not None or "accuracy" not in report:
        floor = (DEFAULT_MIN_SQNR_DB.get(activations or "int8", 20.0) if min_sqnr is None
                 else min_sqnr)
        checks.append((sqnr >= floor, f"SQNR >= {floor:g} dB on every output against float",
                       f"lowest SQNR {sqnr:.1f} dB"))
        result["min_sqnr_db"] = floor
    return {**result, "passed": all(ok for ok, _, _ in checks),
            "criterion": "; ".join(text for _, text, _ in checks),
            "failed": [f"{text} ({measured})" for ok, text, measured in checks if not ok],
            "sqnr_db": sqnr, "rel_error": rel, "activations": activations}


def qwix_notice(deviation: dict[str, dict[str, float]]) -> str:
    """The one line a compile prints about a qwix model: does the deployed artifact
    compute qwix's own forward, and if not by how much it differs (measured)."""
    off = {n: m for n, m in deviation.items() if m["max_abs_error"] > 0}
    if not off:
        return ("qwix: the deployed model equals qwix's fake-quant forward on every output "
                "(measured on the verification sequences)")
    figures = ", ".join(f"{n} max abs error {m['max_abs_error']:.3g}, SQNR "
                        f"{m.get('sqnr_db', float('nan')):.1f} dB" for n, m in off.items())
    return (f"qwix: the deployed model deviates from qwix's fake-quant forward ({figures}): "
            "qwix's weights are kept bit-exact, the tensors qwix left in float are int8 with "
            "calibrated scales (report.json `qwix`)")


def qwix_summary(report: dict[str, Any]) -> dict[str, Any]:
    """What the report says about a model quantized with qwix (`spyx.quant`)."""
    deviation = {n: {k: m[k] for k in ("max_abs_error", "rel_error", "sqnr_db") if k in m}
                 for n, m in report["outputs"].items()}
    return {
        "weights": "qwix's integers and scales, kept unchanged (bit-exact to qwix's forward)",
        "reference": "the float reference is qwix's fake-quant forward (weights on qwix's grid)",
        "deviation_from_qwix_forward": deviation,
        "why": "tensors qwix leaves in float (membranes, readouts, activations of a "
               "weight-only rule) are int8 here, their scales calibrated",
        "notice": qwix_notice(deviation),
    }


def verify_artifact(art_dir: str | Path, *, data: str | Path | dict[str, np.ndarray] | None = None,
                    sequences: int = 2, steps: int = 1000, seed: int = 0,
                    runtime: str | None = None, min_sqnr: float | None = None,
                    max_accuracy_drop: float | None = None, strict: bool = False,
                    progress: Progress | None = None) -> dict[str, Any]:
    """Run the artifact in its runtime against the golden model (integer targets: every
    bit must match) and the float reference; write the figures to report.json.

    data: an .npz path or {"x": (N, T, F), ["dt": (N, T)], ["y"]}; None draws `sequences`
    random normal sequences of `steps` steps. min_sqnr, max_accuracy_drop: the fidelity
    criterion (module doc); strict: a fidelity shortfall fails the verification."""
    with phase(progress, f"open {runtime or 'its runtime'}"):
        session = open_session(art_dir, runtime)
    g = load_artifact_graph(art_dir)
    reference = load_reference_graph(art_dir)
    (x_name,) = g.by_role("input")
    features = g.tensors[x_name].shape[1:]
    if isinstance(data, dict):
        arrays, source = data, "calibration sequences"
    elif data is not None:
        arrays = load_data(data, features)
        source = str(data)
    else:
        arrays = random_data(features, bool(g.by_role("dt")), sequences, steps, seed)
        source = f"random normal, seed {seed}"
    n_seq = arrays["x"].shape[0]
    tick = (lambda i: progress("verify", i, n_seq)) if progress else None
    if tick:
        tick(0)
    float_run = ReferenceSession(reference).run
    exact = get_target(session.manifest["target"]).exact
    if g.metadata.get("quantized"):
        report = validate_quantized(session.run, g, float_run, arrays, tick,
                                    run_many=getattr(session, "run_many", None))
        if exact:
            report["passed"] = all(m["identical"] == 1.0 for m in report["golden"].values())
            report["criterion"] = "every output and state bit-identical to the golden model"
        else:
            report["passed"] = True
            report["criterion"] = ("runs; its deviation from the golden model is measured "
                                   "(runtime-defined rounding), not required to be zero")
        report["fidelity"] = fidelity(report, g.metadata.get("activations"), min_sqnr,
                                      max_accuracy_drop)
    else:
        outputs = [n for n in g.outputs if g.roles[n] == "output"]
        report = validate(session.run, float_run, arrays, outputs, tick)
        report["passed"] = all(m["max_abs_error"] <= float_limit(m)
                               for m in report["outputs"].values())
        report["tolerance"] = FLOAT_TOLERANCE
        report["criterion"] = (f"max abs error <= {FLOAT_TOLERANCE} x max(1, max |reference|)"
                               " against the float reference")
    if not all(m["finite"] for m in report["outputs"].values()):
        report["passed"] = False
        report["criterion"] += "; every value finite (NaN or Inf found)"
    report["exactness"] = {"passed": report["passed"], "criterion": report["criterion"]}
    if "fidelity" not in report:
        report["fidelity"] = {"passed": report["passed"], "criterion": "a float target "
                              "computes the float model: its fidelity is its exactness"}
    report["strict"] = strict
    if strict:
        report["passed"] = report["passed"] and report["fidelity"]["passed"]
    if footprint := getattr(session, "footprint", None):
        report["device"] = {"machine": "QEMU mps2-an386 (Cortex-M4)",
                            "steps_run": int(arrays["x"].shape[0] * arrays["x"].shape[1]),
                            **{k: footprint[k] for k in ("flash_bytes", "ram_bytes",
                                                         "compiler", "flags")}}
        if g.metadata.get("quantized"):
            # the first sequence (at most 64 steps) again, counted under QEMU -icount
            x1 = arrays["x"][:1, :64]
            dt1 = arrays["dt"][:1, :64] if "dt" in arrays else None
            xq, dtq = quantized_inputs(g, x1, dt1)
            report["device"]["instructions"] = session.count_instructions(xq, dtq)
    report["data"] = source
    report["reference"] = "float IR traced from the model, run in JAX"
    if precision := g.metadata.get("precision"):
        report["precision"] = precision
    if sources := g.metadata.get("quantization_sources"):
        report["quantization_sources"] = sources
        if sources.get("qwix"):
            report["qwix"] = qwix_summary(report)
    report["target"] = session.manifest["target"]
    report["runtime"] = runtime or "default"
    update_report(art_dir, report)
    return report
