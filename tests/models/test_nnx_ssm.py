"""NNX LRU step (`ncc.models.nnx.ssm.LRU`): float mode equals spyx 1.0's `spyx.ssm.LRU`;
it compiles (float and integer targets bit-exact to the golden model); a frozen QAT layer's
forward is the golden model of its compiled artifact, bit for bit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import spyx.ssm
from flax import nnx

from ncc.models.nnx import LRU, run_lru

D, S = 4, 8


def _inputs(steps: int, batch: int, seed: int) -> np.ndarray:
    """(T, B, D) standard-normal, time-major as spyx's layers take them."""
    return np.random.default_rng(seed).standard_normal((steps, batch, D)).astype(np.float32)


def _scan(layer: LRU, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The step under jit, over time: (ys (T, B, D), states (T, B, 2 S))."""
    step = nnx.jit(lambda m, x, h: m(x, h))
    h, ys, hs = layer.initial_state(xs.shape[1]), [], []
    for x in xs:
        y, h = step(layer, jnp.asarray(x), h)
        ys.append(np.asarray(y))
        hs.append(np.asarray(h))
    return np.stack(ys), np.stack(hs)


@pytest.mark.parametrize("kwargs", [{}, {"r_min": 0.9, "r_max": 0.999, "use_skip": False}])
def test_float_mode_equals_spyx_lru_step_for_step(kwargs):
    ref = spyx.ssm.LRU(D, S, rngs=nnx.Rngs(3), **kwargs)
    ours = LRU(D, S, rngs=nnx.Rngs(3), **kwargs)  # spyx's initialization, draw for draw
    for name in ("nu", "theta", "B_re", "B_im", "C_re", "C_im"):
        np.testing.assert_array_equal(np.asarray(getattr(ours, name)[...]),
                                      np.asarray(getattr(ref, name)[...]))
    xs = _inputs(300, 2, 0)
    want = np.asarray(jax.jit(ref)(jnp.asarray(xs)))
    got, _ = _scan(LRU.from_spyx(ref), xs)
    assert np.abs(got - want).max() <= 1e-5
    assert np.abs(want[-50:]).max() > 0.1  # alive at the end
    np.testing.assert_allclose(np.asarray(run_lru(ours, jnp.asarray(xs[:20]))[0]), want[:20],
                               rtol=0, atol=1e-5)  # same seed: the same layer
