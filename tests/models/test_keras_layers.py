"""ncc Keras liquid layers: shapes, time spans, masking, directions, tracing, errors, training."""

import jax
import keras
import numpy as np
import pytest

from ncc.models.keras import LTC, NCP, AutoNCP, CfC, CfCCell, FullyConnected, LTCCell, Random

LAYERS = {
    "cfc_ncp": lambda **kw: CfC(AutoNCP(10, 3, seed=1), unroll=True, **kw),
    "cfc_backbone": lambda **kw: CfC(6, mode="no_gate", backbone_units=[5, 4], unroll=True, **kw),
    "ltc_random": lambda **kw: LTC(Random(6, 2, 0.5, 3), ode_unfolds=2, unroll=True, **kw),
}


def _arrays(result):
    return [np.asarray(r) for r in result] if isinstance(result, (list, tuple)) \
        else [np.asarray(result)]


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_compute_output_shape_before_build_matches_call(xs, kind):
    for return_sequences in (True, False):
        for return_state in (True, False):
            for bidirectional, merge in ((False, "concat"), (True, "concat"), (True, "sum"),
                                         (True, None)):
                layer = LAYERS[kind](return_sequences=return_sequences,
                                     return_state=return_state, bidirectional=bidirectional,
                                     merge_mode=merge)
                predicted = layer.compute_output_shape((3, 5, 4))
                assert not layer.built
                shapes = [a.shape for a in _arrays(layer(xs))]
                predicted = [predicted] if isinstance(predicted[0], int) else list(predicted)
                assert [tuple(p) for p in predicted] == shapes
                out = layer.cell.output_size * (2 if bidirectional and merge == "concat" else 1)
                assert shapes[0][-1] == out


@pytest.mark.parametrize("cell", [CfCCell(AutoNCP(10, 3)), LTCCell(NCP(3, 3, 2, 2, 2, 2, 2))])
def test_cell_shapes_and_one_step_trace(cell, xs, dts):
    """The compiler's view: one step, traced by jax.make_jaxpr, with and without dt."""
    (batch, out), [(sb, units)] = cell.compute_output_shape((3, 4))
    assert (batch, out, sb, units) == (3, cell.wiring.output_dim, 3, cell.wiring.units)
    cell.build((None, 4))
    h = np.zeros((3, cell.state_size), np.float32)
    trainable = [v.value for v in cell.trainable_variables]
    fixed = [v.value for v in cell.non_trainable_variables]

    def step(x, dt, state):
        inputs = x if dt is None else (x, dt)
        (y, new), _ = cell.stateless_call(trainable, fixed, inputs, [state])
        return y, new[0]

    for dt in (None, dts[:, :1]):
        jaxpr = jax.make_jaxpr(lambda x, s, dt=dt: step(x, dt, s))(xs[:, 0], h)
        y_shape, h_shape = (v.aval.shape for v in jaxpr.jaxpr.outvars)
        assert (y_shape, h_shape) == ((3, out), (3, units))
    y1, _ = step(xs[:, 0], None, h)
    y_ones, _ = step(xs[:, 0], np.ones((3,), np.float32), h)  # dt (batch,) also accepted
    y_dt, _ = step(xs[:, 0], dts[:, :1], h)
    np.testing.assert_allclose(y1, y_ones, atol=1e-6)
    assert np.abs(np.asarray(y1) - np.asarray(y_dt)).max() > 1e-4


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_time_span_input(kind, xs, dts):
    layer = LAYERS[kind]()
    plain = np.asarray(layer(xs))
    ones = np.asarray(layer([xs, np.ones((3, 5), np.float32)]))
    np.testing.assert_allclose(plain, ones, atol=1e-6)
    a = np.asarray(layer([xs, dts]))
    b = np.asarray(layer([xs, dts[..., None]]))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - plain).max() > 1e-4
    # the sequence result is the cell stepped by hand with the same (x, dt)
    h = np.zeros((3, layer.cell.state_size), np.float32)
    for t in range(5):
        y, (h,) = layer.cell((xs[:, t], dts[:, t:t + 1]), [h])
        np.testing.assert_allclose(np.asarray(y), a[:, t], atol=1e-5)


@pytest.mark.parametrize("kind", sorted(LAYERS))
@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
def test_bidirectional_is_forward_plus_reversed_backward(kind, merge_mode, xs, dts):
    layer = LAYERS[kind](bidirectional=True, merge_mode=merge_mode)
    y = _arrays(layer([xs, dts]))
    fwd = LAYERS[kind]()
    bwd = LAYERS[kind](go_backwards=True)
    fwd([xs, dts])
    bwd([xs, dts])
    fwd.cell.set_weights(layer.cell.get_weights())
    bwd.cell.set_weights(layer.backward_cell.get_weights())
    f = np.asarray(fwd([xs, dts]))
    b = np.asarray(bwd([xs, dts]))[:, ::-1]
    assert np.abs(f - b).max() > 1e-4  # the two directions have their own weights
    expected = {"concat": [np.concatenate([f, b], -1)], "sum": [f + b], "mul": [f * b],
                "ave": [(f + b) / 2], None: [f, b]}[merge_mode]
    assert len(y) == len(expected)
    for got, want in zip(y, expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_go_backwards_equals_reversed_input(xs):
    fwd, bwd = CfC(AutoNCP(10, 3, seed=1), unroll=True), \
        CfC(AutoNCP(10, 3, seed=1), go_backwards=True, unroll=True, return_sequences=False)
    fwd(xs)
    bwd(xs)
    bwd.set_weights(fwd.get_weights())
    np.testing.assert_allclose(np.asarray(bwd(xs)), np.asarray(fwd(xs[:, ::-1]))[:, -1],
                               atol=1e-6)


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_masking_holds_state_over_masked_steps(kind, xs):
    keras.utils.set_random_seed(0)
    padded = xs.copy()
    padded[:, 3:] = 0.0  # the last two steps are padding
    inputs = keras.Input((5, 4))
    last = LAYERS[kind](return_sequences=False, return_state=True)
    outputs = last(keras.layers.Masking(0.0)(inputs))
    model = keras.Model(inputs, outputs)
    y, h = (np.asarray(a) for a in model(padded))
    y3, h3 = (np.asarray(a) for a in last(xs[:, :3]))
    np.testing.assert_allclose(y, y3, atol=1e-5)
    np.testing.assert_allclose(h, h3, atol=1e-5)


def test_old_call_styles_mean_fully_connected(xs):
    for layer in (CfC(8), CfC(units=8), LTC(units=8)):
        assert isinstance(layer.wiring, FullyConnected) and layer.wiring.units == 8
        assert np.asarray(layer(xs)).shape == (3, 5, 8)


def test_ltc_positivity_constraints_hold_after_training(xs):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5, 4)), LTC(4, ode_unfolds=1, return_sequences=False)])
    model.compile(keras.optimizers.SGD(50.0), "mse")
    model.fit(xs, np.full((3, 4), -5.0, np.float32), epochs=2, verbose=0)
    params = model.layers[0].cell.params
    constrained = np.concatenate([np.asarray(params[n]).ravel()
                                  for n in ("gleak", "cm", "w", "sensory_w")])
    assert constrained.min() >= 0.0
    assert (constrained == 0.0).any()  # the update pushed some below zero: clipped


@pytest.mark.parametrize("make,arg", [
    (lambda: CfC(8, mode="fast"), "mode"),
    (lambda: CfC(8, backbone_layers=-1), "backbone_layers"),
    (lambda: CfC(8, backbone_units=0), "backbone_units"),
    (lambda: CfC(8, backbone_units=[4, 4], backbone_layers=3), "backbone_layers"),
    (lambda: CfC(8, backbone_units=4, backbone_dropout=1.0), "backbone_dropout"),
    (lambda: CfC(8, merge_mode="max", bidirectional=True), "merge_mode"),
    (lambda: CfC(8, bidirectional=True, go_backwards=True), "go_backwards"),
    (lambda: CfC(), "wiring"),
    (lambda: CfC(4, units=4), "units"),
    (lambda: CfC(0), "units"),
    (lambda: LTC(4, input_mapping="relu"), "input_mapping"),
    (lambda: LTC(4, output_mapping="softmax"), "output_mapping"),
    (lambda: LTC(4, ode_unfolds=0), "ode_unfolds"),
    (lambda: LTC(4, epsilon=-1.0), "epsilon"),
    (lambda: LTC(4, initialization_ranges={"tau": (0, 1)}), "tau"),
    (lambda: LTC(4, initialization_ranges={"cm": (-1, 1)}), "cm"),
    (lambda: LTC(4, initialization_ranges={"mu": (1, 0)}), "mu"),
])
def test_bad_arguments_raise_value_error(make, arg):
    with pytest.raises(ValueError, match=arg):
        make()


def test_bad_inputs_raise_value_error(xs):
    layer = CfC(AutoNCP(10, 3))
    layer(xs)
    with pytest.raises(ValueError, match="input_dim"):
        layer.cell.wiring.build(5)
    with pytest.raises(ValueError, match="initial_state"):
        layer(xs, initial_state=[np.zeros((3, 10)), np.zeros((3, 10))])


@pytest.mark.parametrize("make", [
    lambda: CfC(8, backbone_units=8, backbone_dropout=0.2, return_sequences=False),
    lambda: LTC(FullyConnected(8, 2), ode_unfolds=2, return_sequences=False),
], ids=["cfc", "ltc"])
def test_training_reduces_the_loss(make):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 4, 3)).astype(np.float32)
    y = (x[:, -1, 0] > 0).astype(np.int32)  # sign of the last step: learnable in a few epochs
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4, 3)), make(), keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(0.05),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=4, batch_size=32, verbose=0)
    assert model.evaluate(x, y, verbose=0) < 0.7 * before
