"""A recurrent layer that takes an initial state input compiles with it as the artifact's
initial state (issue 18, item 4).

`y, h = CfC(6, return_state=True)(x, initial_state=h0)` in a functional model with inputs
[x, h0]: h0 is not a per-step input (nor a time span) but the layer's state at t = 0; its
value (`initial_state={"h0": v}`, CLI `--initial-state file.npz`) is the artifact's initial
state, and the artifact then computes what the model computes on [x, v].
"""

import numpy as np
import pytest

from ncc.cli.driver import compile_model
from ncc.compiler.pipeline import to_graph
from ncc.compiler.trace import TraceError
from ncc.numerics import quantize
from ncc.runtime.session import open_session

UNITS = 6


def _model(lstm: bool = False):
    import keras

    from ncc.models.keras import CfC

    keras.utils.set_random_seed(0)
    x = keras.Input((None, 4), name="x")
    if lstm:
        h0, c0 = keras.Input((UNITS,), name="h0"), keras.Input((UNITS,), name="c0")
        y = keras.layers.LSTM(UNITS, return_sequences=True)(x, initial_state=[h0, c0])
        return keras.Model([x, h0, c0], keras.layers.Dense(3)(y))
    h0 = keras.Input((UNITS,), name="h0")
    y, h = CfC(UNITS, return_state=True, name="cfc")(x, initial_state=h0)
    return keras.Model([x, h0], [keras.layers.Dense(3)(y), h])


V = np.linspace(-0.6, 0.6, UNITS).astype(np.float32)


@pytest.fixture(scope="module")
def model():
    return _model()


def test_float_artifact_runs_from_the_given_initial_state(model, tmp_path):
    res = compile_model(model, "onnx-float", tmp_path / "f", initial_state={"h0": V},
                        verify_steps=0)
    g = res.graph
    assert g.by_role("dt") == [] and [s for s, _ in g.state_pairs] == ["state_h0"]
    np.testing.assert_array_equal(g.initial_state["state_h0"], V[None])
    xs = np.random.default_rng(1).standard_normal((1, 40, 4)).astype(np.float32)
    got = open_session(res.out_dir).run(xs[0, :, None, :])
    want = np.asarray(model([xs, V[None]])[0])[0]
    (y,) = g.by_role("output")
    assert np.abs(got[y].reshape(want.shape) - want).max() <= 1e-4
    # zeros when no value is given (the state is still the layer's, not an input)
    zero = to_graph(model)
    np.testing.assert_array_equal(zero.initial_state["state_h0"], np.zeros((1, UNITS)))


def test_int8_artifact_starts_from_the_quantized_initial_state(model, tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "h0.npz", h0=V)
    res = compile_model(model, "c", tmp_path / "c", initial_state=tmp_path / "h0.npz",
                        calibration={"x": rng.standard_normal((4, 40, 4)).astype(np.float32)},
                        verify_steps=40)
    assert res.report["passed"]  # C equals golden from that state
    g = res.graph
    p = g.tensors["state_h0"].quant
    np.testing.assert_array_equal(g.initial_state["state_h0"], quantize(V[None], p))
    assert "ncc_initial_s0" in (res.out_dir / "model.c").read_text()


def test_lstm_initial_states_and_refusals(model):
    g = to_graph(_model(lstm=True), initial_state={"c0": V})
    assert sorted(g.initial_state) == ["state_c0", "state_h0"]
    np.testing.assert_array_equal(g.initial_state["state_c0"], V[None])
    with pytest.raises(TraceError, match="h1.*does not take"):
        to_graph(model, initial_state={"h1": V})
    with pytest.raises(TraceError, match=r"expected shape \(6,\)"):
        to_graph(model, initial_state={"h0": V[:3]})


def test_an_initial_state_computed_inside_the_model_is_refused():
    import keras

    from ncc.models.keras import CfC

    x, z = keras.Input((None, 4)), keras.Input((2,))
    y = CfC(UNITS)(x, initial_state=keras.layers.Dense(UNITS)(z))
    with pytest.raises(TraceError, match="computed inside the model"):
        to_graph(keras.Model([x, z], y))
