"""Per-tensor widths and `--precision auto` (issue 14, items 1-2).

A graph whose groups are int8 and int16 side by side runs every kernel at one width
(conversions by `requantize`, TFLite's QUANTIZE); every integer target computes the golden
model's bits on it. `auto` widens only the groups whose noise matters until the target
is met on the calibration data, within a flash budget when one is given.
"""

import shutil
import subprocess
import sys

import numpy as np
import pytest

from ncc.cli.driver import compile_model
from ncc.compiler.load import load_model
from ncc.compiler.pipeline import quantize_graph, to_graph
from ncc.compiler.precision import constant_bytes
from ncc.compiler.quantize import QuantOptions, activation_groups, prepare
from ncc.models.archive import read_npz
from ncc.models.zoo import bundled_dir
from ncc.runtime.verify import verify_artifact

CFC = bundled_dir() / "cfc_digits.ckpt"


@pytest.fixture(scope="module")
def digits():
    d = read_npz(bundled_dir() / "digits.npz")
    return {"train": {"x": d["x"][d["train"]], "y": d["y"][d["train"]]},
            "test": {"x": d["x"][d["test"]], "y": d["y"][d["test"]]}}


@pytest.fixture(scope="module")
def cfc_graph():
    return to_graph(load_model(str(CFC)))


@pytest.fixture(scope="module")
def half_int16(cfc_graph):
    """Every other group of the bundled CfC int16, the rest int8."""
    groups = activation_groups(prepare(cfc_graph))
    return QuantOptions(widths=tuple((names[0], "int16") for names in groups[::2]))


@pytest.fixture(scope="module")
def long_sequence(digits):
    """The training digits' rows one after another: one sequence of 2,000 steps."""
    x = digits["train"]["x"]
    return {"x": x.reshape(1, -1, x.shape[-1])[:, :2000]}


TARGETS = ("onnx-int8", "tflite-int8", "c", "fixed-point")


@pytest.fixture(scope="module")
def mixed_artifacts(tmp_path_factory, digits, half_int16):
    """The CfC with every other group int16; the LIF as `auto` chooses (its int8 spikes
    widened to int16 0/1 for the readout's 16x8 dense layer)."""
    root = tmp_path_factory.mktemp("mixed")
    calibration = {"x": digits["train"]["x"]}
    built = {}
    for model, options in (("cfc", half_int16), ("lif", QuantOptions(activations="auto"))):
        for t in TARGETS:
            built[model, t] = compile_model(bundled_dir() / f"{model}_digits.ckpt", t,
                                            root / f"{model}.{t}", calibration=calibration,
                                            options=options, verify_steps=0)
    return built


@pytest.mark.parametrize("model", ["cfc", "lif"])
def test_mixed_graph_converts_between_widths(mixed_artifacts, model):
    g = mixed_artifacts[model, "c"].graph
    dtypes = {t.dtype for n, t in g.tensors.items() if n not in g.constants and t.quant}
    assert {"int8", "int16"} <= dtypes
    assert g.metadata["activations"] == "mixed"
    conversions = {(g.tensors[op.inputs[0]].dtype, op.attrs["dtype"]) for op in g.ops
                   if op.kind == "requantize"}
    assert ("int8", "int16") in conversions
    assert all(u in g.outputs or any(u in op.inputs for op in g.ops)
               for u in (op.output for op in g.ops))  # no dead conversion left
    widths = mixed_artifacts[model, "c"].manifest["widths"]
    assert widths["activations"] == "mixed" and widths["int16"] > 0 and widths["int8"] > 0


@pytest.mark.parametrize("model", ["cfc", "lif"])
@pytest.mark.parametrize("target,runtime", [("onnx-int8", None), ("tflite-int8", "litert"),
                                            ("tflite-int8", "tflm"), ("c", None),
                                            ("fixed-point", None)])
def test_mixed_widths_are_golden_on_every_target_over_2000_steps(mixed_artifacts, model,
                                                                target, runtime,
                                                                long_sequence):
    report = verify_artifact(mixed_artifacts[model, target].out_dir, data=long_sequence,
                             runtime=runtime)
    assert report["steps"] == 2000
    assert report["exactness"]["passed"], report["golden"]
    assert all(m["identical"] == 1.0 for m in report["golden"].values())
    assert len(report["golden"]) >= 2  # the output and the state


@pytest.mark.parametrize("model", ["cfc", "lif"])
def test_mixed_widths_on_the_cortex_m4(mixed_artifacts, digits, model):
    missing = [t for t in ("arm-none-eabi-gcc", "qemu-system-arm") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (CI installs it: .ci/run)")
    report = verify_artifact(mixed_artifacts[model, "c"].out_dir,
                             data={k: v[:32] for k, v in digits["test"].items()},
                             runtime="cortex-m4")
    assert report["exactness"]["passed"]
    assert all(m["identical"] == 1.0 for m in report["golden"].values())


def _search(cfc_graph, calibration, **options):
    q, _ = quantize_graph(cfc_graph, calibration, QuantOptions(activations="auto", **options))
    return q, q.metadata["precision"]


def test_auto_widens_only_what_the_sqnr_target_needs(cfc_graph, digits):
    calibration = {"x": digits["train"]["x"]}
    q, search = _search(cfc_graph, calibration)
    assert search["int8"]["sqnr_db"] < 30 <= search["chosen"]["sqnr_db"] and search["met"]
    wide = [t for t in search["tensors"] if t["width"] == "int16"]
    assert 0 < len(wide) < len(search["tensors"])
    # the noisiest groups were the ones widened
    shares = [t["noise_share"] for t in search["tensors"]]
    assert shares == sorted(shares, reverse=True)
    assert all(t["width"] == "int16" for t in search["tensors"][:len(wide)])
    assert q.metadata["activations"] == "mixed"
    assert constant_bytes(q) == search["chosen"]["flash_bytes"]
    full, _ = quantize_graph(cfc_graph, calibration, QuantOptions(activations="int16"))
    assert constant_bytes(q) < constant_bytes(full)


def test_auto_search_costs_one_evaluation_per_group_plus_a_bisection(cfc_graph, digits):
    _, search = _search(cfc_graph, {"x": digits["train"]["x"]})
    groups = len(search["tensors"])
    # int8, all-int16 (scored and ranked), one per group, then at most ~2 log2 bisections
    assert search["evaluations"] <= groups + 3 + 2 * int(np.ceil(np.log2(groups)))


def test_a_widened_constant_is_folded_not_requantized_per_step(digits):
    """A constant operand (an LTC's reversal potentials, say) read by an int16 op becomes
    an int16 constant at compile time: no runtime requantize, and the graph still
    rebatches (so the search scores it at batch speed)."""
    from ncc.compiler.batch import rebatch
    from ncc.models import zoo

    g = to_graph(zoo.ltc(16), (8,))
    reference = prepare(g)
    groups = activation_groups(reference)
    options = QuantOptions(widths=tuple((names[0], "int16") for names in groups[::2]))
    q, _ = quantize_graph(g, {"x": digits["train"]["x"][:16]}, options)
    for op in q.ops:
        if op.kind == "requantize":
            assert op.inputs[0] not in q.constants, op
    assert any(n.endswith("_int16") for n in q.constants)
    rebatch(q, 4)


def test_auto_stays_int8_when_int8_meets_the_target(cfc_graph, digits):
    q, search = _search(cfc_graph, {"x": digits["train"]["x"]}, target_sqnr=10.0)
    assert search["met"] and search["tensors"] == []
    assert q.metadata["activations"] == "int8"


def test_auto_with_labels_holds_accuracy(cfc_graph, digits):
    _, search = _search(cfc_graph, digits["train"], max_accuracy_drop=0.0)
    drop = 100 * (search["target"]["float_accuracy"] - search["chosen"]["accuracy"])
    assert search["met"] == (drop <= 0.0)
    assert "accuracy_drop_points" in search["target"]


def test_auto_inside_a_flash_budget_says_when_it_falls_short(cfc_graph, digits):
    calibration = {"x": digits["train"]["x"]}
    _, free = _search(cfc_graph, calibration)
    budget = free["int8"]["flash_bytes"] + 100  # too little for the widenings it needs
    q, search = _search(cfc_graph, calibration, flash_budget=budget)
    assert not search["met"] and search["flash_budget"] == budget
    assert constant_bytes(q) <= budget
    assert search["chosen"]["sqnr_db"] < free["chosen"]["sqnr_db"]


def test_cli_default_is_auto_and_says_what_it_chose(tmp_path, digits):
    np.savez(tmp_path / "cal.npz", x=digits["train"]["x"])
    run = [sys.executable, "-m", "ncc.cli.main", "compile", str(CFC), "-t", "c",
           "--calibration", str(tmp_path / "cal.npz"), "--verify-steps", "8"]
    auto = subprocess.run([*run, "-o", str(tmp_path / "auto")], capture_output=True,
                          text=True)
    assert auto.returncode == 0, auto.stderr
    assert "precision: auto," in auto.stdout and "tensor groups int16" in auto.stdout
    plain = subprocess.run([*run, "--precision", "int8", "-o", str(tmp_path / "int8")],
                           capture_output=True, text=True)
    assert plain.returncode == 0, plain.stderr
    assert "precision: auto" not in plain.stdout
    short = subprocess.run([*run, "--flash-budget", "3000", "-o", str(tmp_path / "b")],
                           capture_output=True, text=True)
    assert short.returncode == 0, short.stderr
    assert "WARNING: precision auto did not reach its target inside --flash-budget" \
        in short.stdout
