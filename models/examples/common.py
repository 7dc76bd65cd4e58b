"""What the QAT examples share: the digits data, one command line, and the `ncc` runner.

Both examples train float with BPTT, switch on fake-quant, fine-tune and save an ncc
checkpoint that `ncc compile <ckpt> --target onnx-int8` compiles.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def load_digits_split(seed: int = 0) -> tuple[np.ndarray, ...]:
    """(x_train, x_test, y_train, y_test), x (N, 8, 8) float32 in [0, 1], y (N,) int32."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)
    return tuple(train_test_split(x, d.target.astype(np.int32), test_size=0.25,
                                  random_state=seed, stratify=d.target))


def run_cli(main: Callable[..., dict[str, Any]], description: str | None,
            checkpoint: str, float_steps: int = 600, qat_steps: int = 200) -> dict[str, Any]:
    """Parse --float-steps, --qat-steps, --seed, --checkpoint and call `main` with them."""
    ap = argparse.ArgumentParser(description=description,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--float-steps", type=int, default=float_steps,
                    help=f"float BPTT training steps (default {float_steps})")
    ap.add_argument("--qat-steps", type=int, default=qat_steps,
                    help=f"fake-quant fine-tuning steps (default {qat_steps})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint", default=checkpoint,
                    help=f"where to save the ncc checkpoint (default {checkpoint})")
    a = ap.parse_args()
    return main(a.float_steps, a.qat_steps, seed=a.seed, checkpoint=a.checkpoint)


Runner = Callable[[list[str], Path], None]
"""Runs one `ncc` command line (its arguments) in a folder; raises if it fails."""


def run_ncc(args: list[str], cwd: Path) -> None:
    """One `ncc` command, as a user types it (the example is on the training side: it
    drives the compiler through its command line, not its internals)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(cwd), os.environ.get(
        "PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "ncc.cli.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"ncc {' '.join(args)} failed:\n{done.stderr}{done.stdout}")


def train_classifier(model: Any, tx: Any, x: np.ndarray, y: np.ndarray, steps: int,
                     batch: int, seed: int) -> None:
    """`steps` steps of optax transform `tx` on the cross-entropy of `model.classify` (an
    NNX module: logits (B, classes) from x (B, ...)) over random batches of (x, y)."""
    import jax
    import optax
    from flax import nnx

    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def step(model: Any, opt: nnx.Optimizer, xb: jax.Array, yb: jax.Array) -> None:
        def loss_fn(m: Any) -> jax.Array:
            return optax.softmax_cross_entropy_with_integer_labels(m.classify(xb), yb).mean()

        opt.update(model, nnx.grad(loss_fn)(model))

    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.integers(0, len(x), batch)
        step(model, opt, x[idx], y[idx])
