"""The QAT example scripts, in small form: float training learns, fake-quant keeps accuracy."""

from ncc.models.examples import qat_cfc_digits, qat_snn_digits


def test_qat_cfc_digits_small():
    r = qat_cfc_digits.main(float_steps=100, qat_steps=20, units=16, backbone=16, verbose=False,
                         measure_ptq=False)
    assert r["float"] > 0.6
    assert r["fake_quant"] > r["float"] - 0.05


def test_qat_snn_digits_small():
    r = qat_snn_digits.main(float_steps=80, qat_steps=20, hidden=32, steps=8, verbose=False,
                         measure_ptq=False)
    assert r["float"] > 0.6
    assert r["fake_quant"] > r["float"] - 0.05
