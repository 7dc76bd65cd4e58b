"""Bidirectional CfCs compile over a fixed window (issue 18, item 3).

A backward direction needs the whole sequence, so a bidirectional model compiles with
`--sequence-length T` into one stateless graph over the window (x (1, T, F) in, y (1, T,
out) out: the forward recurrence over t = 0 … T-1, the backward over the reversed input,
merged per step), which every target lowers as it lowers a step. Two models, T = 16:
ncc's `CfC(bidirectional=True)` and `keras.layers.Bidirectional` around an ncps CfC.
onnx-float is within 1e-4 of Keras over the window; onnx-int8, tflite-int8 (LiteRT and
TFLM) and c equal the golden model bit for bit on windows of int8 inputs spanning the range.
Without `--sequence-length` the compile is refused, saying to pass it.
"""

import numpy as np
import pytest

from ncc.cli.driver import compile_model
from ncc.compiler.artifact import load_artifact_graph, write_artifact
from ncc.compiler.data import stress_ints
from ncc.compiler.interpret import run_batch
from ncc.compiler.passes import strip_fake_quant
from ncc.compiler.pipeline import quantize_graph, to_graph, window_data
from ncc.compiler.quantize import DEFAULT_OPTIONS
from ncc.compiler.trace import TraceError
from ncc.runtime.session import open_session
from ncc.targets.registry import get_target

T, F, WINDOWS = 16, 4, 3
INT_TARGETS = ("onnx-int8", "tflite-int8", "c")


def _ncc_bidirectional():
    import keras

    from ncc.models.keras import CfC

    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((None, F)), CfC(8, bidirectional=True),
                             keras.layers.Dense(3)], name="ncc_bidir")


def _keras_bidirectional():
    import keras
    import ncps.keras

    keras.utils.set_random_seed(1)
    return keras.Sequential([
        keras.Input((None, F)),
        keras.layers.Bidirectional(ncps.keras.CfC(8, return_sequences=True), merge_mode="ave"),
        keras.layers.Dense(3)], name="keras_bidir")


MODELS = {"ncc": _ncc_bidirectional, "keras": _keras_bidirectional}


@pytest.fixture(scope="module", params=sorted(MODELS))
def case(request, tmp_path_factory):
    """(name, model, float graph, {int target: artifact}, golden graph, int8 windows,
    golden outputs): traced and quantized once, lowered to every integer target."""
    model = MODELS[request.param]()
    root = tmp_path_factory.mktemp(f"bidir_{request.param}")
    g = to_graph(model, None, None, T)
    calibration = {"x": np.random.default_rng(0).standard_normal((4, 2 * T, F))
                   .astype(np.float32)}
    q, reference = quantize_graph(g, window_data(calibration, T), DEFAULT_OPTIONS, None)
    arts = {}
    for target in INT_TARGETS:
        art = get_target(target).lower(q, reference=strip_fake_quant(reference), model=None,
                                       sequence_length=None)
        arts[target] = write_artifact(root / target, q, art, {"source": request.param},
                                      reference=reference)
    golden_graph = load_artifact_graph(arts["c"])
    xs = stress_ints(WINDOWS * T, F, "int8").reshape(1, WINDOWS, T, F)
    return request.param, model, g, arts, golden_graph, xs, run_batch(golden_graph, xs)


def test_window_graph_is_stateless_over_t_steps(case):
    _, _, g, _, _, _, _ = case
    (x,), (y,) = g.by_role("input"), g.by_role("output")
    assert g.tensors[x].shape == (1, T, F) and g.tensors[y].shape == (1, T, 3)
    assert g.state_pairs == [] and g.metadata["window"] == T


def test_onnx_float_is_within_1e_4_of_keras_over_the_window(case, tmp_path):
    name, model, _, _, _, _, _ = case
    res = compile_model(model, "onnx-float", tmp_path / name, sequence_length=T,
                        verify_steps=0)
    assert res.manifest["details"]["window"]["steps"] == T
    xs = np.random.default_rng(2).standard_normal((3, T, F)).astype(np.float32)
    got = open_session(res.out_dir).run(xs[:, None])["y"].reshape(3, T, 3)
    want = np.asarray(model(xs))
    assert np.abs(got - want).max() <= 1e-4


@pytest.mark.parametrize("target,runtime", [("onnx-int8", None), ("tflite-int8", "litert"),
                                            ("tflite-int8", "tflm"), ("c", None)])
def test_integer_targets_equal_golden_on_every_window(case, target, runtime):
    _, _, _, arts, g, xs, golden = case
    got = open_session(arts[target], runtime=runtime).run(xs[0][:, None])
    (y,) = g.by_role("output")
    want = golden[y][0]
    bad = np.argwhere(got[y].reshape(want.shape) != want)
    assert bad.size == 0, f"{target} {runtime}: first differs at (window, ...) {bad[0]}"
    assert len(np.unique(want)) > 10


def test_without_sequence_length_the_compile_says_to_pass_it(tmp_path):
    model = _ncc_bidirectional()
    with pytest.raises(TraceError, match="pass --sequence-length T"):
        compile_model(model, "c", tmp_path / "c", verify_steps=0,
                      calibration={"x": np.zeros((1, T, F), np.float32)})
    assert not (tmp_path / "c").exists()
