"""`ncc bench`: bit accuracy, task accuracy, speed and size of every target, and of the
peer paths a user would try today, measured in one run.

Suite: the bundled digits models (CfC and LIF, trained) and, in the full run, zoo models
built from fixed seeds and left untrained (their task accuracy is chance; their bits,
speed and size are what they show). Per model and target: compile time, artifact and
weight bytes; test-split accuracy; over one long sequence (the test images' rows read
one after another, repeated), bits identical to the golden model, max LSB, SQNR against
float and error growth; for spiking models, the fraction of spike values the golden
model shares with float. Speed: the median per-step latency at batch 1 of each runtime,
reported as a ratio to onnxruntime float, and the MAC-count bound (MACs per step over
a measured int8 MatMulInteger rate); the C step, timed inside C, against a plain int8 dot
loop over the model's own dense shapes built with the same flags (`bench.mac_bound`).
The 16x8 mode (`--activations int16`) is benched as its own paths, "tflite-int8 16x8"
and "c 16x8". `run_bench` returns the results as plain data; `ncc.bench.report` writes
them out.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ncc.bench.models import Case
from ncc.compiler.ir import Graph

Log = Callable[[str], None]


@dataclass
class Config:
    long_steps: int = 10_000
    test_sequences: int | None = None  # None: the whole test split
    timing_calls: int = 2000
    zoo: bool = True  # the full suite (trained here), not only the bundled models
    batch: int = 256  # sequences per call for the throughput figures
    tflite_peer: bool = True


SIXTEEN = ("tflite-int8", "c")  # targets also benched with int16 activations (16x8)
AUTO = ("c",)  # targets also benched at --precision auto (per-tensor widths)


def variants() -> list[tuple[str, str, str]]:
    """(path name, target, activations): every target at int8, then the 16x8 ones, then
    the `auto` ones (int8 and int16 groups side by side)."""
    from ncc.targets.registry import TARGETS

    return ([(t, t, "int8") for t in TARGETS]
            + [(f"{t} 16x8", t, "int16") for t in SIXTEEN]
            + [(f"{t} auto", t, "auto") for t in AUTO])


QUICK = Config(long_steps=2000, timing_calls=1000, zoo=False)
FULL = Config()
SMOKE = Config(long_steps=200, test_sequences=40, timing_calls=100, zoo=False, tflite_peer=False)


def task_data(task: str, config: Config) -> dict[str, np.ndarray]:
    """calib (train split), test (+ labels) and one long sequence: the test sequences
    read one after another, repeated to `config.long_steps`; dt alongside for a dt task."""
    from ncc.bench.models import TASKS

    d = TASKS[task]()
    test = d["test"][:config.test_sequences]
    out = {"calib": d["x"][d["train"]], "test": d["x"][test], "y": d["y"][test]}
    n_rows = int(np.prod(d["x"][d["test"]].shape[:2]))
    reps = -(-config.long_steps // n_rows)
    keys = ["x", "dt"] if "dt" in d else ["x"]
    for k in keys:
        rows = d[k][d["test"]].reshape(-1, *d[k].shape[2:])
        out["long" if k == "x" else "long_dt"] = np.tile(
            rows, (reps,) + (1,) * (rows.ndim - 1))[:config.long_steps][None]
    if "dt" in d:
        out["calib_dt"], out["test_dt"] = d["dt"][d["train"]], d["dt"][test]
    return out


# ---- measurements ---------------------------------------------------------------------------

def count_macs(g: Graph) -> int:
    """Multiply-accumulates per step (batch 1): K*N per fully_connected / matmul, and one
    per summed element of a reduce_sum (LTC's synapses are products summed that way)."""
    macs = 0
    for op in g.ops:
        if op.kind in ("matmul", "fully_connected"):
            a, w = (g.tensors[n].shape for n in op.inputs[:2])
            macs += int(np.prod(a[:-1], dtype=np.int64)) * int(w[-2]) * int(w[-1])
        elif op.kind == "reduce_sum":
            macs += g.tensors[op.inputs[0]].size
    return macs


def int8_mac_rate(m: int = 256, k: int = 1024, n: int = 1024) -> float:
    """int8 MACs per second of onnxruntime MatMulInteger on one thread (best of 5)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    node = helper.make_node("MatMulInteger", ["a", "b"], ["c"])
    graph = helper.make_graph([node], "mmi",
                              [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k]),
                               helper.make_tensor_value_info("b", TensorProto.INT8, [k, n])],
                              [helper.make_tensor_value_info("c", TensorProto.INT32, [m, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {"a": rng.integers(0, 255, (m, k), dtype=np.uint8),
             "b": rng.integers(-127, 127, (k, n), dtype=np.int8)}
    sess.run(None, feeds)
    best = min(_timed(lambda: sess.run(None, feeds)) for _ in range(5))
    return m * k * n / best


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def step_latency_us(call: Callable[[], Any], calls: int) -> float:
    """Median wall time of `call` in µs over `calls` calls, after a warm-up."""
    for _ in range(min(50, calls)):
        call()
    times = np.empty(calls)
    for i in range(calls):
        t0 = time.perf_counter()
        call()
        times[i] = time.perf_counter() - t0
    return float(np.median(times) * 1e6)


def first_feeds(session: Any, x0: np.ndarray) -> dict[str, np.ndarray]:
    """The artifact-named feeds of a session's first step for input x0 (float or int8)."""
    from ncc.compiler.ir import QuantParams
    from ncc.numerics import quantize

    by_name = {t["name"]: t for t in session.manifest["tensors"]}
    (x_name,) = session.names("input")
    t = by_name[x_name]
    x = x0.reshape(t["shape"])
    if t["quantization"]:
        x = quantize(x, QuantParams.from_dict(t["quantization"]))
    feeds = {x_name: np.asarray(x, t["dtype"]),
             **{s: init.astype(by_name[s]["dtype"]) for s, _, init in session.state}}
    for name in session.names("dt"):
        t = by_name[name]
        one = np.ones(t["shape"], np.float32)
        feeds[name] = (quantize(one, QuantParams.from_dict(t["quantization"]))
                       if t["quantization"] else one)
    return feeds


def litert_default_session(art_dir: Path) -> Any:
    """LiteRT with its default kernels (XNNPACK, optimized): what most users run."""
    from ncc.compiler.artifact import read_manifest
    from ncc.runtime.session import LitertDefaultSession

    return LitertDefaultSession(art_dir, read_manifest(art_dir))


def spike_agreement(reference: Graph, golden: Graph, xs: np.ndarray) -> dict[str, float]:
    """Fraction of spike values (int8 0/1 results of `cast` from bool in the golden graph)
    equal in the float reference and the golden model over sequence xs (T, F)."""
    from ncc.compiler.interpret import run_step
    from ncc.numerics import quantize

    spikes = [op.output for op in golden.ops if op.kind == "cast"
              and golden.tensors[op.inputs[0]].dtype == "bool"]
    spikes = [s for s in spikes if s in reference.tensors]
    if not spikes:
        return {}
    (x_name,) = golden.by_role("input")
    s_ref, s_gold = dict(reference.initial_state), dict(golden.initial_state)
    same = dict.fromkeys(spikes, 0)
    total = 0
    for x in xs:
        x = x.reshape(golden.tensors[x_name].shape)
        r = run_step(reference, {x_name: x, **s_ref}, every_tensor=True)
        q = run_step(golden, {x_name: quantize(x, golden.tensors[x_name].quant), **s_gold},
                     every_tensor=True)
        for s in spikes:
            same[s] += int(np.sum(np.asarray(r[s]) == np.asarray(q[s])))
        total += int(np.asarray(q[spikes[0]]).size)
        s_ref = {a: r[b] for a, b in reference.state_pairs}
        s_gold = {a: q[b] for a, b in golden.state_pairs}
    return {s: same[s] / total for s in spikes}


def _golden_metrics(got: dict[str, np.ndarray], gold: dict[str, np.ndarray]
                    ) -> dict[str, dict[str, Any]]:
    res = {}
    for n, g in gold.items():
        a = got[n].reshape(g.shape).astype(np.int64)
        diff = np.abs(a - g.astype(np.int64))
        res[n] = {"identical": float(np.mean(diff == 0)), "max_lsb": int(diff.max())}
    return res


# ---- the run --------------------------------------------------------------------------------

def _artifact_bytes(art: Path) -> int:
    from ncc.compiler.artifact import read_manifest

    return (art / read_manifest(art)["entry"]).stat().st_size


def _weight_bytes(g: Graph) -> int:
    return int(sum(np.asarray(v).nbytes for v in g.constants.values()))


def keras_eager_us(model: Any, x0: np.ndarray, dt: bool, calls: int) -> float | None:
    """Median µs of a Keras model called eagerly on one step (1, 1, F) [and dt (1, 1)]:
    what a user's Python loop does per step. None for a model that is not Keras."""
    if not hasattr(model, "layers") or not hasattr(model, "predict"):
        return None
    x = x0.reshape(1, 1, -1)
    inputs = [x, np.ones((1, 1), np.float32)] if dt else x
    return step_latency_us(lambda: model(inputs), max(calls // 10, 20))


def batch_throughput(g: Graph, target: str, batch: int, calls: int) -> float:
    """Steps per second of onnxruntime (one thread) running `g` rebatched to `batch`
    sequences per call (target onnx-float or onnx-int8)."""
    import onnxruntime as ort

    from ncc.compiler.batch import rebatch
    from ncc.targets.registry import get_target

    gb = rebatch(g, batch)
    art = get_target(target).lower(gb)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sess = ort.InferenceSession(art.files[art.entry], options,
                                providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for name in gb.inputs:
        t = gb.tensors[name]
        feeds[art.io_names[name]] = (rng.integers(-128, 128, t.shape).astype(t.dtype)
                                     if t.dtype.startswith("int")
                                     else rng.standard_normal(t.shape).astype(t.dtype))
    us = step_latency_us(lambda: sess.run(None, feeds), max(calls // 10, 20))
    return batch / (us * 1e-6)


def test_split_sqnr(reference: Graph, golden: Graph, data: dict[str, np.ndarray]
                    ) -> float:
    """SQNR (dB) of the golden model's output against float over the test sequences,
    each from the initial state: the figure that means something for a spiking readout
    whose membrane integrates without bound over one endless sequence."""
    from ncc.compiler.interpret import run_batch
    from ncc.numerics import dequantize
    from ncc.runtime.validate import compare, quantized_inputs

    xq, dtq = quantized_inputs(golden, data["test"], data.get("test_dt"))
    y = [n for n in golden.outputs if golden.roles[n] == "output"][0]
    gold = run_batch(golden, xq, dtq)[y]
    ref = run_batch(reference, data["test"], data.get("test_dt"))[y]
    return compare(ref, dequantize(gold, golden.tensors[y].quant))["sqnr_db"]


def bench_case(case: Case, config: Config, data: dict[str, np.ndarray], work: Path,
               mac_rate: float, log: Log) -> dict[str, Any]:
    """Every measurement for one model (see the module doc)."""
    import jax

    from ncc.compiler.artifact import load_artifact_graph, load_reference_graph
    from ncc.compiler.interpret import run_batch
    from ncc.compiler.load import load_model
    from ncc.compiler.quantize import QuantOptions
    from ncc.numerics import dequantize
    from ncc.runtime.session import RUNTIMES, ReferenceSession, open_session
    from ncc.runtime.validate import compare, quantized_inputs
    from ncc.targets.pipeline import build_artifact
    from ncc.targets.registry import TARGETS

    res: dict[str, Any] = {"model": case.name, "spiking": case.spiking, "trained": case.trained,
                           "task": case.task, "targets": {}, "runtimes": {}, "traces": {},
                           "throughput": {}}
    from ncc.bench.models import TASKS

    log(f"{case.name}: model")
    t0 = time.perf_counter()
    model = case.make(TASKS[case.task]())
    res["train_s"] = time.perf_counter() - t0
    source = load_model(model) if isinstance(model, str) else model
    long, long_dt = data["long"][0], data.get("long_dt", [None])[0]
    calib = {"x": data["calib"], **({"dt": data["calib_dt"]} if "calib_dt" in data else {})}
    test = {"x": data["test"], "y": data["y"],
            **({"dt": data["test_dt"]} if "test_dt" in data else {})}
    eager = keras_eager_us(source, long[0], long_dt is not None, config.timing_calls)
    if eager is not None:
        res["runtimes"]["Keras eager float"] = {"step_us": eager}
    float_dir = None
    golden_cache: dict[str, dict[str, np.ndarray]] = {}
    for path, target, activations in variants():
        log(f"{case.name}: {path}")
        out = work / f"{case.name.split()[0]}.{path.replace(' ', '-')}"
        entry: dict[str, Any] = {}
        res["targets"][path] = entry
        try:
            t0 = time.perf_counter()
            build_artifact(source, target, out,
                           calibration=calib if TARGETS[target].quantized else None,
                           options=QuantOptions(activations=activations))
            entry["compile_s"] = time.perf_counter() - t0
        except Exception as e:  # a target that cannot take this model is a result
            entry["error"] = f"{type(e).__name__}: {e}"[:300]
            continue
        g = load_artifact_graph(out)
        quantized = bool(g.metadata.get("quantized"))
        reference = load_reference_graph(out) if quantized else g
        if target == "onnx-float":
            float_dir = out
            res["macs_per_step"] = count_macs(g)
            res["float_weight_bytes"] = _weight_bytes(g)
            ref_session = ReferenceSession(g)
            float_long = ref_session.run(long, long_dt)
            (y_name,) = [n for n in g.outputs if g.roles[n] == "output"][:1]
            res["traces"]["float"] = float_long[y_name].reshape(len(long), -1)[:, 0]
            step = ref_session._step
            feeds0 = {**{k: np.asarray(v) for k, v in g.initial_state.items()},
                      g.by_role("input")[0]: long[0].reshape(g.tensors[g.by_role("input")[0]]
                                                             .shape)}
            for name in g.by_role("dt"):
                feeds0[name] = np.ones(g.tensors[name].shape, np.float32)
            res["runtimes"]["jax.jit float"] = {"step_us": step_latency_us(
                lambda f=feeds0, s=step: jax.block_until_ready(s(f)), config.timing_calls)}
        if path in ("onnx-float", "onnx-int8"):
            try:
                res["throughput"][target] = {
                    "batch": config.batch, "steps_per_s": batch_throughput(
                        g, target, config.batch, config.timing_calls)}
            except Exception as e:
                res["throughput"][target] = {"error": f"{type(e).__name__}: {e}"[:300]}
        entry.update({"artifact_bytes": _artifact_bytes(out), "weight_bytes": _weight_bytes(g),
                      "ops": len(g.ops), **_target_details(out)})
        outputs = [n for n in g.outputs if g.roles[n] == "output"]
        xq, dtq = quantized_inputs(g, long[None], None if long_dt is None else long_dt[None]) \
            if quantized else (long[None], None if long_dt is None else long_dt[None])
        xq, dtq = xq[0], None if dtq is None else dtq[0]
        if quantized:
            from ncc.compiler.serialize import graph_hash

            h = graph_hash(g)
            if h not in golden_cache:
                golden_cache[h] = {k: v[0] for k, v in run_batch(
                    g, xq[None], None if dtq is None else dtq[None]).items()}
            gold = golden_cache[h]
            float_ref = ReferenceSession(reference).run(long, long_dt)
            entry["test_sqnr_db"] = test_split_sqnr(reference, g, data)
            if case.spiking and "spike_agreement" not in res:
                res["spike_agreement"] = spike_agreement(reference, g, long)
            if "golden" not in res["traces"]:
                y = outputs[0]
                res["traces"]["golden"] = dequantize(gold[y], g.tensors[y].quant).reshape(
                    len(long), -1)[:, 0]
        # the Cortex-M4 under QEMU has its own footprint figures; QEMU's speed is not a chip's
        runtimes = [rt for rt in RUNTIMES.get(target, {None: None}) if rt != "cortex-m4"] + (
            ["litert-default"] if path == "tflite-int8" else [])
        for rt in runtimes:
            label = path if rt in (None, "host") else f"{path} ({rt})"
            log(f"{case.name}: {label}")
            r: dict[str, Any] = {"target": path}
            res["runtimes"][label] = r
            try:
                session = (litert_default_session(out) if rt == "litert-default"
                           else open_session(out, rt))
                if rt != "litert-default":
                    from ncc.runtime.verify import verify_artifact

                    rep = verify_artifact(out, data=test, runtime=rt)
                    r["accuracy"] = rep["accuracy"]["artifact"]
                    r["accuracy_float"] = rep["accuracy"]["reference"]
                got = session.run(xq, dtq)
                if quantized:
                    r["golden"] = _golden_metrics(got, gold)
                    r["identical"] = min(m["identical"] for m in r["golden"].values())
                    r["bit_exact_required"] = (TARGETS[target].exact
                                               and rt != "litert-default")
                    yq = dequantize(got[outputs[0]].reshape(len(long), -1),
                                    g.tensors[outputs[0]].quant)
                    yf = float_ref[outputs[0]].reshape(len(long), -1)
                else:
                    yq = got[outputs[0]].reshape(len(long), -1)
                    yf = float_long[outputs[0]].reshape(len(long), -1)
                m = compare(yf[None], yq[None])
                r.update(sqnr_db=m["sqnr_db"], max_abs_error=m["max_abs_error"],
                         error_growth=m["error_growth"])
                res["traces"][label] = yq[:, 0]
                r["step_us"] = step_latency_us(_one_step(session, long[0], xq, dtq),
                                               config.timing_calls)
            except Exception as e:
                r["error"] = f"{type(e).__name__}: {e}"[:300]
        if target == "c":
            res["runtimes"][f"{path} (loop inside C)"] = c_loop_timing(out, xq, dtq, config)
            if quantized and activations == "int8":
                res["cortex_m4"] = cortex_m4_instructions(out, xq, dtq)
                res["c_mac_bound"] = c_mac_bound(g)
    res["int8_bound_us"] = res.get("macs_per_step", 0) / mac_rate * 1e6
    if float_dir is not None:
        res["peers"] = bench_peers(case, config, data, float_dir, work, float_long,
                                   outputs[0] if outputs else "y", log)
    return res


def _one_step(session: Any, x0: np.ndarray, xq: np.ndarray, dtq: np.ndarray | None
              ) -> Callable[[], Any]:
    """A call that runs one step in `session`: its step function with explicit state, or,
    for a session that keeps its state inside (nir), a one-step sequence."""
    from ncc.runtime.session import Session

    if type(session)._call is Session._call:
        x1, dt1 = xq[:1], None if dtq is None else dtq[:1]
        return lambda: session.run(x1, dt1)
    feeds = first_feeds(session, x0)
    return lambda: session._call(feeds)


def c_loop_timing(art: Path, xq: np.ndarray, dtq: np.ndarray | None, config: Config
                  ) -> dict[str, Any]:
    """The C artifact's step timed by a loop inside C (no Python call per step), built
    with the MAC bound's flags (`mac_bound.FLAGS`)."""
    from ncc.bench.mac_bound import compile_flags
    from ncc.runtime.cbuild import find_compiler, step_ns_in_c

    try:
        flags = compile_flags(find_compiler())
        ns = step_ns_in_c(art, xq, dtq, steps=max(config.timing_calls * 50, 10_000),
                          flags=flags)
        return {"target": "c", "step_us": ns / 1000, "flags": " ".join(flags)}
    except Exception as e:
        return {"target": "c", "error": f"{type(e).__name__}: {e}"[:300]}


def c_mac_bound(g: Graph) -> dict[str, Any]:
    """The plain int8 dot loop over the int8 graph's dense shapes (`bench.mac_bound`): its
    µs per step and MAC rate, measured in this run."""
    from ncc.bench.mac_bound import measure_bound

    try:
        return measure_bound(g)
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"[:300]}


def cortex_m4_instructions(art: Path, xq: np.ndarray, dtq: np.ndarray | None
                           ) -> dict[str, Any]:
    """Cortex-M4 instructions per step (QEMU -icount) over the first 64 steps, with the DSP
    kernels and with the portable ones; {"not_measured": why} without the ARM tools."""
    from ncc.runtime import cortex_m

    if missing := cortex_m.missing_tools():
        return {"not_measured": f"{', '.join(missing)} not on PATH"}
    try:
        return cortex_m.count_both_kernels(art, xq[:64], None if dtq is None else dtq[:64])
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"[:300]}


def _target_details(art: Path) -> dict[str, Any]:
    """What a target reports about itself that the bench shows (memory, MACs)."""
    from ncc.compiler.artifact import read_manifest

    details = read_manifest(art).get("details", {})
    return {k: details[k] for k in ("memory", "macs_per_step", "cortex_m") if k in details}


def bench_peers(case: Case, config: Config, data: dict[str, np.ndarray], float_dir: Path,
                work: Path, float_long: dict[str, np.ndarray], y_name: str,
                log: Log) -> dict[str, Any]:
    """The peer paths on the same data: accuracy, SQNR against float, latency."""
    from ncc.bench.peers import open_peer_session, ort_quantize_static, tflite_converter
    from ncc.runtime.session import ReferenceSession
    from ncc.runtime.validate import compare

    peers: dict[str, Any] = {}
    long, long_dt = data["long"][0], data.get("long_dt", [None])[0]
    ref = float_long[y_name].reshape(len(long), -1)
    log(f"{case.name}: peer onnxruntime quantize_static")
    p: dict[str, Any] = {}
    peers["onnxruntime quantize_static (QDQ)"] = p
    try:
        qfile = ort_quantize_static(float_dir, data["calib"][:200],
                                    work / f"peer_{case.name.split()[0]}_qdq.onnx",
                                    data["calib_dt"][:200] if "calib_dt" in data else None)
        s = open_peer_session(float_dir, qfile)
        got = s.run(long, long_dt)[y_name].reshape(len(long), -1)
        m = compare(ref[None], got[None])
        from ncc.compiler.artifact import load_artifact_graph

        fref = ReferenceSession(load_artifact_graph(float_dir))
        test_dt = data.get("test_dt", [None] * len(data["test"]))
        preds = [s.run(x, d)[y_name][-1].argmax() for x, d in zip(data["test"], test_dt,
                                                                  strict=True)]
        fpred = [fref.run(x, d)[y_name][-1].argmax() for x, d in zip(data["test"], test_dt,
                                                                     strict=True)]
        p.update(accuracy=float(np.mean(np.array(preds) == data["y"])),
                 accuracy_float=float(np.mean(np.array(fpred) == data["y"])),
                 sqnr_db=m["sqnr_db"], max_abs_error=m["max_abs_error"],
                 error_growth=m["error_growth"], artifact_bytes=qfile.stat().st_size,
                 step_us=step_latency_us(lambda: s._call(first_feeds(s, long[0])),
                                         config.timing_calls),
                 trace=got[:, 0])
    except Exception as e:
        p["error"] = f"{type(e).__name__}: {e}"[:300]
    if config.tflite_peer and case.keras_ref:
        log(f"{case.name}: peer tf.lite.TFLiteConverter (subprocess)")
        conv = tflite_converter(case.keras_ref, {"calib": data["calib"], "test": data["test"],
                                                 "long": data["long"]}, work / "tflite_peer")
        seq = conv["sequence"]
        peers["TFLiteConverter full-int8, whole model"] = {
            k: seq[k] for k in ("status", "error", "returncode", "seconds") if k in seq}
        st = conv["step"]
        q: dict[str, Any] = {k: st[k] for k in ("status", "error", "returncode", "seconds")
                             if k in st}
        if st["status"] == "ok":
            got = np.asarray(st["long"])[0]
            m = compare(ref[None], got[None])
            q.update(accuracy=float(np.mean(st["test"][:, -1].argmax(-1) == data["y"])),
                     sqnr_db=m["sqnr_db"], max_abs_error=m["max_abs_error"],
                     error_growth=m["error_growth"], artifact_bytes=int(st["tflite_bytes"]),
                     step_us=float(st["step_us"]), trace=got[:, 0])
        peers["TFLiteConverter full-int8, one step + explicit state"] = q
    return peers


def _case_child(index: int, config: Config, work: Path, rate: float, queue: Any) -> None:
    """Child process body: bench case `index` of the suite, messages and result to queue."""
    from ncc.bench.models import suite

    case = suite(config.zoo)[index]
    res = bench_case(case, config, task_data(case.task, config), work, rate,
                     lambda msg: queue.put(("log", msg)))
    queue.put(("result", res))


def isolated_case(index: int, case: Case, config: Config, work: Path, rate: float,
                  log: Log) -> dict[str, Any]:
    """bench_case in a fresh process: a runtime that crashes (a segfault in a native
    library) costs that model's row, recorded as a crash, not the whole run; and each
    model starts from a clean interpreter (no state or memory carried over)."""
    import multiprocessing as mp
    import queue as queue_mod

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_case_child, args=(index, config, work, rate, q), daemon=True)
    proc.start()
    while True:
        try:
            kind, payload = q.get(timeout=5)
        except queue_mod.Empty:
            if not proc.is_alive():
                proc.join()
                log(f"{case.name}: crashed (exit code {proc.exitcode})")
                return {"model": case.name, "spiking": case.spiking, "trained": case.trained,
                        "task": case.task, "targets": {}, "runtimes": {}, "traces": {},
                        "throughput": {}, "int8_bound_us": 0.0,
                        "error": f"the benchmark process crashed (exit code {proc.exitcode})"}
            continue
        if kind == "log":
            log(payload)
        else:
            proc.join()
            return payload


def run_bench(out: Path, config: Config, log: Log | None = None) -> dict[str, Any]:
    """Run the suite (artifacts in a temporary folder). Returns the results as plain data;
    `ncc.bench.report.write_results` writes them to `out`."""
    import platform

    import onnxruntime

    log = log or (lambda msg: None)
    from ncc.bench.models import suite

    cases = suite(config.zoo)
    data = {task: task_data(task, config) for task in {c.task for c in cases}}
    log("measuring the int8 MAC rate")
    rate = int8_mac_rate()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ncc-bench-") as tmp:  # artifacts are not kept
        models = [isolated_case(i, c, config, Path(tmp), rate, log)
                  for i, c in enumerate(cases)]
    return {
        "config": {"long_steps": config.long_steps,
                   "test_sequences": int(len(data["digits"]["y"])), "batch": config.batch,
                   "timing_calls": config.timing_calls, "zoo": config.zoo,
                   "tflite_peer": config.tflite_peer},
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "python": platform.python_version(),
                    "onnxruntime": onnxruntime.__version__},
        "int8_macs_per_s": rate, "seconds": time.perf_counter() - t0, "models": models,
    }
