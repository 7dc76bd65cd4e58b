"""Write `ncc bench` results: results.json, report.md, PNG plots, and the README table.

The README table sits between `<!-- bench:start -->` and `<!-- bench:end -->`;
`write_readme_table` replaces only what is between the markers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

START, END = "<!-- bench:start -->", "<!-- bench:end -->"
BASELINE = "onnx-float"  # speed ratios are relative to onnxruntime float


def _plain(obj: Any) -> Any:
    """JSON-safe copy without the per-step traces (those go to the plots)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items() if k not in ("traces", "trace")}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _num(v: Any, fmt: str = ".1f") -> str:
    if v is None:
        return "–"
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # inf (no error), -inf or nan (the float reference itself diverged)
    return format(v, fmt)


def _ratio(m: dict[str, Any], r: dict[str, Any]) -> float | None:
    base = m["runtimes"].get(BASELINE, {}).get("step_us")
    return r["step_us"] / base if base and r.get("step_us") else None


def accuracy_rows(m: dict[str, Any]) -> list[tuple[str, float | None]]:
    """(path, test accuracy) for float, golden-equivalent targets and peers."""
    rows: list[tuple[str, float | None]] = []
    fl = m["runtimes"].get(BASELINE, {})
    rows.append(("float (JAX)", fl.get("accuracy_float")))
    for label, r in m["runtimes"].items():
        if "accuracy" in r:
            rows.append((f"ncc {label}", r["accuracy"]))
    for label, p in m.get("peers", {}).items():
        if "accuracy" in p:
            rows.append((label, p["accuracy"]))
    return rows


def markdown(results: dict[str, Any]) -> str:
    cfg = results["config"]
    lines = ["# ncc bench", "",
             f"Digits test split ({cfg['test_sequences']} sequences x 8 steps) for task "
             f"accuracy; one {cfg['long_steps']}-step sequence (test rows read one after "
             "another) for bits, SQNR and error growth. Latency: median of "
             f"{cfg['timing_calls']} single-step calls at batch 1, one thread, as a ratio to "
             f"onnxruntime float. int8 MAC rate (onnxruntime MatMulInteger, 1 thread): "
             f"{results['int8_macs_per_s'] / 1e9:.2f} GMAC/s. Machine: "
             f"{results['machine']['platform']}. The full suite trains its models here "
             "first; SQNR on the test split runs each test sequence from the initial state "
             "(the long-sequence SQNR of a spiking readout that integrates without bound "
             "means little).", ""]
    for m in results["models"]:
        if "error" in m:
            lines += [f"## {m['model']}", "", f"{m['error']}", ""]
            continue
        lines += [f"## {m['model']}" + ("" if m["trained"] else " (untrained, fixed seed)"), "",
                  f"MACs per step: {m.get('macs_per_step', 0)}; int8 bound at the measured "
                  f"rate: {m['int8_bound_us']:.3f} µs/step.", ""]
        lines += ["| path | test acc | bits = golden | max LSB | SQNR dB vs float | "
                  "error first → last span | µs/step | x onnxruntime float | x int8 bound |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for label, r in m["runtimes"].items():
            if "error" in r:
                lines.append(f"| {label} | error: {r['error'][:80]} | | | | | | | |")
                continue
            lsb = max((g["max_lsb"] for g in r.get("golden", {}).values()), default=None)
            eg = r.get("error_growth")
            growth = f"{eg[0]:.3g} → {eg[-1]:.3g}" if eg else "–"
            bound = (r["step_us"] / m["int8_bound_us"] if r.get("step_us")
                     and m["int8_bound_us"] else None)
            lines.append(f"| ncc {label} | {_pct(r.get('accuracy'))} | "
                         f"{_pct(r.get('identical'))} | {_num(lsb, 'd')} | "
                         f"{_num(r.get('sqnr_db'))} | {growth} | {_num(r.get('step_us'))} | "
                         f"{_num(_ratio(m, r), '.2f')} | {_num(bound, '.0f')} |")
        for label, p in m.get("peers", {}).items():
            if p.get("status", "ok") != "ok" or "error" in p:
                lines.append(f"| {label} | {p.get('status', 'failed')}: "
                             f"{p.get('error', '')[:100]} | | | | | | | |")
                continue
            eg = p.get("error_growth")
            growth = f"{eg[0]:.3g} → {eg[-1]:.3g}" if eg else "–"
            lines.append(f"| {label} | {_pct(p.get('accuracy'))} | n/a | n/a | "
                         f"{_num(p.get('sqnr_db'))} | {growth} | {_num(p.get('step_us'))} | "
                         f"{_num(_ratio(m, p), '.2f')} | |")
        if line := _mac_bound_line(m):
            lines.append(line)
        if line := _cortex_m4_line(m.get("cortex_m4")):
            lines.append(line)
        fl = m["runtimes"].get(BASELINE, {})
        lines.append(f"\nfloat accuracy: {_pct(fl.get('accuracy_float'))}")
        if m.get("spike_agreement"):
            agree = ", ".join(f"{k} {v:.4%}" for k, v in m["spike_agreement"].items())
            lines.append(f"\nspikes golden = float: {agree}")
        tput = [f"{t} {r['steps_per_s']:,.0f}" for t, r in m.get("throughput", {}).items()
                if "steps_per_s" in r]
        if tput:
            batch = results["config"].get("batch")
            lines.append(f"\nthroughput at batch {batch} (onnxruntime, one thread), steps/s: "
                         + ", ".join(tput))
        lines += ["", "| target | compile s | artifact bytes | weight bytes | weights vs float "
                  "| SQNR dB, test split | RAM / flash bytes | MACs/step |",
                  "|---|---|---|---|---|---|---|---|"]
        for t, e in m["targets"].items():
            if "error" in e:
                lines.append(f"| {t} | error: {e['error'][:80]} | | | | | | |")
                continue
            fw = m.get("float_weight_bytes")
            rel = e["weight_bytes"] / fw if fw else None
            lines.append(f"| {t} | {e['compile_s']:.2f} | {e['artifact_bytes']} | "
                         f"{e['weight_bytes']} | {_num(rel, '.2f')} | "
                         f"{_num(e.get('test_sqnr_db'))} | {_memory(e)} | "
                         f"{e.get('macs_per_step', '–')} |")
        lines.append("")
    lines += ["![traces](trace.png)", "![error growth](error_growth.png)",
              "![accuracy](accuracy.png)", "![latency](latency.png)",
              "![accuracy against Cortex-M4 flash](precision.png)", ""]
    return "\n".join(lines)


def _mac_bound_line(m: dict[str, Any]) -> str | None:
    """The C step against the plain int8 loop over the same shapes, both timed here."""
    b, c = m.get("c_mac_bound") or {}, m["runtimes"].get("c (loop inside C)", {})
    if not b.get("step_us") or not c.get("step_us"):
        return None
    rate = f"{b['macs_per_s'] / 1e9:.1f} GMAC/s" if b.get("macs_per_s") else ""
    return (f"\nC step against its MAC bound (a plain int8 dot loop over the same "
            f"{len(b['shapes'])} dense shapes, {b['macs']:,} MACs, `{b['flags']}`, this run): "
            f"ncc c {c['step_us']:.3f} µs/step, bound {b['step_us']:.3f} µs/step ({rate}): "
            f"**{c['step_us'] / b['step_us']:.1f}x** the bound; ncc c runs "
            f"{m.get('macs_per_step', 0) / c['step_us'] / 1e3:.2f} GMAC/s.")


def _cortex_m4_line(counts: dict[str, Any] | None) -> str:
    """The c artifact's Cortex-M4 instruction counts (QEMU -icount), DSP vs portable."""
    if not counts:
        return ""
    if "dsp" not in counts:
        return f"\nCortex-M4 instructions not counted: {next(iter(counts.values()))}"
    dsp, portable = counts["dsp"], counts["portable"]
    dense = "dense_int8_instructions_per_mac"
    return ("\nCortex-M4 (QEMU -icount), instructions per step: DSP kernels "
            f"{dsp['instructions_per_step']:,.0f} ({_num(dsp[dense], '.2f')} per MAC in the "
            f"int8 dense layers), portable C {portable['instructions_per_step']:,.0f} "
            f"({_num(portable[dense], '.2f')} per MAC)")


def _memory(entry: dict[str, Any]) -> str:
    """RAM / flash of a target that reports them: the Cortex-M build's figures when
    present, else the artifact's own memory estimate (state + scratch / weights)."""
    cm = entry.get("cortex_m") or {}
    if "ram_bytes" in cm and "flash_bytes" in cm:
        return f"{cm['ram_bytes']} / {cm['flash_bytes']} (Cortex-M4)"
    mem = entry.get("memory") or {}
    if mem:
        ram = mem.get("state_bytes", 0) + mem.get("scratch_bytes", 0)
        return f"{ram} / {mem.get('weights_bytes', '–')}"
    return "–"


def plots(results: dict[str, Any], out: Path) -> list[Path]:
    """trace.png, error_growth.png, accuracy.png, latency.png (small, 80 dpi)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = results["models"]
    files = []
    fig, axes = plt.subplots(len(models), 1, figsize=(8, 2.2 * len(models)), squeeze=False)
    for ax, m in zip(axes[:, 0], models, strict=True):
        for label, tr in m["traces"].items():
            if label in ("float", "onnx-int8", "onnx-qdq"):
                ax.plot(np.asarray(tr)[:200], label=label, lw=1)
        for label, p in m.get("peers", {}).items():
            if "trace" in p:
                ax.plot(np.asarray(p["trace"])[:200], label=label.split(",")[0], lw=1, ls=":")
        ax.set_title(f"{m['model']}: output 0, first 200 steps", fontsize=9)
        ax.legend(fontsize=6)
    files.append(_save(fig, out / "trace.png", dpi=60))

    fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models), 2.8), squeeze=False)
    for ax, m in zip(axes[0], models, strict=True):
        series = {k: r["error_growth"] for k, r in m["runtimes"].items() if "error_growth" in r}
        series.update({k.split(",")[0]: p["error_growth"] for k, p in m.get("peers", {}).items()
                       if "error_growth" in p})
        for label, eg in series.items():
            ax.plot(np.arange(1, len(eg) + 1), eg, marker=".", label=label, lw=1)
        ax.set_yscale("symlog", linthresh=1e-6)
        ax.set_title(m["model"], fontsize=8)
        ax.set_xlabel("time span (tenths)", fontsize=7)
    axes[0, 0].set_ylabel("max abs error vs float", fontsize=7)
    axes[0, 0].legend(fontsize=5)
    files.append(_save(fig, out / "error_growth.png"))

    trained = [m for m in models if m["trained"]]
    fig, axes = plt.subplots(1, len(trained), figsize=(4.5 * len(trained), 3.2), squeeze=False)
    for ax, m in zip(axes[0], trained, strict=True):
        rows = [(k, v) for k, v in accuracy_rows(m) if v is not None]
        ax.barh([k[:38] for k, _ in rows], [100 * v for _, v in rows])
        ax.set_xlim(0, 100)
        ax.tick_params(labelsize=6)
        ax.set_title(f"{m['model']}: test accuracy %", fontsize=8)
    files.append(_save(fig, out / "accuracy.png"))

    fig, axes = plt.subplots(1, len(models), figsize=(3.6 * len(models), 3.2), squeeze=False)
    for ax, m in zip(axes[0], models, strict=True):
        rows = [(k, r["step_us"]) for k, r in m["runtimes"].items() if r.get("step_us")]
        rows += [(k.split(",")[0], p["step_us"]) for k, p in m.get("peers", {}).items()
                 if p.get("step_us")]
        ax.barh([k[:30] for k, _ in rows], [v for _, v in rows])
        if m["int8_bound_us"]:
            ax.axvline(m["int8_bound_us"], color="k", ls="--", lw=1)
        ax.set_xscale("log")
        ax.tick_params(labelsize=6)
        ax.set_title(f"{m['model']}: µs/step (dashed: MAC bound)", fontsize=7)
    files.append(_save(fig, out / "latency.png"))

    fig, axes = plt.subplots(1, len(trained), figsize=(3.4 * len(trained), 3.0), squeeze=False)
    for ax, m in zip(axes[0], trained, strict=True):
        for path, flash, acc in precision_points(m):
            ax.scatter([flash / 1024], [100 * acc], label=path, s=14)
        if (fl := m["runtimes"].get(BASELINE, {}).get("accuracy_float")) is not None:
            ax.axhline(100 * fl, color="k", ls="--", lw=1, label="float")
        ax.set_xscale("log")
        ax.tick_params(labelsize=6)
        ax.set_xlabel("Cortex-M4 flash, KB", fontsize=7)
        ax.set_title(f"{m['model']}: test accuracy %", fontsize=7)
    if trained:
        axes[0, 0].legend(fontsize=5)
    files.append(_save(fig, out / "precision.png"))
    return files


def precision_points(m: dict[str, Any]) -> list[tuple[str, int, float]]:
    """(path, Cortex-M4 flash bytes, test accuracy) of the c paths at int8, 16x8, auto."""
    points = []
    for path in ("c", "c 16x8", "c auto"):
        flash = (m["targets"].get(path, {}).get("cortex_m") or {}).get("flash_bytes")
        acc = m["runtimes"].get(path, {}).get("accuracy")
        if flash and acc is not None:
            points.append((path, int(flash), float(acc)))
    return points


def _save(fig: Any, path: Path, dpi: int = 80) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def summary_table(results: dict[str, Any]) -> str:
    """The README table: one row per trained model and path."""
    lines = ["| model | path | test acc | bits = golden | SQNR dB, test split | "
             "SQNR dB, long sequence | x onnxruntime float |",
             "|---|---|---|---|---|---|---|"]
    for m in results["models"]:
        if not m["trained"]:
            continue
        if "error" in m:
            lines.append(f"| {m['model']} | {m['error']} | | | | | |")
            continue
        fl = m["runtimes"].get(BASELINE, {})
        lines.append(f"| {m['model']} | float | {_pct(fl.get('accuracy_float'))} | | | | |")
        for label, r in m["runtimes"].items():
            if "error" in r:
                continue
            if "accuracy" not in r:  # timing-only rows: jax.jit, Keras eager
                if "identical" not in r:
                    lines.append(f"| {m['model']} | {label} step | | | | | "
                                 f"{_num(_ratio(m, r), '.2f')} |")
                continue
            exact = r.get("identical") == 1.0
            test_sqnr = m["targets"].get(r["target"], {}).get("test_sqnr_db") if exact else None
            lines.append(f"| {m['model']} | ncc {label} | {_pct(r.get('accuracy'))} | "
                         f"{_pct(r.get('identical'))} | {_num(test_sqnr)} | "
                         f"{_num(r.get('sqnr_db'))} | {_num(_ratio(m, r), '.2f')} |")
        for label, p in m.get("peers", {}).items():
            if p.get("status", "ok") != "ok" or "error" in p:
                lines.append(f"| {m['model']} | {label} | {p.get('status', 'failed')} "
                             "| | | | |")
                continue
            lines.append(f"| {m['model']} | {label} | {_pct(p.get('accuracy'))} | n/a | | "
                         f"{_num(p.get('sqnr_db'))} | {_num(_ratio(m, p), '.2f')} |")
    cfg = results["config"]
    return ("\n".join(lines) + f"\n\n{cfg['test_sequences']} digits test sequences (SQNR "
            "on the test split: each sequence from the initial state, for paths bit-exact "
            f"with the golden model); long-sequence SQNR over one {cfg['long_steps']}-step "
            "sequence (-inf: the float model itself diverged to inf/NaN over it, as a CfC "
            "without a backbone, whose ff1/ff2 have no squashing nonlinearity, can). Full "
            "figures: `bench/results/report.md` (`ncc bench`).")


def write_readme_table(results: dict[str, Any], readme: Path) -> None:
    """Replace the text between the bench markers in `readme` (append the markers if absent)."""
    text = readme.read_text()
    block = f"{START}\n{summary_table(results)}\n{END}"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## Benchmarks\n\n" + block + "\n"
    readme.write_text(text)


def load_results(path: Path) -> dict[str, Any]:
    """results.json back as the report functions take it (inf/nan strings as floats;
    the per-step traces are not in the file, so plots need a fresh run)."""
    def back(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: back(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [back(v) for v in obj]
        if obj in ("inf", "-inf", "nan"):
            return float(obj)
        return obj
    results = back(json.loads(Path(path).read_text()))
    for m in results["models"]:  # json.dumps sorted the keys: back to the run's order
        m["runtimes"] = dict(sorted(m["runtimes"].items(), key=lambda kv: _path_order(kv[0])))
        m["targets"] = dict(sorted(m["targets"].items(), key=lambda kv: _path_order(kv[0])))
    return results


def _path_order(label: str) -> tuple[int, str]:
    """Floats first, then the targets in the registry's order, each runtime after its target."""
    from ncc.targets.registry import TARGETS

    order = ["Keras eager float", "jax.jit float", *TARGETS]
    base = label.split(" (")[0]
    return (order.index(base) if base in order else len(order), label)


def write_results(results: dict[str, Any], out: Path) -> list[Path]:
    """results.json, report.md and the plots into `out`; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(_plain(results), indent=1, sort_keys=True))
    (out / "report.md").write_text(markdown(results))
    return [out / "results.json", out / "report.md", *plots(results, out)]
