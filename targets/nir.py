"""nir target: a spiking model's float structure as a NIR graph (`model.nir`, `nir.write` HDF5).

NIR (the Neuromorphic Intermediate Representation) is what neuromorphic toolchains read
(Lava, rockpool/Xylo, Norse, snnTorch, spyx). Unlike the other targets this one lowers the
*source model*, not the IR: NIR nodes are continuous-time neurons, so the export reads the
neurons' parameters (`lower(g, model=...)`: the pipeline hands every target the loaded
model). Supported: `spyx.nn.Sequential`-style NNX models made of
`nnx.Linear` and spyx neurons (LIF, IF, LI, CuBaLIF, RLIF, RIF, RCuBaLIF) or ncc's neurons in
float mode (QuantLIF, QuantIF, QuantLI, QuantCuBaLIF).

Nodes: `nnx.Linear` -> Affine (Linear without bias), weight (out, in); LIF/IF/LI/CubaLIF
one node each; a recurrent neuron -> its LIF/IF node plus a Linear node holding the
recurrent weight, in a cycle (neuron -> rec -> neuron).

Time: every neuron is written in continuous time and its parameters chosen so that one
forward-Euler step of `dt` (graph metadata "dt", 1.0 by default, unit: one model step) is
the model's discrete update exactly:

    LIF/LI   tau dv/dt = (v_leak - v) + r I   ->  v' = (1 - dt/tau) v + (dt r/tau) I
             tau = dt / (1 - beta), r = tau / dt, v_leak = 0   =>  v' = beta v + I
    IF       dv/dt = r I                      ->  r = 1 / dt   =>  v' = v + I
    CubaLIF  tau_syn dI/dt = -I + w_in S;  tau_mem dv/dt = (v_leak - v) + r I
             tau_syn = dt/(1 - alpha), w_in = tau_syn/dt, tau_mem = dt/(1 - beta),
             r = tau_mem/dt  =>  I' = alpha I + S, v' = beta v + I' (the updated current)

(spyx's own `to_nir` writes r = beta, which is not Euler-consistent.) A decay of exactly 1
(no leak) has no finite time constant: it is written as tau = 2^40 dt, r = tau/dt, whose
Euler factor rounds to 1 in float32; the manifest counts such neurons.

Spike timing and reset follow spyx, which NIR does not specify: a neuron's output at step t
is Heaviside(v - v_threshold) of its membrane at the start of the step; "zero" reset sets v
to v_reset before integrating; "subtract" reset subtracts v_threshold (after integrating
for LIF/IF, before for CubaLIF, as spyx does). NIR itself only knows reset to v_reset, so
each spiking node records `reset` and `reset_timing` in its metadata, and the manifest
lists what NIR cannot express.

`NirInterpreter` runs a NIR graph with exactly these semantics in numpy (float32; dot
products accumulate in input order with fused multiply-adds, as XLA's CPU dot does): the nir
session validates it against the float reference. `spyx.nir.from_nir` runs the
same graphs where it supports the nodes (not an LI node without a following Threshold).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from ncc.compiler.artifact import Artifact
from ncc.compiler.ir import Graph

TARGET = "nir"
ENTRY = "model.nir"
NO_LEAK_TAU = 2.0 ** 40  # [dt] stands for an infinite time constant (decay 1)
DT = 1.0  # the Euler step the parameters are chosen for (unit: one model step)
SPIKING = ("LIF", "IF", "CubaLIF")
SUPPORTED = ("nnx.Linear", "spyx.nn.LIF", "spyx.nn.IF", "spyx.nn.LI", "spyx.nn.CuBaLIF",
             "spyx.nn.RLIF", "spyx.nn.RIF", "spyx.nn.RCuBaLIF", "QuantLIF", "QuantIF",
             "QuantLI", "QuantCuBaLIF")
DISCRETIZATION = ("forward Euler at dt; a spiking node outputs Heaviside(v - v_threshold) of "
                  "its membrane at the start of the step; node metadata 'reset' (zero: v := "
                  "v_reset; subtract: v -= v_threshold) and 'reset_timing' (before or after "
                  "integration); CubaLIF integrates v with the updated current")
NOT_EXPRESSIBLE = [
    "subtract reset (NIR neurons reset to v_reset): recorded as node metadata reset=subtract",
    "when a spike is emitted and when the reset applies within the step: spyx semantics, "
    "recorded in graph metadata 'discretization' and node metadata 'reset_timing'",
    "spyx's surrogate gradient (training-only; the forward pass is a Heaviside step)",
]


class NirExportError(ValueError):
    """The model cannot be written as a NIR graph (not spiking, unsupported layer)."""


def _nir() -> Any:
    import nir

    return nir


# --- export ---------------------------------------------------------------------------------


def _array(value: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A parameter as float32 values, broadcast to `shape`, held in float64 (exact)."""
    return np.broadcast_to(np.asarray(value, np.float32), shape).astype(np.float64)


def _decay(layer: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A decay (beta, alpha) as the model uses it: float32 clipped to [0, 1]."""
    return np.clip(_array(np.asarray(getattr(layer, name)[...]), shape), 0.0, 1.0)


def _tau(decay: np.ndarray, dt: float) -> np.ndarray:
    """Time constant [unit of dt] whose Euler step decays by `decay`: dt / (1 - decay).

    A decay of 1 (no leak, common after training clips beta) gets NO_LEAK_TAU * dt, whose
    Euler factor 1 - 2^-40 is 1 in float32 (and in spyx's float32 beta)."""
    leak = 1.0 - decay
    return dt / np.where(leak > 0, leak, 1.0 / NO_LEAK_TAU)


def _kind(layer: Any) -> str | None:
    """'linear', 'lif', 'if', 'li', 'cuba', 'rlif', 'rif', 'rcuba', or None (no NIR export)."""
    import spyx.nn
    from flax import nnx

    from ncc.models.nnx import spiking

    kinds: list[tuple[type, str]] = [
        (nnx.Linear, "linear"), (spyx.nn.RLIF, "rlif"), (spyx.nn.RIF, "rif"),
        (spyx.nn.RCuBaLIF, "rcuba"), (spyx.nn.LIF, "lif"), (spiking.QuantLIF, "lif"),
        (spyx.nn.IF, "if"), (spiking.QuantIF, "if"), (spyx.nn.LI, "li"),
        (spiking.QuantLI, "li"), (spyx.nn.CuBaLIF, "cuba"), (spiking.QuantCuBaLIF, "cuba")]
    for cls, kind in kinds:
        if isinstance(layer, cls):
            if getattr(layer, "quantized", False):
                raise NirExportError(
                    f"{type(layer).__name__} is in quantized mode: NIR carries float "
                    "parameters only; switch it to float mode "
                    "(ncc.models.nnx.spiking.set_quantized(model, False)) or use the "
                    "fixed-point / c target for the integer model")
            return kind
    return None


def _layers(model: Any) -> list[tuple[Any, str]]:
    """(layer, kind) of a spyx Sequential-style model (or a lone neuron), else a clear error."""
    layers = list(getattr(model, "layers", None) or [model])
    kinds = [_kind(layer) for layer in layers]
    if all(k in (None, "linear") for k in kinds):
        what = type(model).__name__
        if layers != [model]:
            what += f" of {', '.join(type(layer).__name__ for layer in layers)}"
        raise NirExportError(
            f"{what} is not a spiking model: NIR export supports "
            "spyx.nn.Sequential-style NNX models of nnx.Linear and spiking neurons ("
            f"{', '.join(SUPPORTED[1:])}); export liquid (CfC, LTC) and Keras models "
            "to onnx-float, tflite-int8, c or fixed-point")
    for i, (layer, kind) in enumerate(zip(layers, kinds, strict=True)):
        if kind is None:
            raise NirExportError(f"layer {i} ({type(layer).__name__}) has no NIR export; NIR "
                                 f"export supports models made of {', '.join(SUPPORTED)}")
    return list(zip(layers, kinds, strict=True))


def _threshold(layer: Any, shape: tuple[int, ...]) -> np.ndarray:
    return _array(layer.threshold, shape)


def _reset(layer: Any, before: bool) -> dict[str, str]:
    """Node metadata for the reset NIR cannot express (subtract; timing within the step)."""
    mode = getattr(layer, "reset", "subtract")
    timing = "before_integration" if mode == "zero" or before else "after_integration"
    return {"reset": mode, "reset_timing": timing}


@dataclass
class _Export:
    """Nodes and edges being built, the node that feeds the next layer, its feature count."""

    nodes: dict[str, Any]
    edges: list[tuple[str, str]]
    prev: str
    features: int
    stateful: list[str]

    def add(self, name: str, node: Any, features: int, state: bool = False) -> None:
        self.nodes[name] = node
        self.edges.append((self.prev, name))
        self.prev, self.features = name, features
        if state:
            self.stateful.append(name)


def _neuron_shape(layer: Any, features: int) -> tuple[int, ...]:
    shape = tuple(int(d) for d in (getattr(layer, "hidden_shape", None)
                                   or layer.layer_shape))
    if len(shape) != 1 or shape[0] != features:
        raise NirExportError(f"{type(layer).__name__}: neuron shape {list(shape)} does not fit "
                             f"the {features} features before it (NIR export takes 1-D layers)")
    return shape


def _add_layer(ex: _Export, name: str, layer: Any, kind: str, dt: float) -> None:
    nir = _nir()
    if kind == "linear":
        kernel = np.asarray(layer.kernel[...], np.float32)
        if kernel.ndim != 2 or kernel.shape[0] != ex.features:
            raise NirExportError(f"{name}: nnx.Linear kernel {list(kernel.shape)} does not take "
                                 f"{ex.features} features")
        weight = np.ascontiguousarray(kernel.T)
        node = (nir.Affine(weight=weight, bias=np.asarray(layer.bias[...], np.float32))
                if layer.bias is not None else nir.Linear(weight=weight))
        ex.add(name, node, kernel.shape[1])
        return
    shape = _neuron_shape(layer, ex.features)
    zeros = np.zeros(shape)
    if kind in ("lif", "rlif"):
        tau = _tau(_decay(layer, "beta", shape), dt)
        node = nir.LIF(tau=tau, r=tau / dt, v_leak=zeros, v_threshold=_threshold(layer, shape),
                       v_reset=zeros, metadata=_reset(layer, before=False))
    elif kind in ("if", "rif"):
        node = nir.IF(r=np.full(shape, 1.0 / dt), v_threshold=_threshold(layer, shape),
                      v_reset=zeros, metadata=_reset(layer, before=False))
    elif kind == "li":
        tau = _tau(_decay(layer, "beta", shape), dt)
        node = nir.LI(tau=tau, r=tau / dt, v_leak=zeros)
    else:  # cuba, rcuba
        tau_syn = _tau(_decay(layer, "alpha", shape), dt)
        tau_mem = _tau(_decay(layer, "beta", shape), dt)
        node = nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, r=tau_mem / dt, v_leak=zeros,
                           v_threshold=_threshold(layer, shape), v_reset=zeros,
                           w_in=tau_syn / dt, metadata=_reset(layer, before=True))
    ex.add(name, node, shape[0], state=True)
    if kind in ("rlif", "rif", "rcuba"):  # spikes @ recurrent_w feed back into the neuron
        rec = np.asarray(layer.recurrent_w[...], np.float32)
        ex.nodes[f"{name}_rec"] = nir.Linear(weight=np.ascontiguousarray(rec.T))
        ex.edges += [(name, f"{name}_rec"), (f"{name}_rec", name)]


def to_nir(model: Any, features: int, dt: float = DT) -> tuple[Any, list[str]]:
    """(NIR graph of `model` taking `features` inputs per step, its stateful nodes in order).

    Nodes are named layer_<i> after the model's layers (layer_<i>_rec: a recurrent weight).
    """
    nir = _nir()
    ex = _Export({"input": nir.Input(input_type=np.array([features]))}, [], "input",
                 features, [])
    for i, (layer, kind) in enumerate(_layers(model)):
        _add_layer(ex, f"layer_{i}", layer, kind, dt)
    ex.nodes["output"] = nir.Output(output_type=np.array([ex.features]))
    ex.edges.append((ex.prev, "output"))
    metadata = {"dt": float(dt), "discretization": DISCRETIZATION, "producer": "ncc"}
    return nir.NIRGraph(nodes=ex.nodes, edges=ex.edges, metadata=metadata), ex.stateful


def nir_bytes(graph: Any) -> bytes:
    """`nir.write` into memory (HDF5; the same graph gives the same bytes)."""
    buffer = io.BytesIO()
    _nir().write(buffer, graph)
    return buffer.getvalue()


# --- what the manifest records --------------------------------------------------------------


def _weights(node: Any) -> list[np.ndarray]:
    return [a for a in (getattr(node, "weight", None), getattr(node, "bias", None))
            if a is not None]


def spyx_support(graph: Any) -> str | None:
    """None if `spyx.nir.from_nir` can rebuild `graph`, else why not."""
    nir = _nir()
    targets = {src: dst for src, dst in graph.edges}
    for name, node in graph.nodes.items():
        if isinstance(node, nir.LI) and not isinstance(graph.nodes.get(targets.get(name)),
                                                      nir.Threshold):
            return f"{name}: spyx.nir.from_nir rebuilds an LI node only before a Threshold"
        if isinstance(node, nir.IF) and any((dst, name) in graph.edges
                                            for src, dst in graph.edges if src == name):
            return f"{name}: spyx.nir.from_nir finds recurrent cycles around LIF/CubaLIF only"
        if node.metadata.get("reset", "subtract") != "subtract":
            return f"{name}: spyx neurons reset by subtraction, this one resets to zero"
    return None


def _details(graph: Any, stateful: list[str]) -> dict[str, Any]:
    nir = _nir()
    weights = sum(a.size for n in graph.nodes.values() for a in _weights(n))
    macs = sum(n.weight.size for n in graph.nodes.values()
               if isinstance(n, (nir.Affine, nir.Linear)))
    dt = float(graph.metadata["dt"])
    neurons = {}
    for name in stateful:
        node = graph.nodes[name]
        taus = [getattr(node, k) for k in ("tau", "tau_mem", "tau_syn") if hasattr(node, k)]
        neurons[name] = {"type": type(node).__name__,
                         "neurons": int(np.prod(node.output_type["output"])),
                         "no_leak_neurons": int(sum(np.sum(t >= NO_LEAK_TAU * dt)
                                                    for t in taus)),
                         **{k: str(v) for k, v in node.metadata.items()}}
    state = sum(v["neurons"] * (2 if v["type"] == "CubaLIF" else 1) for v in neurons.values())
    scratch = max(int(np.prod(n.output_type["output"])) for n in graph.nodes.values()
                  if not isinstance(n, nir.Output))
    spyx = spyx_support(graph)
    return {
        "format": "NIR HDF5 (nir.write)",
        "nir_version": nir.version,
        "dt": dt,
        "discretization": DISCRETIZATION,
        "parameter_mapping": "Euler-exact: tau = dt/(1-beta), r = tau/dt, v_leak = 0; IF r = "
                             "1/dt; CubaLIF tau_syn = dt/(1-alpha), w_in = tau_syn/dt",
        "nodes": {k: type(v).__name__ for k, v in graph.nodes.items()},
        "edges": [list(e) for e in graph.edges],
        "populations": neurons,
        "not_expressible_in_nir": NOT_EXPRESSIBLE,
        "spyx_from_nir": "supported" if spyx is None else f"unsupported: {spyx}",
        "memory": {"weights_bytes": 4 * int(weights), "state_bytes": 4 * state,
                   "scratch_bytes": 4 * scratch},
        "macs_per_step": int(macs),
        "synapses": int(sum(np.count_nonzero(n.weight) for n in graph.nodes.values()
                            if isinstance(n, (nir.Affine, nir.Linear)))),
    }


def lower(g: Graph, *, reference: Graph | None = None, model: Any = None,
          sequence_length: int | None = None) -> Artifact:
    """`model.nir` for the spiking NNX `model` whose float IR is `g` (one step, batch 1)."""
    if sequence_length is not None:
        raise NirExportError("the nir target has no --sequence-length: a NIR graph is one "
                             "continuous-time network, run step by step")
    _layers(model)  # a clear error first if the model is not a spiking one
    (x_name,) = g.by_role("input")
    if g.by_role("dt"):
        raise NirExportError("a model with a dt input is not a spyx-style spiking model; NIR "
                             "export takes a fixed step")
    shape = g.tensors[x_name].shape
    if len(shape) != 2:
        raise NirExportError(f"NIR export takes flat (features,) inputs, not {list(shape[1:])}")
    graph, stateful = to_nir(model, int(shape[1]))
    if len(stateful) != len(g.state_pairs):
        raise NirExportError(f"{len(stateful)} neuron layers but {len(g.state_pairs)} state "
                             "tensors in the traced model")
    io_names = {x_name: "input"}
    io_names.update({y: "output" for y in g.by_role("output")})
    for node, (s_in, s_out) in zip(stateful, g.state_pairs, strict=True):
        io_names.update({s_in: f"{node}.state", s_out: f"{node}.state_next"})
    return Artifact(TARGET, ENTRY, {ENTRY: nir_bytes(graph)}, io_names,
                    details=_details(graph, stateful))


# --- running a NIR graph --------------------------------------------------------------------


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _f32(value: Any) -> np.ndarray:
    return np.asarray(value, np.float64).astype(np.float32)


def _dense(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """x @ weight.T (+ bias) in float32, accumulated over the inputs in order with a fused
    multiply-add per term (one rounding each), the order XLA's CPU dot uses: the same bits
    as the JAX reference, so long integrating sequences do not drift apart by rounding."""
    wt = np.asarray(weight, np.float64).T
    x64 = np.asarray(x, np.float64)
    acc = np.zeros((x64.shape[0], wt.shape[1]), np.float64)
    for k in range(wt.shape[0]):
        acc = (acc + x64[:, k:k + 1] * wt[k]).astype(np.float32).astype(np.float64)
    y = acc.astype(np.float32)
    return y if bias is None else y + _f32(bias)


class NirInterpreter:
    """Runs a NIR graph of Input, Affine, Linear, LIF, IF, LI, CubaLIF, Output nodes (cycles
    through a spiking node allowed) with the module's Euler semantics, in float32.

    Each step: spiking nodes emit Heaviside(v - v_threshold) of their membrane at the start
    of the step; then every other node, in an order where its inputs are ready, applies
    itself to its incoming edges (summed; neurons add them one by one in edge order, as
    spyx adds x then the recurrent feedback) and neurons integrate one Euler step of dt."""

    def __init__(self, graph: Any, dt: float | None = None):
        nir = _nir()
        self.graph = graph
        self.dt = float(dt if dt is not None else graph.metadata.get("dt", DT))
        self.inputs: dict[str, list[str]] = {name: [] for name in graph.nodes}
        for src, dst in graph.edges:
            self.inputs[dst].append(src)
        self.spiking = [k for k, n in graph.nodes.items() if type(n).__name__ in SPIKING]
        (self.input,) = [k for k, n in graph.nodes.items() if isinstance(n, nir.Input)]
        (self.output,) = [k for k, n in graph.nodes.items() if isinstance(n, nir.Output)]
        self.order = self._order()
        self.state: dict[str, np.ndarray] = {}

    def _order(self) -> list[str]:
        """Nodes (Input excluded) so that every input is ready: edges leaving a spiking node
        carry this step's spikes, known from the start, so they impose no order."""
        pending = {k: {s for s in v if s not in self.spiking} for k, v in self.inputs.items()}
        order, ready = [], [k for k, v in pending.items() if not v]
        while ready:
            name = ready.pop(0)
            order.append(name)
            for k, v in pending.items():
                if name in v:
                    v.discard(name)
                    if not v:
                        ready.append(k)
        if len(order) != len(pending):
            stuck = sorted(set(pending) - set(order))
            raise ValueError(f"NIR graph has a cycle through no spiking node: {stuck}")
        return [k for k in order if k != self.input]

    def reset(self, batch: int = 1) -> None:
        """Zero every membrane (and synaptic current) for `batch` sequences."""
        self.state = {}
        for name, node in self.graph.nodes.items():
            kind = type(node).__name__
            if kind in ("LIF", "IF", "LI", "CubaLIF"):
                n = int(np.prod(node.output_type["output"]))
                self.state[name] = np.zeros((batch, n), np.float32)
                if kind == "CubaLIF":
                    self.state[f"{name}.i"] = np.zeros((batch, n), np.float32)

    def _euler(self, tau: Any, r: Any, v_leak: Any) -> tuple[np.ndarray, ...]:
        """(a, b, c): one Euler step of tau dv/dt = v_leak - v + r I is v' = a v + b I + c."""
        k = self.dt / np.asarray(tau, np.float64)
        return _f32(1.0 - k), _f32(k * np.asarray(r, np.float64)), _f32(k * v_leak)

    def _integrate(self, name: str, node: Any, xs: list[np.ndarray]) -> np.ndarray:
        """The membrane after one Euler step with inputs `xs` (before any reset)."""
        kind, v = type(node).__name__, self.state[name]
        if kind == "IF":
            a, b, c = _f32(1.0), _f32(self.dt * np.asarray(node.r, np.float64)), _f32(0.0)
        elif kind == "CubaLIF":
            a, b, c = self._euler(node.tau_mem, node.r, node.v_leak)
            sa, sb, _ = self._euler(node.tau_syn, node.w_in, 0.0)
            current = sa * self.state[f"{name}.i"]
            for x in xs:
                current = current + sb * x
            self.state[f"{name}.i"] = current
            xs = [current]
        else:
            a, b, c = self._euler(node.tau, node.r, node.v_leak)
        v = a * v
        for x in xs:
            v = v + b * x
        return v + c

    def _spiking(self, name: str, node: Any, xs: list[np.ndarray], spikes: np.ndarray) -> None:
        mode = _text(node.metadata.get("reset", "zero"))
        before = _text(node.metadata.get("reset_timing", "before_integration")) \
            == "before_integration"

        def reset(v: np.ndarray) -> np.ndarray:
            if mode == "subtract":
                return v - spikes * _f32(node.v_threshold)
            return np.where(spikes > 0, _f32(node.v_reset), v)

        if before:
            self.state[name] = reset(self.state[name])
        v = self._integrate(name, node, xs)
        self.state[name] = v if before else reset(v)

    def step(self, x: np.ndarray) -> np.ndarray:
        """One step: x (batch, features) -> the Output node's value (batch, ...)."""
        values = {self.input: np.asarray(x, np.float32)}
        for name in self.spiking:
            thr = _f32(self.graph.nodes[name].v_threshold)
            values[name] = (self.state[name] > thr).astype(np.float32)
        for name in self.order:
            node = self.graph.nodes[name]
            kind = type(node).__name__
            ins = [values[s] for s in self.inputs[name]]
            if kind in SPIKING:
                self._spiking(name, node, ins, values[name])
                continue
            if kind == "LI":
                values[name] = self.state[name] = self._integrate(name, node, ins)
                continue
            x_in = ins[0]
            for more in ins[1:]:
                x_in = x_in + more
            if kind == "Affine":
                values[name] = _dense(x_in, node.weight, node.bias)
            elif kind == "Linear":
                values[name] = _dense(x_in, node.weight)
            elif kind == "Output":
                values[name] = x_in
            else:
                raise ValueError(f"NIR node {name}: {kind} is not supported by the interpreter")
        return values[self.output]

    def run(self, xs: np.ndarray) -> np.ndarray:
        """xs (T, batch, features) from zero state -> outputs (T, batch, ...)."""
        self.reset(xs.shape[1])
        return np.stack([self.step(x) for x in xs])
