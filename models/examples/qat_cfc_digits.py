"""QAT for a CfC classifier on scikit-learn digits: float BPTT, calibrate, fake-quant fine-tune.

Rows are time steps (T = 8, 8 features in [0, 1]); the class is read from the logits of
the last step. Prints float and fake-quant test accuracy and saves an ncc checkpoint of
the frozen int8 model, whose forward is then the deployed integer arithmetic:

    python -m ncc.models.examples.qat_cfc_digits          # -> qat_cfc_digits.ckpt
    ncc compile qat_cfc_digits.ckpt --target onnx-int8     # no calibration data needed
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

from typing import Any  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from ncc.models.checkpoint import save_checkpoint  # noqa: E402
from ncc.models.examples.common import (  # noqa: E402
    load_digits_split,
    run_cli,
    train_classifier,
)
from ncc.models.nnx.fake_quant import FakeQuant, QuantDense, freeze, set_mode  # noqa: E402
from ncc.models.nnx.liquid import CfCCell  # noqa: E402
from ncc.models.quantization import QuantConfig, fake_quant_dense  # noqa: E402

__all__ = ["CfCClassifier", "load_digits_split", "accuracy", "main"]


class CfCClassifier(nnx.Module):
    """One step: (x_t (B, 8), h (B, units)) -> (logits (B, 10), h'); a dense head on h'.

    `classify(xs)` runs a (B, T, 8) sequence and returns the last step's logits.
    """

    def __init__(self, units: int = 32, backbone: int = 32,
                 quantization: QuantConfig | dict | None = None, *, rngs: nnx.Rngs) -> None:
        if isinstance(quantization, dict):
            quantization = QuantConfig.from_dict(quantization)
        self.config = quantization or QuantConfig()
        self.units, self.backbone = units, backbone
        self.cell = CfCCell(8, units, backbone_units=backbone, quantization=self.config,
                            rngs=rngs)
        self.head = QuantDense(units, 10, bits=self.config.weight_bits,
                               per_channel=self.config.per_channel, rngs=rngs)
        self.q_logits = FakeQuant.for_part(self.config, "activations",
                                           self.config.activation_bits)
        self.input_shape = (8,)

    def get_config(self) -> dict[str, Any]:
        return {"units": self.units, "backbone": self.backbone,
                "quantization": self.config.to_dict()}

    def initial_state(self, batch_size: int) -> jax.Array:
        return self.cell.initial_state(batch_size)

    def __call__(self, x: jax.Array, h: jax.Array, dt: Any = 1.0) -> tuple[jax.Array, jax.Array]:
        _, h = self.cell(x, h, dt)
        if self.cell.exact() and self.head.params is not None and \
                self.q_logits.params is not None and self.q_logits.mode == "quant":
            logits = fake_quant_dense(h, self.head.masked_kernel(), self.head.bias[...],
                                      self.cell.q_state.params, self.head.params,
                                      self.q_logits.params)  # the int8 kernel itself
        else:
            logits = self.q_logits(self.head(h))
        return logits, h

    def classify(self, xs: jax.Array) -> jax.Array:
        """xs (B, T, 8) -> logits (B, 10) of the last step."""
        h = self.initial_state(xs.shape[0])
        for t in range(xs.shape[1]):
            logits, h = self(xs[:, t], h)
        return logits


def _train(model: CfCClassifier, x: np.ndarray, y: np.ndarray, steps: int, lr: float,
           batch: int, seed: int) -> None:
    train_classifier(model, optax.adam(lr), x, y, steps, batch, seed)


@nnx.jit
def _forward(model: CfCClassifier, x: jax.Array) -> jax.Array:
    return model.classify(x)


def accuracy(model: CfCClassifier, x: np.ndarray, y: np.ndarray) -> float:
    logits = _forward(model, jnp.asarray(x))
    return float(np.mean(np.argmax(np.asarray(logits), -1) == y))


def main(float_steps: int = 600, qat_steps: int = 200, units: int = 32, backbone: int = 32,
         seed: int = 0, verbose: bool = True, measure_ptq: bool = True,
         checkpoint: str | None = None) -> dict[str, Any]:
    """Train, calibrate, fine-tune; returns the accuracies (and the checkpoint path)."""
    xtr, xte, ytr, yte = load_digits_split(seed)
    config = QuantConfig()  # int8 weights per channel, int8 activations and state
    model = CfCClassifier(units, backbone, config, rngs=nnx.Rngs(seed))
    _train(model, xtr, ytr, float_steps, 1e-2, 128, seed)
    acc_float = accuracy(model, xte, yte)
    set_mode(model, "calibrate")
    for i in range(0, len(xtr) - 255, 256):  # equal batches: one compilation
        _forward(model, xtr[i:i + 256])
    freeze(model)  # activations / state frozen; weights fake-quant with live scales
    acc_ptq = accuracy(model, xte, yte) if measure_ptq else float("nan")
    _train(model, xtr, ytr, qat_steps, 1e-3, 128, seed + 1)
    freeze(model, weights=True)  # static weight grids: the forward is now the int8 model
    acc_qat = accuracy(model, xte, yte)
    result: dict[str, Any] = {"float": acc_float, "fake_quant_before_qat": acc_ptq,
                              "fake_quant": acc_qat, "exact": model.cell.exact()}
    if checkpoint:
        result["checkpoint"] = str(save_checkpoint(model, checkpoint))
    if verbose:
        print(f"CfC digits: float {acc_float:.4f}  fake-quant (calibrated) {acc_ptq:.4f}  "
              f"fake-quant after QAT {acc_qat:.4f}"
              + (f"  -> {result['checkpoint']}" if checkpoint else ""))
    return result


if __name__ == "__main__":
    run_cli(main, __doc__, "qat_cfc_digits.ckpt")
