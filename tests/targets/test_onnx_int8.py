"""onnx-int8: onnxruntime computes exactly the golden model's bits, step after step."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pytest

from ncc.cli.driver import compile_model, verify_artifact
from ncc.compiler.artifact import read_manifest
from ncc.models import zoo


def calibration(features=8, seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((8, 100, features)).astype(np.float32)}


def keras_rnn(kind):
    import keras

    keras.utils.set_random_seed(0)
    layer = getattr(keras.layers, kind)(12, return_sequences=True)
    return keras.Sequential([keras.Input((None, 8)), layer, keras.layers.Dense(4)])


def ncps_ltc():
    import keras
    import ncps.keras
    from ncps.wirings import AutoNCP

    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((None, 8)),
                             ncps.keras.LTC(AutoNCP(8, 2, seed=0), ode_unfolds=3,
                                            return_sequences=True)])


def ncc_liquid(kind):
    """ncc's own Keras layers (ncc.models.keras) on a sparse AutoNCP wiring."""
    import keras

    from ncc.models.keras import LTC, CfC
    from ncc.models.wirings import AutoNCP

    keras.utils.set_random_seed(0)
    layer = (CfC(AutoNCP(12, 4, seed=1)) if kind == "cfc"
             else LTC(AutoNCP(8, 2, seed=1), ode_unfolds=2))
    return keras.Sequential([keras.Input((None, 8)), layer])


MODELS = {
    # name: (factory, steps of random input checked bit for bit)
    "cfc_default": (lambda: zoo.cfc(units=16), 10_000),
    "cfc_pure": (lambda: zoo.cfc(units=12, mode="pure"), 2_000),
    "cfc_no_gate": (lambda: zoo.cfc(units=12, mode="no_gate"), 2_000),
    "cfc_default_no_backbone": (lambda: zoo.cfc(units=12, backbone_layers=0), 2_000),
    "ltc_autoncp": (ncps_ltc, 1_000),
    "lif": (lambda: zoo.lif(hidden=32), 10_000),
    "ncc_cfc_autoncp": (lambda: ncc_liquid("cfc"), 2_000),
    "ncc_ltc_autoncp": (lambda: ncc_liquid("ltc"), 1_000),
    "gru": (lambda: keras_rnn("GRU"), 2_000),
    "lstm": (lambda: keras_rnn("LSTM"), 2_000),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_onnxruntime_equals_golden_bit_for_bit(name, tmp_path):
    factory, steps = MODELS[name]
    out = tmp_path / name
    compile_model(factory(), "onnx-int8", out, calibration=calibration(), verify_steps=0)
    # up to 2,000 steps, three sequences: on a small chaotic net (the 8-neuron LTCs) one
    # sequence can fall on a trajectory that quantization noise flips, and the SQNR check
    # below means the pooled figure; the 10,000-step horizons stay one sequence (CI time)
    report = verify_artifact(out, sequences=3 if steps <= 2_000 else 1, steps=steps, seed=7)
    assert report["passed"], report["golden"]
    for name_, figures in report["golden"].items():
        assert figures["identical"] == 1.0 and figures["max_lsb"] == 0, name_
    (metrics,) = report["outputs"].values()
    assert np.isfinite(metrics["sqnr_db"]) and metrics["sqnr_db"] > 10


def test_manifest_carries_int8_parameters(tmp_path):
    compile_model(zoo.cfc(units=8), "onnx-int8", tmp_path / "a", calibration=calibration(),
                  verify_steps=0)
    manifest = read_manifest(tmp_path / "a")
    for t in manifest["tensors"]:
        assert t["dtype"] == "int8"
        q = t["quantization"]
        assert q["dtype"] == "int8" and q["scale"][0] > 0 and -128 <= q["zero_point"][0] <= 127
    for s in manifest["state"]:
        assert np.asarray(s["initial"]).dtype.kind == "i"
    assert (tmp_path / "a" / "float.json").is_file()  # the float reference travels along


def test_lowering_shares_matmuls_and_keeps_no_dead_nodes(tmp_path):
    """The CfC's four heads on one backbone output are one MatMulInteger (their weights
    side by side, split after the requantization); large weight matrices read the
    activation as uint8 (onnxruntime's fast kernel); tables are indexed by the lifted
    requantized values; every node and initializer is used.
    The bits are checked by test_onnxruntime_equals_golden_bit_for_bit (cfc_default)."""
    import onnx

    from ncc.compiler.artifact import load_artifact_graph
    from ncc.targets.onnx_int8 import UNSIGNED_FROM

    compile_model(zoo.cfc(units=16), "onnx-int8", tmp_path / "a", calibration=calibration(),
                  verify_steps=0)
    g = load_artifact_graph(tmp_path / "a")
    fcs = [op for op in g.ops if op.kind == "fully_connected"]
    model = onnx.load(tmp_path / "a" / "model.onnx")
    nodes = model.graph.node
    matmuls = [n for n in nodes if n.op_type == "MatMulInteger"]
    assert len(fcs) > len({op.inputs[0] for op in fcs}) == len(matmuls)
    consumed = {i for n in nodes for i in n.input} | {o.name for o in model.graph.output}
    assert all(any(o in consumed for o in n.output) for n in nodes)
    assert all(init.name in consumed for init in model.graph.initializer)
    # tables read the requantized values lifted by 128 as indices: no Sub or Cast on the way
    made_by = {o: n.op_type for n in nodes for o in n.output}
    gathers = [n for n in nodes if n.op_type == "Gather"]
    assert gathers and not any(made_by.get(n.input[1]) in ("Sub", "Cast") for n in gathers)
    dtypes = {v.name: v.type.tensor_type.elem_type
              for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    weights = {i.name: int(np.prod(i.dims)) for i in model.graph.initializer}
    for n in matmuls:
        unsigned = dtypes.get(n.input[0]) == onnx.TensorProto.UINT8
        assert unsigned == (weights[n.input[1]] >= UNSIGNED_FROM), n.input


def test_structured_input_cfc_with_dt(tmp_path):
    """A CfC fed time spans, on a smooth signal instead of noise, stays bit-exact."""
    from ncc.compiler.frontends import from_keras

    t = np.arange(400, dtype=np.float32)
    x = np.stack([np.sin(t / (5 + k)) for k in range(8)], -1)[None]
    dt = np.random.default_rng(1).uniform(0.5, 2.0, (1, 400)).astype(np.float32)
    step = from_keras(zoo.cfc(units=8), uses_dt=True)
    compile_model(step, "onnx-int8", tmp_path / "dt",
                  calibration={"x": np.repeat(x, 2, 0), "dt": np.repeat(dt, 2, 0)},
                  verify_steps=0)
    data = tmp_path / "data.npz"
    np.savez(data, x=x, dt=dt)
    report = verify_artifact(tmp_path / "dt", data=data)
    assert report["passed"] and report["steps"] == 400
    assert all(m["identical"] == 1.0 for m in report["golden"].values())


def test_qdq_runs_and_reports_its_deviation_from_golden(tmp_path):
    """onnx-qdq uses onnxruntime's own rounding: the report states how far it is from the
    golden bits and from float instead of hiding it."""
    import onnx

    compile_model(zoo.cfc(units=12), "onnx-qdq", tmp_path / "qdq",
                  calibration=calibration(), verify_steps=0)
    model = onnx.load(tmp_path / "qdq" / "model.onnx")
    kinds = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= kinds
    report = verify_artifact(tmp_path / "qdq", sequences=1, steps=500, seed=3)
    assert report["passed"] and "deviation" in report["criterion"]
    for figures in report["golden"].values():
        assert 0.0 < figures["identical"] <= 1.0 and figures["max_lsb"] >= 0
    (metrics,) = report["outputs"].values()
    assert np.isfinite(metrics["sqnr_db"]) and metrics["sqnr_db"] > 0  # measured, stated
    manifest = read_manifest(tmp_path / "qdq")
    assert "deviation" in manifest["details"]["exact"]
    assert all(t["dtype"] == "int8" for t in manifest["tensors"])


def _run_nodes(build, feeds):
    """Run the nodes `build(nodes, op, input_names) -> output name` add, in onnxruntime."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from ncc.compiler.ir import Op
    from ncc.targets.onnx_int8 import _Int

    nodes = _Int()
    op = Op("requantize", tuple(feeds), "y", {})
    out = build(nodes, op, list(feeds))
    inputs = [helper.make_tensor_value_info(k, TensorProto.INT64, v.shape)
              for k, v in feeds.items()]
    graph = helper.make_graph(nodes.nodes, "t", inputs,
                              [helper.make_tensor_value_info(out, TensorProto.INT64, None)],
                              nodes.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


@pytest.mark.parametrize("shift", [-31, -20, -9, -1, 0, 1, 7, 15])
def test_short_requantization_equals_the_numeric_core(shift):
    """mbqm_affine (7 ONNX nodes) against numerics.multiply_by_quantized_multiplier over
    int32 inputs at the rails, around the rounding ties and at random, with per-channel
    multipliers, a scale, an offset and a folded zero point."""
    from ncc import numerics as nx

    rng = np.random.default_rng(shift + 100)
    channels = 8
    m = np.concatenate([[0, 1, 1 << 30, (1 << 31) - 1],
                        rng.integers(1 << 30, 1 << 31, channels - 4)]).astype(np.int64)
    limit = (1 << 31) >> max(shift, 0)  # v * 2^left stays an int32
    v = np.concatenate([[-limit, limit - 1, -1, 0, 1, -(1 << 20), 1 << 20],
                        rng.integers(-limit, limit, 4000)])
    # values near the ties of both roundings
    ties = np.concatenate([(np.arange(-40, 40) << max(-shift, 0)) + d for d in (-1, 0, 1)])
    v = np.clip(np.concatenate([v, ties]), -limit, limit - 1)[:, None]
    for scale, offset, zp in ((1, 0, 0), (1, 12345, -7), (4, -20, 3)):
        p = (v - offset) // scale
        p = p[(p * scale + offset >= -limit) & (p * scale + offset < limit)][:, None]
        p = np.broadcast_to(p, (len(p), channels)).copy()
        want = nx.multiply_by_quantized_multiplier(p * scale + offset, m, shift) + zp
        def build(n, op, ins, scale=scale, offset=offset, zp=zp):
            out = n.mbqm_affine(op, ins[0], m, np.full(channels, shift), scale=scale,
                                offset=offset, out_zp=zp)
            return ins[0] if out is None else out

        got = _run_nodes(build, {"p": p})
        if shift == -31 and zp:  # zp * 2^62 does not fit: the long form serves (None)
            np.testing.assert_array_equal(got, p)
            continue
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", ["int8", "int16"])
@pytest.mark.parametrize("shift", [-20, -9, -1, 0])
def test_saturated_requantization_truncates_only_where_it_clips(dtype, shift):
    """saturated_affine lifts its result by -lo (the table index of the value) and
    divides with ONNX's truncating Div, without making every dividend non-negative:
    wherever truncation and floor differ the result clips to lo. Checked against the
    numeric core over |p| <= bound, at the rails, around the ties and where the
    unclipped result crosses lo."""
    from ncc import numerics as nx

    rng = np.random.default_rng(-shift)
    channels = 6
    lo, hi = nx.dtype_range(dtype)
    m = rng.integers(1 << 30, 1 << 31, channels).astype(np.int64)
    bound = 1 << (30 if dtype == "int8" else 28)  # int16: the lift must fit too
    offset = rng.integers(-1000, 1000, channels)
    zp = -3
    ties = np.concatenate([(np.arange(-300, 300) << max(-shift, 0)) + d for d in (-1, 0, 1)])
    # p where MBQM(p + offset) + zp is near lo: solve for the input scale at each channel
    near_lo = np.round((lo - zp) * 2.0 ** (31 - shift) / m).astype(np.int64) - offset
    around = near_lo[None, :] + np.arange(-3000, 3000)[:, None]
    p = np.concatenate([
        np.broadcast_to(np.concatenate([[-bound, bound, 0, -1, 1], ties,
                                        rng.integers(-bound, bound + 1, 3000)])[:, None],
                        (5 + len(ties) + 3000, channels)), around])
    p = np.clip(p, -bound, bound).astype(np.int64)
    want = np.clip(nx.multiply_by_quantized_multiplier(p + offset, m, shift) + zp, lo, hi)

    def build(n, op, ins):
        lifted, lift = n.saturated_affine(op, ins[0], m, np.full(channels, shift), dtype,
                                          bound, offset=offset, out_zp=zp)
        assert lift == -lo or dtype == "int16"  # a 2^15 lift may not fit in int64
        return n.node(op, "Sub", [lifted, n.i64(op, "lift", lift)])

    got = _run_nodes(build, {"p": p})
    reachable = np.abs(near_lo) < bound - 3000
    assert (want > lo).any()
    assert (want[:, reachable] == lo).any() or not reachable.any()
    np.testing.assert_array_equal(got, want)
