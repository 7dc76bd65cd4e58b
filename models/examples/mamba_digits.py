"""Train, quantize and deploy a Mamba-style selective SSM: digits read row by row.

The bundled digits (`models/bundled/digits.npz`, its train / test split) are read one row
per time step (T = 8 steps of 8 pixels in [0, 1]); the class is the argmax of the last
step's logits (what `ncc verify` scores). Network, one step: `QuantDense(8, d_inner) ->
Mamba(d_inner, d_state) -> QuantDense(d_inner, 10)` (`ncc.models.nnx.mamba.Mamba`,
spyx 1.0's `spyx.ssm.Mamba` as a step). Float BPTT first, then calibrate every grid,
freeze, fine-tune through the fake-quant forward (QAT) and freeze the weights: the
forward is then the int8 model bit for bit. The checkpoint is compiled and verified by
the `ncc` command line, as a user types it:

    python -m ncc.models.examples.mamba_digits                  # -> mamba_digits/
    cd mamba_digits && ncc compile mamba.ckpt --target c -o c && ncc verify c --data test.npz

Prints float, fake-quant (calibrated, then after QAT) and deployed accuracy (the C
artifact's, bit-exact with ncc's golden model).
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
from flax import nnx

from ncc.models.checkpoint import save_checkpoint
from ncc.models.examples.qwix_snn_digits import Runner, run_ncc
from ncc.models.nnx.fake_quant import FakeQuant, QuantDense, freeze, set_mode
from ncc.models.nnx.mamba import Mamba
from ncc.models.quantization import QuantConfig, fake_quant_dense
from ncc.models.zoo import bundled_dir

__all__ = ["MambaClassifier", "accuracy", "main"]


class MambaClassifier(nnx.Module):
    """One step: (x_t (B, features), h (B, d_inner d_state)) -> (logits (B, 10), h')."""

    def __init__(self, features: int = 8, d_inner: int = 16, d_state: int = 8, *,
                 dt_min: float = 0.01, dt_max: float = 0.5,
                 quantization: QuantConfig | dict | None = None, rngs: nnx.Rngs) -> None:
        if isinstance(quantization, dict):
            quantization = QuantConfig.from_dict(quantization)
        self.config = quantization or QuantConfig()
        self.features, self.d_inner, self.d_state = features, d_inner, d_state
        self.dt_min, self.dt_max = dt_min, dt_max
        bits, per_channel = self.config.weight_bits, self.config.per_channel
        self.q_in = FakeQuant.for_part(self.config, "inputs", self.config.activation_bits)
        self.inp = QuantDense(features, d_inner, bits=bits, per_channel=per_channel, rngs=rngs)
        self.ssm = Mamba(d_inner, d_state, dt_min=dt_min, dt_max=dt_max,
                         quantization=self.config, rngs=rngs)
        self.head = QuantDense(d_inner, 10, bits=bits, per_channel=per_channel, rngs=rngs)
        self.q_logits = FakeQuant.for_part(self.config, "activations",
                                           self.config.activation_bits)
        self.input_shape = (features,)

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (for `ncc.models.save_checkpoint`)."""
        return {"features": self.features, "d_inner": self.d_inner, "d_state": self.d_state,
                "dt_min": self.dt_min, "dt_max": self.dt_max,
                "quantization": self.config.to_dict()}

    def initial_state(self, batch_size: int) -> jax.Array:
        return self.ssm.initial_state(batch_size)

    def exact(self) -> bool:
        """True when the whole step is the int8 model (every grid frozen)."""
        return self.ssm.exact() and all(
            m.params is not None and m.mode == "quant"
            for m in (self.q_in, self.inp, self.head, self.q_logits))

    def __call__(self, x: jax.Array, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x (B, features), h (B, d_inner d_state) -> logits (B, 10), h'."""
        x = self.q_in(x)
        if self.exact():  # the int8 fully-connected kernels themselves
            u = fake_quant_dense(x, self.inp.kernel[...], self.inp.bias[...],
                                 self.q_in.params, self.inp.params, self.ssm.q_u.params)
            y, h = self.ssm(u, h)
            return fake_quant_dense(y, self.head.kernel[...], self.head.bias[...],
                                    self.ssm.q_y.params, self.head.params,
                                    self.q_logits.params), h
        y, h = self.ssm(self.inp(x), h)
        return self.q_logits(self.head(y)), h


def classify(model: MambaClassifier, xs: jax.Array) -> jax.Array:
    """xs (B, T, features) -> logits (B, 10) of the last step, as one `lax.scan` (one
    traced step, so compiling stays fast; the points must not be calibrating)."""
    graphdef, state = nnx.split(model)

    def step(h: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        logits, h = nnx.merge(graphdef, state)(x, h)
        return h, logits

    _, logits = jax.lax.scan(step, model.initial_state(xs.shape[0]),
                             jnp.swapaxes(xs, 0, 1))
    return logits[-1]


def _train(model: MambaClassifier, x: np.ndarray, y: np.ndarray, steps: int, lr: float,
           batch: int, seed: int) -> None:
    opt = nnx.Optimizer(model, optax.adam(lr), wrt=nnx.Param)

    @nnx.jit
    def step(model: MambaClassifier, opt: nnx.Optimizer, xb: jax.Array,
             yb: jax.Array) -> None:
        def loss_fn(m: MambaClassifier) -> jax.Array:
            return optax.softmax_cross_entropy_with_integer_labels(classify(m, xb), yb).mean()

        opt.update(model, nnx.grad(loss_fn)(model))

    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.integers(0, len(x), batch)
        step(model, opt, x[idx], y[idx])


_classify = nnx.jit(classify)


def accuracy(model: MambaClassifier, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of the last step's logits over x (N, T, features)."""
    return float(np.mean(np.argmax(np.asarray(_classify(model, x)), -1) == y))


def _calibrate(model: MambaClassifier, x: np.ndarray) -> None:
    """Observe every grid on x (N, T, features): a Python loop over a jitted step (the
    observers update their ranges, which a scan body cannot)."""
    set_mode(model, "calibrate")
    step = nnx.jit(lambda m, xt, h: m(xt, h))
    h = model.initial_state(len(x))
    for t in range(x.shape[1]):
        _, h = step(model, jnp.asarray(x[:, t]), h)


def main(float_steps: int = 1500, qat_steps: int = 400, d_inner: int = 16, d_state: int = 4,
         seed: int = 0, out: str | Path = "mamba_digits", calibration: int | None = None,
         float_lr: float = 1e-2, qat_lr: float = 5e-4, observer: str = "minmax",
         ncc: Runner | None = None,
         verbose: bool = True) -> dict[str, Any]:
    """Train float, calibrate (on the first `calibration` training digits, None = all),
    QAT, freeze, then `ncc compile` / `ncc verify` the C target; returns the accuracies.
    ncc: how the `ncc` commands run (default: a subprocess each)."""
    ncc = ncc or run_ncc
    data = np.load(bundled_dir() / "digits.npz")
    x, y = data["x"].astype(np.float32), data["y"].astype(np.int32)
    xtr, ytr, xte, yte = x[data["train"]], y[data["train"]], x[data["test"]], y[data["test"]]
    model = MambaClassifier(8, d_inner, d_state, quantization=QuantConfig(observer=observer),
                            rngs=nnx.Rngs(seed))
    _train(model, xtr, ytr, float_steps, float_lr, 128, seed)
    acc_float = accuracy(model, xte, yte)
    _calibrate(model, xtr[:calibration])
    freeze(model, weights=True)  # every grid static: the forward is the int8 model
    acc_calibrated = accuracy(model, xte, yte)
    # QAT through the int8 forward itself (straight-through gradients), then the weight
    # grids again from the trained weights
    _train(model, xtr, ytr, qat_steps, qat_lr, 128, seed + 1)
    freeze(model, weights=True)
    acc_qat = accuracy(model, xte, yte)

    folder = Path(out).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, folder / "mamba.ckpt")
    np.savez(folder / "test.npz", x=xte, y=yte)
    art = folder / "c"
    ncc(["compile", "mamba.ckpt", "--target", "c", "--verify-steps", "0", "-o", str(art),
         "--quiet"], folder)
    ncc(["verify", str(art), "--data", "test.npz", "--quiet"], folder)
    report = json.loads((art / "report.json").read_text())
    result: dict[str, Any] = {
        "float": acc_float, "fake_quant_calibrated": acc_calibrated, "fake_quant": acc_qat,
        "deployed": report["accuracy"]["artifact"], "exact": report["exactness"]["passed"],
        "model_exact": model.exact(), "folder": str(folder)}
    if verbose:
        print(f"Mamba digits: float {acc_float:.4f}  fake-quant (calibrated) "
              f"{acc_calibrated:.4f}  fake-quant after QAT {acc_qat:.4f}  deployed c "
              f"{result['deployed']:.4f}"
              + (" (bit-exact with golden)" if result["exact"] else " (NOT bit-exact)"))
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--float-steps", type=int, default=1500)
    ap.add_argument("--qat-steps", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="mamba_digits", help="the folder it writes")
    a = ap.parse_args()
    main(a.float_steps, a.qat_steps, seed=a.seed, out=a.out)
