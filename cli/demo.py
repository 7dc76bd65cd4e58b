"""`ncc demo`: compile the bundled models to every target, verify each, print one table.

Spiking-only targets (nir) take the LIF model only. The bundled LRU (a state-space
model, QAT'd at 16x8 by `models/examples/lru_digits.py`, reading each digit pixel by
pixel: 64 steps) is compiled at int16 activations to `SSM_TARGETS`, on its own grids.

The bundled models (`ncc/models/bundled/`, trained by `bench/train_bundled.py`)
read scikit-learn's 8x8 digits row by row. Quantized targets calibrate on the
training split; every artifact is verified on the test split, with labels, in
its real runtime against the golden model (integer targets) and the float model.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ncc.cli.driver import compile_model, verify_artifact
from ncc.compiler.pipeline import Progress
from ncc.compiler.quantize import QuantOptions
from ncc.models.archive import atomic_write, npz_bytes, read_npz
from ncc.models.zoo import bundled_dir
from ncc.targets.registry import TARGETS

MODELS = {"cfc": "cfc_digits.ckpt", "lif": "lif_digits.ckpt"}
SPIKING = {"lif"}


SIXTEEN = ("tflite-int8",)  # also shown in the 16x8 mode (int16 activations)
SSM = {"lru": "lru_digits.ckpt"}
"""State-space models: QAT'd at 16x8 (`models/examples/lru_digits.py`), pixel by pixel."""
SSM_TARGETS = ("c", "tflite-int8")  # compiled at int16 activations, their own grids


def run_demo(out: Path, progress: Progress | None = None) -> tuple[list[dict[str, Any]], str]:
    """Returns one row per (model, target, runtime) and the table as text."""
    from ncc.models.examples.lru_digits import pixel_sequences

    digits = read_npz(bundled_dir() / "digits.npz")
    out.mkdir(parents=True, exist_ok=True)
    x_test, y_test = digits["x"][digits["test"]], digits["y"][digits["test"]]
    rows_file, pixels_file = out / "digits_test.npz", out / "digits_pixels_test.npz"
    atomic_write(rows_file, npz_bytes({"x": x_test, "y": y_test}))
    atomic_write(pixels_file, npz_bytes({"x": pixel_sequences(x_test), "y": y_test}))
    calibration = {"x": digits["x"][digits["train"]]}
    rows: list[dict[str, Any]] = []
    paths = [(t, "int8") for t in TARGETS] + [(t, "int16") for t in SIXTEEN if t in TARGETS]
    for name, file in MODELS.items():
        for target, activations in paths:
            if TARGETS[target].spiking_only and name not in SPIKING:
                continue
            rows += _rows(name, file, target, activations, out, rows_file,
                          calibration if TARGETS[target].quantized else None, progress)
    for name, file in SSM.items():
        for target in (t for t in SSM_TARGETS if t in TARGETS):
            rows += _rows(name, file, target, "int16", out, pixels_file, None, progress)
    return rows, _table(rows, out)


def _rows(name: str, file: str, target: str, activations: str, out: Path, test_file: Path,
          calibration: dict[str, Any] | None,
          progress: Progress | None) -> list[dict[str, Any]]:
    """Compile bundled `file` for `target` and verify it in each of its runtimes on
    `test_file`: one row per runtime (a runtime that cannot run here: a "skipped" row)."""
    from ncc.compiler.requires import MissingDependency
    from ncc.runtime.cbuild import NoCompiler
    from ncc.runtime.session import RUNTIMES

    suffix = "" if activations == "int8" else "-16x8"
    label = f"{name} -> {target}{suffix.replace('-', ' ')}"
    res = compile_model(bundled_dir() / file, target, out / f"{name}.{target}{suffix}",
                        calibration=calibration, options=QuantOptions(activations=activations),
                        verify_steps=0, progress=_job(progress, label), trace_cache=True)
    rows = []
    for runtime in RUNTIMES.get(target, {None: None}):
        try:
            report = verify_artifact(res.out_dir, data=test_file, runtime=runtime,
                                     progress=_job(progress, f"{label} in "
                                                   f"{runtime or 'its runtime'}"))
        except MissingDependency as e:  # the artifact is written; it can't run here
            rows.append({"model": name, "target": target,
                         "runtime": ("system cc" if isinstance(e, NoCompiler)
                                     else runtime or "default"),
                         "artifact": str(res.out_dir), "ops": len(res.graph.ops),
                         "skipped": str(e), "passed": True})
            continue
        rows.append({**_row(name, target, runtime, res, report), "activations": activations})
    return rows


def _job(progress: Progress | None, job: str) -> Progress | None:
    """`progress` with each task named after the job it belongs to."""
    if progress is None:
        return None
    return lambda task, done, total: progress(f"{job}: {task}", done, total)


def _row(name: str, target: str, runtime: str | None, res: Any,
         report: dict[str, Any]) -> dict[str, Any]:
    (metrics,) = report["outputs"].values()
    golden = report.get("golden", {})
    return {
        "model": name, "target": target, "runtime": runtime or "default",
        "artifact": str(res.out_dir), "ops": len(res.graph.ops),
        "accuracy_float": report["accuracy"]["reference"],
        "accuracy_artifact": report["accuracy"]["artifact"],
        "identical_to_golden": (min(m["identical"] for m in golden.values())
                                if golden else None),
        "sqnr_db": metrics["sqnr_db"], "max_abs_error": metrics["max_abs_error"],
        "passed": report["passed"], "exact": report["exactness"]["passed"],
        "faithful": report["fidelity"]["passed"],
    }


def _table(rows: list[dict[str, Any]], out: Path) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="ncc demo: digits test split (360 sequences: cfc, lif row by row, "
                        "8 steps; lru pixel by pixel, 64 steps), each artifact run in its "
                        "real runtime")
    for col in ("model", "target", "runtime", "ops", "float acc", "artifact acc", "bits = golden",
                "SQNR dB", "max abs err", "exact", "fidelity"):
        table.add_column(col)
    for r in rows:
        if "skipped" in r:
            table.add_row(r["model"], r["target"], r["runtime"], str(r["ops"]), "", "", "",
                          "", "", "", f"not run: {r['skipped']}")
            continue
        same = r["identical_to_golden"]
        target = r["target"] + (" 16x8" if r.get("activations") == "int16" else "")
        table.add_row(r["model"], target, r["runtime"], str(r["ops"]),
                      f"{r['accuracy_float']:.2%}",
                      f"{r['accuracy_artifact']:.2%}",
                      "n/a (float)" if same is None else f"{same:.2%}",
                      f"{r['sqnr_db']:.1f}", f"{r['max_abs_error']:.2e}",
                      "ok" if r["exact"] else "FAILED", "ok" if r["faithful"] else "low")
    buf = io.StringIO()
    Console(file=buf, width=140).print(table)
    return buf.getvalue() + (f"exact: bits equal to the golden integer model (float targets: "
                             f"within 1e-4 of the float model); fidelity: task accuracy at most "
                             f"1 point below float. Artifacts in {out}/\n")

