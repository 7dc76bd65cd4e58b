"""Synapse compaction: compute per-synapse work only where a synapse exists.

An LTC step (and any model written the same way) evaluates a chain of elementwise ops on
a `[..., S, D]` grid of synapses (source neuron x destination neuron), multiplies it by
a wiring mask (or by weights that are zero where the wiring has no synapse) and sums
over sources or destinations. On a sparse NCP wiring most of that grid is absent: an
AutoNCP(32, 10) has 10% of its recurrent synapses. `compact_synapses` rewrites such a
region onto the present synapses only:

    x [.., S, 1]  -> gather(x [.., S], src)           [.., nnz]
    u [.., 1, D]  -> gather(u [.., D], dst)           [.., nnz]
    c [.., S, D]  -> c[.., P]  (a constant)           [.., nnz]
    elementwise ops                                   unchanged, on [.., nnz]
    reduce_sum over S -> matmul(t, select_dst)         [.., D]   select_dst[p, dst_p] = 1
    reduce_sum over D -> matmul(t, select_src)         [.., S]

P (flat row-major positions s * D + d) is where some exit of the region can be nonzero,
found by a support analysis: a product is zero where either factor is (a constant's
zeros, a mask), a sum where both are; every other op may be nonzero anywhere. The rewrite
is exact in real arithmetic (it drops terms that are exactly zero); in float32 only the
summation order changes. Quantized, the region's tensors are calibrated over the present
synapses only, and the selection matmuls are sparse (one entry per row), which the C and
fixed-point targets store as synapse lists.
"""

from __future__ import annotations

import numpy as np

from ncc.compiler.ir import Graph, Op, Tensor
from ncc.compiler.passes import canonicalize, eliminate_dead

MIN_ABSENT = 0.25
"""Compact a region only when at least this fraction of its grid is absent."""

_BINARY = frozenset({"add", "sub", "mul", "div", "max", "min", "pow"})
_UNARY = frozenset({"identity", "neg", "abs", "exp", "log", "sqrt", "sigmoid", "tanh", "relu",
                    "floor", "sign", "clip", "fake_quant"})
# f(0) == 0 exactly; fake_quant too, as every grid holds 0 (its zero point is an integer)
_ZERO_PRESERVING = frozenset({"identity", "neg", "abs", "relu", "sign", "floor", "fake_quant"})


def _elementwise(g: Graph, op: Op) -> bool:
    if op.kind == "fake_quant":
        return op.attrs.get("axis") is None
    return op.kind in _BINARY or op.kind in _UNARY


def _grid(shape: tuple[int, ...]) -> bool:
    return len(shape) >= 2 and shape[-1] > 1 and shape[-2] > 1


def _regions(g: Graph) -> list[list[Op]]:
    """Connected groups of elementwise ops on one synapse grid shape, in graph order."""
    ops = [op for op in g.ops if _elementwise(g, op) and _grid(g.tensors[op.output].shape)]
    made = {op.output: op for op in ops}
    parent = {op.output: op.output for op in ops}

    def find(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for op in ops:
        for n in op.inputs:
            if n in made and g.tensors[n].shape == g.tensors[op.output].shape:
                parent[find(n)] = find(op.output)
    groups: dict[str, list[Op]] = {}
    for op in ops:
        groups.setdefault(find(op.output), []).append(op)
    return list(groups.values())


def _support(g: Graph, region: list[Op], shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """For each tensor of the region: bool [S, D], False where it is exactly zero."""
    s, d = shape[-2:]
    full = np.ones((s, d), bool)
    inside = {op.output for op in region}
    sup: dict[str, np.ndarray] = {}

    def of(n: str) -> np.ndarray:
        if n in sup:
            return sup[n]
        if n in g.constants:
            c = np.asarray(g.constants[n])
            c = c.reshape((1,) * max(0, 2 - c.ndim) + c.shape)
            nonzero = np.any(c != 0, axis=tuple(range(c.ndim - 2)))
            return np.broadcast_to(nonzero, (s, d))
        return full

    for op in region:
        args = [of(n) for n in op.inputs]
        if op.kind == "mul":
            sup[op.output] = args[0] & args[1]
        elif op.kind in ("add", "sub"):
            sup[op.output] = args[0] | args[1]
        elif op.kind in _ZERO_PRESERVING:
            sup[op.output] = args[0]
        elif op.kind == "clip" and op.attrs["min"] <= 0 <= op.attrs["max"]:
            sup[op.output] = args[0]
        else:
            sup[op.output] = full
    assert set(sup) == inside
    return sup


def _exit_axes(g: Graph, op: Op, rank: int) -> frozenset[int] | None:
    """The grid axes a reduce_sum leaving the region sums over (a subset of {-2, -1}), or
    None when `op` is not such an exit."""
    if op.kind != "reduce_sum":
        return None
    axes = frozenset(a % rank - rank for a in op.attrs["axes"])
    return axes if axes and axes <= {-2, -1} else None


class _Rewrite:
    """Builds the compacted ops of one region into new ops/tensors/constants."""

    def __init__(self, g: Graph, region: list[Op], positions: np.ndarray,
                 shape: tuple[int, ...], tag: str) -> None:
        self.g, self.region, self.tag = g, region, tag
        self.shape = shape
        s, d = shape[-2:]
        self.positions = positions
        self.src, self.dst = positions // d, positions % d
        self.s, self.d = s, d
        self.inside = {op.output for op in region}
        self.tensors: dict[str, Tensor] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.entries: dict[str, str] = {}

    def _tensor(self, name: str, shape: tuple[int, ...], dtype: str = "float32") -> None:
        self.tensors[name] = Tensor(name, shape, dtype)

    def constant(self, n: str) -> str:
        c = np.asarray(self.g.constants[n])
        if c.size == 1:
            return n
        c = c.reshape((1,) * max(0, 2 - c.ndim) + c.shape)
        c = np.broadcast_to(c, c.shape[:-2] + (self.s, self.d))
        compact = np.ascontiguousarray(
            c.reshape(c.shape[:-2] + (self.s * self.d,))[..., self.positions])
        name = f"{n}_{self.tag}"
        self.constants[name] = compact.astype(c.dtype)
        self._tensor(name, compact.shape, str(c.dtype))
        return name

    def entry(self, n: str, ops: list[Op], source: str) -> str:
        """Non-constant input n ([.., S|1, D|1]) gathered onto the present synapses."""
        if n in self.entries:
            return self.entries[n]
        t = self.g.tensors[n]
        shape = (1,) * max(0, 2 - len(t.shape)) + t.shape
        lead, (a, b) = shape[:-2], shape[-2:]
        if (a, b) == (1, 1):
            flat, indices = lead + (1,), None
        elif (a, b) == (self.s, 1):
            flat, indices = lead + (self.s,), self.src
        elif (a, b) == (1, self.d):
            flat, indices = lead + (self.d,), self.dst
        else:
            flat, indices = lead + (self.s * self.d,), self.positions
        name = n
        if flat != t.shape:
            name = f"{n}_flat_{self.tag}"
            ops.append(Op("reshape", (n,), name, {"shape": flat}, source))
            self._tensor(name, flat, t.dtype)
        if indices is not None:
            gathered = f"{n}_at_{self.tag}"
            ops.append(Op("gather", (name,), gathered,
                          {"axis": len(flat) - 1, "indices": tuple(int(i) for i in indices)},
                          source))
            self._tensor(gathered, lead + (len(indices),), t.dtype)
            name = gathered
        self.entries[n] = name
        return name

    def op(self, op: Op, ops: list[Op]) -> None:
        inputs = []
        for n in op.inputs:
            if n in self.inside:
                inputs.append(n)
            elif n in self.g.constants:
                inputs.append(self.constant(n))
            else:
                inputs.append(self.entry(n, ops, op.source))
        t = self.g.tensors[op.output]
        self._tensor(op.output, self.shape[:-2] + (len(self.positions),), t.dtype)
        ops.append(Op(op.kind, tuple(inputs), op.output, op.attrs, op.source))

    def exit(self, op: Op, axes: frozenset[int], ops: list[Op]) -> None:
        (x,) = op.inputs
        if axes == {-2, -1}:
            ops.append(Op("reduce_sum", (x,), op.output, {"axes": (len(self.shape) - 2,)},
                          op.source))
            return
        onto = self.dst if axes == {-2} else self.src
        width = self.d if axes == {-2} else self.s
        select = np.zeros((len(self.positions), width), np.float32)
        select[np.arange(len(self.positions)), onto] = 1.0
        name = f"{op.output}_select"
        self.constants[name] = select
        self._tensor(name, select.shape)
        ops.append(Op("matmul", (x, name), op.output, {}, op.source))


def compact_synapses(g: Graph, min_absent: float = MIN_ABSENT) -> Graph:
    """`g` with every sparse synapse region computed on its present synapses only (see the
    module docstring); a graph without one comes back unchanged."""
    uses, made = g.consumers(), g.producer()
    outputs = set(g.outputs)
    plans: list[tuple[list[Op], np.ndarray, dict[str, frozenset[int]]]] = []
    for region in _regions(g):
        shape = g.tensors[region[0].output].shape
        inside = {op.output for op in region}
        exits: dict[str, frozenset[int]] = {}
        ok = not (inside & outputs)
        for n in inside:
            for user in uses.get(n, []):
                if user.output in inside:
                    continue
                axes = _exit_axes(g, user, len(shape))
                if axes is None:
                    ok = False
                else:
                    exits[user.output] = axes
        if not ok or not exits:
            continue
        sup = _support(g, region, shape)
        present = np.zeros(shape[-2:], bool)
        for out in exits:
            present |= sup[made[out].inputs[0]]
        if present.mean() > 1 - min_absent:
            continue
        plans.append((region, np.flatnonzero(present.reshape(-1)), exits))
    if not plans:
        return g
    tensors, constants = dict(g.tensors), dict(g.constants)
    by_op: dict[str, tuple[_Rewrite, str]] = {}
    for k, (region, positions, exits) in enumerate(plans):
        rw = _Rewrite(g, region, positions, g.tensors[region[0].output].shape, f"syn{k}")
        for op in region:
            by_op[op.output] = (rw, "op")
        for out in exits:
            by_op[out] = (rw, "exit")
    ops: list[Op] = []
    for op in g.ops:
        if op.output not in by_op:
            ops.append(op)
            continue
        rw, role = by_op[op.output]
        if role == "op":
            rw.op(op, ops)
        else:
            rw.exit(op, _exit_axes(g, op, len(rw.shape)), ops)
    for rw, _ in by_op.values():
        tensors.update(rw.tensors)
        constants.update(rw.constants)
    return canonicalize(eliminate_dead(g.replace(ops=ops, tensors=tensors,
                                                 constants=constants)))

