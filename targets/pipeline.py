"""Model -> artifact folder: load, trace, quantize, lower for one target, write.

`build_artifact` is the pipeline up to a written folder (`lower_artifact` its last part,
from an IR already traced and quantized); validation in the real runtime is
`ncc.runtime.verify`. The CLI's driver and the bench compose the two.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ncc.compiler.artifact import read_manifest, write_artifact
from ncc.compiler.data import load_data
from ncc.compiler.ir import Graph
from ncc.compiler.load import load_model
from ncc.compiler.passes import strip_fake_quant
from ncc.compiler.pipeline import Progress, phase, quantize_graph, to_graph, window_data
from ncc.compiler.quantize import DEFAULT_OPTIONS, QuantOptions
from ncc.compiler.trace_cache import cached_graph, store_graph
from ncc.targets.registry import get_target


@dataclass
class Built:
    """A written artifact folder: its lowered IR (integer for quantized targets), the
    manifest, and the calibration arrays used (None for float targets)."""

    out_dir: Path
    graph: Graph
    manifest: dict[str, Any]
    calibration: dict[str, np.ndarray] | None


def _source(ref: Any) -> dict[str, Any]:
    if isinstance(ref, (str, Path)):
        path = Path(ref)
        info: dict[str, Any] = {"source": str(ref)}
        if path.is_file():
            info["source_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        return info
    return {"source": f"<{type(ref).__name__} object>"}


def build_artifact(model: Any, target: str, out_dir: str | Path, *,
                   input_shape: tuple[int, ...] | None = None,
                   sequence_length: int | None = None,
                   calibration: str | Path | dict[str, np.ndarray] | None = None,
                   options: QuantOptions = DEFAULT_OPTIONS,
                   progress: Progress | None = None, trace_cache: bool = False,
                   initial_state: dict[str, Any] | None = None) -> Built:
    """Compile `model` (object or MODEL reference) for `target` into folder `out_dir`.

    Quantized targets calibrate on `calibration` (an .npz path or {"x": (N, T, F)}); a
    float target refuses it. trace_cache: reuse (and keep) the float IR traced from the
    same model file (`ncc.compiler.trace_cache`), skipping loading and tracing.
    initial_state: {Keras input name: value} for a model whose recurrent layer takes an
    initial_state input: the artifact's initial state (`ncc.compiler.frontends.from_keras`)."""
    spec = get_target(target)
    obj, g = None, None
    model_file = Path(model) if isinstance(model, (str, Path)) else None
    cache = trace_cache and model_file is not None and not initial_state
    if cache and not spec.uses_model:
        with phase(progress, "look up the trace cache"):
            g = cached_graph(model_file, input_shape)
    if g is None:
        with phase(progress, "load the model"):  # the first load imports JAX and Keras
            obj = load_model(str(model)) if isinstance(model, (str, Path)) else model
        with phase(progress, "trace one step"):
            g = to_graph(obj, input_shape, initial_state, sequence_length)
        if cache and model_file is not None and "window" not in g.metadata:
            store_graph(model_file, input_shape, g)
    window = g.metadata.get("window")
    if window is not None:  # already a graph over the whole window: no loop to add
        sequence_length = None
    reference = None
    if spec.quantized:
        if isinstance(calibration, (str, Path)):
            (x_name,) = g.by_role("input")
            shape = g.tensors[x_name].shape[2:] if window else g.tensors[x_name].shape[1:]
            calibration = load_data(calibration, shape)
        if window is not None and calibration is not None:
            calibration = window_data(calibration, window)
        g, reference = quantize_graph(g, calibration, options, progress)
    elif calibration is not None:
        raise ValueError(f"--calibration applies to quantized targets; {spec.name} is float")
    else:
        g = strip_fake_quant(g)  # a float target runs the float model
    path = lower_artifact(g, target, out_dir, reference=reference, model=obj,
                          sequence_length=sequence_length, source=_source(model),
                          progress=progress)
    return Built(path, g, read_manifest(path),
                 calibration if isinstance(calibration, dict) else None)


def lower_artifact(g: Graph, target: str, out_dir: str | Path, *,
                   reference: Graph | None = None, model: Any = None,
                   sequence_length: int | None = None, source: dict[str, Any] | None = None,
                   progress: Progress | None = None) -> Path:
    """Lower graph `g` (the integer IR of `quantize_graph` for a quantized target, with
    its float `reference`; the float IR otherwise) for `target` and write the folder.
    One quantized graph serves every integer target: they must all equal it bit for bit."""
    spec = get_target(target)
    window = g.metadata.get("window")
    with phase(progress, f"lower to {spec.name}"):
        art = spec.lower(g, reference=None if reference is None
                         else strip_fake_quant(reference),
                         model=model, sequence_length=sequence_length)
    if window is not None:
        art.details["window"] = {"steps": window, "input": "x[T] (T, F)",
                                 "output": "y[T] (T, out) or y (out)", "state": "none"}
    with phase(progress, "write"):
        return write_artifact(Path(out_dir), g, art, source or _source(model),
                              reference=reference)
