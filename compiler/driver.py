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

from ncc.compiler.artifact import (
    load_artifact_graph,
    load_reference_graph,
    read_manifest,
    update_report,
    write_artifact,
)
from ncc.compiler.calibrate import record_ranges
from ncc.compiler.data import load_data, random_data
from ncc.compiler.frontends import from_model
from ncc.compiler.ir import Graph
from ncc.compiler.load import load_model
from ncc.compiler.passes import canonicalize
from ncc.compiler.qat import strip_fake_quant
from ncc.compiler.quantize import (
    DEFAULT_OPTIONS,
    QuantizationError,
    QuantOptions,
    annotate,
    prepare,
    quantize,
    uncalibrated,
)
from ncc.compiler.trace import trace

# target name -> module whose `lower(graph, ...)` returns an Artifact
TARGETS = {"onnx-float": "ncc.targets.onnx", "onnx-int8": "ncc.targets.onnx_int8",
           "onnx-qdq": "ncc.targets.onnx_qdq", "tflite-int8": "ncc.targets.tflite",
           "c": "ncc.targets.c", "fixed-point": "ncc.targets.fixed_point",
           "nir": "ncc.targets.nir"}
ALIASES = {"onnx": "onnx-float"}
# targets that take spiking models only (NIR: LIF-family neurons)
SPIKING_ONLY = {"nir"}
QUANTIZED = {"onnx-int8", "onnx-qdq", "tflite-int8", "c", "fixed-point"}
# quantized targets whose arithmetic is not ours: their deviation is measured, not required 0
APPROXIMATE = {"onnx-qdq"}
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


def quantize_graph(g: Graph, calibration: str | Path | dict[str, np.ndarray] | None,
                   options: QuantOptions = DEFAULT_OPTIONS,
                   progress: Progress | None = None) -> tuple[Graph, Graph]:
    """(integer golden graph, float reference graph) for canonical float graph `g`.

    A QAT model whose fake-quant points fix every parameter needs no calibration (it is
    skipped even if given); otherwise the tensors without parameters are calibrated."""
    reference = prepare(g)
    missing = uncalibrated(reference)
    if not missing:
        q = quantize(reference, {}, options)
        return q, annotate(reference, q)
    if calibration is None:
        qat = (f" ({len(missing)} tensors have no fake-quant parameters, e.g. "
               f"{', '.join(missing[:3])})" if any(op.kind == "fake_quant" for op in g.ops)
               else "")
        raise QuantizationError("a quantized target needs calibration data" + qat + ": pass "
                                "--calibration data.npz with x shaped (N, T, features) "
                                "(sequences the model will see, whole)")
    (x_name,) = reference.by_role("input")
    data = (load_data(calibration, reference.tensors[x_name].shape[1:])
            if isinstance(calibration, (str, Path)) else calibration)
    tick = (lambda i, n: progress("calibrate", i, n)) if progress else None
    ranges = record_ranges(reference, data["x"], data.get("dt"), progress=tick)
    q = quantize(reference, ranges, options)
    return q, annotate(reference, q)


def compile_model(model: Any, target: str, out_dir: str | Path, *,
                  input_shape: tuple[int, ...] | None = None,
                  sequence_length: int | None = None,
                  calibration: str | Path | dict[str, np.ndarray] | None = None,
                  options: QuantOptions = DEFAULT_OPTIONS, verify_steps: int = 100,
                  progress: Progress | None = None) -> CompileResult:
    """Compile `model` (object or MODEL reference) for `target` into folder `out_dir`.

    Quantized targets calibrate on `calibration` (an .npz path or {"x": (N, T, F)}).
    Validation then runs the artifact over a random `verify_steps`-step sequence
    (0 skips it) and writes its figures to report.json.
    """
    target = resolve_target(target)
    obj = load_model(str(model)) if isinstance(model, (str, Path)) else model
    g = to_graph(obj, input_shape)
    reference = None
    if target in QUANTIZED:
        if isinstance(calibration, (str, Path)):
            (x_name,) = g.by_role("input")
            calibration = load_data(calibration, g.tensors[x_name].shape[1:])
        g, reference = quantize_graph(g, calibration, options, progress)
    elif calibration is not None:
        raise ValueError(f"--calibration applies to quantized targets; {target} is float")
    else:
        g = strip_fake_quant(g)  # a float target runs the float model
    module = importlib.import_module(TARGETS[target])
    if getattr(module, "LOWERS_REFERENCE", False):  # e.g. QDQ: float ops + our parameters
        art = module.lower(g, strip_fake_quant(reference), sequence_length=sequence_length)
    elif getattr(module, "LOWERS_MODEL", False):  # e.g. NIR: the source model's structure
        art = module.lower(g, obj, sequence_length=sequence_length)
    else:
        art = module.lower(g, sequence_length=sequence_length)
    path = write_artifact(Path(out_dir), g, art, _source(model), reference=reference)
    report: dict[str, Any] = {}
    if verify_steps and isinstance(calibration, dict):
        # a quantized model is meant for inputs like its calibration data, not white noise
        sample = {k: v[:16, :verify_steps] for k, v in calibration.items() if k in ("x", "dt")}
        report = verify_artifact(path, data=sample, progress=progress)
    elif verify_steps:
        steps = verify_steps
        if sequence_length:
            steps = sequence_length * max(1, -(-verify_steps // sequence_length))
        report = verify_artifact(path, sequences=1, steps=steps, progress=progress)
    return CompileResult(path, g, read_manifest(path), report)


def verify_artifact(art_dir: str | Path, *, data: str | Path | dict[str, np.ndarray] | None = None,
                    sequences: int = 2, steps: int = 1000, seed: int = 0,
                    runtime: str | None = None,
                    progress: Progress | None = None) -> dict[str, Any]:
    """Run the artifact in its runtime against the golden model (integer targets: every
    bit must match) and the float reference; write the figures to report.json."""
    from ncc.runtime.session import ReferenceSession, open_session
    from ncc.runtime.validate import validate, validate_quantized

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
    if g.metadata.get("quantized") and session.manifest["target"] in APPROXIMATE:
        report = validate_quantized(session.run, g, float_run, arrays, tick)
        report["passed"] = all(np.isfinite(m["max_abs_error"])
                               for m in report["outputs"].values())
        report["criterion"] = ("runs; its deviation from the golden model is measured "
                               "(runtime-defined rounding), not required to be zero")
    elif g.metadata.get("quantized"):
        report = validate_quantized(session.run, g, float_run, arrays, tick)
        report["passed"] = all(m["identical"] == 1.0 for m in report["golden"].values())
        report["criterion"] = "every output and state bit-identical to the golden model"
    else:
        outputs = [n for n in g.outputs if g.roles[n] == "output"]
        report = validate(session.run, float_run, arrays, outputs, tick)
        worst = max(m["max_abs_error"] for m in report["outputs"].values())
        report["passed"] = bool(np.isfinite(worst) and worst <= FLOAT_TOLERANCE)
        report["tolerance"] = FLOAT_TOLERANCE
        report["criterion"] = f"max abs error <= {FLOAT_TOLERANCE} against the float reference"
    report["data"] = source
    report["reference"] = "float IR traced from the model, run in JAX"
    report["target"] = session.manifest["target"]
    report["runtime"] = runtime or "default"
    update_report(art_dir, report)
    return report
