"""The golden integer model in JAX: the same bits as `golden.py` + `interpret.py`, jit-able,
`vmap`-able over population members and over sequences, the time loop a `lax.scan`.

The numpy golden model stays the definition; this module re-spells it for speed (tested
bit-equal op by op and on whole models over 1,000 steps). It runs without jax x64:

- every tensor keeps its IR dtype (int8, int16, int32, bool); integer kernels compute in
  int32 and use the numeric core's int32 JAX spellings (`models.quantization.integer_jax`).
- int8 FullyConnected / ADD / SUB / MUL / requantize: the numpy kernels form an int64
  value and hand it to `multiply_by_quantized_multiplier`, which first wraps it to int32
  (`wrap32`). Arithmetic modulo 2^32 commutes with that wrap, so the int32 accumulation
  here gives the same bits for every input, overflow or not. The zero point is added
  after clipping the rescaled value, so that addition cannot wrap either.
- int16 (16x8) FullyConnected: the numpy kernel keeps an int64 accumulator (up to 2^47)
  and TFLite's int64 MBQM, which does not wrap. Here the accumulator is int32, so
  `JaxGolden` proves |acc| < 2^31 for every input and every allowed weight and bias
  (K * span * 127 + max |bias|) and refuses the graph (`GoldenJaxError`, naming the op)
  otherwise. A split hi/lo accumulator would lift that limit; not written yet.
- the dot product runs in float32 where that is exact (every partial sum an integer
  below 2^24: K * span * 127 < 2^24, precision HIGHEST so no TF32 on GPU), else in int32.
- on the CPU backend a lut's indices go through an exact identity float dot before the
  gather (`materialized`): a schedule for XLA CPU, the same bits.

Importing this module imports JAX: the numpy golden model (`golden.py`) does not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ncc import numerics as nx
from ncc.compiler.interpret import KERNELS, dt_one
from ncc.compiler.ir import Graph, Op
from ncc.models.quantization.integer_jax import (
    interpolated_lookup_jax,
    multiply_by_quantized_multiplier_int64_jax,
    multiply_by_quantized_multiplier_jax,
)

F32_EXACT = 1 << 24
INT32_LIMIT = 1 << 31
WEIGHT_LIMIT = 127  # symmetric int8 weights, as the quantizer writes them and TFLite wants


class GoldenJaxError(ValueError):
    """The graph cannot be run bit-exactly by the JAX golden model; the message names why."""


def _saturate_after(scaled: jax.Array, out_zp: int, dtype: str) -> jax.Array:
    """saturate(scaled + out_zp) to dtype, with scaled int32: clipped first, so the zero
    point cannot wrap int32 (the numpy golden adds it in int64)."""
    lo, hi = nx.dtype_range(dtype)
    return (jnp.clip(scaled, lo - out_zp, hi - out_zp) + jnp.int32(out_zp)).astype(dtype)


def _i32(x: Any) -> jax.Array:
    return jnp.asarray(x).astype(jnp.int32)


def _dot(x: jax.Array, w: jax.Array, x_zp: int, use_float: bool) -> jax.Array:
    """sum_k (x_k - x_zp) w_kn: x (..., K) int, w (K, N) int -> (..., N) int32, in float32
    where every partial sum is an integer below 2^24 (exact; HIGHEST: no TF32 on GPU)."""
    xc = _i32(x) - jnp.int32(x_zp)
    if use_float:
        return jnp.matmul(xc.astype(jnp.float32), w.astype(jnp.float32),
                          precision=lax.Precision.HIGHEST).astype(jnp.int32)
    return jnp.matmul(xc, _i32(w), preferred_element_type=jnp.int32)


def _fully_connected(op: Op, plan: dict[str, Any]):
    at = op.attrs
    x_zp, out_zp, dtype = int(at["x_zp"]), int(at["out_zp"]), at["dtype"]
    mult = np.asarray(at["multiplier"], np.int64)
    shift = np.asarray(at["shift"], np.int64)
    wide = plan["x_dtype"] == "int16"

    def kernel(args: list[jax.Array]) -> jax.Array:
        x, w, b = args
        acc = _dot(x, w, x_zp, plan["float_dot"]) + _i32(b)
        if wide:
            scaled = multiply_by_quantized_multiplier_int64_jax(acc, mult, shift)
        else:
            scaled = multiply_by_quantized_multiplier_jax(
                acc, jnp.asarray(mult.astype(np.int32)), jnp.asarray(shift.astype(np.int32)))
        return _saturate_after(scaled, out_zp, dtype)
    return kernel


def _mbqm(x: jax.Array, m: int, s: int) -> jax.Array:
    return multiply_by_quantized_multiplier_jax(x, jnp.int32(m), jnp.int32(s))


def _add_sub(op: Op, sign: int):
    at = op.attrs
    ls = jnp.int32(1 << int(at["left_shift"]))

    def kernel(args: list[jax.Array]) -> jax.Array:
        a, b = args
        a_s = _mbqm((_i32(a) - jnp.int32(at["a_zp"])) * ls, at["a_multiplier"], at["a_shift"])
        b_s = _mbqm((_i32(b) - jnp.int32(at["b_zp"])) * ls, at["b_multiplier"], at["b_shift"])
        raw = a_s + b_s if sign > 0 else a_s - b_s
        return _saturate_after(_mbqm(raw, at["multiplier"], at["shift"]), int(at["out_zp"]),
                               at["dtype"])
    return kernel


def _qmul(op: Op):
    at = op.attrs

    def kernel(args: list[jax.Array]) -> jax.Array:
        a, b = args
        prod = (_i32(a) - jnp.int32(at["a_zp"])) * (_i32(b) - jnp.int32(at["b_zp"]))
        return _saturate_after(_mbqm(prod, at["multiplier"], at["shift"]), int(at["out_zp"]),
                               at["dtype"])
    return kernel


def materialized(x: jax.Array) -> jax.Array:
    """x (..., n) int8/int16 -> the same values as int32, through a float32 identity dot.

    Why: XLA CPU fuses a gather with the elementwise chain that computes its indices (a
    requantization) and then emits the whole fused loop as scalar code, about 10x slower
    than the two loops apart; a dot is never fused into its consumer, so the indices are
    written out once. Exact: |x| <= 2^15 and one nonzero term per sum. The identity is
    block-diagonal over chunks of at most 64 channels (a few MACs per element)."""
    n = x.shape[-1]
    if n == 0:
        return _i32(x)
    d = next((c for c in range(min(n, 64), 1, -1) if n % c == 0), n)
    xb = jnp.reshape(x.astype(jnp.float32), (*x.shape[:-1], n // d, d))
    eye = jnp.eye(d, dtype=jnp.float32)
    out = jnp.einsum("...cd,de->...ce", xb, eye, precision=lax.Precision.HIGHEST)
    return jnp.reshape(out, x.shape).astype(jnp.int32)


def _lut(op: Op, x_dtype: str, table_shape: tuple[int, ...], materialize: bool):
    lo, _ = nx.dtype_range(x_dtype)
    if x_dtype == "int16" and table_shape == (nx.INTERP_ENTRIES,):
        def interpolated(args: list[jax.Array]) -> jax.Array:
            x, table = args
            return interpolated_lookup_jax(x, _i32(table)).astype(table.dtype)
        return interpolated

    def kernel(args: list[jax.Array]) -> jax.Array:
        x, table = args
        index = materialized(x) if materialize and x.ndim else _i32(x)
        return jnp.take(table, index - jnp.int32(lo), mode="clip")
    return kernel


def _requantize(op: Op):
    at = op.attrs

    def kernel(args: list[jax.Array]) -> jax.Array:
        (x,) = args
        scaled = _mbqm(_i32(x) - jnp.int32(at["in_zp"]), at["multiplier"], at["shift"])
        return _saturate_after(scaled, int(at["out_zp"]), at["dtype"])
    return kernel


def _generic(op: Op):
    fn = KERNELS[op.kind]
    return lambda args: fn(jnp, args, op.attrs)


class JaxGolden:
    """The integer graph `g` as pure JAX functions of (member constants, inputs).

    member: the names of the constants each call supplies (a population member's weights,
    biases, thresholds, ...); every other constant is baked in. `limits` optionally bounds
    each member constant's values ({name: (lo, hi)}, default: its dtype's range, int8
    weights +-127): the int32 accumulator proof of the 16x8 path uses them, so the caller
    must keep its values inside (the evolution's genome decoder clips to them).

    materialize_lut: write a lut's indices out before the gather (`materialized`; changes
    no bit); default: on the CPU backend only, where XLA needs it.
    """

    def __init__(self, g: Graph, member: Iterable[str] = (),
                 limits: Mapping[str, tuple[int, int]] | None = None,
                 materialize_lut: bool | None = None):
        floats = [op.output for op in g.ops if g.tensors[op.output].dtype == "float32"]
        if floats:
            raise GoldenJaxError(f"graph {g.name}: {floats[0]!r} is float32; not an integer "
                                 "graph (quantize it first)")
        self.graph = g
        self.member = tuple(member)
        for name in self.member:
            if name not in g.constants:
                raise GoldenJaxError(f"{name!r} is not a constant of graph {g.name}")
        self.limits = {n: tuple(map(int, (limits or {}).get(n, default_limits(g, n))))
                       for n in self.member}
        self.fixed = {k: jnp.asarray(v) for k, v in g.constants.items()
                      if k not in self.member}
        self.materialize_lut = (jax.default_backend() == "cpu" if materialize_lut is None
                                else bool(materialize_lut))
        self._kernels = [self._kernel(op) for op in g.ops]
        xs = g.by_role("input")
        self.x_name = xs[0] if len(xs) == 1 else None  # `step` alone takes any inputs
        self.dt_names = g.by_role("dt")

    # --- construction ------------------------------------------------------------------
    def _bound(self, name: str) -> int:
        if name in self.limits:
            lo, hi = self.limits[name]
            return max(abs(lo), abs(hi))
        return int(np.max(np.abs(self.graph.constants[name].astype(np.int64)), initial=0))

    def _x_span(self, x_name: str, x_zp: int) -> int:
        """Largest |x - zp|: a spike (cast of a bool) spans {0, 1}; else the dtype range."""
        producer = self.graph.producer().get(x_name)
        if producer is not None and producer.kind == "cast" and \
                self.graph.tensors[producer.inputs[0]].dtype == "bool":
            return max(abs(0 - x_zp), abs(1 - x_zp))
        lo, hi = nx.dtype_range(self.graph.tensors[x_name].dtype)
        return max(abs(lo - x_zp), abs(hi - x_zp))

    def _kernel(self, op: Op):
        g = self.graph
        if op.kind == "fully_connected":
            x, w, b = op.inputs
            depth = g.tensors[w].shape[0]
            span = self._x_span(x, int(op.attrs["x_zp"]))
            w_peak = self._bound(w) if w in g.constants else 128
            dot = depth * span * w_peak
            x_dtype = g.tensors[x].dtype
            if x_dtype == "int16":
                b_peak = self._bound(b) if b in g.constants else INT32_LIMIT
                if dot + b_peak >= INT32_LIMIT:
                    raise GoldenJaxError(
                        f"op fully_connected -> {op.output!r}: a 16x8 accumulator can reach "
                        f"{dot + b_peak} >= 2^31; the JAX golden model keeps int32 "
                        "accumulators (no x64) and does not yet split them")
            return _fully_connected(op, {"x_dtype": x_dtype, "float_dot": dot < F32_EXACT})
        if op.kind in ("qadd", "qsub"):
            return _add_sub(op, 1 if op.kind == "qadd" else -1)
        if op.kind == "qmul":
            return _qmul(op)
        if op.kind == "lut":
            return _lut(op, g.tensors[op.inputs[0]].dtype, g.tensors[op.inputs[1]].shape,
                        self.materialize_lut)
        if op.kind == "requantize":
            return _requantize(op)
        if op.kind == "fake_quant" or g.tensors[op.output].dtype == "float32":
            raise GoldenJaxError(f"op {op.kind} -> {op.output!r}: float op in an integer graph")
        return _generic(op)

    # --- running -----------------------------------------------------------------------
    def initial_state(self) -> dict[str, jax.Array]:
        return {k: jnp.asarray(v, self.graph.tensors[k].dtype)
                for k, v in self.graph.initial_state.items()}

    def member_constants(self) -> dict[str, np.ndarray]:
        """The graph's own values of the member constants (one member)."""
        return {n: np.asarray(self.graph.constants[n]) for n in self.member}

    def step(self, consts: Mapping[str, jax.Array], feeds: Mapping[str, jax.Array],
             taps: Iterable[str] = ()) -> dict[str, jax.Array]:
        """One step (`interpret.run_step`): feeds by graph input name -> outputs by name,
        and the values of the tensors named in `taps` (e.g. a spike tensor, to count)."""
        g = self.graph
        env: dict[str, jax.Array] = dict(self.fixed)
        for name in self.member:
            env[name] = jnp.asarray(consts[name]).astype(g.tensors[name].dtype)
        for name in g.inputs:
            env[name] = jnp.asarray(feeds[name]).astype(g.tensors[name].dtype)
        for op, kernel in zip(g.ops, self._kernels, strict=True):
            value = kernel([env[n] for n in op.inputs])
            env[op.output] = jnp.asarray(value).astype(g.tensors[op.output].dtype)
        return {name: env[name] for name in (*g.outputs, *taps)}

    def run(self, consts: Mapping[str, jax.Array], xs: jax.Array, dts: jax.Array | None = None,
            outputs: Iterable[str] | None = None, last: bool = False) -> dict[str, jax.Array]:
        """`interpret.run_sequence` for one sequence: xs (T, *x step shape) integer (already
        on the input's grid); dts (T, *dt shape) integer or None (1.0 on its grid).

        Returns the named tensors (default: every graph output; any tensor of the graph
        may be named) stacked over time,
        (T, *shape), or with `last` only the final step's values. Pure: jit and vmap it
        (over consts for a population, over xs for a batch)."""
        g = self.graph
        names = list(g.outputs if outputs is None else outputs)
        taps = [n for n in names if n not in g.outputs]
        x_shape = g.tensors[self.x_name].shape
        dt_default = {n: jnp.asarray(dt_one(g.tensors[n])) for n in self.dt_names}

        def body(state, inp):
            x_t, dt_t = inp
            feeds = {self.x_name: jnp.reshape(x_t, x_shape), **state}
            for n in self.dt_names:
                feeds[n] = dt_default[n] if dt_t is None else jnp.reshape(
                    dt_t, g.tensors[n].shape)
            out = self.step(consts, feeds, taps)
            new = {s_in: out[s_out] for s_in, s_out in g.state_pairs}
            return new, None if last else {n: out[n] for n in names}

        state0 = self.initial_state()
        if last:
            # the final outputs: run all but the last step in the scan, then one more step
            def final(state, inp):
                return body(state, inp)[0], None
            head = (xs[:-1], None if dts is None else dts[:-1])
            state, _ = lax.scan(final, state0, head)
            feeds = {self.x_name: jnp.reshape(xs[-1], x_shape), **state}
            for n in self.dt_names:
                feeds[n] = dt_default[n] if dts is None else jnp.reshape(dts[-1],
                                                                          g.tensors[n].shape)
            out = self.step(consts, feeds, taps)
            return {n: out[n] for n in names}
        _, trace = lax.scan(body, state0, (xs, dts))
        return trace

    def run_batch(self, consts: Mapping[str, jax.Array], xs: jax.Array,
                  dts: jax.Array | None = None, outputs: Iterable[str] | None = None,
                  last: bool = False) -> dict[str, jax.Array]:
        """`run` vmapped over sequences: xs (N, T, *features) -> (N, T, *shape) (or (N,
        *shape) with `last`). Not jitted (compose it first, then jit)."""
        x_shape = self.graph.tensors[self.x_name].shape
        n, steps = xs.shape[:2]
        xs = jnp.reshape(xs, (n, steps, *x_shape))
        fn = lambda x, d: self.run(consts, x, d, outputs, last)  # noqa: E731
        return jax.vmap(fn, in_axes=(0, None if dts is None else 0))(xs, dts)


def default_limits(g: Graph, name: str) -> tuple[int, int]:
    """The range a member constant may take: +-127 for a FullyConnected weight (symmetric
    int8), the dtype range otherwise."""
    lo, hi = nx.dtype_range(str(g.constants[name].dtype))
    if any(op.kind == "fully_connected" and op.inputs[1] == name for op in g.ops):
        return -WEIGHT_LIMIT, WEIGHT_LIMIT
    return lo, hi


def run_batch_jit(g: Graph, xs: np.ndarray, dts: np.ndarray | None = None
                  ) -> dict[str, np.ndarray]:
    """Convenience: `interpret.run_batch` on already-quantized inputs, jitted once."""
    model = JaxGolden(g)
    fn = jax.jit(lambda x, d: model.run_batch({}, x, d))
    return {k: np.asarray(v) for k, v in fn(jnp.asarray(xs),
                                            None if dts is None else jnp.asarray(dts)).items()}
