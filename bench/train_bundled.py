"""Train the bundled demo models on scikit-learn's 8x8 digits and write them to
`models/bundled/` (run from the repository root; needs the test extras):

    python bench/train_bundled.py            # all of them
    python bench/train_bundled.py lru        # only the named ones (cfc, lif, lru)

Each image is read row by row: an 8-step sequence of 8 pixel intensities in [0, 1].
Writes digits.npz (x (1797, 8, 8) float32, y (1797,) int64, and the train/test split),
cfc_digits.ckpt (ncps CfC, 16 units, Dense head) and lif_digits.ckpt (spyx
Linear-LIF-Linear-LI). lru_digits.ckpt is the LRU tutorial's model
(`models/examples/lru_digits.py`, smaller: d_model 8, d_state 32), reading each digit
pixel by pixel (64 steps), QAT'd at 16x8 and frozen. Prints the test accuracies
reached. Seeds are fixed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "models" / "bundled"


def digits() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    split = int(0.8 * len(y))
    return {"x": x, "y": y, "train": np.sort(order[:split]), "test": np.sort(order[split:])}


def train_cfc(data: dict[str, np.ndarray]) -> tuple[object, float]:
    from ncc.bench.models import train_keras
    from ncc.models import zoo

    model = train_keras(zoo.cfc(units=16), data, epochs=60)
    logits = np.asarray(model(data["x"][data["test"]]))[:, -1]
    return model, float(np.mean(logits.argmax(-1) == data["y"][data["test"]]))


def train_lif(data: dict[str, np.ndarray]) -> tuple[object, float]:
    import jax.numpy as jnp

    from ncc.bench.models import train_snn
    from ncc.models import zoo

    net = train_snn(zoo.lif(hidden=64), data, steps=800)
    x = jnp.asarray(data["x"][data["test"]])
    state = net.initial_state(x.shape[0])
    for t in range(x.shape[1]):
        logits, state = net(x[:, t], state)
    return net, float(np.mean(np.asarray(logits).argmax(-1) == data["y"][data["test"]]))


def train_lru(data: dict[str, np.ndarray]) -> tuple[object, float]:
    """The LRU tutorial's training on the bundled split (digits.npz, written first)."""
    from ncc.models.examples import lru_digits

    model, figures = lru_digits.train(LRU_STEPS[0], LRU_STEPS[1], d_model=8, d_state=32)
    return model, figures["fake_quant"]


LRU_STEPS = (1200, 200)  # float, QAT


def main(names: list[str]) -> int:
    from ncc.models.archive import atomic_write, npz_bytes
    from ncc.models.checkpoint import save_checkpoint

    trainers = {"cfc": train_cfc, "lif": train_lif, "lru": train_lru}
    unknown = set(names) - set(trainers)
    if unknown:
        print(f"unknown models {sorted(unknown)}; choose from {sorted(trainers)}")
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    data = digits()
    atomic_write(OUT / "digits.npz", npz_bytes(data, compress=True))
    reached = []
    for name in names or trainers:
        model, acc = trainers[name](data)
        save_checkpoint(model, OUT / f"{name}_digits.ckpt")
        reached.append(f"{name} {acc:.4f}")
    print("test accuracy: " + ", ".join(reached))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
