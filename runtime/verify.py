"""`verify_artifact`: run an artifact folder in its real runtime against the golden model
and the float reference, and write what was measured to its report.json."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ncc.compiler.artifact import load_artifact_graph, load_reference_graph, update_report
from ncc.compiler.data import load_data, random_data
from ncc.runtime.session import ReferenceSession, open_session
from ncc.runtime.validate import validate, validate_quantized
from ncc.targets.registry import get_target

FLOAT_TOLERANCE = 1e-4
"""A float target must match the float reference to this error, relative to the output's
magnitude where that exceeds 1 (a recurrence that grows to 1e6 keeps float32's relative
precision, not an absolute one)."""


def float_limit(metrics: dict[str, Any]) -> float:
    """The largest max abs error a float target may show on an output (see FLOAT_TOLERANCE)."""
    return FLOAT_TOLERANCE * max(1.0, metrics["peak_abs"])

Progress = Callable[[str, int, int], None]  # (task, done, total)


def verify_artifact(art_dir: str | Path, *, data: str | Path | dict[str, np.ndarray] | None = None,
                    sequences: int = 2, steps: int = 1000, seed: int = 0,
                    runtime: str | None = None,
                    progress: Progress | None = None) -> dict[str, Any]:
    """Run the artifact in its runtime against the golden model (integer targets: every
    bit must match) and the float reference; write the figures to report.json.

    data: an .npz path or {"x": (N, T, F), ["dt": (N, T)], ["y"]}; None draws `sequences`
    random normal sequences of `steps` steps."""
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
    float_run = ReferenceSession(reference).run
    exact = get_target(session.manifest["target"]).exact
    if g.metadata.get("quantized"):
        report = validate_quantized(session.run, g, float_run, arrays, tick)
        if exact:
            report["passed"] = all(m["identical"] == 1.0 for m in report["golden"].values())
            report["criterion"] = "every output and state bit-identical to the golden model"
        else:
            report["passed"] = True
            report["criterion"] = ("runs; its deviation from the golden model is measured "
                                   "(runtime-defined rounding), not required to be zero")
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
    report["data"] = source
    report["reference"] = "float IR traced from the model, run in JAX"
    report["target"] = session.manifest["target"]
    report["runtime"] = runtime or "default"
    update_report(art_dir, report)
    return report
