"""A streaming H-Net step (Hwang, Wang and Gu 2025, "Dynamic Chunking for End-to-End
Hierarchical Sequence Modeling"): one level of dynamic chunking over LRU state-space
layers, one input step at a time.

`HNetStep.__call__(x, state) -> (y, state')`, x (B, d_model), y (B, d_out):
```
e, h_enc  = encoder(x, h_enc)                       LRU, (B, d_model)
q, k      = unit(e @ W_q), unit(e @ W_k)            unit(v) = v / sqrt(|v|^2 + eps), (B, d_router)
cos       = <q, k_prev>                             k_prev: the previous step's k (state)
b         = cos <= 0                                boundary (B, 1) bool
p         = 0.5 (1 - cos)                           boundary probability, [0, 1]
m, h_new  = main(e, h_main)                         LRU, run every step, but its state
h_main'   = where(b, h_new, h_main)                 advances only on boundaries
z'        = where(b, z + p (m - z), z)              smoothing dechunk (EMA over chunks)
u         = z' + e @ W_res + b_res                  decoder input: residual from the encoder
d, h_dec  = decoder(u, h_dec)                       LRU
y         = d @ W_out + b_out
```
state = {"h_enc", "h_main", "h_dec": (B, 2 d_state) each, "k_prev": (B, d_router),
"z": (B, d_model)}, all zeros at t = 0.

What this implements of the paper, exactly:

- The router is the paper's p_t = 0.5 (1 - cos(q_t, k_{t-1})) and b_t = [p_t >= 0.5],
  with one deviation: q and k are normalized as v / sqrt(|v|^2 + eps) (eps = 1 by
  default), so for |v|^2 comparable to eps the "cosine" shrinks toward 0 and p toward
  0.5. The decision is unchanged (p_t >= 0.5 iff cos <= 0 iff <q_t, k_{t-1}> <= 0 for any
  eps); eps bounds the reciprocal-square-root table to (0, eps^-1/2], which int8 can
  resolve (eps = 1e-6 gave a table range up to 1e3 and a p with negative SQNR).
  Normalizing before the dot product puts cos on a [-1, 1] grid, so the integer decision
  (cos_q <= zero point) is taken at that grid's resolution. k_prev holds the unit k.
  At t = 0, k_prev = 0: cos = 0, so b_0 = 1 (the paper's forced first boundary) but
  p_0 = 0.5 (the paper sets p_0 = 1).
- The main network sees the encoder output of boundary steps only: its state is
  `where(b, step(h_main, e), h_main)`, so between boundaries it holds (the chunked
  sequence, streamed). Its output m is only used on boundaries.
- Dechunk: the paper's EMA over the chunk sequence, z_c = P_c m_c + (1 - P_c) z_{c-1}
  (P_c the boundary probability of chunk c), then upsampling (each position takes its
  chunk's z). Streamed: z is updated on boundary steps with P = p_t and held otherwise,
  which is that EMA followed by that upsampling. The paper's confidence factor
  c_t = p_t^b (1 - p_t)^(1-b) is a straight-through estimator whose forward value is 1;
  it is left out (it only shapes gradients).
- The decoder input adds a linear residual of the encoder output (the paper's residual
  projection), and a linear head gives y.

Quantized (PTQ by `ncc compile`), the boundary decision is an integer comparison of the
int8 dot product, so it flips where float's dot is within half a grid step of 0; the
measured flip rate and its cost are in `tests/models/test_nnx_hnet.py` and the README.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from ncc.models.nnx.fake_quant import QuantDense
from ncc.models.nnx.ssm import LRU

__all__ = ["HNetStep", "run_hnet"]

class HNetStep(nnx.Module):
    """One-level streaming H-Net step: x (B, d_model), state dict -> y (B, d_out), state'.

    Args:
        d_model: input, encoder, main and decoder width. d_out: output features.
        d_state: complex state size of the encoder and decoder LRUs; d_main_state: the
        main LRU's. d_router: width of the router's q and k.
        r_min, r_max: |lam| range of the LRUs at initialization. eps: in the router's
        normalization v / sqrt(|v|^2 + eps).
        rngs: parameters; W_k starts equal to W_q (the router starts as a similarity test of
        consecutive encoder outputs: a chunk ends where they point apart).
    """

    def __init__(self, d_model: int, d_out: int, *, d_state: int = 8, d_main_state: int = 16,
                 d_router: int = 8, r_min: float = 0.0, r_max: float = 1.0,
                 eps: float = 1.0, rngs: nnx.Rngs) -> None:
        self.d_model, self.d_out, self.d_state = int(d_model), int(d_out), int(d_state)
        self.d_main_state, self.d_router = int(d_main_state), int(d_router)
        self.r_min, self.r_max, self.eps = float(r_min), float(r_max), float(eps)
        self.input_shape = (self.d_model,)
        lru = {"r_min": self.r_min, "r_max": self.r_max}
        self.encoder = LRU(d_model, d_state, rngs=rngs, **lru)
        self.w_q = QuantDense(d_model, d_router, rngs=rngs)
        self.w_k = QuantDense(d_model, d_router, rngs=rngs)
        self.w_k.kernel[...] = self.w_q.kernel[...]
        self.main = LRU(d_model, d_main_state, rngs=rngs, **lru)
        self.residual = QuantDense(d_model, d_model, rngs=rngs)
        self.decoder = LRU(d_model, d_state, rngs=rngs, **lru)
        self.head = QuantDense(d_model, d_out, rngs=rngs)

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (for `ncc.models.save_checkpoint`)."""
        return {"d_model": self.d_model, "d_out": self.d_out, "d_state": self.d_state,
                "d_main_state": self.d_main_state, "d_router": self.d_router,
                "r_min": self.r_min, "r_max": self.r_max, "eps": self.eps}

    def initial_state(self, batch_size: int) -> dict[str, jax.Array]:
        """Zeros: h_enc, h_main, h_dec (B, 2 d_state), k_prev (B, d_router), z (B, d_model)."""
        return {"h_enc": self.encoder.initial_state(batch_size),
                "h_main": self.main.initial_state(batch_size),
                "h_dec": self.decoder.initial_state(batch_size),
                "k_prev": jnp.zeros((batch_size, self.d_router)),
                "z": jnp.zeros((batch_size, self.d_model))}

    def unit(self, v: jax.Array) -> jax.Array:
        """v (B, n) / sqrt(|v|^2 + eps): the direction of v (shorter for |v|^2 << eps)."""
        return v / jnp.sqrt(jnp.sum(v * v, axis=-1, keepdims=True) + self.eps)

    def route(self, e: jax.Array, k_prev: jax.Array) -> tuple[jax.Array, jax.Array,
                                                               jax.Array]:
        """Encoder output e (B, d_model), k_prev (B, d_router) -> boundary b (B, 1) bool,
        probability p (B, 1) in [0, 1], unit k (B, d_router) (the next step's k_prev)."""
        q, k = self.unit(self.w_q(e)), self.unit(self.w_k(e))
        cos = jnp.sum(q * k_prev, axis=-1, keepdims=True)
        return cos <= 0.0, 0.5 * (1.0 - cos), k

    def __call__(self, x: jax.Array, state: dict[str, jax.Array]
                 ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """x (B, d_model), state (`initial_state`) -> y (B, d_out), state'."""
        return self.step(x, state)

    def step(self, x: jax.Array, state: dict[str, jax.Array],
             boundary: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The step, with the router's decision replaced by `boundary` (B, 1) bool if given
        (to run the float model on another model's chunking)."""
        e, h_enc = self.encoder(x, state["h_enc"])
        b, p, k = self.route(e, state["k_prev"])
        b = b if boundary is None else boundary
        m, h_new = self.main(e, state["h_main"])
        h_main = jnp.where(b, h_new, state["h_main"])
        z_prev = state["z"]
        z = jnp.where(b, z_prev + p * (m - z_prev), z_prev)
        d, h_dec = self.decoder(z + self.residual(e), state["h_dec"])
        return self.head(d), {"h_enc": h_enc, "h_main": h_main, "h_dec": h_dec,
                              "k_prev": k, "z": z}


def _step(model: HNetStep, x: jax.Array, state: dict[str, jax.Array],
          boundary: jax.Array | None) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
    """One step and the boundary decision it used: (y, b (B,) bool, state')."""
    e, _ = model.encoder(x, state["h_enc"])
    b = model.route(e, state["k_prev"])[0] if boundary is None else boundary
    y, state = model.step(x, state, b)
    return y, b[:, 0], state


def run_hnet(model: HNetStep, xs: jax.Array, boundaries: jax.Array | None = None
             ) -> tuple[jax.Array, jax.Array]:
    """Time-major xs (T, B, d_model) -> (ys (T, B, d_out), boundaries (T, B) bool).

    `boundaries` (T, B) bool, if given, replace the router's decisions. One jitted step in
    a Python loop (float models: nothing observes)."""
    step = nnx.jit(_step)
    state, ys, bs = model.initial_state(xs.shape[1]), [], []
    for t, x in enumerate(xs):
        forced = None if boundaries is None else jnp.asarray(boundaries[t])[:, None]
        y, b, state = step(model, jnp.asarray(x), state, forced)
        ys.append(y)
        bs.append(b)
    return jnp.stack(ys), jnp.stack(bs)
