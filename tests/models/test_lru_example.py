"""The LRU tutorial (`models/examples/lru_digits.py`), in small form: it learns, its frozen
16x8 forward is exact, the checkpoint it saves compiles with the `ncc` command lines it
runs (in-process here: the same arguments), both artifacts pass ncc's golden verification,
and their logits are the frozen forward's, bit for bit, so the deployed accuracy is the
fake-quant accuracy and the SQNR it prints is the deployed logits'."""

from pathlib import Path

import numpy as np

from ncc import numerics as nx
from ncc.cli.main import main as ncc_main
from ncc.compiler.artifact import load_artifact_graph
from ncc.models.checkpoint import load_checkpoint
from ncc.models.examples import lru_digits
from ncc.runtime.session import open_session


def _in_process(monkeypatch):
    def run(args: list[str], cwd: Path) -> None:
        monkeypatch.chdir(cwd)
        assert ncc_main(args) == 0, args

    return run


def _artifact_logits(art_dir: Path, xs: np.ndarray) -> np.ndarray:
    """The artifact run in its runtime, one sequence at a time from a zero state:
    (N, T, 1) -> the last step's logits (N, 10), dequantized."""
    session, g = open_session(art_dir), load_artifact_graph(art_dir)
    (x_name,), (y_name,) = g.by_role("input"), g.by_role("output")
    ints = nx.quantize(xs, g.tensors[x_name].quant)
    last = np.stack([session.run(seq)[y_name][-1].reshape(-1) for seq in ints])
    return nx.dequantize(last, g.tensors[y_name].quant)


def test_lru_example_small(tmp_path, capsys, monkeypatch):
    r = lru_digits.main(float_steps=60, qat_steps=8, d_model=8, d_state=16,
                        out=tmp_path / "lru", ncc=_in_process(monkeypatch))
    assert r["exact"]  # every point and weight frozen: the forward is the integer model
    assert r["float"] > 0.3 and r["fake_quant"] > 0.3  # above chance (0.1) after 60 steps
    assert set(r["deployed"]) == set(lru_digits.TARGETS) == {"c", "tflite-int8"}
    _, xte, _, yte = lru_digits.digits_split()
    model = load_checkpoint(r["checkpoint"])  # the saved model is the frozen one
    assert isinstance(model, lru_digits.LRUClassifier) and model.exact()
    fq = lru_digits.logits(model, xte)
    assert lru_digits.accuracy(fq, yte) == r["fake_quant"]
    for target, acc in r["deployed"].items():
        assert r["golden"][target], target  # every output and state = golden, every bit
        assert acc == r["fake_quant"], target
        got = _artifact_logits(tmp_path / "lru" / target, xte[:40])
        np.testing.assert_array_equal(got, fq[:40])  # the deployed logits, bit for bit
    assert r["sqnr_db"] > 15  # deployed (= fake-quant) logits against float
    printed = capsys.readouterr().out
    assert f"fake-quant {r['fake_quant']:.4f}  deployed c {r['deployed']['c']:.4f}" in printed
    assert "golden verification PASSED" in printed
