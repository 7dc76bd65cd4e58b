"""NNX Mamba step (`ncc.models.nnx.mamba.Mamba`): float mode equals spyx 1.0's
`spyx.ssm.Mamba`; a calibrated, frozen QAT layer's forward is the golden model of its
compiled artifact bit for bit over 1,000 steps; checkpoints keep its grids."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import spyx.ssm
from flax import nnx

from ncc import numerics as nx
from ncc.cli.driver import compile_model
from ncc.compiler.interpret import run_sequence
from ncc.models.nnx import Mamba
from ncc.models.nnx.fake_quant import freeze, set_mode
from ncc.models.quantization import QuantConfig

D, S = 4, 4
STEP = nnx.jit(lambda m, x, h: m(x, h))  # one compilation per layer; loops stay in Python


def _inputs(steps: int, batch: int, seed: int) -> np.ndarray:
    """(T, B, D) standard-normal, time-major as spyx's layers take them."""
    return np.random.default_rng(seed).standard_normal((steps, batch, D)).astype(np.float32)


def _scan(layer: Mamba, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ys (T, B, D), states (T, B, D S)) of the jitted step over time."""
    h, ys, hs = layer.initial_state(xs.shape[1]), [], []
    for x in xs:
        y, h = STEP(layer, jnp.asarray(x), h)
        ys.append(np.asarray(y))
        hs.append(np.asarray(h))
    return np.stack(ys), np.stack(hs)


@pytest.fixture(scope="module")
def spyx_layer():
    return spyx.ssm.Mamba(D, S, rngs=nnx.Rngs(0))


def test_float_mode_equals_spyx_mamba_step_for_step():
    ref = spyx.ssm.Mamba(D, S, rngs=nnx.Rngs(3))
    ours = Mamba(D, S, rngs=nnx.Rngs(3))  # spyx's initialization, draw for draw
    for name, theirs in (("x_proj", ref.x_proj.kernel), ("dt_proj", ref.dt_proj.kernel),
                         ("dt_bias", ref.dt_proj.bias), ("A_log", ref.A_log), ("D", ref.D)):
        np.testing.assert_array_equal(np.asarray(getattr(ours, name)[...]),
                                      np.asarray(theirs[...]))
    xs = _inputs(300, 2, 0)
    want = np.asarray(jax.jit(ref)(jnp.asarray(xs)))
    got, _ = _scan(ours, xs)
    assert np.abs(got - want).max() <= 1e-5
    assert np.abs(want[-50:]).max() > 0.1  # alive at the end
    again, _ = _scan(Mamba.from_spyx(ref), xs[:20])
    np.testing.assert_array_equal(again, got[:20])


@pytest.fixture(scope="module")
def qat_layer(spyx_layer) -> Mamba:
    layer = Mamba.from_spyx(spyx_layer, quantization=QuantConfig())
    set_mode(layer, "calibrate")
    _scan(layer, _inputs(100, 4, 1))
    frozen = freeze(layer, weights=True)
    assert {"q_u", "q_h", "q_y", "w_A", "w_sum", "w_D"} <= set(frozen) and layer.exact()
    return layer


@pytest.fixture(scope="module")
def qat_run(qat_layer):
    xs = _inputs(1000, 1, 7)
    return xs, _scan(qat_layer, xs)


@pytest.mark.parametrize("target", ["onnx-int8", "c"])
def test_qat_forward_equals_golden_over_1000_steps(target, qat_layer, qat_run, tmp_path):
    res = compile_model(qat_layer, target, tmp_path / target,
                        verify_steps=300)  # no calibration data: the layer's own grids
    q = res.graph
    assert res.report["exactness"]["passed"], res.report
    assert all(res.report["golden"][o]["identical"] == 1.0 for o in q.outputs)
    (state_in,), (state_out,) = q.by_role("state_in"), q.by_role("state_out")
    assert q.tensors["x"].quant == qat_layer.q_u.params
    assert q.tensors[state_in].quant == q.tensors[state_out].quant == qat_layer.q_h.params
    assert q.tensors["y"].quant == qat_layer.q_y.params
    kinds = [op.kind for op in q.ops]
    assert (kinds.count("fully_connected"), kinds.count("lut"), kinds.count("qmul"),
            kinds.count("qadd")) == (7, 2, 4, 2)

    xs, (ys, hs) = qat_run
    out = run_sequence(q, nx.quantize(xs, q.tensors["x"].quant))
    y_gold = nx.dequantize(out["y"], q.tensors["y"].quant)
    h_gold = nx.dequantize(out[state_out], q.tensors[state_out].quant)
    np.testing.assert_array_equal(ys.view(np.uint32), y_gold.view(np.uint32))
    np.testing.assert_array_equal(hs.view(np.uint32), h_gold.view(np.uint32))
    assert len(np.unique(out[state_out])) > 100  # the state moves over its grid


def test_qat_forward_is_close_to_float_and_trains(spyx_layer, qat_layer, qat_run):
    xs, (ys, _) = qat_run
    want = np.asarray(jax.jit(spyx_layer)(jnp.asarray(xs)))
    sqnr = 10 * np.log10(np.sum(want**2) / np.sum((ys - want) ** 2))
    assert sqnr >= 15  # int8 everywhere, 14 grids in one step

    def loss(model):
        y, h = model(jnp.asarray(xs[0]), model.initial_state(1))
        y, _ = model(jnp.asarray(xs[1]), h)
        return jnp.sum(y**2)

    grads = nnx.grad(loss)(qat_layer)  # straight-through: every parameter gets a gradient
    for name in ("x_proj", "dt_proj", "dt_bias", "A_log", "D"):
        g = np.asarray(grads[name][...])
        assert np.all(np.isfinite(g)) and np.any(g != 0), name


def test_qat_checkpoint_round_trips_with_its_grids(qat_layer, tmp_path):
    from ncc.models.checkpoint import load_checkpoint, save_checkpoint

    again = load_checkpoint(save_checkpoint(qat_layer, tmp_path / "mamba.ckpt"))
    assert isinstance(again, Mamba) and again.exact()
    for name in ("w_A", "w_sum", "q_h", "q_dA", "q_y"):
        assert getattr(again, name).params == getattr(qat_layer, name).params, name
    xs = _inputs(50, 1, 2)
    np.testing.assert_array_equal(_scan(again, xs)[0], _scan(qat_layer, xs)[0])
