"""Keras `quantization=`: observed fake-quant points on CfC / LTC / QuantDense.

Observe, freeze: outputs on the integer grid, straight-through training, `.keras` round
trip, and a frozen CfC compiles with its own parameters (no calibration data) and equals
the golden integer model bit for bit over 1,000 steps.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from ncc import numerics as nx  # noqa: E402
from ncc.cli.driver import compile_model  # noqa: E402
from ncc.compiler.interpret import run_sequence  # noqa: E402
from ncc.models.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from ncc.models.keras import (  # noqa: E402
    LTC,
    AutoNCP,
    CfC,
    QuantDense,
    freeze,
    set_quant_mode,
)
from ncc.models.quantization import (  # noqa: E402
    QuantConfig,
    QuantParams,
    dequantize,
    quantize,
)

F, STEPS = 4, 1000


def data(n: int, steps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """x (n, steps, F) in [-1, 1), dt (n, steps) in [0.2, 2)."""
    rng = np.random.default_rng(seed)
    return (rng.uniform(-1, 1, (n, steps, F)).astype(np.float32),
            rng.uniform(0.2, 2.0, (n, steps)).astype(np.float32))


def timed_model(layer: keras.layers.Layer) -> keras.Model:
    """[x (B, T, F), dt (B, T)] -> layer([x, dt]): the compiler feeds dt as an input."""
    x, dt = keras.Input((None, F), name="x"), keras.Input((None,), name="dt")
    return keras.Model([x, dt], layer([x, dt]))


def observed_and_frozen(model: keras.Model, seed: int = 1) -> keras.Model:
    set_quant_mode(model, "observe")  # eager: observers update variables step by step
    xs, dts = data(4, 12, seed)
    model([xs, dts] if len(model.inputs) == 2 else xs)
    freeze(model)
    return model


def on_grid(y: np.ndarray, p: QuantParams) -> bool:
    """y is exactly dequantize(some integer in [qmin, qmax])."""
    return np.array_equal(dequantize(quantize(y, p), p).view(np.uint32),
                          y.astype(np.float32).view(np.uint32))


@pytest.fixture(scope="module")
def cfc_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    layer = CfC(8, backbone_units=8, backbone_layers=1, quantization=QuantConfig())
    return observed_and_frozen(timed_model(layer))


def test_unquantized_layers_are_unchanged():
    plain, quant = CfC(6), CfC(6, quantization=QuantConfig())
    plain.build((None, 3, F))
    quant.build((None, 3, F))
    assert plain.get_config()["quantization"] is None
    assert len(plain.weights) == len(plain.trainable_weights)  # no quantization state
    assert len(quant.trainable_weights) == len(plain.trainable_weights)
    assert quant.get_config()["quantization"] == QuantConfig().to_dict()
    assert set_quant_mode(quant, "off") > 0  # "off": the float forward
    quant.set_weights([w.numpy() for w in plain.trainable_weights]
                      + [w.numpy() for w in quant.non_trainable_weights])
    xs = data(2, 3, 0)[0]
    np.testing.assert_array_equal(np.asarray(plain(xs)), np.asarray(quant(xs)))


def test_frozen_outputs_lie_on_the_output_grid(cfc_model):
    cell = cfc_model.layers[-1].cell
    assert cell.exact()
    y = np.asarray(cfc_model(list(data(3, 30, 2))))
    assert on_grid(y, cell.q_state.params)  # y is the state: the state grid
    assert len(np.unique(y)) > 20
    dense = QuantDense(3, quantization=QuantConfig())
    head = keras.Sequential([keras.Input((F,)), dense])
    set_quant_mode(head, "observe")
    head(data(8, 1, 3)[0][:, 0])
    freeze(head)
    out = np.asarray(head(data(16, 1, 4)[0][:, 0]))
    assert on_grid(out, dense.q_out.params) and len(np.unique(out)) > 10


def test_qat_fit_trains_straight_through():
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((12, F)),
                              CfC(6, mode="no_gate",
                                  return_sequences=False, quantization=QuantConfig()),
                              QuantDense(2, quantization=QuantConfig())])
    observed_and_frozen(model)
    xs = data(16, 12, 5)[0]
    ys = np.stack([xs[:, :, 0].mean(1), xs[:, :, 1].mean(1)], -1)
    before = [w.numpy().copy() for w in model.trainable_weights]
    model.compile(keras.optimizers.Adam(0.01), "mse")
    history = model.fit(xs, ys, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    changed = [not np.array_equal(b, w.numpy()) for b, w in
               zip(before, model.trainable_weights, strict=True)]
    assert all(changed), changed  # every kernel and bias got a gradient
    freeze(model)  # weight grids follow the trained kernels
    out = np.asarray(model(xs))
    assert on_grid(out, model.layers[-1].q_out.params)


def test_keras_file_round_trip_keeps_the_outputs(cfc_model, tmp_path):
    path = tmp_path / "qat_cfc.keras"
    cfc_model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    cell, ours = loaded.layers[-1].cell, cfc_model.layers[-1].cell
    assert loaded.layers[-1].get_config()["quantization"] == QuantConfig().to_dict()
    assert cell.exact() and cell.q_state.params == ours.q_state.params
    assert cell.wq_ff1[0].params == ours.wq_ff1[0].params
    xs = list(data(2, 40, 6))
    expected = np.asarray(cfc_model(xs))
    np.testing.assert_array_equal(np.asarray(loaded(xs)), expected)
    ckpt = load_checkpoint(save_checkpoint(cfc_model, tmp_path / "qat_cfc.ckpt"))
    assert ckpt.layers[-1].cell.exact()
    np.testing.assert_array_equal(np.asarray(ckpt(xs)), expected)


def golden_check(model: keras.Model, tmp_path, name: str) -> None:
    """Compile without calibration; the Keras forward equals the golden model's
    dequantized output bit for bit over STEPS irregular steps."""
    cell = model.layers[-1].cell
    compiled = compile_model(model, "onnx-int8", tmp_path / name, calibration=None,
                             verify_steps=50)
    q = compiled.graph
    assert compiled.report["passed"], compiled.report
    (state_in,), (state_out,) = q.by_role("state_in"), q.by_role("state_out")
    for tensor in ("x", state_in, state_out):
        assert q.tensors[tensor].quant == cell.q_state.params  # one grid
    assert q.tensors["dt"].quant == cell.q_dt.params
    xs, dts = (a[0] for a in data(1, STEPS, 7))
    y = np.asarray(model([xs[None], dts[None]]))[0]
    out = run_sequence(q, nx.quantize(xs, q.tensors["x"].quant)[:, None],
                       nx.quantize(dts, q.tensors["dt"].quant)[:, None, None])
    y_gold = nx.dequantize(out["y"][:, 0], q.tensors["y"].quant)
    assert y.dtype == y_gold.dtype == np.float32
    np.testing.assert_array_equal(y.view(np.uint32), y_gold.view(np.uint32))
    assert len(np.unique(out["y"])) > 20  # the outputs move over the grid


def test_frozen_cfc_with_backbone_equals_golden_over_1000_steps(cfc_model, tmp_path):
    golden_check(cfc_model, tmp_path, "dense_backbone")


def test_frozen_ncp_no_gate_cfc_equals_golden_over_1000_steps(tmp_path):
    keras.utils.set_random_seed(2)
    layer = CfC(AutoNCP(10, 3, seed=1), mode="no_gate", quantization=QuantConfig())
    golden_check(observed_and_frozen(timed_model(layer)), tmp_path, "ncp_no_gate")


def test_frozen_ltc_compiles_with_its_own_parameters(tmp_path):
    """The LTC keeps float arithmetic between its points: compiled from its own grids,
    verified by the compiler, but not bit-exact."""
    keras.utils.set_random_seed(3)
    layer = LTC(AutoNCP(8, 2, seed=1), ode_unfolds=2, quantization=QuantConfig())
    model = timed_model(layer)
    rng = np.random.default_rng(3)  # trained mappings (all-ones / zeros would fold away)
    cell = layer.cell
    for name in ("input_w", "input_b", "output_w", "output_b"):
        w = cell.params[name]
        w.assign(rng.uniform(0.5, 1.5, w.shape) if name.endswith("w")
                 else rng.uniform(-0.3, 0.3, w.shape))
    observed_and_frozen(model)
    compiled = compile_model(model, "onnx-int8", tmp_path / "ltc", calibration=None,
                             verify_steps=50)
    q = compiled.graph
    assert compiled.report["passed"], compiled.report
    (state_out,) = q.by_role("state_out")
    assert q.tensors[state_out].quant == cell.q_state.params
    assert q.tensors["y"].quant == cell.q_y.params
    assert q.tensors["x"].quant == cell.q_x.params


@pytest.mark.parametrize("observer,momentum", [("minmax", None), ("minmax", 0.9),
                                               ("percentile", None)])
def test_observers_match_the_nnx_observers(observer, momentum):
    from ncc.models.keras import QuantPoint
    from ncc.models.observers import make_observer

    point = QuantPoint(observer=observer, momentum=momentum)
    point.build(None)
    point.set_mode("observe")
    reference = make_observer(observer, momentum, 99.99)
    state = reference.init()
    for x in np.random.default_rng(0).normal(size=(3, 8, 5)).astype(np.float32):
        point(x)
        state = reference.update(state, x)
    assert point.freeze() == reference.params(state, 8)
