"""QAT for a CfC classifier on scikit-learn digits: float BPTT, calibrate, fake-quant fine-tune.

Rows are time steps (T = 8, 8 features in [0, 1]). Prints float and fake-quant test
accuracy; `main()` returns them for tests. Run: python -m ncc.models.examples.qat_cfc_digits
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from ncc.models.nnx.fake_quant import FakeQuant, QuantDense, freeze, set_mode  # noqa: E402
from ncc.models.nnx.liquid import CfCCell, run_cell  # noqa: E402
from ncc.models.quantization import QuantConfig  # noqa: E402


def load_digits_split(seed: int = 0) -> tuple[np.ndarray, ...]:
    """(x_train, x_test, y_train, y_test), x (N, 8, 8) float32 in [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)
    return tuple(train_test_split(x, d.target.astype(np.int32), test_size=0.25,
                                  random_state=seed, stratify=d.target))


class CfCClassifier(nnx.Module):
    """CfC over the rows, dense head on the last state, fake-quant logits."""

    def __init__(self, units: int, backbone: int, config: QuantConfig, *, rngs: nnx.Rngs):
        self.cell = CfCCell(8, units, backbone_units=backbone, quantization=config, rngs=rngs)
        self.head = QuantDense(units, 10, bits=config.weight_bits, rngs=rngs)
        self.q_logits = FakeQuant.for_part(config, "activations", config.activation_bits)

    def __call__(self, x: jax.Array) -> jax.Array:
        _, h = run_cell(self.cell, x)
        return self.q_logits(self.head(h))


def _train(model: CfCClassifier, x: np.ndarray, y: np.ndarray, steps: int, lr: float,
           batch: int, seed: int) -> None:
    opt = nnx.Optimizer(model, optax.adam(lr), wrt=nnx.Param)

    @nnx.jit
    def step(model: CfCClassifier, opt: nnx.Optimizer, xb: jax.Array, yb: jax.Array) -> None:
        def loss_fn(m: CfCClassifier) -> jax.Array:
            return optax.softmax_cross_entropy_with_integer_labels(m(xb), yb).mean()

        opt.update(model, nnx.grad(loss_fn)(model))

    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.integers(0, len(x), batch)
        step(model, opt, x[idx], y[idx])


@nnx.jit
def _forward(model: CfCClassifier, x: jax.Array) -> jax.Array:
    return model(x)


def accuracy(model: CfCClassifier, x: np.ndarray, y: np.ndarray) -> float:
    logits = _forward(model, x)
    return float(np.mean(np.argmax(np.asarray(logits), -1) == y))


def main(float_steps: int = 600, qat_steps: int = 200, units: int = 32, backbone: int = 32,
         seed: int = 0, verbose: bool = True, measure_ptq: bool = True) -> dict[str, float]:
    xtr, xte, ytr, yte = load_digits_split(seed)
    config = QuantConfig()  # int8 weights per channel, int8 activations and state
    model = CfCClassifier(units, backbone, config, rngs=nnx.Rngs(seed))
    _train(model, xtr, ytr, float_steps, 1e-2, 128, seed)
    acc_float = accuracy(model, xte, yte)
    set_mode(model, "calibrate")
    for i in range(0, len(xtr) - 255, 256):  # equal batches: one compilation
        _forward(model, xtr[i:i + 256])
    freeze(model)  # activations / state frozen; weights fake-quant with live scales
    acc_ptq = accuracy(model, xte, yte) if measure_ptq else float('nan')
    _train(model, xtr, ytr, qat_steps, 1e-3, 128, seed + 1)
    freeze(model, weights=True)  # fix the weights' per-channel parameters for export
    acc_qat = accuracy(model, xte, yte)
    result = {"float": acc_float, "fake_quant_before_qat": acc_ptq, "fake_quant": acc_qat}
    if verbose:
        print(f"CfC digits: float {acc_float:.4f}  fake-quant (calibrated) {acc_ptq:.4f}  "
              f"fake-quant after QAT {acc_qat:.4f}")
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--float-steps", type=int, default=600)
    ap.add_argument("--qat-steps", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    main(a.float_steps, a.qat_steps, seed=a.seed)
