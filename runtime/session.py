"""Sessions: run any artifact over a sequence from its manifest alone.

`open_session(dir)` picks the runtime from the manifest's target. Every
session has `run(xs, dts) -> {ir_name: (T, *shape)}`, threading state from
step to step (or chunk to chunk for Scan artifacts) and feeding `dt`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ncc.compiler.artifact import (
    check_files,
    check_manifest,
    load_artifact_graph,
    read_manifest,
)
from ncc.compiler.ir import Graph, QuantParams
from ncc.compiler.requires import require
from ncc.numerics import quantize


class Session:
    """Base: subclasses implement `_call(feeds) -> outputs` by artifact names."""

    def __init__(self, art_dir: str | Path, manifest: dict[str, Any]):
        self.dir = Path(art_dir)
        self.manifest = manifest
        self.tensors = {t["ir_name"]: t for t in manifest["tensors"]}
        self.state = [(s["state_in"], s["state_out"], np.asarray(s["initial"]))
                      for s in manifest["state"]]
        self.sequence_length = manifest["sequence_length"]

    def names(self, role: str) -> list[str]:
        return [t["name"] for t in self.manifest["tensors"] if t["role"] == role]

    def _call(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def run(self, xs: np.ndarray, dts: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """xs: (T, *x_shape) in the artifact's step shape; dts: (T,) or (T, *dt_shape)."""
        by_name = {t["name"]: t for t in self.manifest["tensors"]}
        (x_name,) = self.names("input")
        dt_names = self.names("dt")
        dtype = by_name[x_name]["dtype"]
        step = self.sequence_length or 1
        if len(xs) % step:
            raise ValueError(f"sequence of {len(xs)} steps is not a multiple of the "
                             f"artifact's sequence length {step}")
        state = {s_in: init.astype(by_name[s_in]["dtype"]) for s_in, _, init in self.state}
        chunks: dict[str, list[np.ndarray]] = {}
        for t0 in range(0, len(xs), step):
            shape = by_name[x_name]["shape"]
            feeds = {x_name: np.asarray(xs[t0:t0 + step], dtype).reshape(shape), **state}
            for name in dt_names:
                t = by_name[name]
                if dts is not None:
                    feeds[name] = np.asarray(dts[t0:t0 + step]).reshape(t["shape"]).astype(
                        t["dtype"])
                elif t["quantization"]:  # no dt given: 1.0 on the tensor's grid
                    p = QuantParams.from_dict(t["quantization"])
                    feeds[name] = quantize(np.ones(t["shape"], np.float32), p)
                else:
                    feeds[name] = np.ones(t["shape"], t["dtype"])
            out = self._call(feeds)
            for name, value in out.items():
                chunks.setdefault(name, []).append(value if self.sequence_length else value[None])
            state = {s_in: out[s_out] for s_in, s_out, _ in self.state}
        ir_name = {t["name"]: t["ir_name"] for t in self.manifest["tensors"]}
        return {ir_name[k]: np.concatenate(v) for k, v in chunks.items()
                if by_name[k]["role"] == "output" or not self.sequence_length}


class OnnxSession(Session):
    def __init__(self, art_dir: str | Path, manifest: dict[str, Any]):
        super().__init__(art_dir, manifest)
        import onnxruntime as ort

        # batch 1 steps of small graphs: one thread, no inter-op pool, every graph
        # optimisation (the integer graphs stay exact: no rewrite changes integer ops)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.dir / manifest["entry"]), options,
                                            providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]

    def _call(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, self.session.run(self.outputs, feeds), strict=True))


class _TfliteBase(Session):
    """Shared by the TFLite sessions: the model bytes and its input/output names in order."""

    def __init__(self, art_dir: str | Path, manifest: dict[str, Any]):
        super().__init__(art_dir, manifest)
        fb = require("ai_edge_litert.schema_py_generated", "reading a .tflite artifact")
        self.model = (self.dir / manifest["entry"]).read_bytes()
        graph = fb.Model.GetRootAs(self.model, 0).Subgraphs(0)
        name = lambda i: graph.Tensors(i).Name().decode()  # noqa: E731
        self.inputs = [name(graph.Inputs(i)) for i in range(graph.InputsLength())]
        self.outputs = [name(graph.Outputs(i)) for i in range(graph.OutputsLength())]
        self.activation_bytes = sum(
            int(np.prod(graph.Tensors(i).ShapeAsNumpy(), dtype=np.int64)) * 4
            for i in range(graph.TensorsLength()) if graph.Tensors(i).Buffer() == 0)
        self.graph_items = graph.TensorsLength() + graph.OperatorsLength()


class TfliteSession(_TfliteBase):
    """LiteRT with its reference kernels (OpResolverType.BUILTIN_REF).

    The default resolver is not bit-exact: the XNNPACK delegate requantizes MUL and
    CONV_2D its own way and the optimized CONV_2D (ruy) rounds differently
    (tests/targets/test_tflite.py measures both)."""

    reference_kernels = True

    def __init__(self, art_dir: str | Path, manifest: dict[str, Any]):
        super().__init__(art_dir, manifest)
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        kernels = ({"experimental_op_resolver_type": OpResolverType.BUILTIN_REF}
                   if self.reference_kernels else {})
        self.interpreter = Interpreter(model_content=self.model, num_threads=1, **kernels)
        self.interpreter.allocate_tensors()
        self.in_index = {d["name"]: d["index"] for d in self.interpreter.get_input_details()}
        self.out_index = {d["name"]: d["index"] for d in self.interpreter.get_output_details()}

    def _call(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name, value in feeds.items():
            self.interpreter.set_tensor(self.in_index[name], value)
        self.interpreter.invoke()
        return {name: self.interpreter.get_tensor(i).copy() for name, i in self.out_index.items()}


class LitertDefaultSession(TfliteSession):
    """LiteRT with its default kernels (XNNPACK, optimized): what most users run; not
    bit-exact (the bench measures by how much), so no `RUNTIMES` entry."""

    reference_kernels = False


class TfliteMicroSession(_TfliteBase):
    """TensorFlow Lite for Microcontrollers (its Python interpreter: reference kernels)."""

    ARENA_OVERHEAD = 64 * 1024  # interpreter bookkeeping beyond the activations
    # per tensor and operator (eval tensors, nodes, per-channel op data): a windowed graph
    # (a bidirectional model over T steps) has thousands, which 64 KiB does not hold
    ARENA_PER_ITEM = 256

    def __init__(self, art_dir: str | Path, manifest: dict[str, Any]):
        super().__init__(art_dir, manifest)
        runtime = require("tflite_micro.python.tflite_micro.runtime",
                          "the TFLite Micro runtime")
        arena = self.ARENA_OVERHEAD + 2 * self.activation_bytes \
            + self.ARENA_PER_ITEM * self.graph_items
        self.interpreter = runtime.Interpreter.from_bytes(self.model, arena_size=arena)

    def _call(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for i, name in enumerate(self.inputs):
            self.interpreter.set_input(feeds[name], i)
        self.interpreter.invoke()
        return {name: self.interpreter.get_output(i).copy()
                for i, name in enumerate(self.outputs)}


class CSession(Session):
    """The C artifact (target c) compiled by the system C compiler into a temporary shared
    library, driven through ctypes; the host threads the state as for every session."""

    def __init__(self, art_dir: str | Path, manifest: dict[str, Any]):
        super().__init__(art_dir, manifest)
        from ncc.runtime.cbuild import check_generated, load_model_library

        check_generated(self.dir)
        self.model = load_model_library(self.dir, bool(self.names("dt")))
        by_name = {t["name"]: t for t in manifest["tensors"]}
        self.outputs = [(n, by_name[n]["shape"], by_name[n]["dtype"])
                        for n in self.names("output")]
        self.state_dtypes = [by_name[s_in]["dtype"] for s_in, _, _ in self.state]

    def _call(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for i, (s_in, _, _) in enumerate(self.state):
            self.model.set_state(i, np.asarray(feeds[s_in]))
        outs = [np.zeros(shape, dtype) for _, shape, dtype in self.outputs]
        (x_name,) = self.names("input")
        self.model.step(feeds[x_name], [feeds[d] for d in self.names("dt")], outs)
        result = {name: out for (name, _, _), out in zip(self.outputs, outs, strict=True)}
        for i, (s_in, s_out, _) in enumerate(self.state):
            result[s_out] = self.model.get_state(i, self.state_dtypes[i]).reshape(
                feeds[s_in].shape)
        return result


class CortexMSession(Session):
    """The C artifact (target c) cross-compiled for a Cortex-M4 and run under QEMU
    (mps2-an386, `ncc.runtime.cortex_m`); `run_many` runs every sequence of a
    verification in one firmware. `footprint`: its flash and RAM bytes."""

    def __init__(self, art_dir: str | Path, manifest: dict[str, Any]):
        super().__init__(art_dir, manifest)
        from ncc.runtime import cortex_m

        self._device = cortex_m
        cortex_m.require_tools()
        self.footprint = cortex_m.footprint(self.dir)

    def run(self, xs: np.ndarray, dts: np.ndarray | None = None) -> dict[str, np.ndarray]:
        return self._device.run(self.dir, xs, dts)

    def run_many(self, xs: np.ndarray, dts: np.ndarray | None = None
                 ) -> list[dict[str, np.ndarray]]:
        """xs (N, T, *x_shape) -> per sequence, every output and state per step."""
        return self._device.run_sequences(self.dir, xs, dts)

    def count_instructions(self, xs: np.ndarray, dts: np.ndarray | None = None
                           ) -> dict[str, Any]:
        """Cortex-M4 instructions per step over xs (N, T, *x_shape), both kernel builds:
        {"dsp": ..., "portable": ...} as `cortex_m.count_both_kernels` gives them."""
        n, steps = xs.shape[:2]
        flat = xs.reshape(n * steps, *xs.shape[2:])
        flat_dt = None if dts is None else dts.reshape(n * steps, *dts.shape[2:])
        return self._device.count_both_kernels(self.dir, flat, flat_dt, sequences=n)


class FixedPointSession(Session):
    """The fixed-point tables (target fixed-point) run by ncc's golden table interpreter;
    `model.events` counts the synaptic events of the steps run so far."""

    def __init__(self, art_dir: str | Path, manifest: dict[str, Any]):
        super().__init__(art_dir, manifest)
        from ncc.compiler.tables import read_tables

        self.model = read_tables(self.dir)

    def _call(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.model.step(feeds)


class NirSession(Session):
    """The NIR graph (target nir) run by ncc's NIR interpreter (numpy, float32), with the
    Euler discretization its metadata records; state lives in the interpreter, from zero."""

    def __init__(self, art_dir: str | Path, manifest: dict[str, Any]):
        super().__init__(art_dir, manifest)
        import nir

        from ncc.targets.nir import NirInterpreter

        self.model = NirInterpreter(nir.read(self.dir / manifest["entry"]))

    def run(self, xs: np.ndarray, dts: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """xs: (T, 1, features) -> {output ir_name: (T, 1, outputs)}; dts must be None."""
        if dts is not None:
            raise ValueError("a NIR graph has a fixed step (metadata dt); it takes no dt input")
        (x_name,) = self.names("input")
        x = self.tensors[next(k for k, t in self.tensors.items() if t["name"] == x_name)]
        ys = self.model.run(np.asarray(xs, np.float32).reshape(len(xs), *x["shape"]))
        return {t["ir_name"]: ys.reshape(len(xs), *t["shape"])
                for t in self.manifest["tensors"] if t["role"] == "output"}


class ReferenceSession:
    """The float reference: the traced IR run in JAX (jit-compiled step)."""

    def __init__(self, g: Graph):
        import jax
        import jax.numpy as jnp

        from ncc.compiler.interpret import run_step

        self.graph = g
        self._step = jax.jit(lambda feeds: run_step(g, feeds, xp=jnp))

    def run(self, xs: np.ndarray, dts: np.ndarray | None = None) -> dict[str, np.ndarray]:
        g = self.graph
        (x_name,) = g.by_role("input")
        state = dict(g.initial_state)
        trace: dict[str, list[np.ndarray]] = {n: [] for n in g.outputs}
        for t in range(len(xs)):
            feeds = {x_name: np.reshape(xs[t], g.tensors[x_name].shape), **state}
            for name in g.by_role("dt"):
                feeds[name] = (np.ones(g.tensors[name].shape, np.float32) if dts is None
                               else np.reshape(dts[t], g.tensors[name].shape))
            out = {k: np.asarray(v) for k, v in self._step(feeds).items()}
            for name in g.outputs:
                trace[name].append(out[name])
            state = {s_in: out[s_out] for s_in, s_out in g.state_pairs}
        return {k: np.stack(v) for k, v in trace.items()}


SESSIONS = {"onnx-float": OnnxSession, "onnx-int8": OnnxSession, "onnx-qdq": OnnxSession,
            "tflite-int8": TfliteSession, "c": CSession,
            "fixed-point": FixedPointSession, "nir": NirSession}
# target -> runtime name -> session, for targets that run in more than one runtime
RUNTIMES = {"tflite-int8": {"litert": TfliteSession, "tflm": TfliteMicroSession},
            "c": {"host": CSession, "cortex-m4": CortexMSession}}


def open_session(art_dir: str | Path, runtime: str | None = None) -> Session:
    """A session over the artifact in `art_dir`, after checking its files' checksums.

    runtime: None for the target's default runtime, or one of RUNTIMES[target]
    (tflite-int8: "litert" or "tflm"; c: "host" or "cortex-m4")."""
    manifest = read_manifest(art_dir)
    check_files(art_dir, manifest)
    check_manifest(art_dir, manifest, load_artifact_graph(art_dir))
    target = manifest["target"]
    cls = SESSIONS.get(target)
    if runtime is not None:
        choices = RUNTIMES.get(target, {})
        if runtime not in choices:
            known = sorted(choices) or ["its default runtime only"]
            raise ValueError(f"{art_dir}: target {target!r} runs in {known}, not {runtime!r}")
        cls = choices[runtime]
    if cls is None:
        raise ValueError(f"{art_dir}: no runtime session for target {target!r}")
    return cls(art_dir, manifest)


def open_reference(art_dir: str | Path) -> ReferenceSession:
    return ReferenceSession(load_artifact_graph(art_dir))
