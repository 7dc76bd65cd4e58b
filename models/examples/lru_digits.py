"""An LRU on a long-memory task: digits read pixel by pixel, QAT at 16x8, deployed by ncc.

Each 8 x 8 digit of the bundled data (`models/bundled/digits.npz`, its train / test
split) is read one pixel a step, a 64-step sequence of one feature in [0, 1]; the class
is read from the logits of the last step, so the first pixels must be remembered for 64
steps. The step model is

    x_t (B, 1) -> QuantDense(1, d_model) -> LRU(d_model, d_state) -> QuantDense(d_model, 10)

with `ncc.models.nnx.ssm.LRU` (a diagonal complex linear recurrence, |lam| < 1). It is
quantized as TFLite's 16x8 mode (`QuantConfig(activation_bits=16, state_bits=16)`:
activations and the state int16, weights int8): an int8 state loses too much over 64
steps of a recurrence whose eigenvalues sit near 1. The script trains in float (BPTT,
Adam), calibrates the fake-quant points and freezes every grid (the forward is then the
deployed integer arithmetic, bit for bit; W_h's grid holds the eigenvalues nearly
exactly, `ncc.models.nnx.ssm.eigenvalue_peaks`), fine-tunes through that forward (QAT,
straight-through gradients), freezes the grids of the fine-tuned weights and saves an
ncc checkpoint. The `ncc` command compiles it and
verifies each artifact on the labelled test sequences in its runtime:

    python -m ncc.models.examples.lru_digits            # -> lru_digits/ (~3 min, 2 cores)
    cd lru_digits && ncc compile lru_digits.ckpt --target c --activations int16 -o c \\
        --verify-steps 0 && ncc verify c --data test.npz            # what it runs

It prints the float, fake-quant and deployed test accuracies and the SQNR of the frozen
forward's logits against the float model's. The artifacts compute the golden model bit
for bit (ncc verify), and the golden model is the frozen forward bit for bit
(`tests/models/test_lru_example.py` compares the artifacts' logits), so that SQNR is the
deployed logits'.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ncc.models.checkpoint import save_checkpoint
from ncc.models.examples.common import Runner, run_ncc, train_classifier
from ncc.models.nnx.fake_quant import FakeQuant, QuantDense, freeze, set_mode
from ncc.models.nnx.ssm import LRU
from ncc.models.quantization import QuantConfig, fake_quant_dense
from ncc.models.zoo import bundled_dir

__all__ = ["LRUClassifier", "CONFIG", "TARGETS", "pixel_sequences", "digits_split", "logits",
           "accuracy", "sqnr_db", "main"]

TARGETS = ("c", "tflite-int8")
"""The integer targets the example compiles to (both bit-exact with the golden model)."""
CONFIG = QuantConfig(activation_bits=16, state_bits=16)
"""int8 weights per channel, int16 activations and state: `ncc compile --activations int16`."""


QAT_STEPS, QAT_LR = 100, 1e-4
"""The fine-tuning on frozen grids: short and slow, so the weights stay near float's."""


def pixel_sequences(x: np.ndarray) -> np.ndarray:
    """(N, 8, 8) images -> (N, 64, 1) sequences: one pixel a step, row by row."""
    return np.ascontiguousarray(x.reshape(len(x), -1, 1), dtype=np.float32)


def digits_split() -> tuple[np.ndarray, ...]:
    """(x_train, x_test, y_train, y_test) of the bundled digits as pixel sequences:
    x (N, 64, 1) float32 in [0, 1], y (N,) int32."""
    d = np.load(bundled_dir() / "digits.npz")
    x, y = pixel_sequences(d["x"]), d["y"].astype(np.int32)
    return x[d["train"]], x[d["test"]], y[d["train"]], y[d["test"]]


class LRUClassifier(nnx.Module):
    """One step: (x_t (B, 1), h (B, 2 d_state)) -> (logits (B, 10), h').

    A dense encoder onto the LRU's state grid, the LRU, a dense readout of its output.
    Fake-quant points: the input pixels (`q_in`), the LRU's own two (state, output) and
    the logits (`q_logits`). Once everything is frozen (`exact()`), the encoder and the
    readout are the integer fully-connected kernels themselves (`fake_quant_dense`), as
    the LRU's two dense layers are, so the forward is the compiled model's golden model.
    `classify(xs)` runs (B, T, 1) sequences and returns the last step's logits.
    """

    def __init__(self, d_model: int = 16, d_state: int = 48, *, r_min: float = 0.9,
                 r_max: float = 0.999, quantization: QuantConfig | dict | None = None,
                 rngs: nnx.Rngs) -> None:
        if isinstance(quantization, dict):
            quantization = QuantConfig.from_dict(quantization)
        cfg = quantization or CONFIG
        self.config, self.d_model, self.d_state = cfg, int(d_model), int(d_state)
        self.r_min, self.r_max = float(r_min), float(r_max)
        sym = cfg.activation_bits == 16  # int16 grids are symmetric (TFLite's 16x8)
        self.q_in = FakeQuant.for_part(cfg, "activations", cfg.activation_bits, symmetric=sym)
        self.encoder = QuantDense(1, d_model, bits=cfg.weight_bits,
                                  per_channel=cfg.per_channel, rngs=rngs)
        self.lru = LRU(d_model, d_state, r_min=r_min, r_max=r_max, quantization=cfg,
                       rngs=rngs)
        self.head = QuantDense(d_model, 10, bits=cfg.weight_bits, per_channel=cfg.per_channel,
                               rngs=rngs)
        self.q_logits = FakeQuant.for_part(cfg, "activations", cfg.activation_bits,
                                           symmetric=sym)
        self.input_shape = (1,)  # per-step features, for the compiler

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (for `ncc.models.checkpoint.save_checkpoint`)."""
        return {"d_model": self.d_model, "d_state": self.d_state, "r_min": self.r_min,
                "r_max": self.r_max, "quantization": self.config.to_dict()}

    def initial_state(self, batch_size: int) -> jax.Array:
        """Zeros (batch_size, 2 d_state): the LRU's [h_re, h_im]."""
        return self.lru.initial_state(batch_size)

    def exact(self) -> bool:
        """True when every point and weight is frozen: the forward is the integer model."""
        points = (self.q_in, self.q_logits)
        return (self.lru.exact() and self.encoder.params is not None
                and self.head.params is not None
                and all(p.mode == "quant" and p.params is not None for p in points))

    def __call__(self, x: jax.Array, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x (B, 1), h (B, 2 d_state) -> logits (B, 10), h' (B, 2 d_state)."""
        x = self.q_in(x)
        if self.exact():
            lru = self.lru
            u = fake_quant_dense(x, self.encoder.masked_kernel(), self.encoder.bias[...],
                                 self.q_in.params, self.encoder.params, lru.q_state.params)
            y, h = lru(u, h)
            out = fake_quant_dense(y, self.head.masked_kernel(), self.head.bias[...],
                                   lru.q_y.params, self.head.params, self.q_logits.params)
            return out, h
        y, h = self.lru(self.encoder(x), h)  # the LRU puts u on its state grid
        return self.q_logits(self.head(y)), h

    def classify(self, xs: jax.Array) -> jax.Array:
        """xs (B, T, 1) -> logits (B, 10) of the last step: a `lax.scan` over the steps (an
        unrolled loop while calibrating, so the observers may update)."""
        h = self.initial_state(xs.shape[0])
        if any(getattr(m, "mode", None) == "calibrate" for _, m in nnx.iter_modules(self)):
            for t in range(xs.shape[1]):
                out, h = self(xs[:, t], h)
            return out

        def step(h: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
            out, h = self(x, h)
            return h, out

        _, outs = jax.lax.scan(step, h, jnp.swapaxes(xs, 0, 1))
        return outs[-1]


def _train(model: LRUClassifier, x: np.ndarray, y: np.ndarray, steps: int, lr: float,
           batch: int, seed: int) -> None:
    """`steps` Adam steps of cross-entropy on random batches (cosine-decayed lr)."""
    if steps <= 0:
        return
    schedule = optax.cosine_decay_schedule(lr, steps, alpha=0.05)
    train_classifier(model, optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule)),
                     x, y, steps, batch, seed)


@nnx.jit
def _forward(model: LRUClassifier, xs: jax.Array) -> jax.Array:
    return model.classify(xs)


def logits(model: LRUClassifier, xs: np.ndarray) -> np.ndarray:
    """Last-step logits (N, 10) of (N, T, 1) sequences."""
    return np.asarray(_forward(model, jnp.asarray(xs)))


def accuracy(scores: np.ndarray, y: np.ndarray) -> float:
    """Fraction of argmax(scores) == y."""
    return float(np.mean(np.argmax(scores, -1) == y))


def sqnr_db(reference: np.ndarray, got: np.ndarray) -> float:
    """10 log10(sum reference^2 / sum (got - reference)^2), in dB."""
    noise = float(np.sum((np.asarray(got, np.float64) - reference) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(reference**2)) / noise)


def train(float_steps: int = 1200, qat_steps: int = QAT_STEPS, d_model: int = 16,
          d_state: int = 48, batch: int = 64, seed: int = 0, qat_lr: float = QAT_LR,
          say: Any = None) -> tuple[LRUClassifier, dict[str, Any]]:
    """Float training, calibration, frozen grids, QAT on them, grids frozen again: (the
    exact model, its figures: accuracies "float", "fake_quant_calibrated" (the frozen
    integer forward before fine-tuning), "fake_quant" (after), and the logits SQNRs)."""
    t0, say = time.perf_counter(), say or (lambda *a, **k: None)
    xtr, xte, ytr, yte = digits_split()
    model = LRUClassifier(d_model, d_state, quantization=CONFIG, rngs=nnx.Rngs(seed))
    _train(model, xtr, ytr, float_steps, 3e-3, batch, seed)
    ref = logits(model, xte)  # every point still in float mode
    acc_float = accuracy(ref, yte)
    say(f"float: test accuracy {acc_float:.4f}  ({time.perf_counter() - t0:.0f} s)")

    set_mode(model, "calibrate")  # observe the ranges of every point on training data
    for i in range(0, len(xtr) - 255, 256):  # equal batches: one compilation
        _forward(model, xtr[i:i + 256])
    freeze(model, weights=True)  # every grid frozen: the forward is the integer model
    cal = logits(model, xte)
    _train(model, xtr, ytr, qat_steps, qat_lr, batch, seed + 1)  # QAT on those grids
    freeze(model, weights=True)  # grids of the fine-tuned weights (eigenvalues held)
    fq = logits(model, xte)
    same_weights = nnx.clone(model)
    set_mode(same_weights, "float")
    figures = {"float": acc_float, "fake_quant_calibrated": accuracy(cal, yte),
               "fake_quant": accuracy(fq, yte), "exact": model.exact(),
               "sqnr_db_calibrated": sqnr_db(ref, cal), "sqnr_db": sqnr_db(ref, fq),
               "sqnr_db_same_weights": sqnr_db(logits(same_weights, xte), fq),
               "logits_float": ref, "logits_fake_quant": fq}
    say(f"fake-quant: calibrated {figures['fake_quant_calibrated']:.4f} (logits SQNR vs "
        f"float {figures['sqnr_db_calibrated']:.1f} dB), after QAT {figures['fake_quant']:.4f}"
        f" (exact integer forward: {figures['exact']}; SQNR vs float "
        f"{figures['sqnr_db']:.1f} dB, vs its own weights in float "
        f"{figures['sqnr_db_same_weights']:.1f} dB)  ({time.perf_counter() - t0:.0f} s)")
    return model, figures


def main(float_steps: int = 1200, qat_steps: int = QAT_STEPS, d_model: int = 16, d_state: int = 48,
         batch: int = 64, seed: int = 0, out: str | Path = "lru_digits",
         targets: tuple[str, ...] = TARGETS, ncc: Runner | None = None,
         verbose: bool = True) -> dict[str, Any]:
    """Train (`train`), save the checkpoint, compile and verify it on `targets` with the
    `ncc` command (`ncc`: how each command runs; default `run_ncc`, a subprocess).

    Returns `train`'s figures (without the logits), "deployed" (per target, the
    artifact's test accuracy), "golden" (per target: every output and state
    bit-identical to the golden model), "checkpoint", "folder" and "seconds". The
    artifacts' logits are the frozen forward's, bit for bit
    (`tests/models/test_lru_example.py`), so "sqnr_db" is the deployed logits' too."""
    t0 = time.perf_counter()
    say = print if verbose else (lambda *a, **k: None)
    ncc = ncc or run_ncc
    model, fig = train(float_steps, qat_steps, d_model, d_state, batch, seed, say=say)
    fig = {k: v for k, v in fig.items() if not k.startswith("logits")}
    folder = Path(out).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    ckpt = save_checkpoint(model, folder / "lru_digits.ckpt")
    _, xte, _, yte = digits_split()
    np.savez(folder / "test.npz", x=xte, y=yte)
    deployed, golden = {}, {}
    for target in targets:
        ncc(["compile", ckpt.name, "--target", target, "--activations", "int16",
             "--verify-steps", "0", "-o", target, "--quiet"], folder)
        ncc(["verify", target, "--data", "test.npz", "--quiet"], folder)
        report = json.loads((folder / target / "report.json").read_text())
        deployed[target] = float(report["accuracy"]["artifact"])
        golden[target] = bool(report["exactness"]["passed"])
        say(f"deployed {target}: test accuracy {deployed[target]:.4f}, golden verification "
            f"{'PASSED' if golden[target] else 'FAILED'}  ({time.perf_counter() - t0:.0f} s)")
    result: dict[str, Any] = {**fig, "deployed": deployed, "golden": golden,
                              "checkpoint": str(ckpt), "folder": str(folder),
                              "seconds": time.perf_counter() - t0}
    say(f"LRU digits (pixel by pixel, T = 64, 16x8): float {fig['float']:.4f}  fake-quant "
        f"{fig['fake_quant']:.4f}  deployed "
        + "  ".join(f"{t} {a:.4f}" for t, a in deployed.items())
        + f"  SQNR vs float {fig['sqnr_db']:.1f} dB  in {result['seconds']:.0f} s")
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--float-steps", type=int, default=1200,
                    help="float BPTT training steps (default 1200)")
    ap.add_argument("--qat-steps", type=int, default=QAT_STEPS,
                    help=f"fake-quant fine-tuning steps (default {QAT_STEPS})")
    ap.add_argument("--d-state", type=int, default=48, help="LRU state size (complex)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="lru_digits", help="the folder it writes")
    a = ap.parse_args()
    main(a.float_steps, a.qat_steps, d_state=a.d_state, seed=a.seed, out=a.out)
