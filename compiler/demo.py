"""`ncc demo`: compile the bundled models to every target, verify each, print one table."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ncc.compiler.driver import TARGETS, Progress, compile_model, verify_artifact

MODELS = {
    "cfc": "ncc.models.zoo:cfc",
    "ltc": "ncc.models.zoo:ltc",
    "lif": "ncc.models.zoo:lif",
}


def run_demo(out: Path, steps: int = 1000,
             progress: Progress | None = None) -> tuple[list[dict[str, Any]], str]:
    """Returns one row per (model, target) and the table as text."""
    from rich.console import Console
    from rich.table import Table

    rows = []
    for name, ref in MODELS.items():
        for target in TARGETS:
            res = compile_model(ref, target, out / f"{name}.{target}", verify_steps=0)
            report = verify_artifact(res.out_dir, sequences=1, steps=steps, progress=progress)
            (metrics,) = report["outputs"].values()
            rows.append({"model": name, "source": ref, "target": target,
                         "artifact": str(res.out_dir), "ops": len(res.graph.ops),
                         "steps": steps, "max_abs_error": metrics["max_abs_error"],
                         "sqnr_db": metrics["sqnr_db"], "passed": report["passed"]})
    table = Table(title=f"ncc demo: artifacts vs float reference over {steps} steps")
    for col in ("model", "target", "ops", "max abs error", "SQNR dB", "result", "artifact"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["model"], r["target"], str(r["ops"]), f"{r['max_abs_error']:.2e}",
                      f"{r['sqnr_db']:.1f}", "ok" if r["passed"] else "FAILED", r["artifact"])
    buf = io.StringIO()
    Console(file=buf, width=120).print(table)
    return rows, buf.getvalue()
