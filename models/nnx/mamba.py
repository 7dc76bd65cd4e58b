"""A Flax NNX selective state-space step (Mamba's SSM core) with a step API and fake-quant.

`Mamba` is spyx 1.0's `spyx.ssm.Mamba` (Gu & Dao 2023; the same parameters and the same
initialization, draw for draw) written as one step, `__call__(u, h) -> (y, h')`:
```
dt  = softplus(u @ W_dt_low @ W_dt + b_dt)        (B, d_inner), the selective step size
Bm  = u @ W_B,  Cm = u @ W_C                      (B, d_state) each, input-dependent
h'  = exp(dt A) * h + (dt u) Bm                   (B, d_inner, d_state), A = -exp(A_log)
y   = sum_s Cm h' + D u                           (B, d_inner)
```
The state is carried flat, (B, d_inner * d_state) (channel-major), and every step is an
int8 kernel of the golden model, so a frozen layer (`Mamba.exact`) computes the deployed
integer arithmetic itself:

- five fully-connected kernels (`fake_quant_dense`): the three column blocks of
  `x_proj`, `dt_proj` (with its bias), `dt A` as dt @ E with E[d, d S + s] = A[d, s]
  (one weight per output channel: its per-channel scale carries A exactly), the sum over
  the state as (Cm h') @ S with S the 0/1 block matrix, and `D u` as u @ diag(D);
- two tables (`fake_quant_table`): softplus and exp, the very tables the compiler builds;
- five int8 MUL / ADD kernels (`fake_quant_binary`): dt u, (dt u) Bm, exp(dt A) h,
  the state update's add and Cm h', and y's add.

With a QuantConfig: `set_mode(layer, "calibrate")`, run data, `freeze(layer,
weights=True)` (`ncc.models.nnx.fake_quant`); all grids int8, per tensor for activations
and the state, per output channel for the weights.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ncc.models.nnx.fake_quant import FakeQuant, live_weight, table_out_params
from ncc.models.nnx.ssm import WeightGrid
from ncc.models.quantization import (
    JAX_TABLE_FUNCTIONS,
    QuantConfig,
    QuantParams,
    fake_quant,
    fake_quant_binary,
    fake_quant_dense,
    fake_quant_table,
    symmetric_params,
)

__all__ = ["Mamba", "run_mamba"]

# activation points (per tensor), in the order the step meets them; q_h is the state's
POINTS = ("q_u", "q_dtl", "q_B", "q_C", "q_dtpre", "q_dA", "q_dtu", "q_Bu", "q_prod", "q_h",
          "q_ch", "q_ys", "q_du", "q_y")
# weight grids: x_proj's three column blocks, dt_proj, E (dt A), S (sum over s), diag(D)
GRIDS = ("w_dtl", "w_B", "w_C", "w_dt", "w_A", "w_sum", "w_D")


class Mamba(nnx.Module):
    """Selective SSM step: u (B, d_inner), h (B, d_inner d_state) -> y (B, d_inner), h'.

    Args:
        d_inner: input and output features. d_state: state size per feature.
        dt_rank: rank of the step-size projection (None: ceil(d_inner / 16), spyx's).
        dt_min, dt_max: range of softplus(b_dt) at initialization (log-uniform).
        quantization: a QuantConfig (or its dict) for fake-quant points (None = float).
        rngs: drawn as spyx draws them, so the same seed gives spyx's parameters.
    """

    def __init__(self, d_inner: int, d_state: int = 16, dt_rank: int | None = None, *,
                 dt_min: float = 1e-3, dt_max: float = 1e-1,
                 quantization: QuantConfig | dict | None = None, rngs: nnx.Rngs) -> None:
        dt_rank = max(1, (d_inner + 15) // 16) if dt_rank is None else int(dt_rank)
        k_x, k_dt, _, k_d = jax.random.split(rngs.params(), 4)  # spyx's four keys
        self.x_proj = nnx.Param(jax.random.normal(k_x, (d_inner, dt_rank + 2 * d_state))
                                * (1.0 / jnp.sqrt(d_inner)))
        self.dt_proj = nnx.Param(jax.random.normal(k_dt, (dt_rank, d_inner)) * dt_rank**-0.5)
        dt = jnp.exp(jax.random.uniform(k_dt, (d_inner,), minval=jnp.log(dt_min),
                                        maxval=jnp.log(dt_max)))
        self.dt_bias = nnx.Param(dt + jnp.log1p(-jnp.exp(-dt)))  # softplus(b_dt) = dt
        self.A_log = nnx.Param(jnp.log(jnp.tile(
            jnp.arange(1, d_state + 1, dtype=jnp.float32)[None, :], (d_inner, 1))))
        self.D = nnx.Param(jnp.ones((d_inner,)) + 0.1 * jax.random.normal(k_d, (d_inner,)))
        self.d_inner, self.d_state, self.dt_rank = int(d_inner), int(d_state), dt_rank
        self.dt_min, self.dt_max = float(dt_min), float(dt_max)
        self.input_shape = (self.d_inner,)
        if isinstance(quantization, dict):
            quantization = QuantConfig.from_dict(quantization)
        on, cfg = quantization is not None, quantization or QuantConfig()
        self.config, self.quantized = cfg, on
        self.weights_on = on and cfg.quantizes("weights")
        for name in POINTS:
            part, bits = ("state", cfg.state_bits) if name == "q_h" else \
                ("activations", cfg.activation_bits)
            point = FakeQuant.for_part(cfg, part, bits)
            point.enabled = on and point.enabled
            setattr(self, name, point)
        for name in GRIDS:
            setattr(self, name, WeightGrid())

    @classmethod
    def from_spyx(cls, layer: Any, *,
                  quantization: QuantConfig | dict | None = None) -> Mamba:
        """A Mamba step with the parameters of a `spyx.ssm.Mamba` (copied, not shared)."""
        ours = cls(layer.d_inner, layer.d_state, layer.dt_rank, quantization=quantization,
                   rngs=nnx.Rngs(0))
        for name, value in (("x_proj", layer.x_proj.kernel), ("dt_proj", layer.dt_proj.kernel),
                            ("dt_bias", layer.dt_proj.bias), ("A_log", layer.A_log),
                            ("D", layer.D)):
            getattr(ours, name)[...] = jnp.asarray(np.asarray(value[...]))
        return ours

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (for `ncc.models.save_checkpoint`)."""
        return {"d_inner": self.d_inner, "d_state": self.d_state, "dt_rank": self.dt_rank,
                "dt_min": self.dt_min, "dt_max": self.dt_max,
                "quantization": self.config.to_dict() if self.quantized else None}

    def initial_state(self, batch_size: int) -> jax.Array:
        """Zeros (batch_size, d_inner d_state)."""
        return jnp.zeros((batch_size, self.d_inner * self.d_state))

    # --- the kernels (K, N), computed from the parameters -------------------------------------

    def kernels(self) -> dict[str, jax.Array]:
        """{grid name: kernel}: each fully-connected kernel of the step (see module doc)."""
        r, s, d = self.dt_rank, self.d_state, self.d_inner
        w = self.x_proj[...]
        spread = np.kron(np.eye(d, dtype=np.float32), np.ones((1, s), np.float32))  # (d, dS)
        a = -jnp.exp(self.A_log[...]).reshape(-1)  # (d S,) channel-major
        return {"w_dtl": w[:, :r], "w_B": w[:, r:r + s], "w_C": w[:, r + s:],
                "w_dt": self.dt_proj[...], "w_A": spread * a, "w_sum": spread.T,
                "w_D": np.eye(d, dtype=np.float32) * self.D[...]}

    # --- quantization ---------------------------------------------------------------------

    def _weights_quantized(self) -> bool:
        return self.weights_on and self.q_u.mode == "quant"

    def _weight(self, w: jax.Array, params: QuantParams | None) -> jax.Array:
        """w fake-quantized (static grid once frozen, else its live per-channel scale)."""
        if not self._weights_quantized():
            return w
        if params is not None:
            return fake_quant(w, params)
        return live_weight(w, self.config.weight_bits, self.config.per_channel)

    def freeze_weights(self) -> dict[str, QuantParams]:
        """Static weight grids from the current kernels (`fake_quant.freeze` calls it with
        weights=True); {} when weights stay float."""
        if not self.weights_on:
            return {}
        frozen = {}
        for name, w in self.kernels().items():
            peak = np.abs(np.asarray(w))
            params = symmetric_params(peak.max(axis=0), self.config.weight_bits, axis=1) if \
                self.config.per_channel else symmetric_params(peak.max(), self.config.weight_bits)
            grid = getattr(self, name)
            grid.params, grid.mode = params, "quant"
            frozen[name] = params
        return frozen

    def exact(self) -> bool:
        """True when the forward is the deployed integer arithmetic, bit for bit: every
        point and every weight grid frozen, in "quant" mode, int8 activations."""
        points = [getattr(self, n) for n in POINTS]
        return (self._weights_quantized()
                and all(getattr(self, n).params is not None for n in GRIDS)
                and all(p.enabled and p.mode == "quant" and p.params is not None
                        and p.bits == 8 for p in points))

    def table_params(self, fn: str, point: FakeQuant) -> QuantParams:
        """Output grid of the `fn` table behind `point` (the compiler's choice)."""
        return table_out_params(fn, point.params)

    # --- the step ---------------------------------------------------------------------------

    def __call__(self, x: jax.Array, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x = u (B, d_inner), h (B, d_inner d_state) -> y (B, d_inner), h'."""
        d, s = self.d_inner, self.d_state
        exact, k = self.exact(), self.kernels()
        p_dt = self.table_params("softplus", self.q_dtpre) if exact else None
        p_da = self.table_params("exp", self.q_dA) if exact else None
        p = {n: getattr(self, n).params for n in POINTS}
        u, h = self.q_u(x), self.q_h(h)
        dtl = self._dense(u, k, "w_dtl", p["q_u"], self.q_dtl)
        bm = self._dense(u, k, "w_B", p["q_u"], self.q_B)
        cm = self._dense(u, k, "w_C", p["q_u"], self.q_C)
        dt = self._table(self._dense(dtl, k, "w_dt", p["q_dtl"], self.q_dtpre,
                                     self.dt_bias[...]), "softplus", self.q_dtpre)
        da = self._table(self._dense(dt, k, "w_A", p_dt, self.q_dA), "exp", self.q_dA)
        dtu = self._binary("mul", dt, u, p_dt, p["q_u"], self.q_dtu)
        bu = self._binary("mul", _spread(dtu, s), _tile(bm, d), p["q_dtu"], p["q_B"],
                          self.q_Bu)
        prod = self._binary("mul", da, h, p_da, p["q_h"], self.q_prod)
        h = self._binary("add", prod, bu, p["q_prod"], p["q_Bu"], self.q_h)
        ch = self._binary("mul", _tile(cm, d), h, p["q_C"], p["q_h"], self.q_ch)
        ys = self._dense(ch, k, "w_sum", p["q_ch"], self.q_ys)
        du = self._dense(u, k, "w_D", p["q_u"], self.q_du)
        return self._binary("add", ys, du, p["q_ys"], p["q_du"], self.q_y), h

    def _dense(self, z: jax.Array, k: dict[str, jax.Array], grid: str,
               p_z: QuantParams | None, point: FakeQuant,
               bias: jax.Array | None = None) -> jax.Array:
        """z @ k[grid] (+ bias) onto `point`'s grid (z on p_z): the int8 kernel when exact."""
        w, w_params = k[grid], getattr(self, grid).params
        b = jnp.zeros((w.shape[1],)) if bias is None else bias
        if self.exact():
            return fake_quant_dense(z, w, b, p_z, w_params, point.params)
        return point(z @ self._weight(w, w_params) + b)

    def _table(self, z: jax.Array, fn: str, point: FakeQuant) -> jax.Array:
        """fn(z), z on `point`'s grid: through the deployed table once `point` is frozen."""
        if point.mode == "quant" and point.enabled and point.params is not None:
            return fake_quant_table(z, fn, point.params, self.table_params(fn, point))
        return JAX_TABLE_FUNCTIONS[fn](z)

    def _binary(self, kind: str, a: jax.Array, b: jax.Array, p_a: QuantParams | None,
                p_b: QuantParams | None, point: FakeQuant) -> jax.Array:
        """a (kind) b onto `point`'s grid: the int8 MUL / ADD kernel when exact."""
        if self.exact():
            return fake_quant_binary(kind, a, b, p_a, p_b, point.params)
        return point(a * b if kind == "mul" else a + b)


def _spread(v: jax.Array, s: int) -> jax.Array:
    """(B, d) -> (B, d s): each v[:, i] repeated s times (channel-major state layout)."""
    return jnp.broadcast_to(v[:, :, None], (*v.shape, s)).reshape(v.shape[0], -1)


def _tile(v: jax.Array, d: int) -> jax.Array:
    """(B, s) -> (B, d s): v repeated for each of d channels."""
    return jnp.broadcast_to(v[:, None, :], (v.shape[0], d, v.shape[1])).reshape(
        v.shape[0], -1)


def run_mamba(layer: Mamba, xs: jax.Array, h0: jax.Array | None = None) -> tuple[jax.Array,
                                                                                  jax.Array]:
    """Unrolled loop over time-major xs (T, B, d_inner) -> (ys (T, B, d_inner), last h).

    A Python loop so calibration observers may update; wrap in `nnx.jit` for speed."""
    h = layer.initial_state(xs.shape[1]) if h0 is None else h0
    ys = []
    for x in xs:
        y, h = layer(x, h)
        ys.append(y)
    return jnp.stack(ys), h
