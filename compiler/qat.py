"""QAT: a model's own fake-quant parameters become the compiled model's parameters.

The tracer calls `recognize` on every nested call (`trace.SPECIAL_CALLS`). The fake-quant
`custom_jvp_call`s of `ncc.models.quantization` become IR:

- `fake_quant(x, p)` of an activation -> a `fake_quant` op carrying p (the quantizer gives
  its input and output exactly p, then drops it);
- `fake_quant(W, p)` of a constant -> the on-grid constant dequantize(quantize(W, p)),
  its tensor annotated with p (the quantizer keeps exactly those integers);
- `fake_quant_table(x, fn, p_in, p_out)` -> fake_quant(p_in), the nonlinearity ops tagged
  `table=fn`, fake_quant(p_out): the quantizer builds that table with the core's
  `build_table`, the very table the training forward looks up;
- `fake_quant_dense(x, W, b, p_x, p_w, p_out)` (below) -> fake_quant(p_x), matmul by the
  on-grid W, add of the bias b (the quantizer's `ncc.numerics.quantize_bias` of it is the
  int32 bias the training forward computes), fake_quant(p_out);
- `fake_quant_binary(kind, a, b, p_a, p_b, p_out)` -> fake_quant(p_a), fake_quant(p_b), the
  add / sub / mul, fake_quant(p_out): the quantizer's qadd / qsub / qmul, whose fixed-point
  arithmetic the training forward computes (same reason as `fake_quant_dense` below);
- a spiking neuron's integer decay (`INT_DECAY_MARKER`, operands v and a constant beta) on
  its membrane grid p -> fake_quant(p), then for one beta (or a bit shift) a `mul` by beta
  tagged with the decay's exact integer table, for per-neuron betas a diagonal matmul whose
  per-channel fixed-point multipliers are exactly quantize_multiplier(beta_n); fake_quant(p);
- `fake_quant_dynamic` (scale still a traced value) -> a TraceError: freeze first.

Why `fake_quant_dense` exists: a float `fake_quant(x @ fake_quant(W) + b)` cannot equal the
integer fully-connected kernel bit for bit. The float32 sum of products rounds (unless every
scale is a power of two), the float bias is not the int32 bias, and above all the golden
requantization (`multiply_by_quantized_multiplier`, TFLite's double rounding) is not the
correctly rounded x / s_out that `fake_quant` computes: with s_x s_w / s_out = 2^-3 an
accumulator of 3 gives 0 in float and 1 in the integer kernel. `fake_quant_dense` computes
the integer kernel itself (int32 accumulation in JAX, the core's fixed-point multiplier) with
a straight-through float gradient, so the training forward is the deployed arithmetic.
It lives next to `fake_quant` in `ncc.models.quantization` (training code imports it there).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ncc import numerics as nx
from ncc.compiler.builder import GraphBuilder, TraceError
from ncc.compiler.interpret import evaluate
from ncc.compiler.ir import QuantParams, Tensor
from ncc.models.quantization import (
    BINARY_MARKER,
    DENSE_MARKER,
    INT_DECAY_MARKER,
    fake_quant_spec_from_jaxpr_eqn,
)

# --- recognition (tracer side) ---------------------------------------------------------------


def _call_payload(eqn: Any, marker: str) -> dict[str, Any] | None:
    """The JSON payload of a `custom_jvp_call` named `marker{...}`, else None."""
    if getattr(eqn.primitive, "name", None) != "custom_jvp_call":
        return None
    closed = eqn.params.get("call_jaxpr")
    dbg = getattr(getattr(closed, "jaxpr", closed), "debug_info", None)
    for text in (getattr(dbg, "func_name", None), getattr(dbg, "func_src_info", None)):
        if isinstance(text, str) and text.startswith(marker + "{"):
            return json.JSONDecoder().raw_decode(text[len(marker):])[0]
    return None


def fake_quant_attrs(p: QuantParams) -> dict[str, Any]:
    """Attributes of the IR `fake_quant` op for core parameters p."""
    return {"scale": tuple(p.scale), "zero_point": tuple(p.zero_point), "dtype": p.dtype,
            "axis": p.axis}


def constant_value(b: GraphBuilder, name: str) -> np.ndarray | None:
    """The value of `name` if it is a constant or computed from constants only.

    Iterative and remembered in `b.known_values`: each op is evaluated at most once, so
    asking about every tensor of a deep graph (an unrolled window) stays linear."""
    memo = b.known_values
    stack = [name]
    while stack:
        n = stack[-1]
        if n in memo:
            stack.pop()
            continue
        made = None if n in b.constants else b.producer(n)
        if made is None:
            memo[n] = b.constants.get(n)
            stack.pop()
            continue
        pending = [i for i in made.inputs if i not in memo]
        if pending:
            stack.extend(pending)
            continue
        args = [memo[i] for i in made.inputs]
        memo[n] = (None if any(a is None for a in args) else
                   np.asarray(evaluate(made, args)).astype(b.tensors[n].dtype))
        stack.pop()
    return memo[name]


def _on_grid_constant(b: GraphBuilder, value: np.ndarray, p: QuantParams, hint: str) -> str:
    grid = nx.dequantize(nx.quantize(value, p), p).astype(np.float32)
    name = b.constant(grid, hint)
    t = b.tensors[name]
    b.tensors[name] = Tensor(name, t.shape, t.dtype, p)
    return name


def _activation(b: GraphBuilder, x: str, p: QuantParams) -> str:
    if p.per_axis:
        raise TraceError(f"fake_quant at {b.source}: per-axis parameters on an activation; "
                         "ncc quantizes activations per tensor")
    if p.bits not in (8, 16) or not p.signed:
        raise TraceError(f"fake_quant at {b.source}: a {p.bits}-bit "
                         f"{'' if p.signed else 'un'}signed activation grid; the integer "
                         "targets hold int8 or int16 activations")
    return b.emit("fake_quant", [x], **fake_quant_attrs(p))


def _table(b: GraphBuilder, x: str, fn: str, p_in: QuantParams,
           p_out: QuantParams) -> str:
    y = _activation(b, x, p_in)
    if fn == "lecun_tanh":
        y = b.emit("mul", [y, b.constant(np.float32(nx.LECUN_TANH_GAIN))], table=fn)
        y = b.emit("tanh", [y], table=fn)
        y = b.emit("mul", [y, b.constant(np.float32(nx.LECUN_TANH_AMPLITUDE))], table=fn)
    elif fn in ("sigmoid", "tanh", "exp", "softplus"):
        y = b.emit(fn, [y], table=fn)
    elif fn in ("cospi", "sinpi"):  # a phasor encoding: cos / sin of pi x
        y = b.emit("mul", [y, b.constant(np.float32(np.pi))], table=fn)
        y = b.emit(fn[:3], [y], table=fn)
    elif fn == "rsqrt":  # a phasor's 1 / |z| from |z|^2
        y = b.emit("sqrt", [y], table=fn)
        y = b.emit("pow", [y, b.constant(np.float32(-1.0))], table=fn)
    else:
        raise TraceError(f"fake_quant_table at {b.source}: no IR form for table {fn!r}")
    return _activation(b, y, p_out)


def _dense(b: GraphBuilder, payload: dict[str, Any], ins: list[str]) -> str:
    p_x, p_w, p_out = (QuantParams.from_dict(payload[k]) for k in ("x", "w", "out"))
    x, kernel, bias = ins
    w_value, b_value = constant_value(b, kernel), constant_value(b, bias)
    if w_value is None or b_value is None:
        raise TraceError(f"fake_quant_dense at {b.source}: kernel and bias must be constants")
    w = _on_grid_constant(b, w_value, p_w, kernel)
    # the bias stays real: the quantizer's `quantize_bias` gives it the very int32 values
    # that the training forward computes from it (the same formula, in JAX)
    bias_name = b.constant(np.asarray(b_value, np.float32).reshape(-1), bias)
    t = b.tensors[bias_name]
    scale = nx.bias_scale(p_x, p_w)
    b.tensors[bias_name] = Tensor(bias_name, t.shape, t.dtype,
                                  QuantParams(tuple(scale), (0,) * len(scale), bits=32, axis=0))
    y = b.emit("matmul", [_activation(b, x, p_x), w])
    y = b.emit("add", [y, bias_name])
    return _activation(b, y, p_out)


def _binary(b: GraphBuilder, payload: dict[str, Any], ins: list[str]) -> str:
    p_a, p_b, p_out = (QuantParams.from_dict(payload[k]) for k in ("a", "b", "out"))
    a, c = ins
    y = b.emit(payload["kind"], [_activation(b, a, p_a), _activation(b, c, p_b)])
    return _activation(b, y, p_out)


def _int_decay(b: GraphBuilder, payload: dict[str, Any], ins: list[str]) -> str:
    p = QuantParams.from_dict(payload["membrane"])
    v, beta_name = ins
    beta = constant_value(b, beta_name)
    if beta is None:
        raise TraceError(f"integer decay at {b.source}: beta must be a constant (a trained "
                         "parameter), not computed from the inputs")
    beta = np.clip(np.asarray(beta, np.float32), 0, 1).reshape(-1, beta.shape[-1])[0]
    v = _activation(b, v, p)
    shift = payload.get("shift")
    if shift is not None or np.all(beta == beta[0]):  # one decay: an exact integer table
        table = nx.int_decay_table_name(None if shift is not None else float(beta[0]), shift)
        y = b.emit("mul", [v, b.constant(np.float32(1 - 2.0 ** -shift if shift is not None
                                                    else beta[0]))], table=table)
        return _activation(b, y, p)
    # per-neuron decays: v @ diag(beta), weights 1 at per-channel scale beta_n, so the
    # fully-connected kernel's requantization is MBQM(v_n, quantize_multiplier(beta_n));
    # a beta of 0 is a weight 0 (scale 1): the neuron forgets at once, as MBQM(v, 0) does
    scales = np.where(beta > 0, beta, 1.0)
    p_w = QuantParams(tuple(float(x) for x in scales), (0,) * len(beta), bits=8, axis=1)
    _, mult, shift_n = nx.dense_multipliers(p, p_w, p)
    decay_m, decay_e = nx.decay_multipliers(beta)
    for m, e, dm, de, x in zip(mult, shift_n, decay_m, decay_e, beta, strict=True):
        if x > 0 and (m, e) != (dm, de):
            raise TraceError(f"integer decay at {b.source}: the multiplier of beta {x} does "
                             "not survive the fully-connected form; use a scalar beta")
    w = _on_grid_constant(b, np.diag(beta).astype(np.float32), p_w, "decay")
    return _activation(b, b.emit("matmul", [v, w]), p)


def recognize(b: GraphBuilder, eqn: Any, ins: list[str]) -> list[str] | None:
    """IR for an ncc fake-quant call (see the module docstring), or None for other eqns."""
    ins = ins[int(eqn.params.get("num_consts", 0)):]  # closed-over constants come first
    dense = _call_payload(eqn, DENSE_MARKER)
    if dense is not None:
        return [_dense(b, dense, ins)]
    binary = _call_payload(eqn, BINARY_MARKER)
    if binary is not None:
        return [_binary(b, binary, ins)]
    decay = _call_payload(eqn, INT_DECAY_MARKER)
    if decay is not None:
        return [_int_decay(b, decay, ins)]
    spec = fake_quant_spec_from_jaxpr_eqn(eqn)
    if spec is None:
        return None
    if spec.kind == "dynamic":
        raise TraceError(f"fake_quant_dynamic at {b.source}: the weights' scale is still a "
                         "traced value; freeze(model, weights=True) before compiling")
    (x,) = ins
    if spec.kind == "table":
        return [_table(b, x, spec.fn, spec.in_params, spec.params)]
    value = constant_value(b, x)
    if value is not None:
        return [_on_grid_constant(b, value, spec.params, x)]
    return [_activation(b, x, spec.params)]
