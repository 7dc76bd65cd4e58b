"""The command line as a user meets it: two verdicts, layer errors, help, progress, the
Cortex-M4 run. Each test reads the CLI's own output (text, JSON, exit code)."""

import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from ncc.cli.main import main
from ncc.cli.progress import PHASE_LINE, Reporter, without_phase_lines
from ncc.models.archive import atomic_write, npz_bytes, read_npz
from ncc.models.zoo import bundled_dir
from ncc.targets.registry import TARGETS

CFC = bundled_dir() / "cfc_digits.ckpt"
HAS_ARM = all(shutil.which(t) for t in ("arm-none-eabi-gcc", "qemu-system-arm"))


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """calib.npz (train x), test.npz (test x, y) and nolabels.npz (test x) of the digits."""
    d = tmp_path_factory.mktemp("digits")
    data = read_npz(bundled_dir() / "digits.npz")
    atomic_write(d / "calib.npz", npz_bytes({"x": data["x"][data["train"]]}))
    atomic_write(d / "test.npz", npz_bytes({"x": data["x"][data["test"]][:60],
                                            "y": data["y"][data["test"]][:60]}))
    atomic_write(d / "nolabels.npz", npz_bytes({"x": data["x"][data["test"]][:60]}))
    return d


@pytest.fixture(scope="module")
def cfc_c(digits, tmp_path_factory):
    """The bundled CfC compiled to c by the CLI; (folder, stdout, stderr)."""
    out = tmp_path_factory.mktemp("art") / "cfc_c"
    import contextlib

    err, stdout = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(stdout):
        assert main(["compile", str(CFC), "-t", "c", "--calibration",
                     str(digits / "calib.npz"), "-o", str(out)]) == 0
    return out, stdout.getvalue(), err.getvalue()


# --- 1. two verdicts ------------------------------------------------------------------------


def test_compile_prints_both_verdicts_and_labelled_error_spans(cfc_c):
    _, out, _ = cfc_c
    assert "\nPASSED\n" in out
    assert "exactness: PASSED (every output and state bit-identical to the golden model)" in out
    assert re.search(r"fidelity: PASSED \(SQNR >= 20 dB on every output against float\)", out)
    assert re.search(r"y vs float: SQNR \d+\.\d dB", out)
    # the error-growth figures say which steps each one covers
    assert re.search(r"y max abs error per span of steps: 0: [\d.e-]+, 1: ", out), out
    assert "output: per step" in out


def test_verify_with_labels_judges_fidelity_by_task_accuracy(cfc_c, digits, capsys):
    art, _, _ = cfc_c
    assert main(["verify", str(art), "--data", str(digits / "test.npz"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["exactness"]["passed"] and report["passed"]
    fid = report["fidelity"]
    assert fid["passed"] and fid["criterion"] == "task accuracy at most 1 point below float"
    assert report["accuracy"]["artifact"] >= report["accuracy"]["reference"] - 0.01
    assert report["outputs"]["y"]["error_growth_steps"][0] == [0, 0]


def test_low_fidelity_is_a_warning_and_a_failure_with_strict(cfc_c, digits, capsys):
    art, _, _ = cfc_c
    data = str(digits / "nolabels.npz")
    assert main(["verify", str(art), "--data", data, "--min-sqnr", "60"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("PASSED\nexactness: PASSED")
    assert "fidelity: WARNING (SQNR >= 60 dB on every output against float)" in out
    assert re.search(r"not met: SQNR >= 60 dB on every output against float \(lowest SQNR "
                     r"\d+\.\d dB\); --strict makes this a failure", out), out
    assert main(["verify", str(art), "--data", data, "--min-sqnr", "60", "--strict"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAILED\nexactness: PASSED") and "fidelity: FAILED" in out
    assert json.loads((art / "report.json").read_text())["passed"] is False
    # labels: accuracy decides; an impossible accuracy criterion fails with --strict
    assert main(["verify", str(art), "--data", str(digits / "test.npz"),
                 "--max-accuracy-drop", "-50", "--strict"]) == 1
    assert "task accuracy at most -50 points below float" in capsys.readouterr().out


# --- 2. layers that mix time steps ----------------------------------------------------------


def _keras(layers, path: Path) -> Path:
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((12, 4)), *layers])
    model.save(path)
    return path


def _layer_cases():
    import keras

    return {
        "conv1d": ([keras.layers.Conv1D(4, 3), keras.layers.GRU(6)], "convolves over time"),
        "global_average_pooling1d": ([keras.layers.GRU(6, return_sequences=True),
                                      keras.layers.GlobalAveragePooling1D()],
                                     "pools over the whole sequence"),
        "max_pooling1d": ([keras.layers.MaxPooling1D(2), keras.layers.GRU(6)],
                          "pools over time steps"),
        "masking": ([keras.layers.Masking(), keras.layers.GRU(6)], "masks padded time steps"),
        "flatten": ([keras.layers.GRU(6, return_sequences=True), keras.layers.Flatten()],
                    "changes the time axis"),
    }


@pytest.mark.parametrize("layer", ["conv1d", "global_average_pooling1d", "max_pooling1d",
                                   "masking", "flatten"])
def test_a_layer_that_mixes_time_steps_is_named_with_the_reason(layer, tmp_path, capsys):
    layers, reason = _layer_cases()[layer]
    path = _keras(layers, tmp_path / "m.keras")
    assert main(["compile", str(path), "-t", "onnx-float", "-o", str(tmp_path / "o")]) == 2
    (err,) = without_phase_lines(capsys.readouterr().err)
    assert re.match(rf"ncc compile: error: layer '{layer}(_\d+)?' \(", err), err  # Keras names
    assert reason in err and "ncc compiles per-step layers only" in err
    assert "min_ndim" not in err  # not Keras's shape error
    assert not (tmp_path / "o").exists()


def test_attention_is_refused_by_name(tmp_path):
    import keras

    from ncc.compiler.builder import TraceError
    from ncc.compiler.pipeline import to_graph

    x = keras.Input((12, 4))
    h = keras.layers.GRU(8, return_sequences=True)(x)
    y = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)(h, h)
    refusal = (r"layer 'multi_head_attention(_\d+)?' \(MultiHeadAttention\) attends over "
               r"time steps.*fixed-size state")
    with pytest.raises(TraceError, match=refusal):
        to_graph(keras.Model(x, y))


def test_manifest_states_what_a_last_step_only_output_means(tmp_path, capsys):
    import keras

    path = _keras([keras.layers.LSTM(6, return_sequences=False), keras.layers.Dense(2)],
                  tmp_path / "lstm.keras")
    assert main(["compile", str(path), "-t", "onnx-float", "-o", str(tmp_path / "o"),
                 "--verify-steps", "5"]) == 0
    out = capsys.readouterr().out
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    semantics = manifest["output_semantics"]
    assert "return_sequences=False" in semantics and re.search(r"'lstm(_\d+)?'", semantics)
    assert "only the last step's output" in semantics and semantics in out


# --- 3. help ----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["compile", "inspect", "verify", "demo", "bench"])
def test_every_command_has_examples_and_exit_codes(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "examples:\n  ncc " + command in text
    assert "exit codes:" in text and "\n  2    bad input" in text and "130" in text


def test_compile_help_lists_every_target_and_the_examples_users_need(capsys):
    with pytest.raises(SystemExit):
        main(["compile", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps option text
    for target in TARGETS.values():
        assert f"{target.name} {' '.join(target.summary.split())}" in text
    assert "--target tflite-int8 --calibration calib.npz" in text
    assert "--target c --calibration calib.npz" in text
    assert "first 16 calibration sequences" in text and "random input" not in text
    with pytest.raises(SystemExit):
        main(["verify", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--runtime cortex-m4" in text and "c: host, cortex-m4 (default host)" in text


def test_sequences_with_data_is_refused(cfc_c, digits, capsys):
    art, _, _ = cfc_c
    code = main(["verify", str(art), "--data", str(digits / "test.npz"), "--sequences", "3"])
    assert code == 2
    (err,) = without_phase_lines(capsys.readouterr().err)
    assert "--sequences and --steps shape random data; --data brings its own" in err


@pytest.mark.parametrize("out", [".", ".."])
def test_output_folder_dot_or_parent_is_one_clear_line(out, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["compile", str(CFC), "-t", "onnx-float", "-o", out]) == 2
    (err,) = without_phase_lines(capsys.readouterr().err)
    assert err == (f"ncc compile: error: -o {out}: name a new folder for the artifact "
                   "(e.g. -o out/), not the current folder, a parent or the root")


# --- 4. progress ------------------------------------------------------------------------------


def test_phases_are_one_line_each_with_times_when_not_a_terminal(cfc_c):
    _, _, err = cfc_c
    lines = err.strip().splitlines()
    assert all(PHASE_LINE.fullmatch(line) for line in lines), lines
    phases = [re.sub(r" \d+\.\d s$", "", line) for line in lines]
    job = "cfc_digits.ckpt -> c: "
    for phase in ("start (import ncc)", "calibrate", "quantize", "lower to c", "write",
                  "open its runtime", "verify"):
        assert job + phase in phases, phases
    assert job + "trace one step" in phases or job + "look up the trace cache" in phases


def test_quiet_prints_nothing_but_the_result(cfc_c, digits, capsys):
    art, _, _ = cfc_c
    assert main(["verify", str(art), "--data", str(digits / "test.npz"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out.startswith("PASSED\nexactness: PASSED")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_live_line_names_the_job_and_verbose_keeps_the_phases():
    stream = _Terminal()
    with Reporter("cfc.ckpt -> c", "verbose", stream=stream) as progress:
        progress("trace one step", 0, 1)
        progress("trace one step", 1, 1)
        for i in range(4):
            progress("calibrate", i + 1, 4)
    text = stream.getvalue()
    assert "cfc.ckpt -> c: trace one step" in text and "cfc.ckpt -> c: calibrate" in text
    quiet = _Terminal()
    with Reporter("x", "quiet", stream=quiet) as progress:
        progress("trace", 0, 1)
    assert quiet.getvalue() == ""


# --- 5. the Cortex-M4 command -----------------------------------------------------------------


NEEDS_ARM = pytest.mark.skipif(not HAS_ARM, reason="needs arm-none-eabi-gcc and "
                               "qemu-system-arm (apt-get install gcc-arm-none-eabi "
                               "libnewlib-arm-none-eabi qemu-system-arm)")


@NEEDS_ARM
def test_verify_on_the_cortex_m4_under_qemu_is_bit_exact(cfc_c, digits, capsys):
    art, _, _ = cfc_c
    assert main(["verify", str(art), "--runtime", "cortex-m4", "--data",
                 str(digits / "test.npz"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["runtime"] == "cortex-m4" and report["passed"]
    assert all(m["identical"] == 1.0 for m in report["golden"].values())
    device = report["device"]
    manifest = json.loads((art / "manifest.json").read_text())
    assert device["steps_run"] == 60 * 8
    assert device["flash_bytes"] == manifest["details"]["cortex_m"]["flash_bytes"] > 0
    assert device["ram_bytes"] == manifest["details"]["cortex_m"]["ram_bytes"] > 0
    assert main(["verify", str(art), "--runtime", "cortex-m4", "--data",
                 str(digits / "test.npz")]) == 0
    out = capsys.readouterr().out
    assert "on c in cortex-m4" in out and "device: QEMU mps2-an386 (Cortex-M4), flash " in out
    # the README shows this output (on all 360 test sequences): same lines, other figures
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    shown = readme.split("$ ncc verify cfc_c/ --runtime cortex-m4 --data test.npz\n")[1]
    shown = shown.split("```")[0]

    def shape(text: str) -> list[str]:
        return [re.sub(r"\d[\d.,%e-]*", "#", line) for line in text.strip().splitlines()]

    assert shape(shown) == shape(out.replace(str(digits / "test.npz"), "test.npz"))


def test_cortex_m4_without_the_tools_says_what_to_install(cfc_c, capsys, monkeypatch):
    import ncc.runtime.cortex_m as cortex_m

    art, _, _ = cfc_c
    monkeypatch.setattr(cortex_m.shutil, "which",
                        lambda tool: None if tool == "qemu-system-arm" else "/usr/bin/" + tool)
    assert main(["verify", str(art), "--runtime", "cortex-m4"]) == 2
    (err,) = without_phase_lines(capsys.readouterr().err)
    assert err == ("ncc verify: error: the Cortex-M4 run needs qemu-system-arm, not found on "
                   "PATH: apt-get install qemu-system-arm")


@NEEDS_ARM
def test_run_sequences_resets_the_state_between_sequences(cfc_c):
    """One firmware for N sequences gives what N separate runs give."""
    from ncc.runtime import cortex_m
    from ncc.runtime.session import open_session

    art, _, _ = cfc_c
    host = open_session(art, "host")
    xs = np.random.default_rng(0).integers(-128, 128, (3, 7, 1, 8)).astype(np.int8)
    many = cortex_m.run_sequences(art, xs)
    for i in range(3):
        alone = host.run(xs[i])
        for name, value in alone.items():
            np.testing.assert_array_equal(many[i][name].reshape(value.shape), value)
