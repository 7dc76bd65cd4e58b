"""Canonicalization: rewrites that keep a graph's meaning and make it smaller.

Each pass is a function Graph -> Graph; `canonicalize` runs them to a fixed
point. Graph inputs and outputs keep their names; only interior tensors move.
"""

from __future__ import annotations

import numpy as np

from ncc.compiler.interpret import evaluate
from ncc.compiler.ir import Graph, Op, verify


def _rewire(g: Graph, alias: dict[str, str]) -> Graph:
    """Replace every use of tensor `a` by `alias[a]` and drop the ops that defined them."""
    if not alias:
        return g

    def resolve(n: str) -> str:
        while n in alias:
            n = alias[n]
        return n

    ops = [Op(op.kind, tuple(resolve(n) for n in op.inputs), op.output, op.attrs, op.source)
           for op in g.ops if op.output not in alias]
    return g.replace(ops=ops)


def fold_constants(g: Graph) -> Graph:
    """Evaluate ops whose inputs are all constants (bias reshapes, clipped decays, masks)."""
    constants, tensors, ops = dict(g.constants), dict(g.tensors), []
    keep = set(g.outputs)
    for op in g.ops:
        if op.output not in keep and all(n in constants for n in op.inputs):
            value = np.asarray(evaluate(op, [constants[n] for n in op.inputs]))
            constants[op.output] = value.astype(tensors[op.output].dtype)
        else:
            ops.append(op)
    return g.replace(constants=constants, tensors=tensors, ops=ops)


def _is_const(g: Graph, name: str, value: float) -> bool:
    c = g.constants.get(name)
    return c is not None and c.size > 0 and bool(np.all(c == value))


def _zero_term(g: Graph, op: Op) -> str | None:
    """The tensor x of x + 0, 0 + x or x - 0 (same shape as the result), else None."""
    if op.kind not in ("add", "sub"):
        return None
    out, (a, b) = g.tensors[op.output], op.inputs
    same = lambda n: g.tensors[n].shape == out.shape and g.tensors[n].dtype == out.dtype  # noqa: E731
    if _is_const(g, b, 0) and same(a):
        return a
    if op.kind == "add" and _is_const(g, a, 0) and same(b):
        return b
    return None


def remove_identities(g: Graph) -> Graph:
    """Drop identity, no-op casts/reshapes/broadcasts, x*1, x+0 and x-0 (a graph output
    computed as x + 0 becomes identity(x))."""
    alias: dict[str, str] = {}
    keep = set(g.outputs)
    ops = []
    for op in g.ops:
        x = _zero_term(g, op)
        if op.output in keep and x is not None:
            op = Op("identity", (x,), op.output, {}, op.source)
        ops.append(op)
    g = g.replace(ops=ops)
    for op in g.ops:
        if op.output in keep:
            continue
        out = g.tensors[op.output]
        ins = [g.tensors[n] for n in op.inputs]
        same = [n for n, t in zip(op.inputs, ins, strict=True)
                if t.shape == out.shape and t.dtype == out.dtype]
        if op.kind in ("identity", "cast", "reshape", "broadcast") and same:
            alias[op.output] = op.inputs[0]
        elif op.kind in ("mul",) and len(same) >= 1:
            a, b = op.inputs
            if _is_const(g, b, 1) and a in same:
                alias[op.output] = a
            elif _is_const(g, a, 1) and b in same:
                alias[op.output] = b
        elif _zero_term(g, op) is not None:
            alias[op.output] = _zero_term(g, op)
    return _rewire(g, alias)


def eliminate_dead(g: Graph) -> Graph:
    """Drop ops and constants that no output depends on."""
    live = set(g.outputs)
    ops = []
    for op in reversed(g.ops):
        if op.output in live:
            ops.append(op)
            live.update(op.inputs)
    ops.reverse()
    constants = {k: v for k, v in g.constants.items() if k in live}
    keep = live | set(g.inputs) | set(g.outputs)
    tensors = {k: t for k, t in g.tensors.items() if k in keep}
    return g.replace(ops=ops, constants=constants, tensors=tensors)


def prune_dead_state(g: Graph) -> Graph:
    """Drop state pairs that no `output` depends on, through any number of steps (e.g. the
    running product of an associative scan's multipliers, which spyx's SSMs discard)."""
    made = g.producer()
    pair_of = dict(g.state_pairs)
    live: set[str] = set()
    todo = list(g.by_role("output"))
    while todo:
        name = todo.pop()
        if name in live:
            continue
        live.add(name)
        if name in made:
            todo.extend(made[name].inputs)
        elif name in pair_of:  # reading a state makes its next value needed a step earlier
            todo.append(pair_of[name])
    dead = [(s_in, s_out) for s_in, s_out in g.state_pairs if s_in not in live]
    if not dead:
        return g
    gone = {n for pair in dead for n in pair}
    g = g.replace(inputs=[n for n in g.inputs if n not in gone],
                  outputs=[n for n in g.outputs if n not in gone],
                  roles={n: r for n, r in g.roles.items() if n not in gone},
                  state_pairs=[p for p in g.state_pairs if p[0] not in gone],
                  initial_state={n: v for n, v in g.initial_state.items() if n not in gone})
    return verify(eliminate_dead(g))


def deduplicate_constants(g: Graph) -> Graph:
    """Constants with equal dtype, shape and bytes become one."""
    seen: dict[tuple[str, tuple[int, ...], bytes], str] = {}
    alias: dict[str, str] = {}
    for name, value in g.constants.items():
        key = (str(value.dtype), tuple(value.shape), value.tobytes())
        if key in seen:
            alias[name] = seen[key]
        else:
            seen[key] = name
    g = _rewire(g, alias)
    return g.replace(constants={k: v for k, v in g.constants.items() if k not in alias})


def simplify_selects(g: Graph) -> Graph:
    """where(c, 1, 0) -> cast(c); cast(cast(c: bool)) -> cast(c). Spikes become casts of
    comparisons, which the quantizer keeps exact 0/1."""
    made = g.producer()
    ops = []
    for op in g.ops:
        out = g.tensors[op.output]
        if op.kind == "where" and all(n in g.constants for n in op.inputs[1:]):
            cond, ones, zeros = op.inputs
            if (np.all(g.constants[ones] == 1) and np.all(g.constants[zeros] == 0)
                    and g.tensors[cond].shape == out.shape):
                op = Op("cast", (cond,), op.output, {"dtype": out.dtype}, op.source)
        if op.kind == "cast" and op.inputs[0] in made:
            inner = made[op.inputs[0]]
            if inner.kind == "cast" and g.tensors[inner.inputs[0]].dtype == "bool":
                op = Op("cast", inner.inputs, op.output, op.attrs, op.source)
        made[op.output] = op
        ops.append(op)
    return g.replace(ops=ops)


PASSES = (fold_constants, remove_identities, simplify_selects, deduplicate_constants,
          eliminate_dead)


def canonicalize(g: Graph, max_rounds: int = 10) -> Graph:
    """Run the passes until the graph stops changing; the result is verified."""
    for _ in range(max_rounds):
        before = (len(g.ops), len(g.constants))
        for p in PASSES:
            g = p(g)
        if (len(g.ops), len(g.constants)) == before:
            break
    return verify(g)


def strip_fake_quant(g: Graph) -> Graph:
    """`g` with every `fake_quant` op an identity (then removed): the float model, for float
    targets and float lowerings of the reference. Quantized graphs have none."""
    if not any(op.kind == "fake_quant" for op in g.ops):
        return g
    ops = [Op("identity", op.inputs, op.output, {}, op.source) if op.kind == "fake_quant"
           else op for op in g.ops]
    return canonicalize(g.replace(ops=ops))
