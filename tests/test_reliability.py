"""Bad input, interruption and tampering, as a careless user or an attacker meets them:
each case gets one line on stderr and its exit code, and nothing is lost or left behind.

(Hostile checkpoints: tests/models/test_checkpoint_security.py.)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from ncc.cli.main import main
from ncc.cli.progress import without_phase_lines
from ncc.compiler.frontends import from_jax

BUNDLED = Path(__file__).resolve().parents[1] / "models" / "bundled"
CFC = BUNDLED / "cfc_digits.ckpt"


def _one_line_error(capsys, *needles: str) -> str:
    """The error: one line, last on stderr (after a line per finished phase), no traceback."""
    (err,) = without_phase_lines(capsys.readouterr().err)
    assert "Traceback" not in err and ": error: " in err or "internal error" in err, err
    for needle in needles:
        assert needle in err, err
    return err


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> Path:
    digits = np.load(BUNDLED / "digits.npz")
    path = tmp_path_factory.mktemp("calib") / "calib.npz"
    np.savez(path, x=digits["x"][digits["train"]][:64])
    return path


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, calib) -> Path:
    out = tmp_path_factory.mktemp("art") / "cfc.onnx-int8"
    assert main(["compile", str(CFC), "--target", "onnx-int8", "--calibration", str(calib),
                 "-o", str(out), "--verify-steps", "8"]) == 0
    return out


# --- output folders ------------------------------------------------------------------------


def test_output_that_is_a_file_is_refused_and_kept(tmp_path, capsys):
    target = tmp_path / "model.out"
    target.write_text("mine")
    assert main(["compile", str(CFC), "--target", "onnx-float", "-o", str(target)]) == 2
    _one_line_error(capsys, "exists and is not a folder")
    assert target.read_text() == "mine" and _siblings(tmp_path) == ["model.out"]


def test_output_folder_of_someone_else_is_refused_and_kept(tmp_path, capsys):
    folder = tmp_path / "project"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "important.txt").write_text("keep me")
    assert main(["compile", str(CFC), "--target", "onnx-float", "-o", str(folder)]) == 2
    _one_line_error(capsys, "not an ncc artifact folder")
    assert (folder / "sub" / "important.txt").read_text() == "keep me"
    assert _siblings(tmp_path) == ["project"]


@pytest.mark.parametrize("name", [".", ".."])
def test_output_naming_the_current_or_parent_folder_is_refused(tmp_path, capsys, monkeypatch,
                                                               name):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["compile", str(CFC), "--target", "onnx-float", "-o", name]) == 2
    _one_line_error(capsys, "name a new folder")
    assert _siblings(tmp_path) == ["work"] and _siblings(work) == []


def test_recompiling_replaces_an_artifact_folder_as_a_whole(tmp_path, capsys):
    out = tmp_path / "art"
    assert main(["compile", str(CFC), "--target", "onnx-float", "-o", str(out),
                 "--verify-steps", "4"]) == 0
    (out / "stale.txt").write_text("from before")
    assert main(["compile", str(CFC), "--target", "onnx-float", "-o", str(out),
                 "--verify-steps", "4"]) == 0
    assert not (out / "stale.txt").exists()
    assert _siblings(tmp_path) == ["art"]  # no staging or old folder left beside it
    assert (out.stat().st_mode & 0o777) == 0o755  # readable like the files in it


def test_negative_verify_steps_writes_nothing(tmp_path, capsys):
    out = tmp_path / "art"
    assert main(["compile", str(CFC), "--target", "onnx-float", "-o", str(out),
                 "--verify-steps", "-5"]) == 2
    _one_line_error(capsys, "--verify-steps -5")
    assert _siblings(tmp_path) == []


# --- data ----------------------------------------------------------------------------------


@pytest.mark.parametrize("x, message", [
    (np.array([[["a"] * 8] * 8]), "dtype"),
    (np.ones((2, 8, 8)) * (1 + 1j), "dtype"),
    (np.full((2, 8, 8), 1e300), "float32's range"),
    (np.full((2, 8, 8), np.nan), "NaN"),
], ids=["string", "complex", "beyond-float32", "nan"])
def test_bad_calibration_data_is_one_line_and_writes_nothing(tmp_path, capsys, x, message):
    data = tmp_path / "calib.npz"
    np.savez(data, x=x)
    out = tmp_path / "art"
    assert main(["compile", str(CFC), "--target", "onnx-int8", "--calibration", str(data),
                 "-o", str(out)]) == 2
    _one_line_error(capsys, message)
    assert _siblings(tmp_path) == ["calib.npz"]


def test_labels_of_the_wrong_shape_are_refused(tmp_path, capsys, artifact):
    data = tmp_path / "test.npz"
    np.savez(data, x=np.zeros((3, 8, 8), np.float32), y=np.zeros((5,), np.int64))
    assert main(["verify", str(artifact), "--data", str(data)]) == 2
    _one_line_error(capsys, "labels y")


def test_verify_with_huge_values_is_refused_not_passed(tmp_path, capsys, artifact):
    data = tmp_path / "huge.npz"
    np.savez(data, x=np.full((1, 4, 8), 1e300))
    assert main(["verify", str(artifact), "--data", str(data)]) == 2
    _one_line_error(capsys, "float32's range")


# --- validation that means what it says ------------------------------------------------------


def growing_step(x, h):
    """A linear recurrence whose output grows to ~1e6 in 100 steps."""
    h = 1.15 * h + x[:, :1]
    return 3.0 * h, h


def grows():
    return from_jax(growing_step, (4,), jnp.zeros((1, 1)))


def test_float_target_is_judged_relative_to_the_output(tmp_path):
    from ncc.cli.driver import compile_model

    report = compile_model(grows(), "onnx-float", tmp_path / "art", verify_steps=100).report
    (y,) = report["outputs"].values()
    assert y["peak_abs"] > 1e5 and y["max_abs_error"] > 1e-4  # absolute 1e-4 would fail it
    assert report["passed"] and "max(1, max |reference|)" in report["criterion"]


def test_nan_in_outputs_is_a_failure(tmp_path):
    from ncc.cli.driver import compile_model
    from ncc.runtime.verify import verify_artifact

    out = compile_model(grows(), "onnx-float", tmp_path / "art", verify_steps=0).out_dir
    data = {"x": np.full((1, 400, 4), 3e38, np.float32)}  # overflows to inf, then nan
    report = verify_artifact(out, data=data)
    assert not report["passed"] and "finite" in report["criterion"]


# --- tampering -----------------------------------------------------------------------------


def _tampered(artifact: Path, tmp_path: Path, edit) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(artifact, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    edit(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def _tensor(manifest: dict, role: str) -> dict:
    return next(t for t in manifest["tensors"] if t["role"] == role)


@pytest.mark.parametrize("edit, field", [
    (lambda m: _tensor(m, "input")["quantization"]["scale"].__setitem__(0, 0.5), "scale"),
    (lambda m: _tensor(m, "output")["quantization"]["scale"].__setitem__(0, 2.0), "scale"),
    (lambda m: _tensor(m, "input")["quantization"]["zero_point"].__setitem__(0, 3),
     "zero_point"),
    (lambda m: _tensor(m, "output").__setitem__("shape", [1, 5]), "shape"),
    (lambda m: _tensor(m, "state_in").__setitem__(
        "dtype", {"int8": "int16"}.get(_tensor(m, "state_in")["dtype"], "int8")), "dtype"),
    (lambda m: m["state"][0].__setitem__("state_out", m["state"][0]["state_in"]), "state_out"),
    (lambda m: m.__setitem__("io_sha256", "0" * 64), "io_sha256"),
], ids=["input-scale", "output-scale", "zero-point", "shape", "dtype", "state-pairing",
        "checksum"])
def test_manifest_tampering_is_detected_and_named(tmp_path, capsys, artifact, edit, field):
    copy = _tampered(artifact, tmp_path, edit)
    assert main(["verify", str(copy), "--steps", "4", "--sequences", "1"]) == 2
    _one_line_error(capsys, "manifest", field, "modified")


# --- errors that are bugs --------------------------------------------------------------------


def test_an_internal_error_is_one_line_with_a_traceback_file(tmp_path, capsys, monkeypatch):
    import ncc.cli.main as cli

    def broken(args):
        raise KeyError("boom")

    monkeypatch.setitem(cli.COMMANDS, "inspect", broken)
    assert main(["inspect", str(CFC)]) == 3
    err = _one_line_error(capsys, "internal error", "KeyError", "traceback in")
    log = Path(err.split("traceback in ")[1].split(";")[0])
    assert "KeyError" in log.read_text()
    log.unlink()


# --- interruption and temporary files ----------------------------------------------------------


def _ncc(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ncc.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_signals_during_compile_leave_nothing_and_a_rerun_works(tmp_path, calib):
    """SIGINT / SIGTERM at several points of a c compile (load, calibrate, lower, verify):
    exit 130 / 143 with one line, no folder, no staging sibling, no temporary files; a
    compile that finished first is whole. A second run to the same folder works."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp), "NCC_NO_CACHE": "1"}
    work = tmp_path / "work"
    work.mkdir()
    args = ("compile", str(CFC), "--target", "c", "--calibration", str(calib),
            "-o", str(work / "cfc_c"), "--verify-steps", "8")
    interrupted = 0
    for delay, sig in ((2.5, signal.SIGINT), (4.5, signal.SIGINT), (6.5, signal.SIGTERM),
                       (9.0, signal.SIGINT)):
        proc = _ncc(*args, env=env)
        time.sleep(delay)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        finished = (work / "cfc_c" / "manifest.json").is_file()
        quiet_exit = finished and proc.returncode < 0 and not without_phase_lines(err)
        if proc.returncode == 0 or quiet_exit:
            # done before the signal (or it landed while Python exited): a whole artifact
            report = json.loads((work / "cfc_c" / "report.json").read_text())
            assert report["passed"], report
            shutil.rmtree(work / "cfc_c")
        else:
            interrupted += 1
            # 130 / 143, or killed by the signal itself (a shell reports both as 128 + n):
            # an imported library may hand the signal on once ncc has handled it
            assert proc.returncode in ((130, -2) if sig == signal.SIGINT else (143, -15)), (
                delay, proc.returncode, err)
            assert without_phase_lines(err) == [err.strip().splitlines()[-1]], err
            assert "ncc compile: interrupted" in err, err
        assert _siblings(work) == [], (delay, _siblings(work))
        assert not [p for p in temp.iterdir() if p.name.startswith("ncc-")], list(temp.iterdir())
    assert interrupted >= 2
    proc = _ncc(*args, env=env)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert _siblings(work) == ["cfc_c"]
    assert not [p for p in temp.iterdir() if p.name.startswith("ncc-")]


def test_an_edited_c_artifact_is_not_compiled(tmp_path, capsys, calib):
    """Compiling runs code: a C artifact whose model.c was changed, with its checksum
    updated to match, is refused before any compiler runs."""
    import hashlib

    out = tmp_path / "cfc_c"
    assert main(["compile", str(CFC), "--target", "c", "--calibration", str(calib),
                 "-o", str(out), "--verify-steps", "4"]) == 0
    capsys.readouterr()
    source = out / "model.c"
    source.write_text(source.read_text() + '\n__attribute__((constructor)) static void '
                      'own(void) { remove("owned"); }\n')
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"]["model.c"] = hashlib.sha256(source.read_bytes()).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert main(["verify", str(out), "--steps", "4", "--sequences", "1"]) == 2
    _one_line_error(capsys, "model.c", "refusing to compile")
