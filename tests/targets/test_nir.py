"""The nir target: spiking models as NIR graphs that read back and run like the float model.

References are the user's model run by spyx (`spyx.nn.run` over the whole sequence), never
our IR; the NIR graphs are run by ncc's NIR interpreter (the nir session) and, where spyx
supports the nodes, by `spyx.nir.from_nir`.
"""

from pathlib import Path

import jax.numpy as jnp
import nir
import numpy as np
import pytest
import spyx.nn as snn
from flax import nnx

from ncc.cli.driver import compile_model
from ncc.compiler.load import load_model
from ncc.models.nnx.spiking import QuantCuBaLIF, QuantIF, QuantLI, QuantLIF
from ncc.targets.nir import NirExportError, NirInterpreter, nir_bytes, spyx_support, to_nir

BUNDLED = Path(__file__).resolve().parents[2] / "models" / "bundled" / "lif_digits.ckpt"
TOL = 1e-5
# float32 summation order differs across CPUs (XLA picks AVX2 or AVX-512 kernels): an LI
# readout drifting to |v| ~ 100 differs by a few ulps there, so a relative term goes beside TOL
RTOL = 2e-6
STEPS = 300
F = 4


def _lin(i: int, o: int, r: nnx.Rngs, bias: bool = True) -> nnx.Linear:
    return nnx.Linear(i, o, use_bias=bias, rngs=r)


NETS = {
    "lif-lif": lambda r: snn.Sequential(_lin(F, 16, r), snn.LIF((16,), rngs=r), _lin(16, 5, r),
                                        snn.LIF((5,), threshold=0.5, rngs=r)),
    "cubalif": lambda r: snn.Sequential(_lin(F, 16, r), snn.CuBaLIF((16,), rngs=r),
                                        _lin(16, 5, r), snn.LI((5,), rngs=r)),
    "if": lambda r: snn.Sequential(_lin(F, 16, r), snn.IF((16,)), _lin(16, 5, r, bias=False),
                                   snn.LI((5,), rngs=r)),
    "rlif": lambda r: snn.Sequential(_lin(F, 16, r), snn.RLIF((16,), rngs=r), _lin(16, 5, r),
                                     snn.LIF((5,), threshold=0.5, rngs=r)),
    "rif": lambda r: snn.Sequential(_lin(F, 16, r), snn.RIF((16,), rngs=r), _lin(16, 5, r),
                                    snn.LI((5,), rngs=r)),
    "rcubalif": lambda r: snn.Sequential(_lin(F, 16, r), snn.RCuBaLIF((16,), rngs=r),
                                         _lin(16, 5, r), snn.LIF((5,), rngs=r)),
    "ncc-zero-reset": lambda r: snn.Sequential(
        _lin(F, 16, r), QuantLIF((16,), reset="zero", rngs=r), _lin(16, 8, r),
        QuantCuBaLIF((8,), reset="zero", rngs=r), _lin(8, 5, r), QuantIF((5,), reset="zero"),
        _lin(5, 3, r), QuantLI((3,))),
    "ncc-subtract": lambda r: snn.Sequential(
        _lin(F, 16, r), QuantLIF((16,), beta=0.9, rngs=r), _lin(16, 8, r),
        QuantCuBaLIF((8,), alpha=0.7, beta=0.8, rngs=r)),
}
FROM_NIR = ["lif-lif", "rlif", "rcubalif", "ncc-subtract"]  # spyx rebuilds these


@pytest.fixture(scope="module")
def xs() -> np.ndarray:
    """(T, batch, F) time-major inputs, large enough that every layer spikes."""
    return 2 * np.random.default_rng(7).standard_normal((STEPS, 2, F)).astype(np.float32)


def _spyx(model, xs: np.ndarray) -> np.ndarray:
    return np.asarray(snn.run(model, jnp.asarray(xs))[0])


def _written(model, features: int, tmp_path: Path) -> tuple[nir.NIRGraph, Path]:
    graph, _ = to_nir(model, features)
    path = tmp_path / "model.nir"
    path.write_bytes(nir_bytes(graph))
    return graph, path


def _assert_same_graph(read: nir.NIRGraph, written: nir.NIRGraph) -> None:
    assert sorted(read.edges) == sorted(written.edges)
    assert read.nodes.keys() == written.nodes.keys()
    assert dict(read.metadata) == dict(written.metadata)
    for name, node in written.nodes.items():
        other = read.nodes[name]
        assert type(other) is type(node), name
        assert other.metadata == node.metadata, name
        theirs = other.to_dict()
        for key, value in node.to_dict().items():
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(theirs[key], value, err_msg=f"{name}.{key}")


def test_bundled_lif_exports_round_trips_and_runs_like_spyx(tmp_path):
    res = compile_model(BUNDLED, "nir", tmp_path / "lif", verify_steps=STEPS)
    assert res.report["passed"], res.report
    assert res.report["outputs"]["y"]["max_abs_error"] <= TOL
    details = res.manifest["details"]
    assert list(details["nodes"].values()) == ["Input", "Affine", "LIF", "Affine", "LI",
                                               "Output"]
    assert details["dt"] == 1.0 and details["macs_per_step"] == 8 * 64 + 64 * 10
    assert details["populations"]["layer_1"]["reset"] == "subtract"
    assert any("subtract reset" in s for s in details["not_expressible_in_nir"])
    assert details["spyx_from_nir"].startswith("unsupported: layer_3")  # LI readout
    assert not any(p.suffix == ".pkl" for p in res.out_dir.iterdir())

    model = load_model(str(BUNDLED))
    graph = nir.read(res.out_dir / "model.nir")
    _assert_same_graph(graph, to_nir(model, 8)[0])
    # Euler-exact mapping: 1 - dt/tau is the model's beta, dt r/tau is 1, no leak voltage
    lif, dt = graph.nodes["layer_1"], graph.metadata["dt"]
    beta = np.clip(np.asarray(model.layers[1].beta[...]), 0, 1)
    np.testing.assert_array_equal((1 - dt / lif.tau).astype(np.float32), beta)
    np.testing.assert_allclose(dt * lif.r / lif.tau, 1.0, rtol=1e-15)
    assert not lif.v_leak.any() and (lif.v_threshold == 1.0).all()

    xs = 2 * np.random.default_rng(3).standard_normal((STEPS, 2, 8)).astype(np.float32)
    expected = _spyx(model, xs)
    np.testing.assert_allclose(NirInterpreter(graph).run(xs), expected, atol=TOL, rtol=RTOL)
    assert np.abs(expected).max() > 1.0


@pytest.mark.parametrize("name", list(NETS))
def test_nir_graph_reads_back_and_runs_like_spyx(name, xs, tmp_path):
    model = NETS[name](nnx.Rngs(0))
    graph, path = _written(model, F, tmp_path)
    read = nir.read(path)
    _assert_same_graph(read, graph)
    expected = _spyx(model, xs)
    got = NirInterpreter(read).run(xs)
    np.testing.assert_allclose(got, expected, atol=TOL, rtol=RTOL)
    first = _spyx(snn.Sequential(*model.layers[:2]), xs)  # the first neuron layer's spikes
    assert 0.02 < first.mean() < 0.98
    if name.startswith("r"):  # the recurrent weight sits on a cycle with its neuron
        assert {("layer_1", "layer_1_rec"), ("layer_1_rec", "layer_1")} <= set(read.edges)
        assert isinstance(read.nodes["layer_1_rec"], nir.Linear)


def test_recurrent_and_cuba_nets_pass_the_harness(tmp_path):
    for name in ("rlif", "cubalif"):
        res = compile_model(NETS[name](nnx.Rngs(1)), "nir", tmp_path / name, verify_steps=200)
        assert res.report["passed"] and res.report["outputs"]["y"]["max_abs_error"] <= TOL


@pytest.mark.parametrize("name", FROM_NIR)
def test_spyx_from_nir_runs_the_export_like_the_model(name, xs, tmp_path):
    import spyx.nir

    model = NETS[name](nnx.Rngs(0))
    graph, path = _written(model, F, tmp_path)
    assert spyx_support(graph) is None
    _, out = spyx.nir.from_nir(nir.read(path), jnp.asarray(xs), dt=graph.metadata["dt"])
    expected = _spyx(model, xs)
    np.testing.assert_allclose(np.asarray(out), expected, atol=TOL, rtol=RTOL)
    assert 0.02 < expected.mean() < 0.98  # spiking outputs, neither silent nor saturated


def test_unsupported_in_spyx_is_said():
    graph, _ = to_nir(NETS["ncc-zero-reset"](nnx.Rngs(0)), F)
    assert "resets to zero" in spyx_support(graph)
    graph, _ = to_nir(NETS["rif"](nnx.Rngs(0)), F)
    assert "LIF/CubaLIF only" in spyx_support(graph)


def test_cfc_is_refused_with_what_nir_supports(tmp_path, helpers):
    from ncc.models.nnx.liquid import CfCCell

    cell = CfCCell(F, 6, backbone_units=8, rngs=nnx.Rngs(0))
    out = tmp_path / "cfc"
    with pytest.raises(NirExportError, match=r"CfCCell is not a spiking model: NIR export "
                                             r"supports .*LIF"):
        compile_model(cell, "nir", out, input_shape=(F,), verify_steps=0)
    assert helpers.leftovers(out) == []


def test_quantized_neurons_and_sequence_length_are_refused(tmp_path):
    r = nnx.Rngs(0)
    model = snn.Sequential(_lin(F, 8, r), QuantLIF((8,), beta=0.9, quantized=True, rngs=r))
    with pytest.raises(NirExportError, match="quantized mode"):
        to_nir(model, F)
    with pytest.raises(NirExportError, match="sequence-length"):
        compile_model(NETS["lif-lif"](r), "nir", tmp_path / "s", sequence_length=10)


def test_same_model_same_bytes():
    model = NETS["rlif"](nnx.Rngs(0))
    assert nir_bytes(to_nir(model, F)[0]) == nir_bytes(to_nir(model, F)[0])
