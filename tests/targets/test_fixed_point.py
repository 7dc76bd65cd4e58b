"""fixed-point: the tables, run by the golden table interpreter, are the golden model's bits.

Whole models over 10,000 steps (CfC dense and on a sparse AutoNCP wiring, LTC, a LIF
network), and their 16x8 forms (int16 activations, compact 513-entry tables) over 2,000 steps of
int16 inputs spanning the whole range; sparse weights stored as present synapses only;
spiking populations with integer thresholds; the C header compiles warning-free.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import json
import shutil
import subprocess

import numpy as np
import pytest

from ncc import numerics as nx
from ncc.cli.driver import compile_model, verify_artifact
from ncc.compiler.artifact import load_artifact_graph, read_manifest
from ncc.compiler.batch import rebatch
from ncc.compiler.data import stress_ints
from ncc.compiler.interpret import run_sequence
from ncc.compiler.quantize import QuantOptions
from ncc.compiler.tables import TableModel, read_tables
from ncc.models import zoo
from ncc.runtime.session import FixedPointSession, open_session
from ncc.targets.fixed_point import FixedPointError, build_tables, lower

STEPS = 10_000
SEQUENCES = 20


def calibration(seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((8, 100, 8)).astype(np.float32)}


def int8_inputs(steps, features=8, seed=7):
    """Random int8 steps, then a slow sine over the full range, rails and zeros."""
    rng = np.random.default_rng(seed)
    n = steps // 4
    t = np.arange(n)[:, None]
    sine = np.round(127.5 * np.sin(t / (7.0 + np.arange(features))) - 0.5)
    rails = np.where((t // 50) % 2 == 0, 127, -128) * np.ones((1, features))
    zeros = np.zeros((n // 4, features))
    structured = np.concatenate([sine, rails, zeros])
    random = rng.integers(-128, 128, (steps - len(structured), features))
    return np.concatenate([random, structured]).astype(np.int8)[:, None, :]


def autoncp_cfc():
    import keras
    import ncps.keras
    from ncps.wirings import AutoNCP

    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((None, 8)),
                             ncps.keras.CfC(AutoNCP(16, 4, seed=0), return_sequences=True)],
                            name="cfc_autoncp")


MODELS = {"cfc": lambda: zoo.cfc(units=8), "cfc_autoncp": autoncp_cfc,
          "ltc": lambda: zoo.ltc(units=14), "lif": lambda: zoo.lif(hidden=32)}


INT16 = QuantOptions(activations="int16")
STEPS16, SEQUENCES16 = 2000, 4
MODELS16 = {"cfc16": lambda: zoo.cfc(units=16), "cfc_autoncp16": autoncp_cfc,
            "lif16": lambda: zoo.lif(hidden=32)}


@pytest.fixture(scope="module")
def artifacts16(tmp_path_factory):
    root = tmp_path_factory.mktemp("fixed_point16")
    return {name: compile_model(make(), "fixed-point", root / name, calibration=calibration(),
                                options=INT16, verify_steps=0).out_dir
            for name, make in MODELS16.items()}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("fixed_point")
    return {name: compile_model(make(), "fixed-point", root / name, calibration=calibration(),
                                verify_steps=0).out_dir for name, make in MODELS.items()}


@pytest.mark.parametrize("name", list(MODELS))
def test_table_interpreter_equals_golden_for_10k_steps(name, artifacts):
    """10,000 steps: the artifact's own tables over 200 steps, then the tables of the same
    graph at batch 20 over 500 steps (20 x 500: the Python interpreters cost ~1-25 ms a
    step, so the long run is batched)."""
    art = artifacts[name]
    g = load_artifact_graph(art)
    gb = rebatch(g, SEQUENCES)
    xs = int8_inputs(STEPS).reshape(SEQUENCES, STEPS // SEQUENCES, 8).transpose(1, 0, 2)
    runs = [(g, read_tables(art), int8_inputs(200, seed=3)),
            (gb, TableModel(*build_tables(gb)), xs)]
    for graph, tables, inputs in runs:
        golden = run_sequence(graph, inputs)
        got = tables.run(inputs)
        assert set(got) == set(g.outputs)
        for out in g.outputs:  # every output and every state, every step
            assert got[out].dtype == golden[out].dtype
            diff = np.flatnonzero(got[out] != golden[out])
            assert diff.size == 0, f"{name} {out}: {diff.size} values differ, first {diff[:5]}"
    assert len(np.unique(golden[g.by_role("output")[0]])) > 10  # the inputs moved the model


@pytest.mark.parametrize("name", list(MODELS16))
def test_int16_table_interpreter_equals_golden_for_2k_steps(name, artifacts16):
    """16x8: the artifact's tables over 200 steps, then the same graph's tables at batch 4
    over 500 steps, every output and state equal to the golden model; each table is the
    compact form (513 int16 entries) and tables.h says how to interpolate it."""
    art = artifacts16[name]
    g = load_artifact_graph(art)
    xs = stress_ints(STEPS16, 8, "int16").reshape(SEQUENCES16, -1, 8).transpose(1, 0, 2)
    assert xs.min() == -32768 and xs.max() == 32767
    tables = read_tables(art)
    gb = rebatch(g, SEQUENCES16)
    for graph, model, inputs in [(g, tables, stress_ints(200, 8, "int16", seed=3)[:, None, :]),
                                 (gb, TableModel(*build_tables(gb)), xs)]:
        golden = run_sequence(graph, inputs)
        got = model.run(inputs)
        assert set(got) == set(g.outputs)
        for out in g.outputs:
            assert got[out].dtype == golden[out].dtype == np.int16
            diff = np.flatnonzero(got[out] != golden[out])
            assert diff.size == 0, f"{name} {out}: {diff.size} values differ, first {diff[:5]}"
    assert len(np.unique(golden[g.by_role("output")[0]])) > 100
    luts = [la for la in tables.spec["layers"] if la["kind"] == "lut"]
    assert luts
    for layer in luts:  # compact: 513 entries, interpolated
        table = tables.arrays[layer["inputs"][1]]
        assert table.shape == (nx.INTERP_ENTRIES,) and table.dtype == np.int16
        assert layer["interpolated"]
    header = (art / "tables.h").read_text()
    assert header.count("_TABLE_OFFSET 32768 /* int16 x */") == len(luts)
    assert header.count(f"_TABLE_SEGMENT_BITS {nx.INTERP_SEGMENT_BITS} ") == len(luts)
    assert all(b["bits"] in (1, 16, 32) for b in tables.buffers.values())


def test_int16_lif_population_has_int16_thresholds(artifacts16):
    tables = read_tables(artifacts16["lif16"])
    (pop,) = [p for p in tables.spec["populations"] if p["kind"] == "LIF"]
    assert pop["neurons"] == 32 and pop["reset"] == "subtract" and pop["membrane_bits"] == 16
    assert pop["decay"]["beta"] == pytest.approx(0.8, abs=0.02)
    theta = tables.arrays[pop["threshold"]]
    assert theta.shape == (32,) and theta.dtype == np.int16
    session = open_session(artifacts16["lif16"])
    session.run(stress_ints(500, 8, "int16")[:, None, :])
    assert 0 < session.model.events / session.model.steps <= read_manifest(
        artifacts16["lif16"])["details"]["synaptic_events_per_step_max"]


def test_sparse_wirings_store_present_synapses_only(artifacts):
    # CfC: masked kernels; LTC: the selection layers summing its compacted synapse grids
    for name in ("cfc_autoncp", "ltc"):
        tables = read_tables(artifacts[name])
        sparse = {k: m for k, m in tables.spec["matrices"].items() if m["storage"] == "synapses"}
        assert sparse, f"{name}: no sparse layer"
        g = load_artifact_graph(artifacts[name])
        cost = {}  # per use of a matrix (the LTC's unfolds share theirs), batch 1
        for key, m in tables.spec["matrices"].items():
            dense = g.constants[key]
            if m["storage"] == "synapses":
                pre, post, w = (tables.arrays[f"{key}.{p}"] for p in ("pre", "post", "weight"))
                assert key not in tables.arrays and np.all(w != 0)
                assert len(w) == m["synapses"] == np.count_nonzero(dense) < 0.85 * dense.size
                assert np.array_equal(dense[pre, post], w)
                cost[key] = (len(w), dense.size)
            else:
                cost[key] = (dense.size, dense.size)
        uses = [layer["inputs"][1] for layer in tables.spec["layers"]
                if layer["kind"] == "fully_connected"]
        macs = sum(cost[k][0] for k in uses)
        dense_macs = sum(cost[k][1] for k in uses)
        details = read_manifest(artifacts[name])["details"]
        assert details["macs_per_step"] == macs  # only present synapses count
        assert macs < dense_macs
        print(f"{name}: {macs} MACs/step with synapse lists, {dense_macs} dense; "
              f"{details['memory']}")


def test_lif_population_thresholds_and_synaptic_events(artifacts):
    art = artifacts["lif"]
    tables = read_tables(art)
    (pop,) = [p for p in tables.spec["populations"] if p["kind"] == "LIF"]
    assert pop["neurons"] == 32 and pop["reset"] == "subtract"
    assert pop["decay"]["beta"] == pytest.approx(0.8, abs=0.02)
    theta = tables.arrays[pop["threshold"]]
    assert theta.shape == (32,) and theta.dtype == np.int8
    compare = next(la for la in tables.spec["layers"] if pop["threshold"] in la["inputs"])
    assert compare["kind"] == "greater" and compare["inputs"][0] == pop["membrane"]
    details = read_manifest(art)["details"]
    assert details["populations"][0]["kind"] == "LIF"
    session = open_session(art)
    assert isinstance(session, FixedPointSession)
    xs = int8_inputs(1000)
    session.run(xs)
    per_step = session.model.events / session.model.steps
    assert 0 < per_step <= details["synaptic_events_per_step_max"]
    print(f"lif: {per_step:.1f} synaptic events per step (max "
          f"{details['synaptic_events_per_step_max']}), {details['memory']}")


def test_verify_passes_and_compiles_are_byte_identical(artifacts, tmp_path):
    report = verify_artifact(artifacts["lif"], sequences=1, steps=200, seed=3)
    assert report["passed"] and report["target"] == "fixed-point"
    again = compile_model(zoo.lif(hidden=32), "fixed-point", tmp_path / "again",
                          calibration=calibration(), verify_steps=0).out_dir
    for name in ("tables.json", "tables.npz", "tables.h"):
        assert (again / name).read_bytes() == (artifacts["lif"] / name).read_bytes()


def test_header_compiles_warning_free(artifacts, artifacts16, tmp_path):
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    for name, art in [*artifacts.items(), ("cfc16", artifacts16["cfc16"])]:
        src = tmp_path / f"{name}.c"
        src.write_text('#include "tables.h"\nint probe(void) { return NCC_LAYER_COUNT + '
                       'NCC_STATE_BYTES; }\n')
        subprocess.run([cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-I",
                        str(art), "-c", str(src), "-o", str(tmp_path / f"{name}.o")],
                       check=True, capture_output=True)
        text = (art / "tables.h").read_text()
        spec = json.loads((art / "tables.json").read_text())
        assert f"#define NCC_LAYER_COUNT {len(spec['layers'])}" in text


def test_float_graph_is_refused(artifacts):
    from ncc.compiler.artifact import load_reference_graph

    with pytest.raises(FixedPointError, match="quantized"):
        lower(load_reference_graph(artifacts["lif"]))
