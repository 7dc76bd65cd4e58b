"""The float interpreter: runs an IR graph with numpy (or any numpy-like module).

`run_step` evaluates one timestep; `run_sequence` threads state over a
sequence. With `xp=jax.numpy` the same code runs under JAX (and jit).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ncc import numerics as nx
from ncc.compiler.golden import INT_KERNELS
from ncc.compiler.ir import Graph, Op, QuantParams, Tensor

Kernel = Callable[[Any, list[Any], dict[str, Any]], Any]


def _slice(xp: Any, a: list[Any], at: dict[str, Any]) -> Any:
    index = tuple(slice(s, e, st) for s, e, st in
                  zip(at["starts"], at["stops"], at["steps"], strict=True))
    return a[0][index]


KERNELS: dict[str, Kernel] = {
    "matmul": lambda xp, a, at: xp.matmul(a[0], a[1]),
    "add": lambda xp, a, at: a[0] + a[1],
    "sub": lambda xp, a, at: a[0] - a[1],
    "mul": lambda xp, a, at: a[0] * a[1],
    "div": lambda xp, a, at: a[0] / a[1],
    "max": lambda xp, a, at: xp.maximum(a[0], a[1]),
    "min": lambda xp, a, at: xp.minimum(a[0], a[1]),
    "pow": lambda xp, a, at: xp.power(a[0], a[1]),
    "greater": lambda xp, a, at: a[0] > a[1],
    "greater_equal": lambda xp, a, at: a[0] >= a[1],
    "less": lambda xp, a, at: a[0] < a[1],
    "less_equal": lambda xp, a, at: a[0] <= a[1],
    "equal": lambda xp, a, at: a[0] == a[1],
    "identity": lambda xp, a, at: a[0],
    "neg": lambda xp, a, at: -a[0],
    "abs": lambda xp, a, at: xp.abs(a[0]),
    "exp": lambda xp, a, at: xp.exp(a[0]),
    "log": lambda xp, a, at: xp.log(a[0]),
    "sqrt": lambda xp, a, at: xp.sqrt(a[0]),
    "sigmoid": lambda xp, a, at: 1 / (1 + xp.exp(-a[0])),
    "tanh": lambda xp, a, at: xp.tanh(a[0]),
    "cos": lambda xp, a, at: xp.cos(a[0]),
    "sin": lambda xp, a, at: xp.sin(a[0]),
    # max(x, 0) + log1p(exp(-|x|)): no overflow for large |x|
    "softplus": lambda xp, a, at: (xp.maximum(a[0], xp.zeros((), a[0].dtype))
                                   + xp.log1p(xp.exp(-xp.abs(a[0])))),
    "relu": lambda xp, a, at: xp.maximum(a[0], xp.zeros((), a[0].dtype)),
    "floor": lambda xp, a, at: xp.floor(a[0]),
    "sign": lambda xp, a, at: xp.sign(a[0]),
    "logical_not": lambda xp, a, at: xp.logical_not(a[0]),
    "clip": lambda xp, a, at: xp.clip(a[0], at["min"], at["max"]).astype(a[0].dtype),
    "cast": lambda xp, a, at: a[0].astype(at["dtype"]),
    "where": lambda xp, a, at: xp.where(a[0], a[1], a[2]),
    "concat": lambda xp, a, at: xp.concatenate(a, axis=at["axis"]),
    "slice": _slice,
    "reshape": lambda xp, a, at: xp.reshape(a[0], at["shape"]),
    "broadcast": lambda xp, a, at: xp.broadcast_to(a[0], at["shape"]),
    "transpose": lambda xp, a, at: xp.transpose(a[0], at["perm"]),
    "gather": lambda xp, a, at: xp.take(a[0], xp.asarray(at["indices"], "int32"),
                                        axis=at["axis"]),
    "reduce_sum": lambda xp, a, at: xp.sum(a[0], axis=tuple(at["axes"])).astype(a[0].dtype),
    "reduce_max": lambda xp, a, at: xp.max(a[0], axis=tuple(at["axes"])),
}


def _fake_quant(xp: Any, a: list[Any], at: dict[str, Any]) -> Any:
    """dequantize(quantize(x)) with the numeric core's rounding (numpy, or JAX under jit)."""
    p = QuantParams.of_dtype(at["scale"], at["zero_point"], at["dtype"], at["axis"])
    if xp is np:
        return nx.dequantize(nx.quantize(a[0], p), p)
    from ncc.models.quantization import fake_quant  # JAX: only when the graph runs under it

    return fake_quant(a[0], p)


KERNELS["fake_quant"] = _fake_quant
KERNELS.update(INT_KERNELS)


def evaluate(op: Op, args: list[Any], xp: Any = np) -> Any:
    return KERNELS[op.kind](xp, args, op.attrs)


def run_step(g: Graph, feeds: Mapping[str, Any], xp: Any = np,
             every_tensor: bool = False) -> dict[str, Any]:
    """One step: `feeds` maps every graph input name to an array; returns the outputs
    (or, with `every_tensor`, every input and op result: what calibration observes)."""
    env: dict[str, Any] = {k: xp.asarray(v) for k, v in g.constants.items()}
    for name in g.inputs:
        env[name] = xp.asarray(feeds[name], dtype=g.tensors[name].dtype)
    for op in g.ops:
        value = evaluate(op, [env[n] for n in op.inputs], xp)
        env[op.output] = xp.asarray(value).astype(g.tensors[op.output].dtype)
    if every_tensor:
        return {k: v for k, v in env.items() if k not in g.constants}
    return {name: env[name] for name in g.outputs}


def dt_one(t: Tensor) -> np.ndarray:
    """dt = 1.0 (a regular step) as tensor t carries it: on its integer grid if quantized."""
    one = np.ones(t.shape, np.float32)
    if t.quant is None:
        return one
    return nx.quantize(one, t.quant)


def run_sequence(g: Graph, xs: np.ndarray, dts: np.ndarray | None = None,
                 state: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Run over time. xs: (T, *x_shape); dts: (T, *dt_shape) or None (then 1.0).

    Returns each output name stacked over time: (T, *shape), states included.
    """
    (x_name,) = g.by_role("input")
    dt_names = g.by_role("dt")
    state = dict(g.initial_state if state is None else state)
    trace: dict[str, list[np.ndarray]] = {name: [] for name in g.outputs}
    for t in range(len(xs)):
        feeds = {x_name: np.reshape(xs[t], g.tensors[x_name].shape), **state}
        for name in dt_names:
            feeds[name] = (dt_one(g.tensors[name]) if dts is None
                           else np.reshape(dts[t], g.tensors[name].shape))
        out = run_step(g, feeds)
        for name in g.outputs:
            trace[name].append(out[name])
        state = {s_in: out[s_out] for s_in, s_out in g.state_pairs}
    return {name: np.stack(values) for name, values in trace.items()}


def run_batch(g: Graph, xs: np.ndarray, dts: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Many sequences at once. xs: (N, T, *features); dts: (N, T) or None.

    Returns each output as (N, T, *shape without batch). Runs the rebatched graph
    (one call per step for all N); a graph that cannot be rebatched runs per sequence.
    """
    from ncc.compiler.batch import rebatch
    from ncc.compiler.ir import IRError

    n, steps = xs.shape[:2]
    try:
        gb = rebatch(g, n)
    except IRError:
        per = [run_sequence(g, xs[i][:, None], None if dts is None else dts[i])
               for i in range(n)]
        return {k: np.stack([p[k][:, 0] for p in per]) for k in g.outputs}
    (x_name,) = g.by_role("input")
    state = dict(gb.initial_state)
    trace: dict[str, list[np.ndarray]] = {name: [] for name in g.outputs}
    for t in range(steps):
        feeds = {x_name: xs[:, t].reshape(gb.tensors[x_name].shape), **state}
        for name in g.by_role("dt"):
            feeds[name] = (dt_one(gb.tensors[name]) if dts is None else
                           np.asarray(dts).reshape(n, steps)[:, t].reshape(gb.tensors[name].shape))
        out = run_step(gb, feeds)
        for name in g.outputs:
            trace[name].append(out[name])
        state = {s_in: out[s_out] for s_in, s_out in g.state_pairs}
    return {k: np.stack(v, axis=1) for k, v in trace.items()}
