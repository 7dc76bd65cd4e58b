"""A causal convolution over time as a step: a shift register of past inputs and a dense.

`spyx.ssm.MambaBlock` runs a depthwise `nnx.Conv` over the time axis of a whole sequence
with padding `(k - 1, 0)`: output `t` reads inputs `t - k + 1 .. t` (zeros before 0).
As a step that is a window state `w` of the last `span - 1` inputs, `span = (k - 1) d + 1`
(`d` the kernel dilation), oldest first, zeros at t = 0:

    full_t = concat(w_{t-1}, x_t)            (N, span, C_in)
    y_t    = flatten(full_t) @ W + (bias)    W: (span * C_in, C_out), from the kernel
    w_t    = full_t[:, 1:]

`W` holds the kernel's taps at rows `j d`, zero elsewhere and outside each output
channel's group (a depthwise kernel is block diagonal), so every target runs the window
as one dense layer with int32 accumulation. A convolution over time that looks ahead
(padding after the sequence, `SAME`), strides or dilates its input over time, or is not
1-D is refused with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ncc.compiler.trace import TraceError


@dataclass(frozen=True)
class ConvCall:
    """One `conv_general_dilated` call in canonical terms: lhs (N, C, W) axes, rhs (O, I, W)
    axes, output (N, C, W) axes, the time axis' padding and the kernel's span over time."""

    lhs_spec: tuple[int, ...]
    rhs_spec: tuple[int, ...]
    out_spec: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    span: int
    dilation: int
    groups: int

    def out_length(self, lhs_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The output's length along each spatial axis (stride 1 assumed)."""
        return tuple(lhs_shape[a] + lo + hi - self.span + 1
                     for a, (lo, hi) in zip(self.lhs_spec[2:], self.pads, strict=True))


def describe(lhs: Any, rhs: Any, window_strides: Any, padding: Any, lhs_dilation: Any,
             rhs_dilation: Any, dimension_numbers: Any, feature_group_count: int) -> ConvCall:
    """The call's layout, padding and span (first spatial axis; callers refuse others)."""
    dn = lax.conv_dimension_numbers(np.shape(lhs), np.shape(rhs), dimension_numbers)
    spatial = len(dn.lhs_spec) - 2
    rhs_dil = tuple(rhs_dilation or (1,) * spatial)
    window = [np.shape(rhs)[a] for a in dn.rhs_spec[2:]]
    spans = [(k - 1) * d + 1 for k, d in zip(window, rhs_dil, strict=True)]
    if isinstance(padding, str):
        in_spatial = [np.shape(lhs)[a] for a in dn.lhs_spec[2:]]
        padding = lax.padtype_to_pads(in_spatial, spans, window_strides, padding)
    return ConvCall(tuple(dn.lhs_spec), tuple(dn.rhs_spec), tuple(dn.out_spec),
                    tuple((int(lo), int(hi)) for lo, hi in padding), int(spans[0]),
                    int(rhs_dil[0]), int(feature_group_count))


def over_time(call: ConvCall, lhs_shape: tuple[int, ...], steps: int) -> bool:
    """Whether the convolution's output runs over the time axis (`steps` long)."""
    return steps in call.out_length(lhs_shape)


def check_causal(call: ConvCall, lhs_shape: tuple[int, ...], steps: int, window_strides: Any,
                 lhs_dilation: Any, batch_group_count: int, where: str) -> None:
    """Refuse a convolution over time that is not a causal, stride-1 1-D one."""
    head = f"convolution over time at {where}"
    if len(call.pads) != 1:
        raise TraceError(f"{head} is {len(call.pads)}-D; ncc compiles 1-D convolutions over "
                         "time (its window becomes state)")
    if tuple(window_strides) != (1,) or tuple(lhs_dilation or (1,)) != (1,):
        raise TraceError(f"{head} strides or dilates time (strides {tuple(window_strides)}, "
                         f"input dilation {tuple(lhs_dilation or (1,))}): one output per "
                         "input step is what a step can compute")
    if batch_group_count != 1:
        raise TraceError(f"{head} groups its batch (batch_group_count {batch_group_count})")
    lo, hi = call.pads[0]
    extra = lhs_shape[call.lhs_spec[2]] - steps  # frames the layer put before its input
    if hi != 0 or extra < 0:
        raise TraceError(f"{head} is not causal (padding ({lo}, {hi}) around {steps} steps "
                         f"for a kernel spanning {call.span}): output t reads inputs after "
                         f"t; ncc compiles causal convolutions, padding ({call.span - 1}, 0)")


def initial_window(call: ConvCall, lhs_shape: tuple[int, ...]) -> np.ndarray:
    """The window state at t = 0: zeros (N, span - 1, C_in), float32."""
    n, c = lhs_shape[call.lhs_spec[0]], lhs_shape[call.lhs_spec[1]]
    return np.zeros((n, call.span - 1, c), np.float32)


def window_weights(kernel: Any, call: ConvCall) -> Any:
    """The dense `(span * C_in, C_out)` of a kernel in its own layout (see module doc)."""
    with jax.ensure_compile_time_eval():
        k = jnp.transpose(kernel, (call.rhs_spec[2], call.rhs_spec[1], call.rhs_spec[0]))
        taps, per_group, c_out = k.shape  # (K, C_in / G, C_out)
        c_in = per_group * call.groups
        group = np.arange(c_out) // (c_out // call.groups)
        select = np.zeros((c_in, per_group, c_out), np.float32)  # [input ch, i, output]
        select[group[None, :] * per_group + np.arange(per_group)[:, None],
               np.arange(per_group)[:, None], np.arange(c_out)[None, :]] = 1.0
        place = np.zeros((call.span, taps), np.float32)  # tap j sits at window row j d
        place[np.arange(taps) * call.dilation, np.arange(taps)] = 1.0
        w = jnp.einsum("pj,cio,jio->pco", place, select, k.astype(jnp.float32))
        return jnp.reshape(w, (call.span * c_in, c_out))


def window_step(call: ConvCall, lhs: Any, kernel: Any, window: Any) -> tuple[Any, Any]:
    """One step: `lhs` the call's input at T = 1 (its own front padding before the step's
    input), `window` (N, span - 1, C_in) -> (output in the call's layout, next window)."""
    x = jnp.transpose(lhs, (call.lhs_spec[0], call.lhs_spec[2], call.lhs_spec[1]))[:, -1:]
    full = jnp.concatenate([window.astype(x.dtype), x], axis=1)
    n = full.shape[0]
    y = jnp.reshape(full, (n, -1)) @ window_weights(kernel, call).astype(x.dtype)
    y = y[:, None, :]  # (N, W = 1, C_out) -> the call's output layout
    canonical = (call.out_spec[0], call.out_spec[2], call.out_spec[1])
    return jnp.transpose(y, np.argsort(canonical)), full[:, 1:]
