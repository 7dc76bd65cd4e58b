"""A backbone in front of a sparse wiring (issue 18): [x, h] -> features -> sensory inputs.

`CfC(AutoNCP(32, output_size=10, sparsity_level=0.5), backbone_units=[64, 32],
backbone_layers=2)`: the backbone is dense over x and the whole state, its 32 features are
the wiring's sensory inputs, and the NCP layers keep their masks. Layers run unrolled over
a fixed T (eager JAX then reuses cached ops instead of compiling a scan per call).
"""

import numpy as np
import pytest

F, T = 4, 3
UNITS, MOTOR, S = 16, 4, 8  # a small AutoNCP behind a [12, 8] backbone (the seed's sizes:
# tests/models/test_migration_guide.py)


def _wired(**kwargs):
    from ncc.models.keras import AutoNCP, CfC

    return CfC(AutoNCP(units=UNITS, output_size=MOTOR, sparsity_level=0.5, seed=1),
               backbone_units=[12, S], backbone_layers=2, unroll=True, **kwargs)


def _model(layer):
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((T, F)), layer])


def _xs(batch=3, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, T, F)).astype(np.float32)


@pytest.fixture(scope="module")
def wired():
    """(layer, model, outputs on _xs()) of one built wired CfC with backbone dropout."""
    layer = _wired(backbone_dropout=0.2)
    model = _model(layer)
    return layer, model, np.asarray(model(_xs()))


def test_backbone_maps_x_and_state_to_the_wirings_sensory_inputs(wired):
    layer, model, y = wired
    assert y.shape == (3, T, MOTOR) and np.isfinite(y).all()
    cell = layer.cell
    assert cell.wired_backbone and cell.backbone_units == [12, S]
    # the backbone sees [x, h] densely; the wiring is built on its S features
    assert tuple(cell.backbone[0].kernel.shape) == (F + UNITS, 12)
    assert cell.wiring.input_dim == S and cell.step_features == F
    inter = cell.layer_sizes[0]
    assert tuple(cell.ff1_kernel[0].shape) == (S + inter, inter)
    # the NCP structure stays: every wiring layer's kernels are masked (sparse)
    assert all(m is not None and 0 < m.mean() < 1 for m in cell.masks)
    sensory = np.abs(cell.wiring.sensory_adjacency_matrix)
    np.testing.assert_array_equal(cell.masks[0][:S],
                                  sensory[:, cell.wiring.get_neurons_of_layer(0)])
    # a masked-out synapse has no effect: perturbing its weight leaves the output as is
    kernel = np.array(cell.ff1_kernel[1])
    off = tuple(np.argwhere(cell.masks[1] == 0)[0])
    kernel[off] += 5.0
    cell.ff1_kernel[1].assign(kernel)
    try:
        np.testing.assert_array_equal(np.asarray(model(_xs())), y)
    finally:
        kernel[off] -= 5.0
        cell.ff1_kernel[1].assign(kernel)
    # the backbone's dropout acts when training (one mask per sequence), not otherwise
    assert not np.allclose(np.asarray(model(_xs(), training=True)), y)


def test_config_and_keras_file_round_trip_with_safe_mode(wired, tmp_path):
    import keras

    layer, model, y = wired
    for other in (layer, _wired(mode="no_gate", activation="relu")):
        config = other.get_config()
        again = type(other).from_config(config)
        assert again.get_config() == config
        assert again.cell.wired_backbone
    assert {k: config[k] for k in ("backbone_units", "backbone_layers", "mode")} == {
        "backbone_units": [12, S], "backbone_layers": 2, "mode": "no_gate"}
    model.save(tmp_path / "wired.keras")
    loaded = keras.models.load_model(tmp_path / "wired.keras", safe_mode=True)
    np.testing.assert_allclose(np.asarray(loaded(_xs())), y, atol=1e-6)
    np.testing.assert_array_equal(loaded.layers[0].wiring.adjacency_matrix,
                                  layer.wiring.adjacency_matrix)


def test_nnx_cell_equals_keras_and_round_trips_its_config(wired):
    import jax.numpy as jnp
    from flax import nnx

    from ncc.models.nnx.liquid import CfCCell

    layer, _, expected = wired
    cell = CfCCell.from_keras(layer)
    assert cell.wired_backbone and cell.backbone[0].kernel.shape == (F + UNITS, 12)
    step = nnx.jit(lambda c, x, h: c(x, h))  # one compile, not one per eager op
    xs, h, ys = _xs(), cell.initial_state(3), []
    for t in range(T):
        y, h = step(cell, jnp.asarray(xs[:, t]), h)
        ys.append(np.asarray(y))
    assert np.abs(np.stack(ys, 1) - expected).max() <= 1e-5
    again = CfCCell(**cell.get_config(), rngs=nnx.Rngs(1))
    assert again.wiring == cell.wiring and again.wired_backbone
    assert again.get_config() == cell.get_config()


def test_quantization_of_a_wired_backbone_is_refused_clearly():
    from ncc.models.keras import AutoNCP, CfC
    from ncc.models.quantization import QuantConfig

    with pytest.raises(ValueError, match="post-training"):
        CfC(AutoNCP(10, 3), backbone_units=8, quantization=QuantConfig())


def test_ltc_backbone_feeds_the_sensory_synapses_of_a_sparse_wiring():
    """LTC's backbone maps x (as before; its state enters through the synapses) to the
    wiring's sensory inputs: the sparse sensory and internal adjacency stays."""
    from ncc.models.keras import LTC, AutoNCP

    layer = LTC(AutoNCP(units=UNITS, output_size=MOTOR, sparsity_level=0.5, seed=1),
                backbone_units=[12, S], backbone_layers=2, ode_unfolds=1, unroll=True)
    layer.build((None, T, F))  # (its forward is the existing LTC path: not run here)
    cell = layer.cell
    assert cell.wiring.input_dim == S and tuple(cell.params["sensory_w"].shape) == (S, UNITS)
    assert 0 < cell.sensory_mask.mean() < 1 and 0 < cell.mask.mean() < 1

