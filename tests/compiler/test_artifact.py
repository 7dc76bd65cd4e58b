"""Artifact folders: reproducible to the byte, written all or nothing, checksummed."""

import hashlib
import json

import pytest

from ncc.cli.driver import compile_model
from ncc.compiler.artifact import check_files, read_manifest
from ncc.models.archive import ArchiveError
from ncc.models.checkpoint import save_checkpoint


@pytest.mark.parametrize("source,sequence_length", [("ckpt", None), ("ckpt", 50),
                                                    ("factory", None)])
def test_compiling_twice_gives_byte_identical_folders(small_cfc, helpers, tmp_path, source,
                                                      sequence_length):
    """Twice in one process: Keras's global layer-name counters must not leak into files."""
    if source == "ckpt":
        model = save_checkpoint(small_cfc, tmp_path / "cfc.ckpt")
    else:
        model = "ncc.models.zoo:cfc"
    kw = {"sequence_length": sequence_length, "verify_steps": 100}
    a = compile_model(model, "onnx-float", tmp_path / "a", **kw).out_dir
    b = compile_model(str(model), "onnx", tmp_path / "b", **kw).out_dir
    files_a, files_b = helpers.tree_files(a), helpers.tree_files(b)
    assert {"model.onnx", "manifest.json", "report.json", "ir.json", "ir.npz"} <= set(files_a)
    assert files_a.keys() == files_b.keys()
    for name in files_a:
        assert files_a[name] == files_b[name], f"{name} differs between two compilations"
    report = json.loads(files_a["report.json"])
    assert report["passed"] and report["steps"] == 100


def test_recompiling_in_place_replaces_the_folder_atomically(small_cfc, helpers, tmp_path):
    out = tmp_path / "art"
    compile_model(small_cfc, "onnx-float", out, verify_steps=0)
    (out / "stale.txt").write_text("from an older compile")
    compile_model(small_cfc, "onnx-float", out, sequence_length=10, verify_steps=0)
    assert not (out / "stale.txt").exists()
    assert read_manifest(out)["sequence_length"] == 10
    assert helpers.leftovers(out) == ["art"]


def test_manifest_checksums_catch_tampering(small_cfc_artifact, tmp_path):
    manifest = read_manifest(small_cfc_artifact)
    for name, digest in manifest["files"].items():
        data = (small_cfc_artifact / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest
    check_files(small_cfc_artifact, manifest)
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in small_cfc_artifact.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    onnx_bytes = bytearray((copy / "model.onnx").read_bytes())
    onnx_bytes[-1] ^= 1
    (copy / "model.onnx").write_bytes(bytes(onnx_bytes))
    with pytest.raises(ArchiveError, match="model.onnx: checksum mismatch"):
        check_files(copy, read_manifest(copy))
