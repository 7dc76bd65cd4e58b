"""The QAT example scripts, in small form: float training learns, fake-quant keeps accuracy,
and the saved checkpoint compiles with `ncc compile <ckpt> --target onnx-int8` as it is."""

import subprocess
import sys

import pytest

from ncc.models.examples import qat_cfc_digits, qat_snn_digits


def _compile(ckpt, out) -> str:
    done = subprocess.run([sys.executable, "-m", "ncc.cli.main", "compile", str(ckpt),
                           "--target", "onnx-int8", "-o", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


@pytest.mark.parametrize("example", ["cfc", "snn"])
def test_qat_example_small_saves_a_checkpoint_that_compiles(example, tmp_path):
    ckpt = tmp_path / f"{example}.ckpt"
    if example == "cfc":
        r = qat_cfc_digits.main(float_steps=100, qat_steps=20, units=16, backbone=16,
                                verbose=False, measure_ptq=False, checkpoint=str(ckpt))
        assert r["exact"]  # frozen: the forward is the int8 model
    else:
        r = qat_snn_digits.main(float_steps=80, qat_steps=20, hidden=32, steps=8,
                                verbose=False, measure_ptq=False, checkpoint=str(ckpt))
    assert r["float"] > 0.6
    assert r["fake_quant"] > r["float"] - 0.05
    assert ckpt.exists() and r["checkpoint"] == str(ckpt)
    report = _compile(ckpt, tmp_path / "out")  # no calibration data: its own grids
    assert "exactness: PASSED" in report and "100% of values identical to golden" in report
