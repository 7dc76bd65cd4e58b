"""The spyx.quant (qwix) digits example, in small form: QAT through qwix's forward, the
compiled artifact bit-exact with the golden model, the traced float model scoring what
qwix's own forward scores, and the deployed accuracy printed beside both. The example's
`ncc` command lines run in-process here (the same arguments, no interpreter start-up)."""

import sys
from pathlib import Path

from ncc.cli.main import main as ncc_main
from ncc.models.examples import qwix_snn_digits


def _in_process(monkeypatch):
    def run(args: list[str], cwd: Path) -> None:
        monkeypatch.chdir(cwd)  # the model file is found next to the user, as on the CLI
        monkeypatch.delitem(sys.modules, "qwix_digits_model", raising=False)  # this one's
        assert ncc_main(args) == 0, args

    return run


def test_qwix_example_small(tmp_path, capsys, monkeypatch):
    r = qwix_snn_digits.main(float_steps=0, qat_steps=40, qat_lr=5e-3, hidden=24, steps=8,
                             calibration=16, out=tmp_path / "ex", targets=("tflite-int8",),
                             measure_before=False, ncc=_in_process(monkeypatch))
    assert r["qwix_fake_quant"] > 0.5  # QAT through qwix's forward learns from scratch
    assert r["exact"] == {"tflite-int8": True}
    # ncc's float reference is qwix's fake-quant forward: the same test accuracy
    assert r["traced_qwix_forward"]["tflite-int8"] == r["qwix_fake_quant"]
    assert abs(r["deployed"]["tflite-int8"] - r["qwix_fake_quant"]) <= 0.05
    printed = capsys.readouterr().out
    assert f"qwix fake-quant after QAT {r['qwix_fake_quant']:.4f}" in printed
    assert f"tflite-int8 {r['deployed']['tflite-int8']:.4f} (bit-exact with golden)" in printed
    assert "tflite-int8: qwix: the deployed model" in printed
