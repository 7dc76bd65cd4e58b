"""The pipeline end to end: load -> trace -> canonicalize -> lower -> validate -> write.

`compile_model` and `verify_artifact` are what the CLI, the demo and the
tests call; each returns plain data and raises one-line errors.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ncc.compiler.artifact import load_artifact_graph, read_manifest, update_report, write_artifact
from ncc.compiler.frontends import from_model
from ncc.compiler.ir import Graph
from ncc.compiler.load import load_model
from ncc.compiler.passes import canonicalize
from ncc.compiler.trace import trace

# target name -> module whose `lower(graph, ...)` returns an Artifact
TARGETS = {"onnx-float": "ncc.targets.onnx"}
ALIASES = {"onnx": "onnx-float"}
# a float target must match the float reference to this max abs error
FLOAT_TOLERANCE = 1e-4

Progress = Callable[[str, int, int], None]  # (task, done, total)


@dataclass
class CompileResult:
    out_dir: Path
    graph: Graph
    manifest: dict[str, Any]
    report: dict[str, Any]


def resolve_target(name: str) -> str:
    name = ALIASES.get(name, name)
    if name not in TARGETS:
        raise ValueError(f"unknown target {name!r}; available: {', '.join(sorted(TARGETS))}")
    return name


def to_graph(model: Any, input_shape: tuple[int, ...] | None = None) -> Graph:
    """Any supported model object -> canonical float IR."""
    return canonicalize(trace(from_model(model, input_shape)))


def _source(ref: Any) -> dict[str, Any]:
    if isinstance(ref, (str, Path)):
        path = Path(ref)
        info: dict[str, Any] = {"source": str(ref)}
        if path.is_file():
            info["source_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        return info
    return {"source": f"<{type(ref).__name__} object>"}


def compile_model(model: Any, target: str, out_dir: str | Path, *,
                  input_shape: tuple[int, ...] | None = None,
                  sequence_length: int | None = None, verify_steps: int = 100,
                  progress: Progress | None = None) -> CompileResult:
    """Compile `model` (object or MODEL reference) for `target` into folder `out_dir`.

    Validation runs the artifact against the float reference over a random
    `verify_steps`-step sequence (0 skips it); its figures go to report.json.
    """
    target = resolve_target(target)
    obj = load_model(str(model)) if isinstance(model, (str, Path)) else model
    g = to_graph(obj, input_shape)
    lower = importlib.import_module(TARGETS[target]).lower
    art = lower(g, sequence_length=sequence_length)
    out_dir = Path(out_dir)
    path = write_artifact(out_dir, g, art, _source(model))
    report: dict[str, Any] = {}
    if verify_steps:
        steps = verify_steps
        if sequence_length:
            steps = sequence_length * max(1, -(-verify_steps // sequence_length))
        report = verify_artifact(path, sequences=1, steps=steps, progress=progress)
    return CompileResult(path, g, read_manifest(path), report)


def verify_artifact(art_dir: str | Path, *, data: str | Path | None = None,
                    sequences: int = 2, steps: int = 1000, seed: int = 0,
                    progress: Progress | None = None) -> dict[str, Any]:
    """Run the artifact in its runtime against the float reference; update report.json."""
    from ncc.runtime.session import ReferenceSession, open_session
    from ncc.runtime.validate import load_data, random_data, validate

    session = open_session(art_dir)
    g = load_artifact_graph(art_dir)
    (x_name,) = g.by_role("input")
    features = g.tensors[x_name].shape[1:]
    uses_dt = bool(g.by_role("dt"))
    if data is not None:
        arrays = load_data(data, features)
        source = str(data)
    else:
        arrays = random_data(features, uses_dt, sequences, steps, seed)
        source = f"random normal, seed {seed}"
    n_seq = arrays["x"].shape[0]
    tick = (lambda i: progress("verify", i, n_seq)) if progress else None
    outputs = [n for n in g.outputs if g.roles[n] == "output"]
    report = validate(session.run, ReferenceSession(g).run, arrays, outputs, tick)
    report["data"] = source
    report["reference"] = "float IR traced from the model, run in JAX"
    report["runtime"] = session.manifest["target"]
    worst = max(m["max_abs_error"] for m in report["outputs"].values())
    report["tolerance"] = FLOAT_TOLERANCE
    report["passed"] = bool(np.isfinite(worst) and worst <= FLOAT_TOLERANCE)
    update_report(art_dir, report)
    return report
