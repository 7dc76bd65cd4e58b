"""What the QAT examples share: the digits data and one command line.

Both examples train float with BPTT, switch on fake-quant, fine-tune and save an ncc
checkpoint that `ncc compile <ckpt> --target onnx-int8` compiles.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
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
