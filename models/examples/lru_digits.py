"""An LRU on a long-memory task: digits read pixel by pixel, QAT, compiled to C and TFLite.

Each 8 x 8 digit of the bundled data (`models/bundled/digits.npz`, its train / test
split) is read one pixel a step, a 64-step sequence of one feature in [0, 1]; the class
is read from the logits of the last step, so the first pixels must be remembered for 64
steps. The step model is

    x_t (B, 1) -> QuantDense(1, d_model) -> LRU(d_model, d_state) -> QuantDense(d_model, 10)

with `ncc.models.nnx.ssm.LRU` (a diagonal complex linear recurrence, |lam| < 1). The
script trains it in float (BPTT, Adam), calibrates the int8 fake-quant points, freezes
them, fine-tunes with the weights fake-quantized (QAT), freezes the weights (the forward
is then the deployed integer arithmetic, bit for bit), compiles the frozen model with
ncc for each target and runs every artifact in its runtime on the test set. It prints
the float, fake-quant and deployed test accuracies and the SQNR of the deployed logits
against the float model's:

    python -m ncc.models.examples.lru_digits              # writes ./lru_digits/{c,tflite-int8}
    python -m ncc.models.examples.lru_digits --float-steps 200 --qat-steps 50   # quicker
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ncc import numerics as nx
from ncc.cli.driver import compile_model
from ncc.compiler.artifact import load_artifact_graph
from ncc.models.examples.common import bundled_digits_split
from ncc.models.nnx.fake_quant import FakeQuant, QuantDense, freeze, set_mode
from ncc.models.nnx.ssm import LRU
from ncc.models.quantization import QuantConfig, fake_quant_dense
from ncc.runtime.session import open_session

__all__ = ["LRUClassifier", "pixel_sequences", "accuracy", "logits", "run_artifact", "sqnr_db",
           "main", "TARGETS"]

TARGETS = ("c", "tflite-int8")
"""The integer targets the example compiles to (both bit-exact with the golden model)."""


def pixel_sequences(x: np.ndarray) -> np.ndarray:
    """(N, 8, 8) images -> (N, 64, 1) sequences: one pixel a step, row by row."""
    return np.ascontiguousarray(x.reshape(len(x), -1, 1), dtype=np.float32)


class LRUClassifier(nnx.Module):
    """One step: (x_t (B, 1), h (B, 2 d_state)) -> (logits (B, 10), h').

    A dense encoder onto the LRU's state grid, the LRU, a dense readout of its output.
    Fake-quant points: the input pixels (`q_in`), the LRU's own two (state, output) and
    the logits (`q_logits`). Once everything is frozen (`exact()`), the encoder and the
    readout are the int8 fully-connected kernels themselves (`fake_quant_dense`), as the
    LRU's two dense layers are, so the forward is the compiled model's golden model.
    `classify(xs)` runs (B, T, 1) sequences and returns the last step's logits.
    """

    def __init__(self, d_model: int = 16, d_state: int = 48, *, r_min: float = 0.9,
                 r_max: float = 0.999, quantization: QuantConfig | None = None,
                 rngs: nnx.Rngs) -> None:
        cfg = quantization or QuantConfig()
        self.config = cfg
        self.q_in = FakeQuant.for_part(cfg, "activations", cfg.activation_bits)
        self.encoder = QuantDense(1, d_model, bits=cfg.weight_bits,
                                  per_channel=cfg.per_channel, rngs=rngs)
        self.lru = LRU(d_model, d_state, r_min=r_min, r_max=r_max, quantization=cfg,
                       rngs=rngs)
        self.head = QuantDense(d_model, 10, bits=cfg.weight_bits, per_channel=cfg.per_channel,
                               rngs=rngs)
        self.q_logits = FakeQuant.for_part(cfg, "activations", cfg.activation_bits)
        self.input_shape = (1,)  # per-step features, for the compiler

    def initial_state(self, batch_size: int) -> jax.Array:
        """Zeros (batch_size, 2 d_state): the LRU's [h_re, h_im]."""
        return self.lru.initial_state(batch_size)

    def exact(self) -> bool:
        """True when every point and weight is frozen: the forward is the int8 model."""
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
        """xs (B, T, 1) -> logits (B, 10) of the last step (the loop unrolls under jit)."""
        h = self.initial_state(xs.shape[0])
        for t in range(xs.shape[1]):
            out, h = self(xs[:, t], h)
        return out


def _train(model: LRUClassifier, x: np.ndarray, y: np.ndarray, steps: int, lr: float,
           batch: int, seed: int) -> None:
    """`steps` Adam steps of cross-entropy on random batches (cosine-decayed lr)."""
    if steps <= 0:
        return
    schedule = optax.cosine_decay_schedule(lr, steps, alpha=0.05)
    opt = nnx.Optimizer(model, optax.chain(optax.clip_by_global_norm(1.0),
                                           optax.adam(schedule)), wrt=nnx.Param)

    @nnx.jit
    def step(model: LRUClassifier, opt: nnx.Optimizer, xb: jax.Array, yb: jax.Array) -> None:
        def loss_fn(m: LRUClassifier) -> jax.Array:
            return optax.softmax_cross_entropy_with_integer_labels(m.classify(xb), yb).mean()

        opt.update(model, nnx.grad(loss_fn)(model))

    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.integers(0, len(x), batch)
        step(model, opt, x[idx], y[idx])


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
    """10 log10(sum reference^2 / sum (got - reference)^2)."""
    noise = float(np.sum((np.asarray(got, np.float64) - reference) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(reference**2)) / noise)


def run_artifact(art_dir: str | Path, xs: np.ndarray) -> np.ndarray:
    """The compiled artifact run in its runtime (`ncc.runtime.session`), one sequence at
    a time from a zero state: (N, T, 1) float -> last-step logits (N, 10), dequantized."""
    session, g = open_session(art_dir), load_artifact_graph(art_dir)
    (x_name,), (y_name,) = g.by_role("input"), g.by_role("output")
    q_in, q_out = g.tensors[x_name].quant, g.tensors[y_name].quant
    ints = nx.quantize(xs, q_in)
    last = np.stack([session.run(seq)[y_name][-1].reshape(-1) for seq in ints])
    return nx.dequantize(last, q_out)


def main(float_steps: int = 1200, qat_steps: int = 200, d_model: int = 16, d_state: int = 48,
         batch: int = 64, seed: int = 0, out: str | Path = "lru_digits",
         targets: tuple[str, ...] = TARGETS, verbose: bool = True) -> dict[str, Any]:
    """Train float, QAT, compile to `targets` and run the artifacts on the test set.

    Returns the test accuracies ("float", "fake_quant_calibrated" (activations frozen,
    before fine-tuning), "fake_quant" (the frozen int8 forward), "deployed": per target),
    "exact" (the model's forward is the int8 model), "bit_exact" per target (the
    artifact's logits equal the fake-quant forward's, every bit), "golden" per target
    (ncc's verification: every output and state bit-identical to its golden model), the
    SQNR in dB of the deployed logits against the float model's ("sqnr_db", per target),
    that of the fake-quant logits against the fine-tuned weights run in float
    ("sqnr_db_same_weights": the quantization alone, without the fine-tuning's drift),
    that of the calibrated fake-quant logits before fine-tuning ("sqnr_db_calibrated")
    and "seconds"."""
    t0 = time.perf_counter()
    say = print if verbose else (lambda *a, **k: None)
    xtr, xte, ytr, yte = bundled_digits_split()
    str_, ste = pixel_sequences(xtr), pixel_sequences(xte)
    model = LRUClassifier(d_model, d_state, quantization=QuantConfig(), rngs=nnx.Rngs(seed))

    _train(model, str_, ytr, float_steps, 3e-3, batch, seed)
    float_model = nnx.clone(model)  # every point still in float mode
    ref = logits(float_model, ste)
    acc_float = accuracy(ref, yte)
    say(f"float: test accuracy {acc_float:.4f}  ({time.perf_counter() - t0:.0f} s)")

    set_mode(model, "calibrate")  # observe the ranges of every point on training data
    for i in range(0, len(str_) - 255, 256):  # equal batches: one compilation
        _forward(model, str_[i:i + 256])
    freeze(model)  # activation / state grids frozen; weights fake-quant with live scales
    cal = logits(model, ste)
    acc_cal, sqnr_cal = accuracy(cal, yte), sqnr_db(ref, cal)
    _train(model, str_, ytr, qat_steps, 3e-4, batch, seed + 1)
    freeze(model, weights=True)  # static weight grids: the forward is the int8 model
    fq = logits(model, ste)
    acc_fq = accuracy(fq, yte)
    same_weights = nnx.clone(model)
    set_mode(same_weights, "float")
    ref_same = logits(same_weights, ste)
    sqnr_same = sqnr_db(ref_same, fq)
    say(f"fake-quant: calibrated {acc_cal:.4f} (logits SQNR vs float {sqnr_cal:.1f} dB), "
        f"after QAT {acc_fq:.4f} (exact int8 forward: {model.exact()}; SQNR vs its own "
        f"weights in float {sqnr_same:.1f} dB)  ({time.perf_counter() - t0:.0f} s)")

    folder = Path(out).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    deployed, bit_exact, golden, sqnr = {}, {}, {}, {}
    for target in targets:
        res = compile_model(model, target, folder / target, verify_steps=64,
                            calibration={"x": str_[:16]})  # verification sample only
        golden[target] = bool(res.report["exactness"]["passed"])
        got = run_artifact(res.out_dir, ste)
        deployed[target] = accuracy(got, yte)
        bit_exact[target] = bool(np.array_equal(got, fq))
        sqnr[target] = sqnr_db(ref, got)
        say(f"deployed {target}: test accuracy {deployed[target]:.4f}, logits "
            f"{'bit-exact with' if bit_exact[target] else 'DIFFERENT from'} the fake-quant "
            f"forward, golden verification {'PASSED' if golden[target] else 'FAILED'}, "
            f"SQNR vs float {sqnr[target]:.1f} dB  ({time.perf_counter() - t0:.0f} s)")
    first = targets[0] if targets else None
    result: dict[str, Any] = {
        "float": acc_float, "fake_quant_calibrated": acc_cal, "fake_quant": acc_fq,
        "deployed": deployed, "exact": model.exact(), "bit_exact": bit_exact,
        "golden": golden, "sqnr_db": sqnr,
        "sqnr_db_calibrated": sqnr_cal, "sqnr_db_same_weights": sqnr_same,
        "seconds": time.perf_counter() - t0, "folder": str(folder)}
    if first is not None:
        say(f"LRU digits (pixel by pixel, T = 64): float {acc_float:.4f}  fake-quant "
            f"{acc_fq:.4f}  deployed " + "  ".join(f"{t} {a:.4f}" for t, a in deployed.items())
            + f"  SQNR vs float {sqnr[first]:.1f} dB  in {result['seconds']:.0f} s")
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--float-steps", type=int, default=1200,
                    help="float BPTT training steps (default 1200)")
    ap.add_argument("--qat-steps", type=int, default=200,
                    help="fake-quant fine-tuning steps (default 200)")
    ap.add_argument("--d-state", type=int, default=48, help="LRU state size (complex)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="lru_digits", help="the folder the artifacts go to")
    a = ap.parse_args()
    main(a.float_steps, a.qat_steps, d_state=a.d_state, seed=a.seed, out=a.out)
