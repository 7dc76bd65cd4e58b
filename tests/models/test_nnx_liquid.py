"""NNX CfC cell: equals ncps.keras CfC; fake-quant points calibrate, freeze, show in jaxprs."""

import jax
import jax.numpy as jnp
import ncps.keras
import numpy as np
import pytest
from flax import nnx

from ncc.models import quantization as q
from ncc.models import wirings
from ncc.models.nnx.fake_quant import FakeQuant, freeze, set_mode
from ncc.models.nnx.liquid import CfCCell, LTCCell, run_cell


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
    assert cell.exact()  # frozen int8: the forward is the integer arithmetic
    graphdef, params = nnx.split(cell)

    def step(p, x, h):
        return nnx.merge(graphdef, p)(x, h)[0]

    jaxpr = jax.make_jaxpr(step)(params, xs[:, 0], jnp.zeros((3, 6)))
    specs = [q.fake_quant_spec_from_jaxpr_eqn(e) for e in jaxpr.eqns]
    kinds = [s.kind for s in specs if s is not None]
    assert kinds.count("table") == 2  # lecun_tanh backbone, sigmoid gate
    assert cell.q_state.params in [s.params for s in specs if s is not None]
    names = [str(e.params["call_jaxpr"].jaxpr.debug_info.func_name) for e in jaxpr.eqns
             if e.primitive.name == "custom_jvp_call"]
    assert sum(n.startswith(q.DENSE_MARKER) for n in names) == 5  # backbone, ff1, ff2, t_a, t_b
    assert sum(n.startswith(q.BINARY_MARKER) for n in names) == 5  # t_a dt, gate in, 2 mul, add


@pytest.mark.parametrize("wiring,kwargs", [
    (wirings.AutoNCP(12, 3, seed=3), {}),
    (wirings.NCP(4, 3, 2, 2, 2, 2, 2, seed=5), {"mode": "no_gate"}),
    (wirings.NCP(4, 3, 2, 2, 2, 2, 2, seed=5), {"mode": "pure"}),
    (wirings.Random(8, 3, 0.5, random_seed=2), {"fully_recurrent": False}),
    (wirings.FullyConnected(8, 5), {"backbone_units": [8, 6], "backbone_layers": 2}),
])
def test_wired_cfc_cell_equals_ncc_keras_cfc(wiring, kwargs, xs, dts):
    from ncc.models.keras import CfC

    layer = CfC(wiring, **kwargs)
    expected = np.asarray(layer([xs, dts]))
    cell = CfCCell.from_keras(layer)
    assert cell.layer_sizes == tuple(layer.cell.layer_sizes)
    out, h = run_cell(cell, jnp.asarray(xs), jnp.asarray(dts))
    assert out.shape == expected.shape and h.shape == (3, wiring.units)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=0, atol=1e-5)
    assert np.abs(expected).max() > 0.05
    # the masks are real: a masked-out synapse has no effect
    if cell.ff1[0].mask is not None:
        assert 0 < np.asarray(cell.ff1[0].mask).mean() < 1


def test_cfc_cell_wiring_round_trips_through_its_config():
    cell = CfCCell(4, wirings.AutoNCP(10, 2, seed=1), rngs=nnx.Rngs(0))
    again = CfCCell(**cell.get_config(), rngs=nnx.Rngs(1))
    assert again.wiring == cell.wiring and again.layer_sizes == cell.layer_sizes
    assert again.ff1[1].mask == cell.ff1[1].mask
    with pytest.raises(ValueError, match="sparse wiring"):  # the wired backbone: float only
        CfCCell(4, wirings.AutoNCP(10, 2), backbone_layers=1, quantization={},
                rngs=nnx.Rngs(0))


def test_fake_quant_point_needs_calibration_before_quant_mode():
    fq = FakeQuant(8)
    fq.mode = "quant"
    with pytest.raises(ValueError, match="calibrate"):
        fq(jnp.ones(3))
    with pytest.raises(ValueError):
        CfCCell(4, 6, mode="fast", rngs=nnx.Rngs(0))


def _randomize_keras_ltc(layer, seed: int) -> None:
    """Move every LTC weight off its initial value (mappings included), keeping the
    positive ones positive, as training would."""
    from ncc.models.keras.ltc import POSITIVE

    rng = np.random.default_rng(seed)
    for name, var in layer.cell.params.items():
        value = np.asarray(var) + rng.uniform(-0.3, 0.3, var.shape)
        var.assign(np.abs(value).astype(np.float32) if name in POSITIVE
                   else value.astype(np.float32))


@pytest.mark.parametrize("wiring,kwargs", [
    (wirings.AutoNCP(12, 3, seed=3), {}),
    (wirings.FullyConnected(6), {"input_mapping": "linear", "output_mapping": None,
                                 "ode_unfolds": 3, "epsilon": 0.1}),
    (wirings.Random(8, 3, 0.5, random_seed=4), {"backbone_units": [6], "backbone_layers": 1,
                                                "input_mapping": None,
                                                "output_mapping": "linear"}),
    (wirings.NCP(4, 3, 2, 2, 2, 2, 2, seed=5), {"ode_unfolds": 1}),
])
def test_ltc_cell_equals_ncc_keras_ltc(wiring, kwargs, xs, dts):
    from ncc.models.keras import LTC

    layer = LTC(wiring, **kwargs)
    layer([xs, dts])
    _randomize_keras_ltc(layer, 0)
    expected = np.asarray(layer([xs, dts]))
    cell = LTCCell.from_keras(layer)
    out, v = run_cell(cell, jnp.asarray(xs), jnp.asarray(dts))
    assert out.shape == expected.shape and v.shape == (3, wiring.units)
    assert np.abs(np.asarray(out) - expected).max() <= 1e-5
    assert np.abs(expected).max() > 0.05
    again = LTCCell(**cell.get_config(), rngs=nnx.Rngs(1)).load_keras(layer)  # config round trip
    np.testing.assert_array_equal(np.asarray(run_cell(again, jnp.asarray(xs),
                                                      jnp.asarray(dts))[0]), np.asarray(out))


def test_ltc_cell_keeps_conductances_non_negative(xs):
    cell = LTCCell(4, 5, rngs=nnx.Rngs(0))
    before, _ = run_cell(cell, jnp.asarray(xs))
    gleak = cell.gleak[...]
    cell.gleak[...] = gleak.at[0].set(-0.5)  # an optimizer step went below zero
    cell.cm[...] = cell.cm[...].at[1].set(-0.1)
    clipped, _ = run_cell(cell, jnp.asarray(xs))  # used as 0 in the forward
    cell.constrain()  # projected to 0, as Keras' NonNeg does
    assert float(cell.gleak[0]) == 0.0 and float(cell.cm[1]) == 0.0
    projected, _ = run_cell(cell, jnp.asarray(xs))
    np.testing.assert_array_equal(np.asarray(clipped), np.asarray(projected))
    assert not np.allclose(np.asarray(before), np.asarray(projected))
    with pytest.raises(ValueError, match="ode_unfolds"):
        LTCCell(4, 5, ode_unfolds=0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="input_mapping"):
        LTCCell(4, 5, input_mapping="cubic", rngs=nnx.Rngs(0))
