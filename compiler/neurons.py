"""Spiking neuron populations in an integer graph: integer thresholds, decays, reset modes.

A spiking neuron's step in the quantized IR is a handful of ops: its membrane (a
recurrent state, or a slice of one) is compared with a threshold, the comparison cast
to integer spikes (int8, or int16 in a 16x8 graph), the membrane decayed (a table or a
fixed-point requantization), the input current added and, on a spike, the threshold
subtracted or the membrane zeroed. Two exact rewrites give those ops the form a
neuromorphic chip takes:

- `fold_thresholds`: `compare(lut(v), c)` -> `compare(v, theta)`, an integer threshold on
  the membrane grid itself (checked on every membrane value);
- `decay_multipliers`: a table (256 entries for int8, 65536 for int16) that is exactly a
  requantization (`saturate(MBQM(v - zp, m, shift) + zp')` on every input) ->
  `requantize(m, shift)`.

`populations` then names each population: kind (LIF, IF, CuBaLIF, LI), neurons, state
slot and offset, integer threshold, decay and reset mode ("subtract", "zero" or "none").
A decay has a `form`: "multiplier" (fixed-point m, shift), "bit_shift" (v >> n), "grid"
(the integers pass unchanged; beta is the ratio of the grids' scales, applied by the
next add's rescaling), "table" (one entry per input value) or "gate" (one table of the
spikes holding (1 - s) beta, multiplied into v: decay and zero-reset in one op), and its
real factor `beta`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ncc import numerics as nx
from ncc.compiler import golden
from ncc.compiler.ir import Graph, Op, Tensor, verify

COMPARE = ("greater", "greater_equal")
MOVES = ("slice", "reshape", "identity")


def _levels(dtype: str) -> np.ndarray:
    lo, hi = nx.dtype_range(dtype)
    return np.arange(lo, hi + 1).astype(dtype)


def _threshold_of(mask: np.ndarray, levels: np.ndarray) -> int | None:
    """theta with (levels > theta) == mask, if the spiking levels are an upper set."""
    if not mask.any():
        return int(levels[-1])
    first = int(np.argmax(mask))
    if mask[first:].all() and not mask[:first].any():
        return int(levels[first]) - 1
    return None


def fold_thresholds(g: Graph) -> Graph:
    """compare(lut(v), c) with the table's only user the comparison -> greater(v, theta)."""
    users, producer = g.consumers(), g.producer()
    ops, tensors, constants = [], dict(g.tensors), dict(g.constants)
    dropped: set[str] = set()
    for op in g.ops:
        src = producer.get(op.inputs[0]) if op.kind in COMPARE else None
        if (src is not None and src.kind == "lut" and len(users[src.output]) == 1
                and src.output not in g.outputs and op.inputs[1] in constants
                and constants[op.inputs[1]].size == 1):
            v, table = src.inputs
            levels = _levels(g.tensors[v].dtype)
            looked = golden.lut(levels, constants[table])
            c = constants[op.inputs[1]].reshape(())
            mask = looked > c if op.kind == "greater" else looked >= c
            theta = _threshold_of(mask, levels)
            lo, hi = nx.dtype_range(g.tensors[v].dtype)
            if theta is not None and lo <= theta < hi:
                name = f"{op.output}_theta"
                constants[name] = np.asarray([theta], g.tensors[v].dtype)
                tensors[name] = Tensor(name, (1,), g.tensors[v].dtype)
                dropped.add(src.output)
                ops.append(Op("greater", (v, name), op.output, {}, op.source))
                continue
        ops.append(op)
    ops = [op for op in ops if op.output not in dropped]
    return _prune(g.replace(ops=ops, tensors=tensors, constants=constants))


def fit_requantize(table: np.ndarray, p_in: Any, p_out: Any) -> dict[str, Any] | None:
    """Requantize attributes reproducing `table` on every input value (each int8 or int16
    level), or None."""
    levels = _levels(p_in.dtype)
    table = golden.lut(levels, table)  # a compact table: its value at every level
    levels = levels.astype(np.int64)
    x = levels - p_in.zero_point[0]
    y = table.astype(np.int64) - p_out.zero_point[0]
    lo, hi = nx.dtype_range(p_out.dtype)
    inside = (table > lo) & (table < hi) & (x != 0)
    if inside.sum() < 2:
        return None
    ratio = float(np.sum(x[inside] * y[inside]) / np.sum(x[inside] ** 2))
    for candidate in (ratio, round(ratio * 256) / 256):  # the fit, and a short fraction
        if candidate <= 0:
            continue
        m, s = nx.quantize_multiplier(candidate)
        attrs = {"in_zp": p_in.zero_point[0], "multiplier": m, "shift": s,
                 "out_zp": p_out.zero_point[0], "dtype": p_out.dtype}
        if np.array_equal(golden.requantize(levels.astype(p_in.dtype), **attrs), table):
            return attrs
    return None


def decay_multipliers(g: Graph) -> Graph:
    """Tables that are exact requantizations (decays: beta * v) -> `requantize`."""
    ops = []
    for op in g.ops:
        if op.kind == "lut":
            v, table = op.inputs
            p_in, p_out = g.tensors[v].quant, g.tensors[op.output].quant
            attrs = (fit_requantize(g.constants[table], p_in, p_out)
                     if p_in is not None and p_out is not None else None)
            if attrs is not None:
                ops.append(Op("requantize", (v,), op.output, attrs, op.source))
                continue
        ops.append(op)
    return _prune(g.replace(ops=ops))


def _prune(g: Graph) -> Graph:
    used = {n for op in g.ops for n in op.inputs}
    constants = {k: v for k, v in g.constants.items() if k in used}
    live = set(g.inputs) | set(constants) | {op.output for op in g.ops}
    tensors = {k: t for k, t in g.tensors.items() if k in live}
    return verify(g.replace(constants=constants, tensors=tensors))


# --- recognition ---------------------------------------------------------------------------


@dataclass
class Population:
    """One group of neurons: `neurons` per sample, from `offset` on state `state_in`'s last axis."""

    name: str
    kind: str
    neurons: int
    state_in: str
    offset: int
    membrane: str
    threshold: int | None = None
    spikes: str | None = None
    reset: str = "none"
    decay: dict[str, Any] | None = None
    current: dict[str, Any] | None = None  # CuBaLIF: the synaptic current's slot and decay
    layers: list[str] = field(default_factory=list)


def _origin(g: Graph, name: str) -> tuple[str, int] | None:
    """(state_in, flat offset) a tensor is a slice/reshape of, else None."""
    producer, offset = g.producer(), 0
    while name not in g.inputs:
        op = producer.get(name)
        if op is None or op.kind not in MOVES:
            return None
        if op.kind == "slice":
            shape = g.tensors[op.inputs[0]].shape
            if any(st != 1 for st in op.attrs["steps"]) or any(
                    s != 0 for s in op.attrs["starts"][:-1]) or len(shape) != 2:
                return None
            offset += int(op.attrs["starts"][-1])
        name = op.inputs[0]
    return (name, offset) if g.roles[name] == "state_in" else None


def _downstream(g: Graph, start: str, stop: set[str]) -> list[Op]:
    """Ops reached from `start` in graph order, not passing through tensors in `stop`."""
    reached, ops = {start}, []
    for op in g.ops:
        if any(n in reached for n in op.inputs) and op.output not in stop:
            reached.add(op.output)
            ops.append(op)
    return ops


def _reaches(g: Graph, start: str, target: str) -> bool:
    return start == target or any(op.output == target for op in _downstream(g, start, set()))


def _decay(g: Graph, v: str, state_out: str, avoid: set[str]) -> tuple[dict[str, Any], str] | None:
    """The first requantize or table on the path from `v` to `state_out`: how v decays."""
    for op in _downstream(g, v, avoid):
        if op.kind not in ("requantize", "lut") or not _reaches(g, op.output, state_out):
            continue
        p_in, p_out = g.tensors[op.inputs[0]].quant, g.tensors[op.output].quant
        if op.kind == "requantize":
            real = op.attrs["multiplier"] * 2.0 ** (op.attrs["shift"] - 31)
            beta = real * p_out.scale[0] / p_in.scale[0]
            form = {"form": "multiplier", "multiplier": int(op.attrs["multiplier"]),
                    "shift": int(op.attrs["shift"])}
            if op.attrs["multiplier"] == 1 << 30 and op.attrs["shift"] == 1:
                form = {"form": "grid"}  # integers unchanged: beta is in the output's scale
            elif op.attrs["multiplier"] == 1 << 30 and op.attrs["shift"] < 1:
                form = {"form": "bit_shift", "shift": 1 - int(op.attrs["shift"])}
        else:
            levels = _levels(p_in.dtype)
            real_in = nx.dequantize(levels, p_in)
            real_out = nx.dequantize(golden.lut(levels, g.constants[op.inputs[1]]), p_out)
            beta = float(np.dot(real_in, real_out) / max(np.dot(real_in, real_in), 1e-30))
            form = {"form": "table", "table": op.inputs[1]}
        return {**form, "beta": round(float(beta), 6), "layer": op.output}, op.output
    return None


def populations(g: Graph) -> list[Population]:
    """Spiking (LIF, IF, CuBaLIF) and leaky-integrator (LI) populations of integer graph g."""
    pairs = dict(g.state_pairs)
    producer = g.producer()
    found: list[Population] = []
    membranes: set[str] = set()
    for op in g.ops:
        if op.kind != "cast" or g.tensors[op.inputs[0]].dtype != "bool":
            continue
        cmp = producer.get(op.inputs[0])
        if cmp is None or cmp.kind != "greater" or cmp.inputs[1] not in g.constants:
            continue
        v = cmp.inputs[0]
        origin = _origin(g, v)
        if origin is None:
            continue
        s_in, offset = origin
        s_out = pairs[s_in]
        pop = Population(f"pop{len(found)}", "IF", g.tensors[v].shape[-1], s_in, offset, v,
                         int(g.constants[cmp.inputs[1]].reshape(-1)[0]), op.output)
        pop.layers = [cmp.output, op.output]
        gate = None  # a table of the spikes, e.g. (1 - s) * beta, multiplied into v
        for user in _downstream(g, op.output, set()):
            if not _reaches(g, user.output, s_out):
                continue
            if user.kind == "lut" and user.inputs[0] == op.output:
                gate = user
            elif user.kind in ("qsub", "qmul", "where"):
                pop.reset = "subtract" if user.kind == "qsub" else "zero"
                pop.layers.append(user.output)
                break
        decay = _decay(g, v, s_out, {cmp.output})
        if decay is None and gate is not None and pop.reset == "zero":
            p_gate = g.tensors[gate.output].quant
            table = g.constants[gate.inputs[1]]
            no_spike = -nx.dtype_range(g.tensors[gate.inputs[0]].dtype)[0]  # index of s = 0
            beta = float(nx.dequantize(table[no_spike], p_gate))
            decay = ({"form": "gate", "table": gate.inputs[1], "beta": round(beta, 6),
                      "layer": gate.output}, gate.output)
        if decay is not None:
            pop.decay, layer = decay
            pop.kind = "LIF"
            pop.layers.append(layer)
        found.append(pop)
        membranes.add(v)
    for pop in list(found):  # another slice of a membrane's state that decays: CuBaLIF current
        for op in g.ops:
            if op.kind != "slice" or op.output in membranes:
                continue
            origin = _origin(g, op.output)
            if origin and origin[0] == pop.state_in and origin[1] != pop.offset:
                decay = _decay(g, op.output, pairs[pop.state_in], set())
                if decay is not None:
                    pop.kind = "CuBaLIF"
                    pop.current = {"offset": origin[1], "tensor": op.output, "decay": decay[0]}
                    pop.layers.append(decay[1])
    spiking_states = {p.state_in for p in found}
    for s_in, s_out in g.state_pairs:  # leaky integrators: decay(v) + input, no spikes
        if s_in in spiking_states or not found:
            continue
        decay = _decay(g, s_in, s_out, set())
        users = g.consumers()[s_in]
        if decay is not None and len(users) == 1 and users[0].output == decay[1]:
            pop = Population(f"pop{len(found)}", "LI", g.tensors[s_in].shape[-1], s_in, 0, s_in)
            pop.decay = decay[0]
            pop.layers = [decay[1]]
            found.append(pop)
    return found


def neuromorphic_form(g: Graph) -> tuple[Graph, list[Population]]:
    """Integer graph with thresholds on membranes and decays as multipliers where exact,
    and its populations."""
    g = decay_multipliers(fold_thresholds(g))
    return g, populations(g)
