"""A spyx LIF classifier quantized with `spyx.quant` (qwix) QAT on digits, deployed by ncc.

Pixels of the bundled digits (`models/bundled/digits.npz`, its train / test split) are
rate-coded into T Bernoulli spike trains. Network: `spyx.nn.Sequential(nnx.Linear(64, H),
LIF(H), nnx.Linear(H, 10), LI(10))`, run with `spyx.nn.run`; the class is the argmax of the
last step's readout (what `ncc verify` scores). Float BPTT first, then `spyx.quant.quantize`
with qwix's weight-only int8 rule (`spiking_feedforward_rules`) and a QAT fine-tune through
qwix's fake-quant forward. The trained weights are saved as an ncc checkpoint of the float
net; `qwix_digits_model.py` beside it re-applies the same qwix rule, and the `ncc`
command compiles that model to tflite-int8 and c (calibrating the membranes and readout
qwix left in float on training spikes) and verifies each artifact on the labelled test
spikes:

    python -m ncc.models.examples.qwix_snn_digits            # -> qwix_snn_digits/
    cd qwix_snn_digits && ncc compile qwix_digits_model:make --target c -o c \
        --calibration calibration.npz && ncc verify c --data test.npz    # what it runs

Prints float / qwix fake-quant / deployed accuracy (every target's artifact is bit-exact
with ncc's golden model; the deployed accuracy is the artifact's).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import spyx.nn
from flax import nnx

from ncc.models.checkpoint import load_checkpoint, save_checkpoint
from ncc.models.examples.common import Runner, run_ncc
from ncc.models.examples.qat_snn_digits import rate_encode
from ncc.models.zoo import bundled_dir

__all__ = ["build", "quantize", "quantized", "accuracy", "run_ncc", "main"]

TARGETS = ("tflite-int8", "c")
RULE_QTYPE = "int8"


def build(hidden: int, seed: int) -> spyx.nn.Sequential:
    """The float net: 64 input spikes -> LIF(hidden) -> LI(10)."""
    rngs = nnx.Rngs(seed)
    return spyx.nn.Sequential(
        nnx.Linear(64, hidden, use_bias=False, rngs=rngs),
        spyx.nn.LIF((hidden,), beta=None, threshold=1.0, activation=spyx.axn.arctan(),
                    rngs=rngs),
        nnx.Linear(hidden, 10, use_bias=False, rngs=rngs),
        spyx.nn.LI((10,), beta=0.9, rngs=rngs),
    )


def quantize(net: spyx.nn.Sequential) -> nnx.Module:
    """`net` under qwix QAT: int8 per-channel weights, spikes and membranes left alone."""
    import spyx.quant

    return spyx.quant.quantize(net, jnp.zeros((1, 64)), net.initial_state(1),
                               rules=spyx.quant.spiking_feedforward_rules(RULE_QTYPE))


def quantized(checkpoint: str | Path) -> nnx.Module:
    """The deployable model: the saved float net under the same qwix rule (what
    `qwix_digits_model.py:make` returns to `ncc compile`)."""
    return quantize(load_checkpoint(checkpoint))


def _scores(model: nnx.Module, spikes: jax.Array) -> jax.Array:
    out, _ = spyx.nn.run(model, spikes)
    return out[-1]


def _train(model: nnx.Module, s: np.ndarray, y: np.ndarray, steps: int, lr: float,
           batch: int, seed: int) -> None:
    opt = nnx.Optimizer(model, optax.adam(lr), wrt=nnx.Param)

    @nnx.jit
    def step(model: nnx.Module, opt: nnx.Optimizer, sb: jax.Array, yb: jax.Array) -> None:
        def loss_fn(m: nnx.Module) -> jax.Array:
            return optax.softmax_cross_entropy_with_integer_labels(_scores(m, sb), yb).mean()

        opt.update(model, nnx.grad(loss_fn)(model))

    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.integers(0, s.shape[1], batch)
        step(model, opt, s[:, idx], y[idx])


def accuracy(model: nnx.Module, s: np.ndarray, y: np.ndarray) -> float:
    """Test accuracy of the last step's readout over spikes s (T, N, 64)."""
    scores = nnx.jit(_scores)(model, s)
    return float(np.mean(np.argmax(np.asarray(scores), -1) == y))


def main(float_steps: int = 600, qat_steps: int = 200, hidden: int = 64, steps: int = 16,
         seed: int = 0, out: str | Path = "qwix_snn_digits", calibration: int = 64,
         targets: tuple[str, ...] = TARGETS, qat_lr: float = 1e-3,
         measure_before: bool = True, ncc: Runner | None = None,
         verbose: bool = True) -> dict[str, Any]:
    """Train float, quantize with qwix QAT, fine-tune, compile and verify on `targets`;
    returns the accuracies (`deployed`: per target, the artifact's on the test spikes).
    ncc: how the `ncc` commands run (default `run_ncc`, a subprocess each)."""
    ncc = ncc or run_ncc
    data = np.load(bundled_dir() / "digits.npz")
    x, y = data["x"], data["y"].astype(np.int32)
    tr, te = data["train"], data["test"]
    s_tr, s_te = rate_encode(x[tr], steps, seed), rate_encode(x[te], steps, seed + 1)
    net = build(hidden, seed)
    _train(net, s_tr, y[tr], float_steps, 5e-3, 128, seed)
    acc_float = accuracy(net, s_te, y[te])
    q = quantize(net)
    acc_qwix_before = accuracy(q, s_te, y[te]) if measure_before else float("nan")
    _train(q, s_tr, y[tr], qat_steps, qat_lr, 128, seed + 1)
    acc_qwix = accuracy(q, s_te, y[te])
    nnx.update(net, nnx.state(q, nnx.Param))  # qwix QAT trains the float weights

    folder = Path(out).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    ckpt = save_checkpoint(net, folder / "float.ckpt")
    (folder / "qwix_digits_model.py").write_text(
        '"""The qwix model ncc compiles: the trained float net under spyx.quant QAT."""\n\n'
        "from ncc.models.examples.qwix_snn_digits import quantized\n\n\n"
        "def make():\n"
        f"    return quantized({str(ckpt)!r})\n")
    np.savez(folder / "calibration.npz", x=s_tr[:, :calibration].transpose(1, 0, 2))
    np.savez(folder / "test.npz", x=s_te.transpose(1, 0, 2), y=y[te])
    deployed: dict[str, float] = {}
    reports: dict[str, Any] = {}
    for target in targets:
        art = folder / target
        ncc(["compile", "qwix_digits_model:make", "--target", target, "--calibration",
              "calibration.npz", "--verify-steps", "0", "-o", str(art), "--quiet"], folder)
        ncc(["verify", str(art), "--data", "test.npz", "--quiet"], folder)
        reports[target] = json.loads((art / "report.json").read_text())
        deployed[target] = reports[target]["accuracy"]["artifact"]
    result: dict[str, Any] = {
        "float": acc_float, "qwix_fake_quant_before_qat": acc_qwix_before,
        "qwix_fake_quant": acc_qwix, "deployed": deployed,
        "exact": {t: r["exactness"]["passed"] for t, r in reports.items()},
        "traced_qwix_forward": {t: r["accuracy"]["reference"] for t, r in reports.items()},
        "notice": {t: r["qwix"]["notice"] for t, r in reports.items()},
        "folder": str(folder)}
    if verbose:
        print(f"spyx LIF digits: float {acc_float:.4f}  qwix fake-quant (no QAT) "
              f"{acc_qwix_before:.4f}  qwix fake-quant after QAT {acc_qwix:.4f}  deployed "
              + "  ".join(f"{t} {a:.4f}" + (" (bit-exact with golden)" if result["exact"][t]
                                              else " (NOT bit-exact)")
                          for t, a in deployed.items()))
        for t in targets:
            print(f"  {t}: {result['notice'][t]}")
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--float-steps", type=int, default=600)
    ap.add_argument("--qat-steps", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="qwix_snn_digits", help="the folder it writes")
    a = ap.parse_args()
    main(a.float_steps, a.qat_steps, seed=a.seed, out=a.out)
