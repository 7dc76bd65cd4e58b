"""The compiler's half of the pipeline: model object -> canonical float IR -> integer IR.

Tracing imports JAX (and Keras for Keras models) when it runs; importing this module
does not.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ncc.compiler.calibrate import record_ranges
from ncc.compiler.data import load_data
from ncc.compiler.ir import Graph
from ncc.compiler.passes import canonicalize
from ncc.compiler.quantize import (
    DEFAULT_OPTIONS,
    QuantizationError,
    QuantOptions,
    annotate,
    prepare,
    quantize,
    uncalibrated,
)

Progress = Callable[[str, int, int], None]  # (task, done, total)


def to_graph(model: Any, input_shape: tuple[int, ...] | None = None,
             initial_state: dict[str, Any] | None = None) -> Graph:
    """Any supported model object -> canonical float IR (traces one step under JAX).
    initial_state: values of a Keras model's initial-state inputs (`from_keras`)."""
    from ncc.compiler.frontends import from_model
    from ncc.compiler.trace import trace

    return canonicalize(trace(from_model(model, input_shape, initial_state)))


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
