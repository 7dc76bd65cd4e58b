"""Sessions thread state like the reference; validation metrics measure what they say."""

import numpy as np
import pytest

from ncc.cli.driver import compile_model, verify_artifact
from ncc.compiler.artifact import load_artifact_graph
from ncc.compiler.data import random_data
from ncc.compiler.interpret import run_sequence
from ncc.runtime.session import open_reference, open_session
from ncc.runtime.validate import compare


def test_compare_metrics_on_known_errors():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((2, 50, 3))
    noise = np.zeros_like(ref)
    noise[1, 45, 2] = 0.25  # one error, late in the sequence
    noise[0, 3, 0] = -0.125
    m = compare(ref, ref + noise)
    assert m["max_abs_error"] == pytest.approx(0.25)
    assert m["rel_error"] == pytest.approx(0.25 / np.abs(ref).max())
    expected = 10 * np.log10(np.sum(ref ** 2) / (0.25 ** 2 + 0.125 ** 2))
    assert m["sqnr_db"] == pytest.approx(expected)
    growth = m["error_growth"]
    assert len(growth) == 10 and growth[0] == pytest.approx(0.125) and growth[-1] == 0.25
    assert growth[1:-1] == [0.0] * 8
    assert compare(ref, ref)["sqnr_db"] == float("inf")


def test_session_matches_reference_and_numpy_interpreter(small_cfc_artifact):
    xs = random_data((4,), False, 1, 300, seed=4)["x"][0]
    got = open_session(small_cfc_artifact).run(xs)
    ref = open_reference(small_cfc_artifact).run(xs)
    npy = run_sequence(load_artifact_graph(small_cfc_artifact), xs)
    assert set(got) == set(ref) == set(npy)  # step sessions return states too
    for name in got:
        assert got[name].shape == ref[name].shape == npy[name].shape
        np.testing.assert_allclose(got[name], ref[name], atol=1e-5, rtol=0)
        np.testing.assert_allclose(got[name], npy[name], atol=1e-5, rtol=0)


def test_scan_session_threads_state_across_chunks(small_cfc, small_cfc_artifact, tmp_path):
    scan = compile_model(small_cfc, "onnx-float", tmp_path / "scan", sequence_length=40,
                         verify_steps=0).out_dir
    xs = random_data((4,), False, 1, 200, seed=5)["x"][0]
    step_y = open_session(small_cfc_artifact).run(xs)["y"]
    scan_y = open_session(scan).run(xs)["y"]
    np.testing.assert_allclose(scan_y, step_y, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="not a multiple"):
        open_session(scan).run(xs[:30])


def test_verify_reports_pass_and_writes_report(small_cfc_artifact):
    report = verify_artifact(small_cfc_artifact, sequences=2, steps=150, seed=1)
    assert report["passed"] and report["sequences"] == 2 and report["steps"] == 150
    (metrics,) = report["outputs"].values()
    assert 0 <= metrics["max_abs_error"] <= report["tolerance"]
    assert metrics["sqnr_db"] > 60
