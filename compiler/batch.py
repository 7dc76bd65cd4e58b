"""Rebatching: the same step graph for N independent sequences at once.

Step graphs are traced at batch 1: every tensor computed from the inputs has
a leading dimension of 1 (constants are folded or broadcast against it).
`rebatch(g, n)` makes that leading dimension n, so the interpreters can run n
sequences per call instead of looping over them; the verifier checks the
result, and a graph whose leading dimension is not a batch is refused.
"""

from __future__ import annotations

import numpy as np

from ncc.compiler.ir import Graph, IRError, Op, Tensor, verify


def rebatch(g: Graph, n: int) -> Graph:
    """g with batch n: inputs, outputs, state and every op on them get leading dim n."""
    if n == 1:
        return g
    batched = set(g.inputs)
    tensors = dict(g.tensors)
    ops = []
    for op in g.ops:
        if not any(i in batched for i in op.inputs):
            raise IRError(f"op {op.kind} -> {op.output!r} does not depend on the inputs; "
                          "canonicalize the graph before rebatching")
        attrs = dict(op.attrs)
        if op.kind in ("reshape", "broadcast"):
            attrs["shape"] = _lead(op, attrs["shape"], n)
        elif op.kind == "slice":
            attrs["stops"] = _lead(op, attrs["stops"], n)
        elif op.kind == "transpose" and attrs["perm"][0] != 0:
            raise IRError(f"transpose -> {op.output!r} moves the batch axis")
        elif op.kind in ("reduce_sum", "reduce_max") and 0 in (
                a % len(g.tensors[op.inputs[0]].shape) for a in attrs["axes"]):
            raise IRError(f"{op.kind} -> {op.output!r} reduces over the batch axis")
        elif op.kind == "gather" and attrs["axis"] % len(g.tensors[op.output].shape) == 0:
            raise IRError(f"gather -> {op.output!r} picks along the batch axis")
        elif op.kind == "concat" and attrs["axis"] % len(g.tensors[op.output].shape) == 0:
            raise IRError(f"concat -> {op.output!r} joins along the batch axis")
        ops.append(Op(op.kind, op.inputs, op.output, attrs, op.source))
        batched.add(op.output)
    for name in batched:
        t = tensors[name]
        if not t.shape or t.shape[0] != 1:
            raise IRError(f"tensor {name!r} has shape {list(t.shape)}: no batch dimension")
        tensors[name] = Tensor(name, (n, *t.shape[1:]), t.dtype, t.quant)
    initial = {k: np.repeat(v, n, axis=0) for k, v in g.initial_state.items()}
    return verify(g.replace(tensors=tensors, ops=ops, initial_state=initial))


def _lead(op: Op, values: tuple[int, ...], n: int) -> tuple[int, ...]:
    if not values or values[0] != 1:
        raise IRError(f"{op.kind} -> {op.output!r}: leading dimension {values[:1]} is not "
                      "the batch")
    return (n, *values[1:])
