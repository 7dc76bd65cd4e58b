"""A Flax NNX LRU (diagonal complex state-space layer) with a step API and fake-quant.

`LRU` is spyx 1.0's `spyx.ssm.LRU` (Orvieto et al. 2023, the same parameters `nu`,
`theta`, `B_re`, `B_im`, `C_re`, `C_im`, `D` and the same initialization) written as one
step, `__call__(x, h) -> (y, h')`, as the other NNX layers of `ncc.models.nnx`:
```
lam = exp(-exp(nu) + i theta)                    (d_state,) complex, |lam| < 1
h'  = lam * h + B x                              h = h_re + i h_im, (B, d_state) complex
y   = Re(C h') + D * x                           (B, d_model)
```
The complex state is carried as one real array `[h_re, h_im]` (B, 2 d_state), and the
step is two real dense layers over concatenations on one grid:
```
h' = [x, h_re, h_im] @ W_h      W_h = [[B_re^T, B_im^T], [diag(lam_re), diag(lam_im)],
                                       [diag(-lam_im), diag(lam_re)]]
y  = [x, h'_re, h'_im] @ W_y    W_y = [[diag(D)], [C_re^T], [-C_im^T]]
```
so a frozen int8 layer (`LRU.exact`) computes the deployed integer arithmetic itself: two
int8 fully-connected kernels (`fake_quant_dense`), x and the state on one grid.

With a QuantConfig: `set_mode(layer, "calibrate")`, run data, `freeze(layer,
weights=True)` (`ncc.models.nnx.fake_quant`). W_h and W_y are quantized as wholes,
symmetric per output channel; W_h's per-channel scales are chosen so that its grid
holds the eigenvalues nearly exactly (`eigenvalue_peaks`). With
`QuantConfig(activation_bits=16, state_bits=16)` the state and output are int16
(symmetric) and W_h, W_y int8: TFLite's 16x8 kernels.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ncc.models.nnx.fake_quant import FakeQuant, live_weight
from ncc.models.quantization import (
    QuantConfig,
    QuantParams,
    fake_quant,
    fake_quant_dense,
    int_range,
    symmetric_params,
)

__all__ = ["LRU", "WeightGrid", "eigenvalue_peaks", "run_lru"]


def _init_eigenvalues(key: jax.Array, d_state: int, r_min: float,
                      r_max: float) -> tuple[jax.Array, jax.Array]:
    """(nu, theta), each (d_state,), with |lam|^2 uniform in [r_min^2, r_max^2] (spyx's)."""
    k_u, k_theta = jax.random.split(key)
    r_sq = jax.random.uniform(k_u, (d_state,)) * (r_max**2 - r_min**2) + r_min**2
    nu = jnp.log(-0.5 * jnp.log(r_sq + 1e-8))
    return nu, jax.random.uniform(k_theta, (d_state,)) * 2.0 * jnp.pi


class WeightGrid(nnx.Module):
    """The frozen grid of a weight its owner computes (LRU's W_h, W_y): `mode` "float"
    until frozen, then "quant" with `params` (what checkpoints save and restore)."""

    def __init__(self) -> None:
        self.mode = "float"
        self.params: QuantParams | None = None


def _diag(v: jax.Array) -> jax.Array:
    """diag(v) (n, n) as a constant eye times v (`jnp.diag` and `jnp.eye` trace to `pad`
    and `iota`, which ncc's tracer has no op for)."""
    return np.eye(v.shape[0], dtype=np.float32) * v


def eigenvalue_peaks(w_h: np.ndarray, lam_re: np.ndarray, lam_im: np.ndarray,
                     bits: int = 8) -> np.ndarray:
    """Per-column absmax (2 d_state,) for W_h's symmetric grid that holds the eigenvalues.

    Column j (h'_re[j]) and column d_state + j (h'_im[j]) both hold |Re lam_j| and
    |Im lam_j| and their B entries. With scale s = absmax / qmax, the plain absmax grid
    rounds each eigenvalue part by up to s / 2 (1 / 254 of |lam|: steps of the decay
    rate and the phase that 64 steps of recurrence amplify). Any s at least
    max |column| / qmax is a valid grid; this picks, per pair, the s in that range that
    puts both parts nearest to integer multiples of s (candidates |Re lam| / k and
    |Im lam| / k, k = 1 .. qmax: one part exact, the other within a fraction of s; the
    B entries keep at most 8 bits). The deployed arithmetic is unchanged: the int8
    fully-connected kernel, per-channel scales.
    """
    qmax = int_range(bits, True)[1]
    d_state = lam_re.shape[0]
    col = np.abs(np.asarray(w_h, np.float64)).max(axis=0)
    floor = np.maximum(col[:d_state], col[d_state:]) / qmax  # (S,): one s for both columns
    parts = np.abs(np.stack([lam_re, lam_im], 1).astype(np.float64))  # (S, 2)
    k = np.arange(1, qmax + 1, dtype=np.float64)
    cand = np.concatenate([parts[:, :1] / k, parts[:, 1:] / k, floor[:, None]], 1)  # (S, C)
    cand = np.where(cand >= floor[:, None] * (1 - 1e-12), cand, np.inf)
    safe = np.where(np.isfinite(cand) & (cand > 0), cand, 1.0)
    err = sum((v[:, None] - safe * np.round(v[:, None] / safe)) ** 2 for v in parts.T)
    err = np.where(np.isfinite(cand) & (cand > 0), err, np.inf)
    best = cand[np.arange(d_state), np.argmin(err + 1e-18 * safe, axis=1)]
    best = np.where(np.isfinite(best), best, floor)
    return np.concatenate([best, best]) * qmax


class LRU(nnx.Module):
    """Linear Recurrent Unit step: x (B, d_model), h (B, 2 d_state) -> y (B, d_model), h'.

    Args:
        d_model: input and output features. d_state: complex state size.
        r_min, r_max: range of |lam| at initialization. use_skip: the D x term.
        quantization: a QuantConfig (or its dict) for fake-quant points (None = float).
        rngs: drawn as spyx draws them, so the same seed gives spyx's parameters.
    """

    def __init__(self, d_model: int, d_state: int = 64, *, r_min: float = 0.0,
                 r_max: float = 1.0, use_skip: bool = True,
                 quantization: QuantConfig | dict | None = None, rngs: nnx.Rngs) -> None:
        k_lam, k_b, k_c, k_d = jax.random.split(rngs.params(), 4)
        nu, theta = _init_eigenvalues(k_lam, d_state, r_min, r_max)
        self.nu, self.theta = nnx.Param(nu), nnx.Param(theta)
        gamma = jnp.sqrt(jnp.clip(1.0 - jnp.exp(-jnp.exp(nu)) ** 2, 0.0, None))
        kb_r, kb_i = jax.random.split(k_b)
        scale_b = 1.0 / jnp.sqrt(2.0 * d_model)
        self.B_re = nnx.Param(jax.random.normal(kb_r, (d_state, d_model)) * scale_b
                              * gamma[:, None])
        self.B_im = nnx.Param(jax.random.normal(kb_i, (d_state, d_model)) * scale_b
                              * gamma[:, None])
        kc_r, kc_i = jax.random.split(k_c)
        scale_c = 1.0 / jnp.sqrt(2.0 * d_state)
        self.C_re = nnx.Param(jax.random.normal(kc_r, (d_model, d_state)) * scale_c)
        self.C_im = nnx.Param(jax.random.normal(kc_i, (d_model, d_state)) * scale_c)
        self.D = nnx.Param(jax.random.normal(k_d, (d_model,)) if use_skip
                           else jnp.zeros((d_model,)))
        self.d_model, self.d_state, self.use_skip = int(d_model), int(d_state), bool(use_skip)
        self.r_min, self.r_max = float(r_min), float(r_max)
        self.input_shape = (self.d_model,)
        if isinstance(quantization, dict):
            quantization = QuantConfig.from_dict(quantization)
        on, cfg = quantization is not None, quantization or QuantConfig()
        self.config, self.quantized = cfg, on
        self.weights_on = on and cfg.quantizes("weights")
        # x, h and h' on one grid, y on another; int16 grids symmetric (TFLite's 16x8 mode)
        self.q_state = FakeQuant.for_part(cfg, "state", cfg.state_bits,
                                          symmetric=cfg.state_bits == 16)
        self.q_y = FakeQuant.for_part(cfg, "activations", cfg.activation_bits,
                                      symmetric=cfg.activation_bits == 16)
        for point in (self.q_state, self.q_y):
            point.enabled = on and point.enabled
        self.w_h, self.w_y = WeightGrid(), WeightGrid()  # static grids (freeze_weights)

    @classmethod
    def from_spyx(cls, layer: Any, *, quantization: QuantConfig | dict | None = None) -> LRU:
        """An LRU step with the parameters of a `spyx.ssm.LRU` (copied, not shared)."""
        ours = cls(layer.d_model, layer.d_state, use_skip=layer.use_skip,
                   quantization=quantization, rngs=nnx.Rngs(0))
        for name in ("nu", "theta", "B_re", "B_im", "C_re", "C_im"):
            getattr(ours, name)[...] = jnp.asarray(np.asarray(getattr(layer, name)[...]))
        if layer.use_skip:
            ours.D[...] = jnp.asarray(np.asarray(layer.D[...]))
        return ours

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (for `ncc.models.save_checkpoint`)."""
        return {"d_model": self.d_model, "d_state": self.d_state, "r_min": self.r_min,
                "r_max": self.r_max, "use_skip": self.use_skip,
                "quantization": self.config.to_dict() if self.quantized else None}

    def initial_state(self, batch_size: int) -> jax.Array:
        """Zeros (batch_size, 2 d_state): [h_re, h_im]."""
        return jnp.zeros((batch_size, 2 * self.d_state))

    # --- the real kernels ------------------------------------------------------------------

    def eigenvalues(self) -> tuple[jax.Array, jax.Array]:
        """(Re lam, Im lam), each (d_state,)."""
        r = jnp.exp(-jnp.exp(self.nu[...]))
        theta = self.theta[...]
        return r * jnp.cos(theta), r * jnp.sin(theta)

    def recurrence_kernel(self) -> jax.Array:
        """W_h (d_model + 2 d_state, 2 d_state): [x, h_re, h_im] @ W_h = [h'_re, h'_im]."""
        lam_re, lam_im = self.eigenvalues()
        return jnp.concatenate([
            jnp.concatenate([self.B_re[...].T, self.B_im[...].T], 1),
            jnp.concatenate([_diag(lam_re), _diag(lam_im)], 1),
            jnp.concatenate([_diag(-lam_im), _diag(lam_re)], 1)], 0)

    def output_kernel(self) -> jax.Array:
        """W_y (d_model + 2 d_state, d_model): [x, h'_re, h'_im] @ W_y = y."""
        d = self.D[...] if self.use_skip else jnp.zeros((self.d_model,))
        return jnp.concatenate([_diag(d), self.C_re[...].T, -self.C_im[...].T], 0)

    # --- quantization ----------------------------------------------------------------------

    def _weights_quantized(self) -> bool:
        return self.weights_on and self.q_state.mode == "quant"

    def _weight(self, w: jax.Array, params: QuantParams | None) -> jax.Array:
        """w fake-quantized (static grid once frozen, else its live per-channel scale)."""
        if not self._weights_quantized():
            return w
        if params is not None:
            return fake_quant(w, params)
        return live_weight(w, self.config.weight_bits, self.config.per_channel)

    def freeze_weights(self) -> dict[str, QuantParams]:
        """Static weight grids from the current W_h and W_y (`fake_quant.freeze` calls it
        with weights=True); {} when weights stay float."""
        if not self.weights_on:
            return {}
        bits, frozen = self.config.weight_bits, {}
        for name, w in (("w_h", self.recurrence_kernel()), ("w_y", self.output_kernel())):
            peak = np.abs(np.asarray(w))
            if name == "w_h" and self.config.per_channel:  # eigenvalues held (nearly) exactly
                lam_re, lam_im = (np.asarray(v) for v in self.eigenvalues())
                params = symmetric_params(eigenvalue_peaks(peak, lam_re, lam_im, bits),
                                          bits, axis=1)
            else:
                params = symmetric_params(peak.max(axis=0), bits, axis=1) if \
                    self.config.per_channel else symmetric_params(peak.max(), bits)
            grid = getattr(self, name)
            grid.params, grid.mode = params, "quant"
            frozen[name] = params
        return frozen

    def exact(self) -> bool:
        """True when the forward is the deployed integer arithmetic, bit for bit: both
        points and both weights frozen and in "quant" mode, int8 grids (or int16: the
        16x8 kernels, `--activations int16`)."""
        return (self._weights_quantized() and self.w_h.params is not None
                and self.w_y.params is not None and all(
                    p.enabled and p.mode == "quant" and p.params is not None and p.bits in (8, 16)
                    for p in (self.q_state, self.q_y)))

    # --- the step ---------------------------------------------------------------------------

    def __call__(self, x: jax.Array, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x (B, d_model), h (B, 2 d_state) -> y (B, d_model), h' (B, 2 d_state)."""
        z = self.q_state(jnp.concatenate([x, h], -1))
        h = self._dense(z, self.recurrence_kernel(), self.w_h.params, self.q_state)
        y = self._dense(jnp.concatenate([z[:, :self.d_model], h], -1), self.output_kernel(),
                        self.w_y.params, self.q_y)
        return y, h

    def _dense(self, z: jax.Array, w: jax.Array, w_params: QuantParams | None,
               point: FakeQuant) -> jax.Array:
        """z @ w onto `point`'s grid (z on the state grid): the int8 kernel when exact."""
        if self.exact():
            return fake_quant_dense(z, w, jnp.zeros((w.shape[1],)), self.q_state.params,
                                    w_params, point.params)
        return point(z @ self._weight(w, w_params))


def run_lru(layer: LRU, xs: jax.Array, h0: jax.Array | None = None) -> tuple[jax.Array,
                                                                              jax.Array]:
    """Unrolled loop over time-major xs (T, B, d_model) -> (ys (T, B, d_model), last h).

    A Python loop so calibration observers may update; wrap in `nnx.jit` for speed."""
    h = layer.initial_state(xs.shape[1]) if h0 is None else h0
    ys = []
    for x in xs:
        y, h = layer(x, h)
        ys.append(y)
    return jnp.stack(ys), h
