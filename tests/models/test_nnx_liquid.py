"""NNX CfC cell: equals ncps.keras CfC; fake-quant points calibrate, freeze, show in jaxprs."""

import jax
import jax.numpy as jnp
import ncps.keras
import numpy as np
import pytest
from flax import nnx

from ncc.models import quantization as q
from ncc.models.nnx.fake_quant import FakeQuant, freeze, set_mode
from ncc.models.nnx.liquid import CfCCell, run_cell


@pytest.mark.parametrize("mode,backbone_layers", [("default", 1), ("pure", 1), ("no_gate", 2),
                                                  ("default", 0)])
def test_cfc_cell_equals_ncps_keras(mode, backbone_layers, xs, dts):
    layer = ncps.keras.CfC(6, mode=mode, backbone_units=8, backbone_layers=backbone_layers,
                           return_sequences=True)
    expected = np.asarray(layer(xs))
    cell = CfCCell(4, 6, mode=mode, backbone_units=8, backbone_layers=backbone_layers,
                   rngs=nnx.Rngs(0)).load_ncps_keras(layer)
    out, _ = run_cell(cell, jnp.asarray(xs))
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-5)
    assert np.abs(expected).max() > 0.1
    # one step with a time span: ncps' CfCCell takes (x, t)
    h = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
    theirs = np.asarray(layer.cell((xs[:, 0], dts[:, :1]), [h])[0])
    ours = np.asarray(cell(jnp.asarray(xs[:, 0]), jnp.asarray(h), jnp.asarray(dts[:, 0]))[0])
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_quantized_cfc_calibrates_freezes_and_lands_on_the_state_grid(xs):
    cell = CfCCell(4, 6, backbone_units=8, quantization=q.QuantConfig(state_bits=16),
                   rngs=nnx.Rngs(1))
    x = jnp.asarray(xs)
    run = nnx.jit(run_cell)
    float_out, _ = run(cell, x)
    assert set_mode(cell, "calibrate") > 5
    run(cell, x)
    frozen = freeze(cell, weights=True)
    state = cell.q_state.params
    assert state is not None and state.bits == 16 and frozen
    out, _ = run(cell, x)
    grid = np.asarray(out) / state.scale[0] + state.zero_point[0]
    np.testing.assert_allclose(grid, np.round(grid), atol=1e-3)
    assert 0 < np.abs(np.asarray(out) - np.asarray(float_out)).max() < 0.1


def test_quantized_cfc_jaxpr_carries_readable_fake_quants(xs):
    cell = CfCCell(4, 6, backbone_units=8, quantization=q.QuantConfig(), rngs=nnx.Rngs(2))
    set_mode(cell, "calibrate")
    nnx.jit(run_cell)(cell, jnp.asarray(xs))
    freeze(cell, weights=True)
    graphdef, params = nnx.split(cell)

    def step(p, x, h):
        return nnx.merge(graphdef, p)(x, h)[0]

    jaxpr = jax.make_jaxpr(step)(params, xs[:, 0], jnp.zeros((3, 6)))
    specs = [q.fake_quant_spec_from_jaxpr_eqn(e) for e in jaxpr.eqns]
    kinds = [s.kind for s in specs if s is not None]
    assert kinds.count("table") == 2  # lecun_tanh backbone, sigmoid gate
    assert kinds.count("quant") >= 10  # input, state, weights, activations
    assert cell.q_state.params in [s.params for s in specs if s is not None]


def test_fake_quant_point_needs_calibration_before_quant_mode():
    fq = FakeQuant(8)
    fq.mode = "quant"
    with pytest.raises(ValueError, match="calibrate"):
        fq(jnp.ones(3))
    with pytest.raises(ValueError):
        CfCCell(4, 6, mode="fast", rngs=nnx.Rngs(0))
