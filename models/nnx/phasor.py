"""Flax NNX phasor layers with fake-quant: `PhasorMLP` and `ResonateFire`.

Both are spyx 1.0's (`spyx.phasor.PhasorMLP`, `spyx.phasor.ResonateFire`: the same
parameters, drawn the same way) with complex numbers carried as real pairs `[re, im]`:

PhasorMLP (stateless, `__call__(x) -> y`, x (..., in) real):
```
z = exp(i pi x) = [cospi(x), sinpi(x)]                 (..., 2 in), unit phasors
u = [z_re, z_im] @ [[K_re, K_im], [-K_im, K_re]] + [b_re, b_im]    per hidden layer
z = u / |u|             |u|^2 = u_re^2 + u_im^2        (spyx: u / (|u| + 1e-8))
y = [z_re, z_im] @ [[R_re], [-R_im]]                   (..., out), Re(z @ R)
```
ResonateFire (a step, `__call__(x, h) -> (spikes, h')`, h = [z_re, z_im] (B, 2 n)):
```
a  = exp(dt (-softplus(raw_lambda) + i omega))          |a| <= 1
h' = [x, z_re, z_im] @ [[1, 0], [diag(a_re), diag(a_im)], [diag(-a_im), diag(a_re)]]
s  = spike(h'_re - threshold)                           (B, n), 0 / 1
```

Fake-quant (a QuantConfig, int8 throughout): `set_mode(layer, "calibrate")`, run data,
`freeze(layer, weights=True)`; the forward is then the deployed integer arithmetic.
PhasorMLP's normalisation is written in a bounded form, because 1 / (|u| + 1e-8) spans
~1e8 on an observed range (0 dB at int8 when the compiler meets it as a division):
```
sq = u * u              int8 MUL onto q_sq (observed)
r2 = sq_re + sq_im      int8 ADD onto q_r2 (observed)
g  = rsqrt(r2)          256-entry table onto [0, 1 / sqrt(s_r2)]: 1 / |u| at the smallest
                        non-zero |u|^2 the grid holds (r2 = 0 saturates there)
z  = u * [g, g]         int8 MUL onto the unit grid [-1, 1] (scale 1 / 127)
```
and the input encoding is two tables (cospi, sinpi) from x's grid onto the unit grid.
Every dense layer is the int8 fully-connected kernel (`fake_quant_dense`), weights
symmetric per output channel. ResonateFire is the LRU's form (`ncc.models.nnx.ssm`): x and
the state on one grid, one int8 fully-connected kernel, and the spike an integer
comparison on that grid.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import spyx.axn
from flax import nnx

from ncc.models.nnx.fake_quant import FakeQuant, live_weight
from ncc.models.nnx.ssm import WeightGrid
from ncc.models.quantization import (
    TABLE_FUNCTIONS,
    QuantConfig,
    QuantParams,
    asymmetric_params,
    fake_quant_binary,
    fake_quant_dense,
    fake_quant_table,
    symmetric_params,
)

__all__ = ["PhasorMLP", "PhasorDense", "ResonateFire", "UNIT_GRID", "rsqrt_grid",
           "run_resonate_fire"]

UNIT_GRID = symmetric_params(1.0, 8)
"""The int8 grid of unit phasors' parts: [-1, 1], scale 1 / 127, zero point 0."""
EPS = 1e-8
"""spyx's PhasorActivation eps: u / (|u| + EPS) in float."""


def rsqrt_grid(p_r2: QuantParams) -> QuantParams:
    """Grid of g = 1 / sqrt(r2) for r2 on p_r2: [0, 1 / sqrt(s_r2)], its top the value at
    the smallest non-zero level (r2 = 0 saturates there)."""
    return asymmetric_params(0.0, float(TABLE_FUNCTIONS["rsqrt"](np.float64(p_r2.scale[0]))), 8)


def _check_config(cfg: QuantConfig, name: str) -> None:
    if cfg.keep_float or cfg.weight_bits != 8 or cfg.activation_bits != 8 or \
            cfg.state_bits != 8:
        raise ValueError(f"{name} fake-quant is int8 throughout (weights, activations, "
                         "state) with no part kept float; got " + repr(cfg))


def _complex_glorot(key: jax.Array, n_in: int, n_out: int) -> tuple[jax.Array, jax.Array]:
    """(re, im) (n_in, n_out), each N(0, 1 / (2 n_in)) (spyx's complex Glorot draw)."""
    k_r, k_i = jax.random.split(key)
    scale = jnp.sqrt(1.0 / (2.0 * n_in))
    return (jax.random.normal(k_r, (n_in, n_out)) * scale,
            jax.random.normal(k_i, (n_in, n_out)) * scale)


def _complex_kernel(k_re: jax.Array, k_im: jax.Array) -> jax.Array:
    """[[K_re, K_im], [-K_im, K_re]] (2 in, 2 out): [z_re, z_im] @ it = [Re, Im] of z @ K."""
    return jnp.concatenate([jnp.concatenate([k_re, k_im], 1),
                            jnp.concatenate([-k_im, k_re], 1)], 0)


def _weight_grid(w: np.ndarray, cfg: QuantConfig) -> QuantParams:
    """Static symmetric grid of w (in, out): per output channel or per tensor."""
    peak = np.abs(np.asarray(w))
    return symmetric_params(peak.max(axis=0), 8, axis=1) if cfg.per_channel else \
        symmetric_params(peak.max(), 8)


def _dense(z: jax.Array, w: jax.Array, b: jax.Array, p_z: QuantParams, grid: WeightGrid,
           point: FakeQuant, cfg: QuantConfig) -> jax.Array:
    """z @ w + b onto `point`'s grid: the int8 kernel once the weights are frozen, else
    float with live per-channel weight fake-quant (QAT before `freeze(weights=True)`)."""
    if grid.params is not None:
        return fake_quant_dense(z, w, b, p_z, grid.params, point.params)
    return point(z @ live_weight(w, 8, cfg.per_channel) + b)


def _points_ready(points: list[FakeQuant]) -> bool:
    return all(p.enabled and p.mode == "quant" and p.params is not None for p in points)


class PhasorDense(nnx.Module):
    """One hidden phasor layer: complex dense (K, b) then projection onto the unit circle,
    with its fake-quant points (u, u^2, |u|^2) and its weight grid."""

    def __init__(self, in_features: int, out_features: int, *, config: QuantConfig,
                 quantized: bool, rngs: nnx.Rngs) -> None:
        k_re, k_im = _complex_glorot(rngs.params(), in_features, out_features)
        self.kernel_re, self.kernel_im = nnx.Param(k_re), nnx.Param(k_im)
        self.bias_re = nnx.Param(jnp.zeros((out_features,)))
        self.bias_im = nnx.Param(jnp.zeros((out_features,)))
        self.q_u, self.q_sq, self.q_r2 = (FakeQuant.for_part(config, "activations", 8)
                                          for _ in range(3))
        for point in (self.q_u, self.q_sq, self.q_r2):
            point.enabled = quantized
        self.w = WeightGrid()
        self.features = int(out_features)

    def kernel(self) -> jax.Array:
        """(2 in, 2 out) real form of the complex kernel."""
        return _complex_kernel(self.kernel_re[...], self.kernel_im[...])

    def bias(self) -> jax.Array:
        """(2 out,) [b_re, b_im]."""
        return jnp.concatenate([self.bias_re[...], self.bias_im[...]])

    def float_step(self, z: jax.Array) -> jax.Array:
        """spyx's PhasorLinear + PhasorActivation on [re, im] pairs (observing in
        "calibrate" mode)."""
        u = self.q_u(z @ self.kernel() + self.bias())
        h = self.features
        sq = self.q_sq(u * u)
        r2 = self.q_r2(sq[..., :h] + sq[..., h:])
        mag = jnp.sqrt(r2) + EPS
        return u / jnp.concatenate([mag, mag], -1)

    def quant_step(self, z: jax.Array, config: QuantConfig) -> jax.Array:
        """The deployed int8 arithmetic (z on UNIT_GRID, the result too)."""
        pu, psq, pr2 = self.q_u.params, self.q_sq.params, self.q_r2.params
        u = _dense(z, self.kernel(), self.bias(), UNIT_GRID, self.w, self.q_u, config)
        h = self.features
        sq = fake_quant_binary("mul", u, u, pu, pu, psq)
        r2 = fake_quant_binary("add", sq[..., :h], sq[..., h:], psq, psq, pr2)
        p_g = rsqrt_grid(pr2)
        g = fake_quant_table(r2, "rsqrt", pr2, p_g)
        return fake_quant_binary("mul", u, jnp.concatenate([g, g], -1), pu, p_g, UNIT_GRID)


class PhasorMLP(nnx.Module):
    """spyx's PhasorMLP: x (..., in) real -> y (..., out) real; stateless (no step state).

    Args:
        in_features, hidden_features, out_features: sizes. depth: hidden layers (>= 1).
        quantization: a QuantConfig (or its dict) for int8 fake-quant (None = float).
        rngs: drawn as spyx draws them, so the same seed gives spyx's parameters.
    """

    def __init__(self, in_features: int, hidden_features: int, out_features: int,
                 depth: int = 2, *, quantization: QuantConfig | dict | None = None,
                 rngs: nnx.Rngs) -> None:
        if depth < 1:
            raise ValueError("PhasorMLP requires depth >= 1.")
        if isinstance(quantization, dict):
            quantization = QuantConfig.from_dict(quantization)
        on, cfg = quantization is not None, quantization or QuantConfig()
        if on:
            _check_config(cfg, "PhasorMLP")
        self.config, self.quantized = cfg, on
        sizes = [in_features] + [hidden_features] * depth
        self.layers = nnx.List([PhasorDense(a, b, config=cfg, quantized=on, rngs=rngs)
                                for a, b in zip(sizes[:-1], sizes[1:], strict=True)])
        r_re, r_im = _complex_glorot(rngs.params(), hidden_features, out_features)
        self.readout_re, self.readout_im = nnx.Param(r_re), nnx.Param(r_im)
        self.q_x = FakeQuant.for_part(cfg, "inputs", 8)
        self.q_y = FakeQuant.for_part(cfg, "activations", 8)
        self.q_x.enabled = self.q_y.enabled = on
        self.w_y = WeightGrid()
        self.in_features, self.hidden_features = int(in_features), int(hidden_features)
        self.out_features, self.depth = int(out_features), int(depth)
        self.input_shape = (self.in_features,)

    @classmethod
    def from_spyx(cls, net: Any, *,
                  quantization: QuantConfig | dict | None = None) -> PhasorMLP:
        """A PhasorMLP with the parameters of a `spyx.phasor.PhasorMLP` (copied)."""
        linears = [m for m in net.layers if hasattr(m, "kernel_re")]
        k = np.asarray(linears[0].kernel_re[...])
        ours = cls(k.shape[0], k.shape[1], np.asarray(net.readout.proj.kernel_re[...]).shape[1],
                   len(linears), quantization=quantization, rngs=nnx.Rngs(0))
        for mine, theirs in zip(ours.layers, linears, strict=True):
            for name in ("kernel_re", "kernel_im", "bias_re", "bias_im"):
                getattr(mine, name)[...] = jnp.asarray(np.asarray(getattr(theirs, name)[...]))
        ours.readout_re[...] = jnp.asarray(np.asarray(net.readout.proj.kernel_re[...]))
        ours.readout_im[...] = jnp.asarray(np.asarray(net.readout.proj.kernel_im[...]))
        return ours

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (for `ncc.models.save_checkpoint`)."""
        return {"in_features": self.in_features, "hidden_features": self.hidden_features,
                "out_features": self.out_features, "depth": self.depth,
                "quantization": self.config.to_dict() if self.quantized else None}

    def readout_kernel(self) -> jax.Array:
        """(2 hidden, out): [z_re, z_im] @ it = Re(z @ R)."""
        return jnp.concatenate([self.readout_re[...], -self.readout_im[...]], 0)

    def freeze_weights(self) -> dict[str, QuantParams]:
        """Static weight grids of every dense layer (`fake_quant.freeze(weights=True)`)."""
        if not self.quantized:
            return {}
        frozen = {}
        for i, layer in enumerate(self.layers):
            layer.w.params, layer.w.mode = _weight_grid(layer.kernel(), self.config), "quant"
            frozen[f"layers/{i}/w"] = layer.w.params
        self.w_y.params, self.w_y.mode = _weight_grid(self.readout_kernel(), self.config), \
            "quant"
        frozen["w_y"] = self.w_y.params
        return frozen

    def _quant_mode(self) -> bool:
        points = [self.q_x, self.q_y] + [p for m in self.layers
                                         for p in (m.q_u, m.q_sq, m.q_r2)]
        if not self.quantized or self.q_x.mode != "quant":
            return False
        if not _points_ready(points):
            raise ValueError("PhasorMLP in 'quant' mode needs every point calibrated and "
                             "frozen (set_mode 'calibrate', run data, freeze)")
        return True

    def exact(self) -> bool:
        """True when the forward is the deployed integer arithmetic, bit for bit."""
        return self._quant_mode() and self.w_y.params is not None and all(
            m.w.params is not None for m in self.layers)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x (..., in) real -> y (..., out) real."""
        if self._quant_mode():
            px = self.q_x.params
            z = jnp.concatenate([fake_quant_table(x, "cospi", px, UNIT_GRID),
                                 fake_quant_table(x, "sinpi", px, UNIT_GRID)], -1)
            for layer in self.layers:
                z = layer.quant_step(z, self.config)
            kernel = self.readout_kernel()
            return _dense(z, kernel, jnp.zeros((kernel.shape[1],)), UNIT_GRID, self.w_y,
                          self.q_y, self.config)
        x = self.q_x(x)
        z = jnp.concatenate([jnp.cos(jnp.pi * x), jnp.sin(jnp.pi * x)], -1)
        for layer in self.layers:
            z = layer.float_step(z)
        return self.q_y(z @ self.readout_kernel())


def _diag(v: jax.Array) -> jax.Array:
    """diag(v) (n, n) as eye * v (no pad / iota in the trace)."""
    return np.eye(v.shape[0], dtype=np.float32) * v


class ResonateFire(nnx.Module):
    """spyx's ResonateFire step: x (B, n), h (B, 2 n) [z_re, z_im] -> spikes (B, n), h'.

    Args:
        hidden_shape: (n,), one axis. lambda_init, omega_init: scalar constants, else
        drawn per unit as spyx draws them. threshold: on Re(z). dt: the pole's time step.
        surrogate_k: superspike's k (the spike's surrogate gradient; forward Heaviside).
        quantization: a QuantConfig (or its dict) for int8 fake-quant (None = float).
    """

    def __init__(self, hidden_shape: tuple[int, ...], lambda_init: float | None = None,
                 omega_init: float | None = None, threshold: float = 1.0, dt: float = 1.0,
                 surrogate_k: float = 25.0, *, quantization: QuantConfig | dict | None = None,
                 rngs: nnx.Rngs) -> None:
        hidden_shape = tuple(int(d) for d in hidden_shape)
        if len(hidden_shape) != 1:
            raise ValueError(f"ResonateFire takes a 1-axis hidden_shape, got {hidden_shape}")
        if dt <= 0:
            raise ValueError(f"dt must be positive; got {dt}.")
        trunc = nnx.initializers.truncated_normal
        if lambda_init is None:
            raw = trunc(stddev=0.25)(rngs.params(), hidden_shape) + 0.5
        else:
            raw = jnp.log(jnp.expm1(jnp.full((), float(lambda_init))))
        self.raw_lambda = nnx.Param(jnp.asarray(raw, jnp.float32))
        omega = (trunc(stddev=0.5)(rngs.params(), hidden_shape) + 1.0 if omega_init is None
                 else jnp.full((), float(omega_init)))
        self.omega = nnx.Param(jnp.asarray(omega, jnp.float32))
        self.hidden_shape, self.n = hidden_shape, hidden_shape[0]
        self.lambda_init = None if lambda_init is None else float(lambda_init)
        self.omega_init = None if omega_init is None else float(omega_init)
        self.threshold, self.dt, self.surrogate_k = float(threshold), float(dt), \
            float(surrogate_k)
        self.spike = spyx.axn.superspike(self.surrogate_k)
        if isinstance(quantization, dict):
            quantization = QuantConfig.from_dict(quantization)
        on, cfg = quantization is not None, quantization or QuantConfig()
        if on:
            _check_config(cfg, "ResonateFire")
        self.config, self.quantized = cfg, on
        self.q_state = FakeQuant.for_part(cfg, "state", 8)  # x, h and h'
        self.q_state.enabled = on
        self.w_h = WeightGrid()
        self.input_shape = hidden_shape

    @classmethod
    def from_spyx(cls, layer: Any, *,
                  quantization: QuantConfig | dict | None = None) -> ResonateFire:
        """A ResonateFire step with a `spyx.phasor.ResonateFire`'s parameters (copied;
        its spike is superspike with the default k)."""
        ours = cls(layer.hidden_shape, threshold=layer.threshold, dt=layer.dt,
                   quantization=quantization, rngs=nnx.Rngs(0))
        ours.raw_lambda = nnx.Param(jnp.asarray(np.asarray(layer.raw_lambda[...])))
        ours.omega = nnx.Param(jnp.asarray(np.asarray(layer.omega[...])))
        return ours

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (for `ncc.models.save_checkpoint`)."""
        return {"hidden_shape": self.hidden_shape, "lambda_init": self.lambda_init,
                "omega_init": self.omega_init, "threshold": self.threshold, "dt": self.dt,
                "surrogate_k": self.surrogate_k,
                "quantization": self.config.to_dict() if self.quantized else None}

    def initial_state(self, batch_size: int) -> jax.Array:
        """Zeros (batch_size, 2 n): [z_re, z_im]."""
        return jnp.zeros((batch_size, 2 * self.n))

    def pole(self) -> tuple[jax.Array, jax.Array]:
        """(Re a, Im a), each (n,): a = exp(dt (-softplus(raw_lambda) + i omega))."""
        r = jnp.exp(-self.dt * jax.nn.softplus(self.raw_lambda[...]))
        theta = self.dt * self.omega[...]
        shape = (self.n,)
        return (jnp.broadcast_to(r * jnp.cos(theta), shape),
                jnp.broadcast_to(r * jnp.sin(theta), shape))

    def recurrence_kernel(self) -> jax.Array:
        """W_h (3 n, 2 n): [x, z_re, z_im] @ W_h = [z'_re, z'_im] (x into the real part)."""
        a_re, a_im = self.pole()
        eye = np.eye(self.n, dtype=np.float32)
        return jnp.concatenate([
            jnp.concatenate([eye, np.zeros_like(eye)], 1),
            jnp.concatenate([_diag(a_re), _diag(a_im)], 1),
            jnp.concatenate([_diag(-a_im), _diag(a_re)], 1)], 0)

    def freeze_weights(self) -> dict[str, QuantParams]:
        """The static grid of W_h (`fake_quant.freeze(weights=True)`)."""
        if not self.quantized:
            return {}
        self.w_h.params, self.w_h.mode = _weight_grid(self.recurrence_kernel(),
                                                      self.config), "quant"
        return {"w_h": self.w_h.params}

    def exact(self) -> bool:
        """True when the forward is the deployed integer arithmetic, bit for bit."""
        return _points_ready([self.q_state]) and self.w_h.params is not None

    def __call__(self, x: jax.Array, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x (B, n), h (B, 2 n) -> spikes (B, n) in {0, 1}, h' (B, 2 n)."""
        z = self.q_state(jnp.concatenate([x, h], -1))
        w = self.recurrence_kernel()
        if _points_ready([self.q_state]):
            h = _dense(z, w, jnp.zeros((2 * self.n,)), self.q_state.params, self.w_h,
                       self.q_state, self.config)
        else:
            h = self.q_state(z @ w)
        return _fire(self.spike, h[:, :self.n], self.threshold), h


def _fire(spike: Any, v: jax.Array, threshold: float) -> jax.Array:
    """spike(v - threshold) as `v > threshold` (0 / 1): a comparison of v itself, which
    the compiler makes exact on v's integer grid; the surrogate gradient is spike's."""

    @jax.custom_jvp
    def fire(v: jax.Array) -> jax.Array:
        return (v > threshold).astype(v.dtype)

    @fire.defjvp
    def _jvp(primals: tuple, tangents: tuple) -> tuple:
        (v,), (tv,) = primals, tangents
        return fire(v), jax.jvp(spike, (v - threshold,), (tv,))[1]

    return fire(v)


def run_resonate_fire(layer: ResonateFire, xs: jax.Array,
                      h0: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Unrolled loop over time-major xs (T, B, n) -> (spikes (T, B, n), last h)."""
    h = layer.initial_state(xs.shape[1]) if h0 is None else h0
    out = []
    for x in xs:
        s, h = layer(x, h)
        out.append(s)
    return jnp.stack(out), h
