"""The compiler's half of the pipeline: model object -> canonical float IR -> integer IR.

Tracing imports JAX (and Keras for Keras models) when it runs; importing this module
does not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ncc.compiler.calibrate import record_ranges
from ncc.compiler.data import load_data
from ncc.compiler.ir import Graph
from ncc.compiler.passes import canonicalize, prune_dead_state
from ncc.compiler.quantize import (
    DEFAULT_OPTIONS,
    QuantizationError,
    QuantOptions,
    annotate,
    prepare,
    quantize,
    uncalibrated,
)

Progress = Callable[[str, int, int], None]
"""progress(task, done, total): `done` of `total` units of `task` are finished. A phase
without units reports (task, 0, 1) when it starts and (task, 1, 1) when it ends."""


@contextmanager
def phase(progress: Progress | None, task: str) -> Iterator[None]:
    """Report `task` to `progress` as started on entry and finished on exit."""
    if progress:
        progress(task, 0, 1)
    yield
    if progress:
        progress(task, 1, 1)


def to_graph(model: Any, input_shape: tuple[int, ...] | None = None,
             initial_state: dict[str, Any] | None = None,
             sequence_length: int | None = None) -> Graph:
    """Any supported model object -> canonical float IR (traces one step under JAX), its
    sparse synapse grids computed on the present synapses only (`compact_synapses`).
    initial_state: values of a Keras model's initial-state inputs (`from_keras`).

    A Keras model with a bidirectional layer cannot run step by step: with
    `sequence_length` T it becomes one stateless graph over a window of T steps
    (`from_keras_window`; `metadata["window"]` = T), without it a refusal saying to pass
    it. Other models ignore `sequence_length` here (a target may wrap the step in a loop)."""
    from ncc.compiler.frontends import from_keras_window, from_model, needs_window
    from ncc.compiler.synapses import compact_synapses
    from ncc.compiler.trace import TraceError, trace

    if needs_window(model):
        if sequence_length is None:
            raise TraceError("the model has a bidirectional layer, whose backward direction "
                             "needs the whole sequence: pass --sequence-length T (ncc "
                             "compile) to compile it over a fixed window of T steps")
        if initial_state:
            raise TraceError("initial states are not supported over a window")
        g = trace(from_keras_window(model, sequence_length, input_shape))
    else:
        g = trace(from_model(model, input_shape, initial_state))
    g = compact_synapses(canonicalize(g))
    # a sequence layer's states are the scans' carries, ncc's choice: those no output
    # reads are dropped (a model's own declared state is kept as it is)
    return prune_dead_state(g) if "sequence_layer" in g.metadata else g


def window_data(data: dict[str, np.ndarray], window: int) -> dict[str, np.ndarray]:
    """Sequences x (N, T', F) as windows of a windowed graph: (N, T' // window, window, F)
    (the tail of each sequence that fills no window is dropped; dt is not supported)."""
    if "dt" in data:
        raise ValueError("a windowed (bidirectional) model takes no time spans (dt)")
    x = np.asarray(data["x"])
    if x.ndim < 3 or x.shape[1] < window:
        raise ValueError(f"data for a window of {window} steps needs x (N, T >= {window}, "
                         f"F), got shape {list(x.shape)}")
    k = x.shape[1] // window
    out = dict(data)
    out["x"] = x[:, :k * window].reshape(x.shape[0], k, window, *x.shape[2:])
    if "y" in out:
        out.pop("y")
    return out


def quantize_graph(g: Graph, calibration: str | Path | dict[str, np.ndarray] | None,
                   options: QuantOptions = DEFAULT_OPTIONS,
                   progress: Progress | None = None) -> tuple[Graph, Graph]:
    """(integer golden graph, float reference graph) for canonical float graph `g`.

    A QAT model whose fake-quant points fix every parameter needs no calibration (it is
    skipped even if given); otherwise the tensors without parameters are calibrated."""
    reference = prepare(g)
    missing = uncalibrated(reference)
    if not missing:  # QAT: the model's fake-quant points fix every grid and width
        if options.activations == "auto":
            options = replace(options, activations="int8")
        with phase(progress, "quantize"):
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
    search = None
    if options.activations == "auto":
        from ncc.compiler.precision import choose_widths

        step = (lambda i, n: progress("choose widths", i, n)) if progress else None
        options, search = choose_widths(reference, ranges, data, options, progress=step)
    with phase(progress, "quantize"):
        q = quantize(reference, ranges, options)
    if search is not None:
        q = q.replace(metadata={**q.metadata, "precision": search})
    return q, annotate(reference, q)
