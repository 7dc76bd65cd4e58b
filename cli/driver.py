"""The pipeline end to end, as the CLI and the demo run it: build the artifact folder,
then validate it in its real runtime.

`compile_model` and `verify_artifact` return plain data and raise one-line errors.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ncc.compiler.artifact import check_output_dir, publish, read_manifest, staging_dir
from ncc.compiler.ir import Graph
from ncc.compiler.pipeline import Progress
from ncc.compiler.quantize import DEFAULT_OPTIONS, QuantOptions
from ncc.runtime.verify import verify_artifact
from ncc.targets.pipeline import build_artifact

__all__ = ["CompileResult", "compile_model", "verify_artifact"]


@dataclass
class CompileResult:
    out_dir: Path
    graph: Graph
    manifest: dict[str, Any]
    report: dict[str, Any]


def compile_model(model: Any, target: str, out_dir: str | Path, *,
                  input_shape: tuple[int, ...] | None = None,
                  sequence_length: int | None = None,
                  calibration: str | Path | dict[str, np.ndarray] | None = None,
                  options: QuantOptions = DEFAULT_OPTIONS, verify_steps: int = 100,
                  min_sqnr: float | None = None, strict: bool = False,
                  progress: Progress | None = None,
                  interrupted: Callable[[], None] | None = None,
                  trace_cache: bool = False,
                  initial_state: str | Path | dict[str, Any] | None = None) -> CompileResult:
    """Compile `model` (object or MODEL reference) for `target` into folder `out_dir`.

    initial_state: the values ({name: array} or an .npz of them) of a Keras model's
    initial-state inputs, the artifact's initial state (`build_artifact`).

    Quantized targets calibrate on `calibration` (an .npz path or {"x": (N, T, F)}).
    Validation then runs the artifact over the first 16 calibration sequences, cut to
    `verify_steps` steps (float targets: one random sequence of that length; 0 skips
    it), and writes its figures to report.json. min_sqnr, strict: the fidelity
    criterion of `verify_artifact` (calibration data has no labels: SQNR decides).

    The folder is built and verified in a hidden sibling and moved to `out_dir` only when
    complete: on any error or interrupt nothing appears there and nothing is left behind.
    An existing artifact folder at `out_dir` is replaced as a whole; anything else there
    is refused (`check_output_dir`). `interrupted()` is called before the move and may
    raise (the CLI's signal handling). trace_cache: see `build_artifact`.
    """
    if verify_steps < 0:
        raise ValueError(f"--verify-steps {verify_steps}: give 0 (skip) or a positive count")
    out = check_output_dir(out_dir)
    staging = staging_dir(out)
    try:
        built = build_artifact(model, target, staging / "artifact", input_shape=input_shape,
                               sequence_length=sequence_length, calibration=calibration,
                               options=options, progress=progress,
                               trace_cache=trace_cache,
                               initial_state=_initial_state(initial_state))
        report: dict[str, Any] = {}
        window = built.graph.metadata.get("window")
        if window:  # a windowed graph's step is a whole window: verify_steps time steps
            verify_steps = max(1, -(-verify_steps // window)) if verify_steps else 0
        if verify_steps and built.calibration is not None:
            # a quantized model is meant for inputs like its calibration data, not noise
            sample = {k: v[:16, :verify_steps] for k, v in built.calibration.items()
                      if k in ("x", "dt")}
            report = verify_artifact(built.out_dir, data=sample, min_sqnr=min_sqnr,
                                     strict=strict, progress=progress)
        elif verify_steps:
            steps = verify_steps
            if sequence_length and not window:
                steps = sequence_length * max(1, -(-verify_steps // sequence_length))
            report = verify_artifact(built.out_dir, sequences=1, steps=steps,
                                     strict=strict, progress=progress)
        if interrupted is not None:
            interrupted()
        path = publish(built.out_dir, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return CompileResult(path, built.graph, read_manifest(path), report)


def _initial_state(given: str | Path | dict[str, Any] | None) -> dict[str, Any] | None:
    """{input name: array} from a dict or an .npz file (read without pickle)."""
    if given is None or isinstance(given, dict):
        return given
    from ncc.models.archive import read_npz

    try:
        return dict(read_npz(Path(given)))
    except (OSError, ValueError) as e:
        raise ValueError(f"--initial-state {given}: cannot read it as an .npz of arrays "
                         f"({e})") from e
