"""The traced-IR cache: a second compile of the same model file skips loading and tracing
and writes the same bytes; any change of file or environment is a miss."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import ncc.targets.pipeline as pipeline
from ncc.compiler import trace_cache
from ncc.targets.pipeline import build_artifact

CFC = Path(__file__).resolve().parents[2] / "models" / "bundled" / "cfc_digits.ckpt"
FILES = ("ir.json", "ir.npz", "model.onnx", "manifest.json")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("NCC_CACHE_DIR", str(root))
    monkeypatch.delenv("NCC_NO_CACHE", raising=False)
    return root


def _no_loading(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded although its IR is cached")

    monkeypatch.setattr(pipeline, "load_model", refuse)
    monkeypatch.setattr(pipeline, "to_graph", refuse)


def test_a_second_compile_skips_loading_and_writes_the_same_bytes(tmp_path, cache,
                                                                  monkeypatch):
    first = build_artifact(CFC, "onnx-float", tmp_path / "a", trace_cache=True).out_dir
    assert len(list((cache / "ir").iterdir())) == 1
    _no_loading(monkeypatch)
    second = build_artifact(CFC, "onnx-float", tmp_path / "b", trace_cache=True).out_dir
    for name in FILES:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_another_file_or_input_shape_is_a_miss(tmp_path, cache):
    build_artifact(CFC, "onnx-float", tmp_path / "a", trace_cache=True)
    copy = tmp_path / "cfc.ckpt"
    shutil.copy(CFC, copy)
    assert trace_cache.cached_graph(copy, None) is not None  # same bytes: same entry
    assert trace_cache.cached_graph(copy, (8,)) is None
    copy.write_bytes(copy.read_bytes() + b"\0")
    assert trace_cache.cached_graph(copy, None) is None


def test_a_changed_source_fingerprint_is_a_miss(tmp_path, cache, monkeypatch):
    build_artifact(CFC, "onnx-float", tmp_path / "a", trace_cache=True)
    monkeypatch.setattr(trace_cache, "_fingerprint", lambda: "another ncc")
    assert trace_cache.cached_graph(CFC, None) is None


def test_no_cache_writes_nothing(tmp_path, cache, monkeypatch):
    monkeypatch.setenv("NCC_NO_CACHE", "1")
    build_artifact(CFC, "onnx-float", tmp_path / "a", trace_cache=True)
    assert not cache.exists()


def test_a_damaged_entry_is_a_miss_and_is_rewritten(tmp_path, cache):
    build_artifact(CFC, "onnx-float", tmp_path / "a", trace_cache=True)
    (entry,) = (cache / "ir").iterdir()
    (entry / "float.json").write_text("{not json")
    assert trace_cache.cached_graph(CFC, None) is None
    build_artifact(CFC, "onnx-float", tmp_path / "b", trace_cache=True)
    assert trace_cache.cached_graph(CFC, None) is not None
