"""The float ONNX artifact computes what the ORIGINAL model computes in its own framework.

Every reference here is the user's model run by its framework over a whole 1,000-step
sequence (Keras `model(x)` with return_sequences=True, `spyx.nn.run`, a jitted loop of a
plain JAX step), never our IR. The artifact runs in onnxruntime through the ncc session.
"""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import keras
import ncps.keras
import numpy as np
import onnx
import pytest
from ncps.wirings import AutoNCP

from ncc.cli.driver import compile_model
from ncc.compiler.frontends import from_jax, from_keras
from ncc.runtime.session import open_session

TOL = 1e-5
F = 4


def _seq(layer, head=3, seed=0):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((None, F)), layer] + ([keras.layers.Dense(head)] if head else [])
    return keras.Sequential(layers)


def _cfc(mode, backbone):
    """A CfC + Dense model whose recurrence is contractive, as trained models are.

    Glorot-initialized CfCs are often chaotic (no_gate without backbone even diverges to
    inf within 1,000 steps): there, float32 rounding alone (XLA against XLA with another
    fusion) grows past 1e-5 and no bound on the artifact means anything. Scaling the
    random weights by 0.6 makes every mode contractive while outputs stay O(1).
    """
    kw = {"backbone_units": 8, "backbone_layers": 1} if backbone else {"backbone_layers": 0}
    model = _seq(ncps.keras.CfC(8, mode=mode, return_sequences=True, **kw))
    model.set_weights([0.6 * w for w in model.get_weights()])
    return model


KERAS_MODELS = {
    "cfc-default-backbone": lambda: _cfc("default", True),
    "cfc-pure-backbone": lambda: _cfc("pure", True),
    "cfc-no_gate-backbone": lambda: _cfc("no_gate", True),
    "cfc-default-nobackbone": lambda: _cfc("default", False),
    "cfc-pure-nobackbone": lambda: _cfc("pure", False),
    "cfc-no_gate-nobackbone": lambda: _cfc("no_gate", False),
    "ltc-autoncp": lambda: _seq(ncps.keras.LTC(AutoNCP(12, 3, seed=0), return_sequences=True),
                                head=None),
    "gru": lambda: _seq(keras.layers.GRU(8, return_sequences=True)),
    "lstm": lambda: _seq(keras.layers.LSTM(8, return_sequences=True)),
    "simplernn": lambda: _seq(keras.layers.SimpleRNN(8, return_sequences=True)),
}


def _run_artifact(out_dir, xs, dts=None):
    """xs: (T, F) -> y (T, 1, out) from onnxruntime through the ncc session."""
    return open_session(out_dir).run(xs, dts)["y"]


def _assert_close(got, ref, steps):
    assert got.shape == ref.shape, (got.shape, ref.shape)
    assert got.shape[0] == steps
    # the reference must be doing something: moving over time, not all zero
    assert float(np.std(ref)) > 1e-2
    assert float(np.ptp(ref, axis=0).max()) > 5e-2
    err = float(np.max(np.abs(got.astype(np.float64) - ref)))
    assert err <= TOL, f"max abs error {err:.3g} > {TOL}"


@pytest.mark.parametrize("name", KERAS_MODELS)
def test_keras_model_matches_keras(name, sequence, tmp_path):
    model = KERAS_MODELS[name]()
    ref = np.asarray(model(sequence))[0][:, None, :]  # (T, 1, out), Keras on the whole sequence
    res = compile_model(model, "onnx-float", tmp_path / "art", verify_steps=0)
    assert res.manifest["target"] == "onnx-float"
    if name.startswith("ltc"):  # its synapses computed where the wiring has them only
        kinds = {n.op_type for n in onnx.load(str(res.out_dir / "model.onnx")).graph.node}
        assert "Gather" in kinds
    _assert_close(_run_artifact(res.out_dir, sequence[0]), ref, sequence.shape[1])


def test_cfc_scan_variant_matches_keras(sequence, tmp_path):
    """--sequence-length: the step inside an ONNX Scan, state threaded across chunks."""
    model = _cfc("default", True)
    ref = np.asarray(model(sequence))[0][:, None, :]
    res = compile_model(model, "onnx-float", tmp_path / "scan", sequence_length=100,
                        verify_steps=0)
    onnx_model = onnx.load(str(res.out_dir / "model.onnx"))
    assert [n.op_type for n in onnx_model.graph.node] == ["Scan"]
    x_entry = next(t for t in res.manifest["tensors"] if t["role"] == "input")
    assert x_entry["shape"][0] == 100
    got = _run_artifact(res.out_dir, sequence[0])
    _assert_close(got, ref, sequence.shape[1])


def test_cfc_with_time_spans_matches_ncps_cell(sequence, time_spans, tmp_path):
    """ncps CfC cells take `(x, ts)`; Keras 3 RNN layers cannot take a nested sequence,
    so the reference scans the model's own CfCCell over (x_t, ts_t) and applies its head."""
    model = _cfc("default", True)
    rnn, head = model.layers
    cell = rnn.cell

    def body(h, inputs):
        xt, ts = inputs
        out, (h_next,) = cell((xt, ts), [h], training=False)
        return h_next, head(out)

    @jax.jit
    def reference(xs, dts):
        h0 = jnp.zeros((1, cell.units), jnp.float32)
        return jax.lax.scan(body, h0, (xs[:, None, :], dts[:, None, :]))[1]

    xs, dts = sequence[0], time_spans[0]
    ref = np.asarray(reference(xs, dts))
    step = from_keras(model, uses_dt=True)
    res = compile_model(step, "onnx-float", tmp_path / "dt", verify_steps=0)
    roles = {t["role"] for t in res.manifest["tensors"]}
    assert "dt" in roles
    got = _run_artifact(res.out_dir, xs, dts)
    _assert_close(got, ref, len(xs))
    # the time spans are really used: regular steps give a clearly different trajectory
    regular = _run_artifact(res.out_dir, xs, np.ones_like(dts))
    assert float(np.max(np.abs(regular - got))) > 1e-2


def _lif_net():
    import spyx.nn
    from flax import nnx

    return spyx.nn.Sequential(
        nnx.Linear(F, 16, rngs=nnx.Rngs(0)),
        spyx.nn.LIF((16,), beta=0.8, rngs=nnx.Rngs(1)),
        nnx.Linear(16, 3, rngs=nnx.Rngs(2)),
        spyx.nn.LI((3,), beta=0.9, rngs=nnx.Rngs(3)),
    )


def test_spyx_lif_matches_spyx_run(sequence, tmp_path):
    import spyx.nn

    net = _lif_net()
    xs = 2.0 * sequence[0]
    ref = np.asarray(spyx.nn.run(net, jnp.asarray(xs[:, None, :]))[0])  # time-major (T, 1, 3)
    # the spiking layer really spikes, neither never nor always
    lin, lif = net.layers[0], net.layers[1]

    def spikes(v, x):
        s, v = lif(lin(x), v)
        return v, s

    rate = float(jnp.mean(jax.lax.scan(spikes, lif.initial_state(1),
                                       jnp.asarray(xs[:, None]))[1]))
    assert 0.02 < rate < 0.98
    res = compile_model(net, "onnx-float", tmp_path / "lif", verify_steps=0)
    _assert_close(_run_artifact(res.out_dir, xs), ref, len(xs))


def _jax_step_and_state():
    rng = np.random.default_rng(7)
    w = jnp.asarray(rng.standard_normal((F, 6)).astype(np.float32) * 0.5)
    u = jnp.asarray(rng.standard_normal((6, 6)).astype(np.float32) * 0.3)
    v = jnp.asarray(rng.standard_normal((6, 2)).astype(np.float32))
    b = jnp.asarray(rng.standard_normal(6).astype(np.float32) * 0.1)

    def step(x, state):
        h, c = state["h"], state["c"]
        gate = jax.nn.sigmoid(x @ w + b)
        h = gate * jnp.tanh(x @ w + h @ u) + (1 - gate) * h
        c = jnp.where(h > 0, 0.9 * c + h, jnp.maximum(c, -1.0))
        return jnp.concatenate([h @ v, jnp.sum(c, axis=-1, keepdims=True)], axis=-1), \
            {"h": h, "c": c}

    state = {"h": jnp.zeros((1, 6), jnp.float32), "c": jnp.zeros((1, 6), jnp.float32)}
    return step, state


def test_plain_jax_step_matches_jax_loop(sequence, tmp_path):
    fn, state = _jax_step_and_state()
    jstep = jax.jit(fn)
    outs = []
    for xt in sequence[0]:
        y, state = jstep(jnp.asarray(xt[None]), state)
        outs.append(np.asarray(y))
    ref = np.stack(outs)  # (T, 1, 3)
    fn, state0 = _jax_step_and_state()
    res = compile_model(from_jax(fn, (F,), state0, name="toy"), "onnx-float", tmp_path / "jax",
                        verify_steps=0)
    assert sorted(s["state_in"] for s in res.manifest["state"]) == ["state_c", "state_h"]
    _assert_close(_run_artifact(res.out_dir, sequence[0]), ref, len(sequence[0]))


_TF_SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import keras, ncps.keras, numpy as np
    assert keras.backend.backend() == "tensorflow"
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((None, 4)),
                              ncps.keras.CfC(8, backbone_units=8, return_sequences=True),
                              keras.layers.Dense(3)])
    x = np.random.default_rng(5).standard_normal((1, 1000, 4)).astype(np.float32)
    y = np.asarray(model(x))
    model.save(sys.argv[1])
    np.savez(sys.argv[2], x=x, y=y)
""")


def test_keras_file_saved_under_tensorflow_backend_compiles(tmp_path):
    path, data = tmp_path / "cfc_tf.keras", tmp_path / "tf_ref.npz"
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, "-c", _TF_SCRIPT, str(path), str(data)], env=env,
                   check=True, capture_output=True, timeout=300)
    assert keras.backend.backend() == "jax"
    res = compile_model(path, "onnx-float", tmp_path / "art", verify_steps=0)
    ref = np.load(data)
    got = _run_artifact(res.out_dir, ref["x"][0])
    _assert_close(got, ref["y"][0][:, None, :], 1000)
