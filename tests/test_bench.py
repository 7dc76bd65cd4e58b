"""`ncc bench --smoke`: the report files appear and the integer targets stay bit-exact."""

import json

from ncc.cli.main import main


def test_bench_smoke_writes_report_and_holds_exactness(tmp_path):
    out = tmp_path / "results"
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- bench:start -->\nSTALE-TABLE\n<!-- bench:end -->\n\ntail\n")
    assert main(["bench", "--smoke", "-o", str(out), "--readme", str(readme), "--json"]) == 0
    for name in ("results.json", "report.md", "trace.png", "error_growth.png", "accuracy.png",
                 "latency.png", "precision.png"):
        assert (out / name).stat().st_size > 0, name
    results = json.loads((out / "results.json").read_text())
    models = {m["model"]: m for m in results["models"]}
    assert set(models) == {"cfc16 (bundled)", "lif64 (bundled)"}
    for m in models.values():
        runtimes = m["runtimes"]
        for label in ("onnx-int8", "tflite-int8 (litert)", "tflite-int8 (tflm)", "c"):
            assert runtimes[label]["identical"] == 1.0, (m["model"], label)
            assert runtimes[label]["accuracy"] > 0.5
        assert runtimes["onnx-float"]["max_abs_error"] <= 1e-4
        assert m["macs_per_step"] > 0 and m["int8_bound_us"] > 0
        assert "onnxruntime quantize_static (QDQ)" in m["peers"]
        for target in ("onnx-float", "onnx-int8", "onnx-qdq", "tflite-int8", "c"):
            assert m["targets"][target]["artifact_bytes"] > 0, target
            if target != "onnx-float":
                assert m["targets"][target]["test_sqnr_db"] > 10, target
        for label in ("tflite-int8 16x8 (litert)", "tflite-int8 16x8 (tflm)", "c 16x8",
                      "c auto"):
            assert runtimes[label]["identical"] == 1.0, (m["model"], label)
        assert runtimes["c 16x8 (loop inside C)"]["step_us"] > 0
        bound = m["c_mac_bound"]  # the plain int8 loop over the same dense shapes
        assert bound["step_us"] > 0 and bound["macs"] > 0 and bound["shapes"]
        assert bound["flags"] == runtimes["c (loop inside C)"]["flags"]
        m4 = m["cortex_m4"]  # the int8 c artifact under QEMU -icount (CI has the ARM tools)
        assert m4["dsp"]["instructions_per_step"] < m4["portable"]["instructions_per_step"]
        assert (m4["dsp"]["dense_int8_instructions_per_mac"]
                < m4["portable"]["dense_int8_instructions_per_mac"])
        assert m["throughput"]["onnx-int8"]["steps_per_s"] > 0
        assert m["targets"]["onnx-int8"]["weight_bytes"] < m["float_weight_bytes"]
    cfc = models["cfc16 (bundled)"]["targets"]  # 16x8: about 12 dB over int8 measured
    assert cfc["tflite-int8 16x8"]["test_sqnr_db"] > cfc["tflite-int8"]["test_sqnr_db"] + 6
    # auto: near 16x8's SQNR for less flash than 16x8 (Cortex-M4 build of each c artifact)
    assert cfc["c auto"]["test_sqnr_db"] > cfc["c"]["test_sqnr_db"] + 6
    flash = {t: cfc[t]["cortex_m"]["flash_bytes"] for t in ("c", "c auto", "c 16x8")}
    assert flash["c"] < flash["c auto"] < flash["c 16x8"]
    nir = models["lif64 (bundled)"]["runtimes"]["nir"]
    assert "error" not in nir and nir["step_us"] > 0 and nir["max_abs_error"] <= 1e-4
    spikes = models["lif64 (bundled)"]["spike_agreement"]
    assert spikes and all(0.5 < v <= 1.0 for v in spikes.values())
    from ncc.bench.report import load_results, markdown

    again = load_results(out / "results.json")  # the report can be rebuilt from the file
    labels = list(again["models"][0]["runtimes"])
    assert labels.index("onnx-float") < labels.index("onnx-int8") < labels.index("c")
    assert markdown(again).count("## ") == 2
    assert markdown(again).count("Cortex-M4 (QEMU -icount), instructions per step") == 2
    assert markdown(again).count("C step against its MAC bound") == 2
    text = readme.read_text()
    assert "STALE-TABLE" not in text and "| cfc16 (bundled) | ncc onnx-int8 |" in text
    assert "| cfc16 (bundled) | ncc c |" in text
    assert "Cortex-M4 (QEMU -icount)" not in text  # report.md only: the README's is a table
    assert text.endswith("<!-- bench:end -->\n\ntail\n")


def test_full_suite_ssm_cases_train_and_compile_exact(tmp_path):
    """The full suite's spyx LRU and Mamba cases (shortly trained here): a sequence model
    over the digits rows whose c artifact is bit-exact with the golden model."""
    import numpy as np

    from ncc.bench.models import digits, ssm
    from ncc.cli.driver import compile_model
    from ncc.runtime.verify import verify_artifact

    task = digits()
    calib = {"x": task["x"][task["train"][:64]]}
    for kind in ("LRU", "Mamba"):
        net = ssm(kind, steps=5)(task)
        res = compile_model(net, "c", tmp_path / kind, calibration=calib, verify_steps=0)
        report = verify_artifact(res.out_dir, data={"x": task["x"][task["test"][:20]],
                                                    "y": task["y"][task["test"][:20]]})
        assert report["exactness"]["passed"], (kind, report["golden"])
        assert np.isfinite(report["outputs"]["y"]["sqnr_db"])


def test_spiking_ptq_measures_every_figure_and_auto_beats_int8():
    from ncc.bench.spiking_ptq import measure

    int8 = measure("CuBaLIF", "int8", steps=60, calibration_sequences=4)
    auto = measure("CuBaLIF", "auto", steps=60, calibration_sequences=4)
    for row in (int8, auto):
        assert row["float_spikes"] > 0 and row["integer_spikes"] > 0
        assert 0 < row["spike_recall"] <= 1 and 0 < row["spike_precision"] <= 1
        assert row["mean_relative_error"] >= 0
    assert int8["activations"] == "int8" and auto["activations"] in ("mixed", "int16")
    assert auto["readout_sqnr_db"] > int8["readout_sqnr_db"] + 3
