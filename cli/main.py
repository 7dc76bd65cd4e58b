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


EXAMPLES = """examples:
  ncc demo
  ncc compile model.keras --target onnx-float -o out/
  ncc compile model.ckpt --target onnx-float --sequence-length 100 -o out/
  ncc compile model.keras --target onnx-int8 --calibration calib.npz -o out/
  ncc compile model.ckpt --target tflite-int8 --calibration calib.npz -o out/
  ncc compile model.ckpt --target c --calibration calib.npz -o out_c/
  ncc compile ncc.models.zoo:cfc --target onnx-float -o out/ --json
  ncc inspect model.keras
  ncc verify out/ --data test.npz
"""


class UserError(Exception):
    """Bad input: printed as one line, exit code 2."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ncc", description="Compile liquid and spiking recurrent "
                                "models to verified edge artifacts.", epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command")

    from ncc.targets.registry import TARGETS

    targets = "targets:\n" + "".join(f"  {t.name:<12} {t.summary}\n" for t in TARGETS.values())
    c = sub.add_parser("compile", help="compile a model for a target",
                       epilog=targets + "\n" + EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("model", help=".keras file, ncc .ckpt, or package.module:factory")
    c.add_argument("--target", "-t", required=True, metavar="TARGET",
                   help=f"one of {', '.join(TARGETS)} (listed below)")
    c.add_argument("-o", "--output", help="artifact folder (default: <model>.<target>/): a new "
                   "folder, or an earlier ncc artifact folder, which is replaced as a whole; "
                   "anything else there is refused")
    c.add_argument("--input-shape", help="per-step input features, e.g. 8 or 4,4")
    c.add_argument("--sequence-length", type=int, help="emit a Scan over this many steps")
    c.add_argument("--calibration", help="calibration data .npz with x (N, T, F) [and dt]: "
                   "needed by quantized targets")
    c.add_argument("--initial-state", metavar="NPZ",
                   help="values of the model's initial-state inputs (keras.Input passed as "
                   "a recurrent layer's initial_state), one array per input name: the "
                   "artifact's initial state (default zeros)")
    c.add_argument("--range-method", choices=("minmax", "percentile", "mse"),
                   default="minmax",
                   help="how calibrated ranges become parameters (default: minmax)")
    c.add_argument("--activations", choices=("int8", "int16"), default="int8",
                   help="activation and state type (default int8); int16 is TFLite's 16x8 "
                        "mode (weights stay int8): ~10 dB more SQNR, twice the RAM")
    c.add_argument("--verify-steps", type=int, default=100,
                   help="steps of random input to validate after compiling (0: skip)")
    c.add_argument("--json", action="store_true", help="print the result as JSON")

    i = sub.add_parser("inspect", help="print a model's step IR or an artifact's manifest")
    i.add_argument("path", help="model (as for compile) or artifact folder")
    i.add_argument("--input-shape", help="per-step input features, e.g. 8")
    i.add_argument("--json", action="store_true")

    v = sub.add_parser("verify", help="run an artifact against its float reference")
    v.add_argument("artifact", help="artifact folder written by ncc compile")
    v.add_argument("--data", help=".npz with x (N, T, F) and optional dt, y")
    v.add_argument("--sequences", type=int, default=2, help="random sequences (no --data)")
    v.add_argument("--steps", type=int, default=1000, help="steps per random sequence")
    v.add_argument("--runtime", help="runtime to use where a target has several "
                   "(tflite-int8: litert or tflm)")
    v.add_argument("--json", action="store_true")

    d = sub.add_parser("demo", help="compile and verify the bundled example models")
    d.add_argument("-o", "--output", default="ncc-demo", help="folder for the artifacts")
    d.add_argument("--json", action="store_true")

    b = sub.add_parser("bench", help="benchmark every target and the peer paths "
                       "(bits, accuracy, speed, size)")
    b.add_argument("-o", "--output", default="bench/results", help="folder for the report")
    b.add_argument("--quick", action="store_true", help="the two bundled models, 2,000 steps")
    b.add_argument("--smoke", action="store_true", help="tiny configuration for CI")
    b.add_argument("--readme", help="README.md whose bench table to rewrite")
    b.add_argument("--json", action="store_true")
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


class _Progress:
    """A rich progress bar on stderr, silent when not a terminal or with --json; each
    tick is also where a swallowed interrupt surfaces (`_Signals.check`)."""

    def __init__(self, enabled: bool):
        self.bar = None
        if enabled and sys.stderr.isatty():
            from rich.progress import Progress

            self.bar = Progress(transient=True)
            self.tasks: dict[str, Any] = {}

    def __enter__(self) -> _Progress:
        if self.bar:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar:
            self.bar.__exit__(*exc)

    def __call__(self, task: str, done: int, total: int) -> None:
        _Signals.check()
        if not self.bar:
            return
        if task not in self.tasks:
            self.tasks[task] = self.bar.add_task(task, total=total)
        self.bar.update(self.tasks[task], completed=done)


def _summary(report: dict[str, Any]) -> str:
    rows = []
    for name, m in report.get("outputs", {}).items():
        sqnr = "inf" if math.isinf(m["sqnr_db"]) else f"{m['sqnr_db']:.1f}"
        rows.append(f"  {name} vs float: max abs error {m['max_abs_error']:.3g}, relative "
                    f"{m['rel_error']:.3g}, SQNR {sqnr} dB, error by time span "
                    f"{' '.join(f'{e:.2g}' for e in m['error_growth'])}")
    for name, m in report.get("golden", {}).items():
        rows.append(f"  {name} vs golden: {100 * m['identical']:.4g}% identical, "
                    f"max {m['max_lsb']} LSB")
    if "accuracy" in report:
        acc = report["accuracy"]
        rows.append(f"  accuracy: reference {acc['reference']:.4f}, artifact {acc['artifact']:.4f}")
    verdict = "PASSED" if report.get("passed") else "FAILED"
    return (f"{verdict}: {report.get('sequences')} x {report.get('steps')} steps "
            f"({report.get('data')})\n" + "\n".join(rows))


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


def cmd_compile(args: argparse.Namespace) -> int:
    from ncc.cli.driver import compile_model
    from ncc.compiler.quantize import QuantOptions
    from ncc.targets.registry import get_target

    target = get_target(args.target).name
    out = Path(args.output or f"{Path(args.model.split(':')[-1]).stem}.{target}")
    with _Progress(not args.json) as progress:
        result = compile_model(args.model, target, out, input_shape=_shape(args.input_shape),
                               sequence_length=args.sequence_length,
                               calibration=args.calibration,
                               options=QuantOptions(method=args.range_method,
                                                    activations=args.activations),
                               verify_steps=args.verify_steps, progress=progress,
                               interrupted=_Signals.check, trace_cache=True,
                               initial_state=args.initial_state)
    text = (f"compiled {args.model} -> {result.out_dir}/ ({target}, {len(result.graph.ops)} "
            f"ops)") + _footprint(result.manifest.get("details", {}))
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
    g = to_graph(load_model(args.path), _shape(args.input_shape))
    _emit(args, {"ir": graph_to_json(g)}, str(g))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from ncc.cli.driver import verify_artifact

    with _Progress(not args.json) as progress:
        report = verify_artifact(args.artifact, data=args.data, sequences=args.sequences,
                                 steps=args.steps, runtime=args.runtime, progress=progress)
    _emit(args, report, _summary(report))
    return 0 if report["passed"] else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from ncc.cli.demo import run_demo

    with _Progress(not args.json) as progress:
        rows, text = run_demo(Path(args.output), progress=progress)
    _emit(args, {"results": rows}, text)
    return 0 if all(r["passed"] for r in rows) else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from ncc.bench.report import summary_table, write_readme_table, write_results
    from ncc.bench.suite import FULL, QUICK, SMOKE, run_bench

    config = SMOKE if args.smoke else QUICK if args.quick else FULL
    out = Path(args.output)
    log = (lambda msg: None) if args.json else (lambda msg: print(msg, file=sys.stderr))
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

    warnings.filterwarnings("ignore")
    try:
        return COMMANDS[args.command](args)
    except (UserError, ModelLoadError, ArchiveError, TraceError, IRError, ValueError,
            MissingDependency) as e:
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
