"""`ncc`: compile, inspect, verify, demo, bench.

Exit codes: 0 success; 1 validation ran but the artifact failed it; 2 bad
input or a missing package (the one-line message says which input and what to do);
3 an internal error (one line, and the traceback written to a file).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _use_compilation_cache() -> None:
    """Let JAX keep its XLA compilations on disk (JAX's persistent cache, read from these
    variables when JAX is imported): loading a Keras model XLA-compiles its random
    initializers, and the float reference compiles its step, seconds per compile that a
    second `ncc compile` then skips. Beside it, `ncc.compiler.trace_cache` keeps traced
    IR. NCC_CACHE_DIR moves both; NCC_NO_CACHE=1 turns both off."""
    from ncc.compiler.trace_cache import cache_root

    root = cache_root()
    if root is None:
        return
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(root / "jax"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.05")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


EXIT_CODES = """exit codes:
  0    success: the artifact is exact (and, with --strict, faithful)
  1    verification ran and the artifact failed it (see the verdict lines)
  2    bad input, or a missing package or tool (one line says which and what to do)
  3    internal error (one line; the traceback is written to a file: please report it)
  130  interrupted (Ctrl-C); 143 terminated (SIGTERM); nothing half-written is left
"""

VERDICTS = """verdicts (compile and verify print both):
  exactness  the artifact computes what ncc says: an integer artifact is bit-identical
             to the golden integer model on every output and state; a float artifact
             matches the float model within 1e-4 x max(1, max |output|)
  fidelity   the golden model is close to the float model: with labels (y in --data),
             task accuracy at most --max-accuracy-drop below float (default 1 point);
             without, SQNR >= --min-sqnr dB on every output (default 20 dB at int8,
             30 dB at int16). A shortfall is a warning, a failure with --strict
"""

EXAMPLES = {
    "ncc": """examples:
  ncc demo
  ncc compile model.ckpt --target tflite-int8 --calibration calib.npz -o out_tflite/
  ncc verify out_tflite/ --data test.npz
  ncc compile model.ckpt --target c --calibration calib.npz -o out_c/
  ncc verify out_c/ --runtime cortex-m4 --data test.npz
  ncc inspect model.keras
  ncc <command> --help    (each command's options and examples)
""",
    "compile": """examples:
  ncc compile model.ckpt --target tflite-int8 --calibration calib.npz -o out_tflite/
  ncc compile model.ckpt --target c --calibration calib.npz -o out_c/
  ncc compile model.keras --target onnx-int8 --calibration calib.npz --precision int16 -o out/
  ncc compile model.keras --target onnx-float --sequence-length 100 -o out_scan/
  ncc compile ncc.models.zoo:cfc --target onnx-float -o out/ --json
  ncc compile model.ckpt -t tflite-int8 --calibration calib.npz --min-sqnr 25 --strict -o out/
""",
    "inspect": """examples:
  ncc inspect model.keras          the traced step IR of a model
  ncc inspect model.ckpt --json    the same as JSON
  ncc inspect out_c/               an artifact's manifest and its (golden) IR
""",
    "verify": """examples:
  ncc verify out_tflite/ --data test.npz            x (N, T, F) [dt] [y: labels]
  ncc verify out_tflite/ --runtime tflm --data test.npz
  ncc verify out_c/ --runtime cortex-m4 --data test.npz   on a Cortex-M4 under QEMU
  ncc verify out/ --sequences 4 --steps 2000 --min-sqnr 25 --strict
""",
    "demo": """examples:
  ncc demo                     compile and verify the bundled CfC, LIF and LRU models
  ncc demo -o /tmp/demo --json
""",
    "bench": """examples:
  ncc bench --quick            the two bundled models
  ncc bench --smoke -o /tmp/bench
  ncc bench --readme README.md rewrite the README's bench table from this run
""",
}


class UserError(Exception):
    """Bad input: printed as one line, exit code 2."""


def _targets_text() -> str:
    from ncc.targets.registry import TARGETS

    return "targets:\n" + "".join(f"  {t.name:<12} {t.summary}\n" for t in TARGETS.values())


def _runtimes_text() -> str:
    from ncc.runtime.session import RUNTIMES

    return "; ".join(f"{target}: {', '.join(names)} (default {next(iter(names))})"
                     for target, names in RUNTIMES.items())


def _sub(sub: Any, name: str, help: str, *epilogs: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".",
                            epilog="\n".join((*epilogs, EXAMPLES[name], EXIT_CODES)),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    out = parser.add_mutually_exclusive_group()
    out.add_argument("-q", "--quiet", action="store_true",
                     help="no progress on stderr (errors and the result still print)")
    out.add_argument("-v", "--verbose", action="store_true",
                     help="one line per finished phase with its time, on a terminal too")
    return parser


def _fidelity_options(parser: argparse.ArgumentParser, labels: bool) -> None:
    parser.add_argument("--min-sqnr", type=float, metavar="DB",
                        help="fidelity: SQNR in dB every output must reach against float "
                             "(default: 20 at int8, 30 at int16" +
                             ("; with labels, checked only if given)" if labels else ")"))
    if labels:
        parser.add_argument("--max-accuracy-drop", type=float, metavar="POINTS",
                            help="fidelity with labels: accuracy points the artifact may "
                                 "lose against float (default 1)")
    parser.add_argument("--strict", action="store_true",
                        help="fail (exit 1) when fidelity falls short, not only exactness")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ncc", description="Compile liquid and spiking recurrent "
                                "models to verified edge artifacts.",
                                epilog="\n".join((_targets_text(), EXAMPLES["ncc"], EXIT_CODES)),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="{compile,inspect,verify,demo,bench}")

    from ncc.targets.registry import TARGETS

    c = _sub(sub, "compile", "compile a model for a target and verify the artifact",
             _targets_text(), VERDICTS)
    c.add_argument("model", help=".keras file, ncc .ckpt, or package.module:factory")
    c.add_argument("--target", "-t", required=True, metavar="TARGET",
                   help=f"one of: {', '.join(TARGETS)} (each described below)")
    c.add_argument("-o", "--output", help="artifact folder (default: <model>.<target>/): a new "
                   "folder, or an earlier ncc artifact folder, which is replaced as a whole; "
                   "anything else there is refused")
    c.add_argument("--input-shape", help="per-step input features, e.g. 8 or 4,4 (needed when "
                   "the model does not declare them)")
    c.add_argument("--sequence-length", type=int, metavar="T",
                   help="onnx-float: one call runs T steps (an ONNX Scan) instead of one; a "
                        "bidirectional model (any target) is compiled over a window of T steps")
    c.add_argument("--calibration", metavar="NPZ", help="calibration data .npz with x (N, T, F) "
                   "[and dt (N, T)]: whole sequences the model will see; quantized targets "
                   "need it (unless the model is QAT-trained)")
    c.add_argument("--initial-state", metavar="NPZ",
                   help="values of the model's initial-state inputs (keras.Input passed as "
                   "a recurrent layer's initial_state), one array per input name: the "
                   "artifact's initial state (default zeros)")
    c.add_argument("--range-method", choices=("minmax", "percentile", "mse"),
                   default="minmax",
                   help="how calibrated ranges become parameters (default: minmax)")
    c.add_argument("--precision", choices=("auto", "int8", "int16"), default="auto",
                   help="activation and state widths (weights stay int8): auto (default) "
                        "keeps int8 and widens to int16 only the tensors whose noise "
                        "matters, until --target-sqnr (or, with labels y in the calibration "
                        "data, --max-accuracy-drop) is met on the calibration data; int8 "
                        "everywhere; int16 everywhere (TFLite's 16x8 mode, ~10 dB more "
                        "SQNR, twice the RAM)")
    c.add_argument("--activations", choices=("int8", "int16"), dest="precision",
                   help="the same as --precision int8 / int16")
    c.add_argument("--target-sqnr", type=float, default=30.0, metavar="DB",
                   help="precision auto: output SQNR against float to reach on the "
                        "calibration data (default 30 dB)")
    c.add_argument("--max-accuracy-drop", type=float, default=0.5, metavar="POINTS",
                   help="precision auto, calibration data with labels y: accuracy at most "
                        "this many points below float (default 0.5)")
    c.add_argument("--flash-budget", type=int, metavar="BYTES",
                   help="precision auto: at most this many bytes of weights, biases and "
                        "tables; if the target cannot be met inside it, the best choice "
                        "that fits is kept and the report says so")
    c.add_argument("--verify-steps", type=int, default=100, metavar="N",
                   help="after compiling, verify on the first 16 calibration sequences cut "
                        "to N steps (float targets: one random sequence of N steps); 0 skips "
                        "it (default 100)")
    _fidelity_options(c, labels=False)
    c.add_argument("--json", action="store_true", help="print the result as JSON on stdout")

    i = _sub(sub, "inspect", "print a model's step IR or an artifact's manifest")
    i.add_argument("path", help="model (as for compile) or artifact folder")
    i.add_argument("--input-shape", help="per-step input features, e.g. 8")
    i.add_argument("--json", action="store_true", help="print JSON on stdout")

    v = _sub(sub, "verify", "run an artifact in its runtime against the golden and float "
             "models", VERDICTS)
    v.add_argument("artifact", help="artifact folder written by ncc compile")
    v.add_argument("--data", metavar="NPZ", help=".npz with x (N, T, F) and optional dt "
                   "(N, T) and y (N,) labels; without it, random normal sequences")
    v.add_argument("--sequences", type=int, help="random sequences to run (default 2; "
                   "not with --data)")
    v.add_argument("--steps", type=int, help="steps per random sequence (default 1000; not "
                   "with --data)")
    v.add_argument("--runtime", help="where a target runs in several runtimes: "
                   + _runtimes_text())
    _fidelity_options(v, labels=True)
    v.add_argument("--json", action="store_true", help="print the report as JSON on stdout")

    d = _sub(sub, "demo", "compile the bundled CfC and LIF models to every target (and "
             "the LRU to c and tflite-int8 at 16x8) and verify each in its real runtime")
    d.add_argument("-o", "--output", default="ncc-demo", help="folder for the artifacts "
                   "(default ncc-demo)")
    d.add_argument("--json", action="store_true", help="print the rows as JSON on stdout")

    b = _sub(sub, "bench", "benchmark every target and the peer paths (bits, accuracy, "
             "speed, size)")
    b.add_argument("-o", "--output", default="bench/results", help="folder for the report "
                   "(default bench/results)")
    b.add_argument("--quick", action="store_true", help="the two bundled models, 2,000 steps")
    b.add_argument("--smoke", action="store_true", help="tiny configuration for CI")
    b.add_argument("--readme", help="README.md whose bench table to rewrite")
    b.add_argument("--json", action="store_true", help="print the written files as JSON")
    return p


def _shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        shape = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise UserError(f"--input-shape {text!r}: expected integers like 8 or 4,4") from None
    if not shape or any(d <= 0 for d in shape):
        raise UserError(f"--input-shape {text!r}: dimensions must be positive")
    return shape


class _Signals:
    """SIGINT and SIGTERM become KeyboardInterrupt, and are remembered: one that lands
    inside a callback that swallows exceptions (JAX's garbage-collection hook does) is
    raised again at the next `check`, which progress ticks and the driver call."""

    received: int | None = None

    @classmethod
    def install(cls) -> dict[int, Any]:
        """Install the handlers; returns the previous ones (for `restore`)."""
        import signal

        cls.received = None
        previous: dict[Any, Any] = {"unraisable": sys.unraisablehook}
        sys.unraisablehook = cls._unraisable
        previous.update({sig: signal.signal(sig, cls._handler)
                         for sig in (signal.SIGINT, signal.SIGTERM)})
        return previous

    @staticmethod
    def _unraisable(info: Any) -> None:
        """A swallowed interrupt is not printed as a traceback: `check` raises it again."""
        if not issubclass(info.exc_type, KeyboardInterrupt):
            sys.__unraisablehook__(info)

    @staticmethod
    def restore(previous: dict[Any, Any]) -> None:
        import signal

        sys.unraisablehook = previous.pop("unraisable")
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    @classmethod
    def _handler(cls, signum: int, frame: Any) -> None:
        cls.received = signum
        raise KeyboardInterrupt

    @classmethod
    def check(cls) -> None:
        if cls.received is not None:
            raise KeyboardInterrupt


def _reporter(args: argparse.Namespace, label: str) -> Any:
    from ncc.cli.progress import Reporter

    mode = ("quiet" if args.quiet or args.json else "verbose" if args.verbose else "normal")
    return Reporter(label, mode, check=_Signals.check)


def _sqnr(value: float) -> str:
    return "inf" if math.isinf(value) and value > 0 else f"{value:.1f}"


def _growth(m: dict[str, Any]) -> str:
    spans = m.get("error_growth_steps") or [[i, i] for i in range(len(m["error_growth"]))]
    return ", ".join(f"{a if a == b else f'{a}-{b}'}: {e:.2g}"
                     for (a, b), e in zip(spans, m["error_growth"], strict=True))


def _summary(report: dict[str, Any]) -> str:
    """The two verdicts and their figures, as `ncc verify` and `ncc compile` print them."""
    exact = report.get("exactness", {"passed": report.get("passed"),
                                     "criterion": report.get("criterion", "")})
    rows = [f"exactness: {'PASSED' if exact['passed'] else 'FAILED'} ({exact['criterion']})"]
    for name, m in report.get("golden", {}).items():
        rows.append(f"  {name}: {100 * m['identical']:.4g}% of values identical to golden, "
                    f"largest difference {m['max_lsb']} LSB")
    fid = report.get("fidelity", {})
    if "sqnr_db" not in fid:  # a float target: fidelity is exactness
        rows.append("fidelity: see exactness (a float artifact computes the float model)")
    else:
        status = ("PASSED" if fid["passed"] else
                  "FAILED" if report.get("strict") else "WARNING")
        rows.append(f"fidelity: {status} ({fid['criterion']})")
        if not fid["passed"]:
            rows.append(f"  not met: {'; '.join(fid['failed'])}" + (
                "" if report.get("strict") else "; --strict makes this a failure"))
    for name, m in report.get("outputs", {}).items():
        rows.append(f"  {name} vs float: SQNR {_sqnr(m['sqnr_db'])} dB, max abs error "
                    f"{m['max_abs_error']:.3g}, relative {m['rel_error']:.3g} "
                    f"(of max |float| {m.get('peak_abs', float('nan')):.3g})")
        rows.append(f"  {name} max abs error per span of steps: {_growth(m)}")
    if "accuracy" in report:
        acc = report["accuracy"]
        rows.append(f"  task accuracy: float {acc['reference']:.2%}, artifact "
                    f"{acc['artifact']:.2%} ({report.get('sequences')} labelled sequences)")
    where = report.get("target", "?") + (f" in {report['runtime']}"
                                          if report.get("runtime") not in (None, "default")
                                          else "")
    rows.append(f"ran {report.get('sequences')} x {report.get('steps')} steps "
                f"({report.get('data')}) on {where}")
    if device := report.get("device"):
        rows.append(f"  device: {device['machine']}, flash {device['flash_bytes']} B, RAM "
                    f"{device['ram_bytes']} B, {device['steps_run']} steps run")
        for kernels, c in device.get("instructions", {}).items():
            dense = c.get("dense_int8_instructions_per_mac")
            rows.append(f"  Cortex-M4 instructions ({kernels} kernels, QEMU -icount): "
                        f"{c['instructions_per_step']:,.0f} per step"
                        + (f", {dense} per MAC in the int8 dense layers" if dense else ""))
    if notice := report.get("qwix", {}).get("notice"):
        rows.append(notice)
    verdict = "PASSED" if report.get("passed") else "FAILED"
    return f"{verdict}\n" + "\n".join(rows)


def _footprint(details: dict[str, Any]) -> str:
    """Memory and operation counts a target reports (the c target), one line each."""
    rows = []
    if mem := details.get("memory"):
        rows.append(f"  memory: weights {mem['weights_bytes']} B, state {mem['state_bytes']} "
                    f"B, scratch {mem['scratch_bytes']} B; {details.get('macs_per_step', '?')} "
                    "MACs per step")
    cm = details.get("cortex_m") or {}
    if "flash_bytes" in cm:
        rows.append(f"  Cortex-M4: flash {cm['flash_bytes']} B, RAM {cm['ram_bytes']} B "
                    f"({cm['compiler']} {cm['flags']})")
    elif "not_measured" in cm:
        rows.append(f"  Cortex-M4 footprint not measured: {cm['not_measured']}")
    return "".join("\n" + row for row in rows)


def _emit(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    if args.json:
        print(json.dumps(payload, indent=2, sort_keys=True, default=str))
    else:
        print(text)


def _precision_line(search: dict) -> str:
    """One line on what --precision auto chose."""
    wide = [t for t in search["tensors"] if t["width"] == "int16"]
    base, chosen = search["int8"], search["chosen"]
    goal = (f"accuracy within {search['target']['accuracy_drop_points']} points of float"
            if "accuracy_drop_points" in search["target"]
            else f"SQNR >= {search['target']['sqnr_db']:g} dB")
    line = (f"  precision: auto, {len(wide)} of {len(search['tensors']) or len(wide)} tensor "
            f"groups int16 ({goal} on the calibration data: SQNR {base['sqnr_db']:.1f} dB "
            f"at int8 -> {chosen['sqnr_db']:.1f} dB; constants {base['flash_bytes']:,} -> "
            f"{chosen['flash_bytes']:,} B)")
    if not search["met"]:
        line += ("\n  WARNING: precision auto did not reach its target"
                 + (f" inside --flash-budget {search['flash_budget']:,} B"
                    if search["flash_budget"] else "") + "; kept the best choice found")
    return line


def cmd_compile(args: argparse.Namespace) -> int:
    model_name = Path(args.model.split(":")[-1]).name
    reporter = _reporter(args, f"{model_name} -> {args.target}")
    with reporter:
        reporter("start (import ncc)", 0, 1)
        from ncc.cli.driver import compile_model
        from ncc.compiler.quantize import QuantOptions
        from ncc.targets.registry import get_target

        target = get_target(args.target).name
        out = Path(args.output or f"{Path(model_name).stem}.{target}")
        result = compile_model(args.model, target, out, input_shape=_shape(args.input_shape),
                               sequence_length=args.sequence_length,
                               calibration=args.calibration,
                               options=QuantOptions(method=args.range_method,
                                                    activations=args.precision,
                                                    target_sqnr=args.target_sqnr,
                                                    max_accuracy_drop=args.max_accuracy_drop,
                                                    flash_budget=args.flash_budget),
                               verify_steps=args.verify_steps, min_sqnr=args.min_sqnr,
                               strict=args.strict, progress=reporter,
                               interrupted=_Signals.check, trace_cache=True,
                               initial_state=args.initial_state)
    text = (f"compiled {args.model} -> {result.out_dir}/ ({target}, {len(result.graph.ops)} "
            f"ops)") + _footprint(result.manifest.get("details", {}))
    text += f"\n  output: {result.manifest.get('output_semantics')}"
    if search := result.graph.metadata.get("precision"):
        text += "\n" + _precision_line(search)
    if result.report:
        text += "\n" + _summary(result.report)
    _emit(args, {"artifact": str(result.out_dir), "manifest": result.manifest,
                 "report": result.report}, text)
    return 0 if not result.report or result.report["passed"] else 1


def cmd_inspect(args: argparse.Namespace) -> int:
    from ncc.compiler.artifact import load_artifact_graph, read_manifest
    from ncc.compiler.load import load_model
    from ncc.compiler.pipeline import to_graph
    from ncc.compiler.serialize import graph_to_json

    path = Path(args.path)
    if path.is_dir():
        manifest = read_manifest(path)
        g = load_artifact_graph(path)
        _emit(args, {"manifest": manifest, "ir": graph_to_json(g)},
              json.dumps(manifest, indent=2) + "\n" + str(g))
        return 0
    from ncc.compiler.pipeline import phase

    with _reporter(args, Path(args.path.split(":")[-1]).name) as progress:
        with phase(progress, "load the model"):
            model = load_model(args.path)
        with phase(progress, "trace one step"):
            g = to_graph(model, _shape(args.input_shape))
    _emit(args, {"ir": graph_to_json(g)}, str(g))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    if args.data is not None and (args.sequences is not None or args.steps is not None):
        raise UserError("--sequences and --steps shape random data; --data brings its own "
                        "sequences: give one or the other")
    for flag, value in (("--sequences", args.sequences), ("--steps", args.steps)):
        if value is not None and value < 1:
            raise UserError(f"{flag} {value}: give a positive count")
    reporter = _reporter(args, f"{Path(args.artifact).name} ({args.runtime or 'default runtime'})")
    with reporter:
        reporter("start (import ncc)", 0, 1)
        from ncc.cli.driver import verify_artifact

        report = verify_artifact(args.artifact, data=args.data,
                                 sequences=args.sequences or 2, steps=args.steps or 1000,
                                 runtime=args.runtime, min_sqnr=args.min_sqnr,
                                 max_accuracy_drop=(None if args.max_accuracy_drop is None
                                                    else args.max_accuracy_drop / 100),
                                 strict=args.strict, progress=reporter)
    _emit(args, report, _summary(report))
    return 0 if report["passed"] else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from ncc.cli.demo import run_demo

    with _reporter(args, "ncc demo") as progress:
        rows, text = run_demo(Path(args.output), progress=progress)
    _emit(args, {"results": rows}, text)
    return 0 if all(r["passed"] for r in rows) else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from ncc.bench.report import summary_table, write_readme_table, write_results
    from ncc.bench.suite import FULL, QUICK, SMOKE, run_bench

    config = SMOKE if args.smoke else QUICK if args.quick else FULL
    out = Path(args.output)
    log = ((lambda msg: None) if args.json or args.quiet
           else (lambda msg: print(msg, file=sys.stderr)))
    results = run_bench(out, config, log)
    files = write_results(results, out)
    if args.readme:
        write_readme_table(results, Path(args.readme))
    _emit(args, {"files": [str(f) for f in files]},
          summary_table(results) + "\nwrote " + ", ".join(str(f) for f in files))
    exact = [r.get("identical") for m in results["models"] for r in m["runtimes"].values()
             if r.get("bit_exact_required")]
    return 0 if all(v == 1.0 for v in exact) else 1


COMMANDS = {"compile": cmd_compile, "inspect": cmd_inspect, "verify": cmd_verify,
            "demo": cmd_demo, "bench": cmd_bench}


def main(argv: list[str] | None = None) -> int:
    previous = _Signals.install()  # first: an interrupt at any point is handled
    command = "ncc"
    try:
        args = _parser().parse_args(argv)
        command = f"ncc {args.command}" if args.command else "ncc"
        _use_compilation_cache()
        return _run(args)
    except KeyboardInterrupt:
        print(f"{command}: interrupted (no partial output is left)", file=sys.stderr)
        return 143 if _Signals.received == 15 else 130
    finally:
        _Signals.restore(previous)


def _run(args: argparse.Namespace) -> int:
    if args.version:
        from ncc.compiler import __version__

        print(f"ncc {__version__}")
        return 0
    if args.command is None:
        _parser().print_help()
        return 2
    from ncc.compiler.builder import TraceError
    from ncc.compiler.ir import IRError
    from ncc.compiler.load import ModelLoadError
    from ncc.compiler.requires import MissingDependency, install_hint
    from ncc.models.archive import ArchiveError
    from ncc.runtime.cortex_m import CortexMError

    warnings.filterwarnings("ignore")
    try:
        return COMMANDS[args.command](args)
    except (UserError, ModelLoadError, ArchiveError, TraceError, IRError, ValueError,
            MissingDependency, CortexMError) as e:
        print(f"ncc {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        print(f"ncc {args.command}: error: the Python package {e.name!r} is not installed: "
              f"{install_hint(e.name or '')}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug: one line here, the whole traceback in a file
        first = (str(e).splitlines() or [""])[0]
        print(f"ncc {args.command}: internal error ({type(e).__name__}: {first}); "
              f"traceback in {_write_traceback()}; please report it", file=sys.stderr)
        return 3


def _write_traceback() -> str:
    """Write the current exception's traceback to a file in the temp dir; its path."""
    import tempfile
    import traceback

    fd, path = tempfile.mkstemp(prefix="ncc-crash-", suffix=".txt")
    with os.fdopen(fd, "w") as f:
        traceback.print_exc(file=f)
    return path


if __name__ == "__main__":
    sys.exit(main())
