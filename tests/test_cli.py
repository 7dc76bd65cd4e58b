"""The `ncc` command line: inspect prints the IR, bad input is one line on stderr with exit
code 2 and nothing half-written, the demo runs and passes."""

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ncc.cli.main import main
from ncc.compiler.ir import format_graph
from ncc.compiler.load import load_model
from ncc.compiler.pipeline import to_graph
from ncc.compiler.serialize import graph_to_json
from ncc.models.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def files(small_cfc, tmp_path_factory):
    """A real .keras and .ckpt of the small CfC, and broken variants of each."""
    d = tmp_path_factory.mktemp("inputs")
    small_cfc.save(d / "cfc.keras")
    save_checkpoint(small_cfc, d / "cfc.ckpt")
    data = (d / "cfc.keras").read_bytes()
    (d / "truncated.keras").write_bytes(data[: len(data) // 2])
    with zipfile.ZipFile(d / "cfc.keras") as src, zipfile.ZipFile(d / "junk.keras", "w") as dst:
        for item in src.infolist():
            body = src.read(item)
            dst.writestr(item, b"{ not json" if item.filename == "config.json" else body)
    ckpt = (d / "cfc.ckpt").read_bytes()
    (d / "truncated.ckpt").write_bytes(ckpt[: len(ckpt) * 2 // 3])
    pickled = io.BytesIO()
    np.savez(pickled, **{"0000": np.array([{"a": 1}], dtype=object)}, allow_pickle=True)
    with zipfile.ZipFile(d / "cfc.ckpt") as src, zipfile.ZipFile(d / "pickle.ckpt", "w") as dst:
        dst.writestr("spec.json", src.read("spec.json"))
        dst.writestr("weights.npz", pickled.getvalue())
    (d / "ncc_t_cli_steps.py").write_text(
        "import jax.numpy as jnp\n"
        "from ncc.compiler.frontends import from_jax\n"
        "\n"
        "def atan_step(x, h):\n"
        "    h = 0.5 * h + jnp.arctan(x)\n"
        "    return h, h\n"
        "\n"
        "def cumsum_step(x, h):\n"
        "    h = 0.5 * h + jnp.cumsum(x, axis=-1)\n"
        "    return h, h\n"
        "\n"
        "def atan():\n"
        "    return from_jax(atan_step, (4,), jnp.zeros((1, 4)))\n"
        "\n"
        "def cumsum():\n"
        "    return from_jax(cumsum_step, (4,), jnp.zeros((1, 4)))\n")
    np.savez(d / "wrong_features.npz", x=np.zeros((1, 20, 5), np.float32))
    np.savez(d / "good.npz", x=np.random.default_rng(0).standard_normal((2, 30, 4)))
    return d


def test_inspect_prints_the_ir(files, capsys):
    assert main(["inspect", str(files / "cfc.keras")]) == 0
    out = capsys.readouterr().out
    expected = format_graph(to_graph(load_model(str(files / "cfc.keras"))))
    assert out.strip() == expected.strip()
    assert "input     %x: float32[1,4]" in out and "= matmul(" in out
    assert main(["inspect", str(files / "cfc.ckpt"), "--json"]) == 0
    spec = json.loads(capsys.readouterr().out)["ir"]
    assert spec == graph_to_json(to_graph(load_model(str(files / "cfc.ckpt"))))


def test_inspect_an_artifact_prints_manifest_and_ir(small_cfc_artifact, capsys):
    assert main(["inspect", str(small_cfc_artifact), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["manifest"] == json.loads((small_cfc_artifact / "manifest.json").read_text())
    assert payload["ir"] == json.loads((small_cfc_artifact / "ir.json").read_text())


def test_compile_then_verify_succeeds(files, tmp_path, capsys):
    out = tmp_path / "scan"
    assert main(["compile", str(files / "cfc.ckpt"), "-t", "onnx-float", "-o", str(out),
                 "--sequence-length", "10", "--verify-steps", "30", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["report"]["passed"] and result["manifest"]["sequence_length"] == 10
    assert (out / "model.onnx").is_file()
    assert main(["verify", str(out), "--data", str(files / "good.npz"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["sequences"] == 2 and report["steps"] == 30
    assert json.loads((out / "report.json").read_text()) == report


BAD_COMPILES = {
    "missing file": (["nope.keras"], "nope.keras: no such file"),
    "missing checkpoint": (["nope.ckpt"], "nope.ckpt: no such file"),
    "truncated .keras": (["truncated.keras"], "truncated.keras: corrupt or truncated"),
    "corrupt .keras": (["junk.keras"], "junk.keras: cannot load the Keras model"),
    "truncated .ckpt": (["truncated.ckpt"], "truncated.ckpt: corrupt or truncated"),
    "pickle in .ckpt": (["pickle.ckpt"], "pickle"),
    "unknown file type": (["good.npz"], "unknown model file type"),
    "unsupported atan": (["ncc_t_cli_steps:atan"], "'atan' at {d}/ncc_t_cli_steps.py:5"),
    "unsupported cumsum": (["ncc_t_cli_steps:cumsum"],
                           "'cumsum' at {d}/ncc_t_cli_steps.py:9"),
    "input shape mismatch": (["cfc.keras", "--input-shape", "5"], "--input-shape 5"),
    "input shape zero": (["cfc.keras", "--input-shape", "0"], "must be positive"),
    "input shape text": (["cfc.keras", "--input-shape", "4x"], "'4x'"),
    "unknown target": (["cfc.keras", "-t", "tpu"], "unknown target 'tpu'"),
    "bad sequence length": (["cfc.keras", "--sequence-length", "0"], "sequence-length"),
}


@pytest.mark.parametrize("case", BAD_COMPILES)
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, files, helpers, tmp_path,
                                                          capsys, monkeypatch):
    args, needle = BAD_COMPILES[case]
    monkeypatch.chdir(files)
    monkeypatch.syspath_prepend(str(files))
    out = tmp_path / "out" / "art"
    argv = ["compile", *args, "-o", str(out)]
    if "-t" not in argv:
        argv += ["-t", "onnx-float"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = helpers.final_line(captured.err, "ncc compile: error: ")
    assert needle.format(d=files) in err
    assert captured.out == ""
    assert helpers.leftovers(out) == []


def test_verify_with_wrong_feature_count(small_cfc_artifact, files, helpers, capsys):
    before = helpers.tree_files(small_cfc_artifact.parent)
    code = main(["verify", str(small_cfc_artifact), "--data", str(files / "wrong_features.npz")])
    assert code == 2
    err = helpers.final_line(capsys.readouterr().err, "ncc verify: error: ")
    assert "wrong_features.npz" in err and "[1, 20, 5]" in err
    assert "(N, T, 4)" in err
    assert helpers.tree_files(small_cfc_artifact.parent) == before  # report untouched


def test_verify_a_folder_that_is_not_an_artifact(tmp_path, helpers, capsys):
    assert main(["verify", str(tmp_path)]) == 2
    err = helpers.final_line(capsys.readouterr().err, "ncc verify: error: ")
    assert "no manifest.json" in err


def test_demo_runs_and_every_row_passes(tmp_path, capsys):
    from ncc.targets.registry import TARGETS

    assert main(["demo", "-o", str(tmp_path / "demo"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["results"]
    assert {r["model"] for r in rows} == {"cfc", "lif", "lru"}
    assert {r["target"] for r in rows} == set(TARGETS)
    sixteen = [r for r in rows if r["activations"] == "int16"]  # the 16x8 mode, shown too
    assert {(r["model"], r["target"]) for r in sixteen} == {
        ("cfc", "tflite-int8"), ("lif", "tflite-int8"),
        ("lru", "c"), ("lru", "tflite-int8")}  # the SSM rows: its own 16x8 grids (QAT)
    assert {r["runtime"] for r in rows if r["model"] == "lru" and r["target"] == "c"} == \
        {"host", "cortex-m4"}
    for r in rows:
        assert r["passed"] and r["exact"] and r["faithful"], r
        # the bundled models are trained: the artifacts must classify digits as well
        assert r["accuracy_float"] > 0.8
        assert abs(r["accuracy_artifact"] - r["accuracy_float"]) <= 0.01, r
        if not TARGETS[r["target"]].exact:
            assert 0 < r["identical_to_golden"] <= 1.0  # measured and shown, not hidden
        elif TARGETS[r["target"]].quantized:
            assert r["identical_to_golden"] == 1.0
        else:
            assert r["max_abs_error"] <= 1e-4
        report = json.loads((Path(r["artifact"]) / "report.json").read_text())
        steps = 64 if r["model"] == "lru" else 8  # the LRU reads pixel by pixel
        assert report["passed"] and report["steps"] == steps and report["sequences"] == 360


def test_demo_without_a_c_compiler_writes_the_c_artifact_and_says_why_not_run(
        tmp_path, capsys, monkeypatch):
    """A fresh machine without gcc still runs `ncc demo`: the c row says what to install."""
    import ncc.cli.demo as demo
    import ncc.runtime.cbuild as cbuild

    monkeypatch.setattr(demo, "TARGETS", {"c": demo.TARGETS["c"]})
    monkeypatch.setattr(demo, "MODELS", {"cfc": demo.MODELS["cfc"]})
    monkeypatch.setattr(demo, "SSM", {})
    monkeypatch.setattr(cbuild.shutil, "which", lambda name: None)
    assert main(["demo", "-o", str(tmp_path / "demo"), "--json"]) == 0
    host, device = json.loads(capsys.readouterr().out)["results"]
    assert host["target"] == "c" and "apt-get install gcc" in host["skipped"]
    assert device["runtime"] == "cortex-m4"
    assert "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm" in \
        device["skipped"]
    assert (tmp_path / "demo" / "cfc.c" / "model.c").stat().st_size > 0
