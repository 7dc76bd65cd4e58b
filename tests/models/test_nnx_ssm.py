"""NNX LRU step (`ncc.models.nnx.ssm.LRU`): float mode equals spyx 1.0's `spyx.ssm.LRU`;
it compiles (float and integer targets bit-exact to the golden model); a frozen QAT layer's
forward is the golden model of its compiled artifact, bit for bit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import spyx.ssm
from flax import nnx

from ncc import numerics as nx
from ncc.cli.driver import compile_model
from ncc.compiler.interpret import run_sequence
from ncc.models.nnx import LRU, run_lru
from ncc.models.nnx.fake_quant import freeze, set_mode
from ncc.models.quantization import QuantConfig
from ncc.runtime.session import open_session

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


# --- compiled: float from the layer, integer targets from calibration (PTQ) -------------------


@pytest.fixture(scope="module")
def spyx_layer():
    return spyx.ssm.LRU(D, S, rngs=nnx.Rngs(0))


def test_float_artifact_equals_spyx_over_1000_steps(spyx_layer, tmp_path):
    layer = LRU.from_spyx(spyx_layer)
    xs = _inputs(1000, 1, 3)
    want = np.asarray(jax.jit(spyx_layer)(jnp.asarray(xs)))
    res = compile_model(layer, "onnx-float", tmp_path / "float", verify_steps=0)
    assert len(res.graph.state_pairs) == 1  # [h_re, h_im]
    (y,) = res.graph.by_role("output")
    got = open_session(res.out_dir).run(xs)[y].reshape(want.shape)
    assert np.abs(got - want).max() <= 1e-5
    assert np.abs(want[-100:]).max() > 0.1


@pytest.mark.parametrize("target", ["onnx-int8", "c"])
def test_integer_artifact_is_golden(target, spyx_layer, tmp_path):
    calibration = {"x": _inputs(600, 2, 5).transpose(1, 0, 2)}  # (N, T, D): 300 + 300 steps
    res = compile_model(LRU.from_spyx(spyx_layer), target, tmp_path / target,
                        calibration=calibration, verify_steps=300)
    report = res.report
    assert report["exactness"]["passed"] and report["steps"] == 300
    for out in res.graph.outputs:  # y and the state, bit for bit
        assert report["golden"][out] == {"identical": 1.0, "max_lsb": 0}
    assert report["outputs"]["y"]["sqnr_db"] >= 20


# --- QAT: calibrate, freeze; the forward is the compiled artifact's golden model --------------


@pytest.fixture(scope="module")
def qat_layer(spyx_layer) -> LRU:
    layer = LRU.from_spyx(spyx_layer, quantization=QuantConfig())
    set_mode(layer, "calibrate")
    nnx.jit(run_lru)(layer, jnp.asarray(_inputs(100, 4, 1)))
    frozen = freeze(layer, weights=True)
    assert {"q_state", "q_y", "w_h", "w_y"} <= set(frozen) and layer.exact()
    return layer


@pytest.mark.parametrize("target", ["onnx-int8", "c"])
def test_qat_forward_equals_golden_over_1000_steps(target, qat_layer, tmp_path):
    res = compile_model(qat_layer, target, tmp_path / target,
                        verify_steps=300)  # no calibration data: the layer's own grids
    q = res.graph
    assert res.report["exactness"]["passed"], res.report
    assert all(res.report["golden"][o]["identical"] == 1.0 for o in q.outputs)
    (state_in,), (state_out,) = q.by_role("state_in"), q.by_role("state_out")
    for tensor in ("x", state_in, state_out):
        assert q.tensors[tensor].quant == qat_layer.q_state.params  # one grid
    assert q.tensors["y"].quant == qat_layer.q_y.params
    assert [op.kind for op in q.ops].count("fully_connected") == 2  # W_h and W_y

    xs = _inputs(1000, 1, 7)
    ys, hs = _scan(qat_layer, xs)
    out = run_sequence(q, nx.quantize(xs, q.tensors["x"].quant))
    y_gold = nx.dequantize(out["y"], q.tensors["y"].quant)
    h_gold = nx.dequantize(out[state_out], q.tensors[state_out].quant)
    np.testing.assert_array_equal(ys.view(np.uint32), y_gold.view(np.uint32))
    np.testing.assert_array_equal(hs.view(np.uint32), h_gold.view(np.uint32))
    assert len(np.unique(out[state_out])) > 100  # the state moves over its grid


def test_qat_forward_is_close_to_float_and_trains(spyx_layer, qat_layer):
    xs = _inputs(300, 1, 9)
    want = np.asarray(jax.jit(spyx_layer)(jnp.asarray(xs)))
    got, _ = _scan(qat_layer, xs)
    sqnr = 10 * np.log10(np.sum(want**2) / np.sum((got - want) ** 2))
    assert sqnr >= 20

    def loss(model):
        return jnp.sum(run_lru(model, jnp.asarray(xs[:20]))[0] ** 2)

    grads = nnx.grad(loss)(qat_layer)  # straight-through: every parameter gets a gradient
    for name in ("nu", "theta", "B_re", "C_im", "D"):
        g = np.asarray(grads[name][...])
        assert np.all(np.isfinite(g)) and np.any(g != 0), name


def test_qat_checkpoint_round_trips_with_its_grids(qat_layer, tmp_path):
    from ncc.models.checkpoint import load_checkpoint, save_checkpoint

    again = load_checkpoint(save_checkpoint(qat_layer, tmp_path / "lru.ckpt"))
    assert isinstance(again, LRU) and again.exact()
    assert again.w_h.params == qat_layer.w_h.params and again.q_y.params == qat_layer.q_y.params
    xs = _inputs(50, 1, 2)
    np.testing.assert_array_equal(_scan(again, xs)[0], _scan(qat_layer, xs)[0])


def test_recurrence_grid_holds_the_eigenvalues():
    """W_h's frozen per-channel grid (`eigenvalue_peaks`) is a valid int8 grid (no entry
    beyond +-127) that rounds the eigenvalues far less (rms) than the plain absmax grid."""
    from ncc.models.nnx.ssm import eigenvalue_peaks
    from ncc.models.quantization import symmetric_params

    layer = LRU(16, 48, r_min=0.9, r_max=0.999, rngs=nnx.Rngs(4))
    w = np.asarray(layer.recurrence_kernel())
    lam_re, lam_im = (np.asarray(v) for v in layer.eigenvalues())
    rows = slice(16, 16 + 48)

    def lam_error(params) -> float:
        assert np.abs(w / np.asarray(params.scale)).max() <= 127 + 1e-3  # nothing saturates
        wq = nx.dequantize(nx.quantize(w, params), params)
        d_re, d_im = np.diag(wq[rows, :48]) - lam_re, np.diag(wq[rows, 48:]) - lam_im
        return float(np.sqrt(np.mean(d_re**2 + d_im**2)))  # rms |lam_q - lam|

    plain = lam_error(symmetric_params(np.abs(w).max(axis=0), 8, axis=1))
    held = lam_error(symmetric_params(eigenvalue_peaks(np.abs(w), lam_re, lam_im), 8, axis=1))
    assert plain > 1e-3  # steps of 1/127 of |lam| near 1: what the plain grid loses
    assert held < plain / 3
