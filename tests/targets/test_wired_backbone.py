"""A wired CfC behind a backbone (issue 18) compiles bit-exactly, its wiring still sparse.

`CfC(AutoNCP(32, output_size=10, sparsity_level=0.5), backbone_units=[64, 32],
backbone_layers=2)`, saved to `.keras` and compiled from the file: traced and quantized
once, lowered to tflite-int8 (LiteRT's reference kernels and TFLite Micro), c and
fixed-point. Each runtime must equal the golden model on every output and state over
2 x 250 steps of int8 inputs spanning the whole range; the wiring's masked layers are
synapse lists (CSR by output neuron) in C and in the fixed-point tables.
"""

import numpy as np
import pytest

from ncc.compiler.artifact import load_artifact_graph, read_manifest, write_artifact
from ncc.compiler.data import stress_ints
from ncc.compiler.interpret import run_batch
from ncc.compiler.passes import strip_fake_quant
from ncc.compiler.pipeline import quantize_graph, to_graph
from ncc.compiler.quantize import DEFAULT_OPTIONS
from ncc.runtime.session import open_session
from ncc.targets import c_emit
from ncc.targets.registry import get_target

F, SEQUENCES, STEPS = 8, 2, 250
TARGETS = ("c", "tflite-int8", "fixed-point")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """{target: artifact folder}, the golden trace and the int8 inputs it ran on."""
    import keras

    from ncc.compiler.load import load_model
    from ncc.models.keras import AutoNCP, CfC

    root = tmp_path_factory.mktemp("wired_backbone")
    keras.utils.set_random_seed(0)
    layer = CfC(AutoNCP(units=32, output_size=10, sparsity_level=0.5, seed=0),
                backbone_units=[64, 32], backbone_layers=2)
    keras.Sequential([keras.Input((None, F)), layer]).save(root / "wired.keras")
    g = to_graph(load_model(str(root / "wired.keras")), None)
    rng = np.random.default_rng(0)
    calibration = {"x": rng.standard_normal((8, 60, F)).astype(np.float32)}
    q, reference = quantize_graph(g, calibration, DEFAULT_OPTIONS, None)
    arts = {}
    for target in TARGETS:
        art = get_target(target).lower(q, reference=strip_fake_quant(reference), model=None,
                                       sequence_length=None)
        arts[target] = write_artifact(root / target, q, art, {"source": "wired.keras"},
                                      reference=reference)
    golden_graph = load_artifact_graph(arts["c"])
    xs = stress_ints(SEQUENCES * STEPS, F, "int8").reshape(SEQUENCES, STEPS, F)
    return arts, golden_graph, xs, run_batch(golden_graph, xs)


@pytest.mark.parametrize("target,runtime", [("c", None), ("tflite-int8", "litert"),
                                            ("tflite-int8", "tflm"), ("fixed-point", None)])
def test_runtime_equals_golden_on_every_output_and_state(built, target, runtime):
    arts, g, xs, golden = built
    session = open_session(arts[target], runtime=runtime)
    for i in range(SEQUENCES):
        got = session.run(xs[i, :, None, :])
        assert set(got) == set(g.outputs)
        for name in g.outputs:
            want = golden[name][i]
            bad = np.argwhere(got[name].reshape(want.shape) != want)
            assert bad.size == 0, f"{target} {runtime} {name}: first differs at {bad[0]}"
    y = golden[g.by_role("output")[0]]
    assert len(np.unique(y)) > 10  # the inputs exercised the model


def test_the_wirings_layers_stay_sparse_in_c_and_fixed_point(built):
    arts, g, _, _ = built
    details = read_manifest(arts["c"])["details"]
    sparse = {s["tensor"] for s in details["sparse_layers"]}
    source = (arts["c"] / "model.c").read_text()
    assert source.count("ncc_sparse_fully_connected_s8(") == len(sparse) >= 4
    densities = {}
    for op in g.ops:
        if op.kind == "fully_connected":
            w = g.constants[op.inputs[1]]
            densities[op.output] = np.count_nonzero(w) / w.size
    # the backbone (over [x, h]) is dense; the wiring's masked ff1/ff2 kernels are lists
    assert sum(d > 0.95 for d in densities.values()) >= 2
    assert sparse == {t for t, d in densities.items() if d <= c_emit.SPARSE_DENSITY}
    tables = read_manifest(arts["fixed-point"])["details"]["sparse_layers"]
    assert len(tables) >= len(sparse)
    assert details["macs_per_step"] < sum(
        g.constants[op.inputs[1]].size for op in g.ops if op.kind == "fully_connected")
