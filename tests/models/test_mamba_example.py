"""The Mamba digits tutorial, in small form: float training, calibration, QAT through the
int8 forward, and the checkpoint deployed by the tutorial's `ncc compile` / `ncc verify`
command lines (run in-process here: the same arguments, no interpreter start-up). The
frozen model's fake-quant accuracy is the deployed C artifact's, which is bit-exact."""

import sys
from pathlib import Path

from ncc.cli.main import main as ncc_main
from ncc.models.examples import mamba_digits


def _in_process(monkeypatch):
    def run(args: list[str], cwd: Path) -> None:
        monkeypatch.chdir(cwd)
        assert ncc_main(args) == 0, args

    return run


def test_mamba_example_small(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["ncc"])
    r = mamba_digits.main(float_steps=150, qat_steps=20, d_inner=8, d_state=4,
                          calibration=128, out=tmp_path / "ex", ncc=_in_process(monkeypatch))
    assert r["float"] > 0.5  # it learns in 150 steps
    assert r["model_exact"] and r["exact"]  # int8 forward; the artifact is golden
    assert r["deployed"] == r["fake_quant"]  # the training forward is the deployed model
    assert abs(r["fake_quant"] - r["float"]) <= 0.1
    printed = capsys.readouterr().out
    assert f"deployed c {r['deployed']:.4f} (bit-exact with golden)" in printed
