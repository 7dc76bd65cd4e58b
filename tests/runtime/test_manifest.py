"""The manifest says everything another program needs to run the artifact."""

import json

import numpy as np
import onnxruntime as ort
import pytest

from ncc.cli.driver import compile_model
from ncc.compiler import __version__
from ncc.compiler.artifact import load_artifact_graph
from ncc.compiler.serialize import graph_hash
from ncc.runtime.session import ReferenceSession, open_session

NP_DTYPES = {"float32": np.float32, "int8": np.int8, "int16": np.int16, "int32": np.int32,
             "bool": np.bool_}


@pytest.fixture(scope="module")
def lif_artifact(tmp_path_factory):
    import spyx.nn
    from flax import nnx

    net = spyx.nn.Sequential(
        nnx.Linear(4, 16, rngs=nnx.Rngs(0)), spyx.nn.LIF((16,), beta=0.8, rngs=nnx.Rngs(1)),
        nnx.Linear(16, 3, rngs=nnx.Rngs(2)), spyx.nn.LI((3,), beta=0.9, rngs=nnx.Rngs(3)))
    out = tmp_path_factory.mktemp("lif") / "lif.onnx-float"
    return compile_model(net, "onnx-float", out, verify_steps=0).out_dir


@pytest.fixture(params=["cfc", "lif", "cfc-scan"])
def artifact(request, small_cfc_artifact, lif_artifact, small_cfc, tmp_path):
    if request.param == "cfc":
        return small_cfc_artifact
    if request.param == "lif":
        return lif_artifact
    return compile_model(small_cfc, "onnx-float", tmp_path / "scan", sequence_length=25,
                         verify_steps=0).out_dir


def test_manifest_describes_every_tensor(artifact):
    manifest = json.loads((artifact / "manifest.json").read_text())
    g = load_artifact_graph(artifact)
    assert manifest["target"] == "onnx-float"
    assert manifest["ncc_version"] == __version__
    assert manifest["ir_sha256"] == graph_hash(g)
    assert manifest["entry"] == "model.onnx"
    seq = manifest["sequence_length"]
    by_ir = {t["ir_name"]: t for t in manifest["tensors"]}
    assert set(by_ir) == set(g.inputs + g.outputs)
    for t in manifest["tensors"]:
        assert {"name", "role", "shape", "dtype", "quantization"} <= set(t)
        ir_t = g.tensors[t["ir_name"]]
        assert t["role"] == g.roles[t["ir_name"]]
        lead = [seq] if seq and t["role"] in ("input", "dt", "output") else []
        assert t["shape"] == lead + list(ir_t.shape)
        assert t["dtype"] == ir_t.dtype and t["quantization"] is None  # a float target
    roles = [t["role"] for t in manifest["tensors"]]
    assert roles.count("input") == 1 and roles.count("output") == 1
    assert len(manifest["state"]) == len(g.state_pairs) == roles.count("state_in")
    names = {t["name"]: t for t in manifest["tensors"]}
    for pair, (s_in, s_out) in zip(manifest["state"], g.state_pairs, strict=True):
        assert names[pair["state_in"]]["role"] == "state_in"
        assert names[pair["state_out"]]["role"] == "state_out"
        assert names[pair["state_in"]]["ir_name"] == s_in
        assert names[pair["state_out"]]["ir_name"] == s_out
        np.testing.assert_array_equal(np.asarray(pair["initial"], np.float32),
                                      g.initial_state[s_in])
    # the ONNX graph's own signature is the one the manifest describes
    sess = ort.InferenceSession(str(artifact / "model.onnx"),
                                providers=["CPUExecutionProvider"])
    onnx_io = {i.name: i.shape for i in sess.get_inputs() + sess.get_outputs()}
    assert onnx_io == {t["name"]: t["shape"] for t in manifest["tensors"]}


def _run_from_manifest_alone(folder, xs):
    """A consumer that knows only manifest.json and onnxruntime, no ncc code."""
    manifest = json.loads((folder / "manifest.json").read_text())
    sess = ort.InferenceSession(str(folder / manifest["entry"]),
                                providers=["CPUExecutionProvider"])
    tensors = {t["name"]: t for t in manifest["tensors"]}
    (x,) = [t for t in manifest["tensors"] if t["role"] == "input"]
    (y,) = [t for t in manifest["tensors"] if t["role"] == "output"]
    state = {s["state_in"]: np.asarray(s["initial"], NP_DTYPES[tensors[s["state_in"]]["dtype"]])
             for s in manifest["state"]}
    chunk = manifest["sequence_length"] or 1
    ys = []
    for t0 in range(0, len(xs), chunk):
        feeds = {x["name"]: xs[t0:t0 + chunk].reshape(x["shape"]).astype(NP_DTYPES[x["dtype"]]),
                 **state}
        out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds),
                       strict=True))
        ys.append(out[y["name"]].reshape(chunk, *tensors[y["name"]]["shape"][-2:]))
        state = {s["state_in"]: out[s["state_out"]] for s in manifest["state"]}
    return np.concatenate(ys)


def test_artifact_runs_from_the_manifest_alone(artifact):
    xs = 2 * np.random.default_rng(3).standard_normal((200, 4)).astype(np.float32)
    alone = _run_from_manifest_alone(artifact, xs)
    ours = open_session(artifact).run(xs)["y"]
    assert alone.shape == ours.shape == (200, 1, 3)
    assert float(np.std(ours)) > 1e-2
    np.testing.assert_array_equal(alone, ours)
    ref = ReferenceSession(load_artifact_graph(artifact)).run(xs)["y"]
    np.testing.assert_allclose(alone, ref, atol=1e-5, rtol=0)
