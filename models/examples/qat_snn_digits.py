"""QAT for a spiking classifier on scikit-learn digits: float BPTT, then integer-membrane QAT.

Pixels are rate-coded into T Bernoulli spike trains (p = intensity). Network: the input
spikes' grid (0 / 1), QuantDense(64, H) -> QuantLIF(H) -> QuantDense(H, 10) -> QuantLI(10) inside
`spyx.nn.Sequential`, run with `spyx.nn.run`; the class score is the mean readout.
Membranes are int8 (`QuantConfig(membrane_bits=8)`), so that every integer target takes
the net: int16 membranes among int8 activations run in the golden model and onnx-int8, but
tflite-int8 and the C runtime need one activation type per op. Prints float and fake-quant
accuracy and saves an ncc checkpoint:

    python -m ncc.models.examples.qat_snn_digits            # -> qat_snn_digits.ckpt
    ncc compile qat_snn_digits.ckpt --target onnx-int8
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import spyx
from flax import nnx

from ncc.models.checkpoint import save_checkpoint
from ncc.models.examples.common import load_digits_split, run_cli
from ncc.models.nnx.fake_quant import FakeQuant, QuantDense, freeze, set_mode
from ncc.models.nnx.spiking import QuantLI, QuantLIF, set_quantized
from ncc.models.quantization import QuantConfig, QuantParams

__all__ = ["rate_encode", "build", "accuracy", "main"]


def rate_encode(x: np.ndarray, steps: int, seed: int) -> np.ndarray:
    """(N, 8, 8) intensities -> (T, N, 64) float32 spikes."""
    flat = x.reshape(len(x), -1)
    rng = np.random.default_rng(seed)
    return (rng.random((steps,) + flat.shape) < flat).astype(np.float32)


def spike_input() -> FakeQuant:
    """The input's grid, fixed: spikes are exactly 0 / 1 (int8, scale 1)."""
    point = FakeQuant(8, symmetric=True)
    point.params, point.mode = QuantParams((1.0,), (0,), 8, True), "quant"
    return point


def build(hidden: int, config: QuantConfig, seed: int) -> spyx.nn.Sequential:
    rngs = nnx.Rngs(seed)
    model = spyx.nn.Sequential(
        spike_input(),
        QuantDense(64, hidden, bits=config.weight_bits, rngs=rngs),
        QuantLIF((hidden,), beta=None, threshold=1.0, activation=spyx.axn.arctan(),
                 config=config, rngs=rngs),
        QuantDense(hidden, 10, bits=config.weight_bits, rngs=rngs),
        QuantLI((10,), beta=0.9, config=config),
    )
    model.input_shape = (64,)  # per-step features, for the compiler
    return model


def _scores(model: spyx.nn.Sequential, spikes: jax.Array) -> jax.Array:
    out, _ = spyx.nn.run(model, spikes)
    return jnp.mean(out, axis=0)


def _train(model: spyx.nn.Sequential, s: np.ndarray, y: np.ndarray, steps: int, lr: float,
           batch: int, seed: int) -> None:
    opt = nnx.Optimizer(model, optax.adam(lr), wrt=nnx.Param)

    @nnx.jit
    def step(model: spyx.nn.Sequential, opt: nnx.Optimizer, sb: jax.Array,
             yb: jax.Array) -> None:
        def loss_fn(m: spyx.nn.Sequential) -> jax.Array:
            return optax.softmax_cross_entropy_with_integer_labels(_scores(m, sb), yb).mean()

        opt.update(model, nnx.grad(loss_fn)(model))

    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.integers(0, s.shape[1], batch)
        step(model, opt, s[:, idx], y[idx])


def accuracy(model: spyx.nn.Sequential, s: np.ndarray, y: np.ndarray) -> float:
    scores = nnx.jit(_scores)(model, s)
    return float(np.mean(np.argmax(np.asarray(scores), -1) == y))


def main(float_steps: int = 600, qat_steps: int = 200, hidden: int = 64, steps: int = 16,
         seed: int = 0, verbose: bool = True, measure_ptq: bool = True,
         checkpoint: str | None = None) -> dict[str, Any]:
    """Train float, switch on integer membranes and int8 weights, fine-tune; returns the
    accuracies (and the checkpoint path, saved with calibration spikes beside it)."""
    xtr, xte, ytr, yte = load_digits_split(seed)
    str_, ste = rate_encode(xtr, steps, seed), rate_encode(xte, steps, seed + 1)
    config = QuantConfig(membrane_bits=8)  # int8 weights per channel, int8 membranes
    model = build(hidden, config, seed)
    _train(model, str_, ytr, float_steps, 5e-3, 128, seed)
    acc_float = accuracy(model, ste, yte)
    set_quantized(model, True)  # integer membranes, thresholds and decays
    set_mode(model, "quant")  # int8 per-channel weights (live scales during QAT)
    acc_ptq = accuracy(model, ste, yte) if measure_ptq else float("nan")
    _train(model, str_, ytr, qat_steps, 1e-3, 128, seed + 1)
    freeze(model, weights=True)
    acc_qat = accuracy(model, ste, yte)
    result: dict[str, Any] = {"float": acc_float, "fake_quant_before_qat": acc_ptq,
                              "fake_quant": acc_qat}
    if checkpoint:
        result["checkpoint"] = str(save_checkpoint(model, checkpoint))
    if verbose:
        print(f"SNN digits: float {acc_float:.4f}  fake-quant (no QAT) {acc_ptq:.4f}  "
              f"fake-quant after QAT {acc_qat:.4f}"
              + (f"  -> {result['checkpoint']}" if checkpoint else ""))
    return result


if __name__ == "__main__":
    run_cli(main, __doc__, "qat_snn_digits.ckpt")
