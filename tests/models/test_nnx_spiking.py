"""Quantized spiking neurons: float mode equals spyx, quantized mode equals the integer model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import spyx
from flax import nnx

from ncc.models import quantization as q
from ncc.models.nnx import spiking as S

T, B, N = 12, 3, 5


@pytest.fixture(scope="module")
def currents() -> np.ndarray:
    """(T, B, N) input currents, strong enough to make neurons fire."""
    return (np.random.default_rng(11).standard_normal((T, B, N)) * 0.8 + 0.3).astype(np.float32)


def _pairs():
    act = spyx.axn.triangular()
    return {
        "lif": (lambda: spyx.nn.LIF((N,), beta=None, threshold=0.7, activation=act,
                                    rngs=nnx.Rngs(5)),
                lambda: S.QuantLIF((N,), beta=None, threshold=0.7, activation=act,
                                   rngs=nnx.Rngs(5))),
        "if": (lambda: spyx.nn.IF((N,), threshold=1.3, activation=act),
               lambda: S.QuantIF((N,), threshold=1.3, activation=act)),
        "li": (lambda: spyx.nn.LI((N,), rngs=nnx.Rngs(0)), lambda: S.QuantLI((N,))),
        "cuba": (lambda: spyx.nn.CuBaLIF((N,), threshold=0.9, activation=act, rngs=nnx.Rngs(2)),
                 lambda: S.QuantCuBaLIF((N,), threshold=0.9, activation=act, rngs=nnx.Rngs(2))),
    }


@pytest.mark.parametrize("kind", ["lif", "if", "li", "cuba"])
def test_float_mode_equals_spyx_outputs_state_and_gradients(kind, currents):
    ref, ours = (make() for make in _pairs()[kind])
    out_r, st_r = spyx.nn.run(ref, currents)
    out_o, st_o = spyx.nn.run(ours, currents)
    np.testing.assert_array_equal(np.asarray(out_o), np.asarray(out_r))
    np.testing.assert_array_equal(np.asarray(st_o), np.asarray(st_r))
    if kind != "li":
        assert 0 < float(jnp.mean(out_r)) < 1  # the comparison covers spikes and resets

    def loss(x, model):
        return jnp.sum(spyx.nn.run(model, x)[0] * jnp.linspace(0.5, 1.5, N))

    np.testing.assert_allclose(np.asarray(jax.grad(loss)(currents, ours)),
                               np.asarray(jax.grad(loss)(currents, ref)), rtol=1e-6, atol=1e-7)


def _int_run(model, xq, kind):
    """Integer reference over time: (spikes or outputs, final state) on the grid."""
    beta = np.clip(np.asarray(model.beta[...]), 0, 1) if hasattr(model, "beta") else None
    v = np.zeros((B, N), np.int64)
    i = np.zeros((B, N), np.int64)
    outs = []
    for t in range(T):
        if kind == "lif":
            s, v = S.lif_step_int(v, xq[t], beta=beta, theta=model.threshold_q,
                                  reset=model.reset, shift=model.decay_shift)
        elif kind == "if":
            s, v = S.if_step_int(v, xq[t], theta=model.threshold_q, reset=model.reset)
        elif kind == "li":
            s, v = S.li_step_int(v, xq[t], beta=beta, shift=model.decay_shift)
        else:
            alpha = np.clip(np.asarray(model.alpha[...]), 0, 1)
            s, v, i = S.cuba_lif_step_int(v, i, xq[t], alpha=alpha, beta=beta,
                                          theta=model.threshold_q, reset=model.reset)
        outs.append(s)
    state = np.concatenate([v, i], -1) if kind == "cuba" else v
    return np.stack(outs), state


@pytest.mark.parametrize("kind,kwargs", [
    ("lif", {}), ("lif", {"reset": "zero"}), ("lif", {"decay_shift": 3}),
    ("if", {}), ("if", {"reset": "zero"}), ("li", {}), ("li", {"decay_shift": 2}),
    ("cuba", {}), ("cuba", {"reset": "zero"}),
])
def test_quantized_mode_is_the_integer_model_bit_for_bit(kind, kwargs, currents):
    cls = {"lif": S.QuantLIF, "if": S.QuantIF, "li": S.QuantLI, "cuba": S.QuantCuBaLIF}[kind]
    args = {"li": {}, "if": {"threshold": 0.6}}.get(kind, {"threshold": 0.6, "rngs": nnx.Rngs(3)})
    model = cls((N,), quantized=True, **args, **kwargs)
    p = model.membrane
    xq = q.quantize(currents, p).astype(np.int64)
    out, state = spyx.nn.run(model, currents)
    ref_out, ref_state = _int_run(model, xq, kind)
    if kind == "li":
        np.testing.assert_array_equal(np.asarray(out), q.dequantize(ref_out, p))
    else:
        np.testing.assert_array_equal(np.asarray(out), ref_out.astype(np.float32))
        assert 0 < ref_out.mean() < 1
    np.testing.assert_array_equal(np.asarray(state), q.dequantize(ref_state, p))


def test_quantized_is_close_to_float_and_trains():
    x = (np.random.default_rng(4).standard_normal((T, B, N)) * 0.5 + 0.4).astype(np.float32)
    m = S.QuantLIF((N,), beta=0.9, threshold=1.0, rngs=nnx.Rngs(0))
    _, v_float = spyx.nn.run(m, x)
    S.set_quantized(m, True)
    _, v_q = spyx.nn.run(m, x)
    assert np.abs(np.asarray(v_q) - np.asarray(v_float)).max() < 0.01

    def loss(model):
        return jnp.sum(spyx.nn.run(model, x)[0])

    grads = nnx.grad(loss)(m)
    assert np.isfinite(float(grads["beta"][...])) and float(grads["beta"][...]) != 0.0


def test_integer_threshold_and_membrane_grid():
    m = S.QuantLIF((N,), beta=0.5, threshold=2.0, rngs=nnx.Rngs(0), quantized=True)
    assert m.threshold_q == 4096 and m.membrane.bits == 16
    assert m.theta == pytest.approx(2.0, rel=1e-6)
    with pytest.raises(ValueError):
        S.QuantLIF((N,), beta=0.5, threshold=1.0, threshold_q=40000, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError):
        S.QuantIF((N,), reset="hold")


def test_inside_spyx_sequential_with_linear_layers(currents):
    model = spyx.nn.Sequential(
        nnx.Linear(N, 7, rngs=nnx.Rngs(0)), S.QuantLIF((7,), beta=0.8, rngs=nnx.Rngs(1)),
        nnx.Linear(7, 2, rngs=nnx.Rngs(2)), S.QuantLI((2,)))
    assert S.set_quantized(model, True) == 2
    out, state = spyx.nn.run(model, currents)
    assert out.shape == (T, B, 2) and len(state) == 4
    grid = np.asarray(out) / model.layers[3].membrane.scale[0]
    np.testing.assert_array_equal(grid, np.round(grid))
