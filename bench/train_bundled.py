"""Train the bundled demo models on scikit-learn's 8x8 digits and write them to
`models/bundled/` (run from the repository root; needs the test extras):

    python bench/train_bundled.py

Each image is read row by row: an 8-step sequence of 8 pixel intensities in [0, 1].
Writes digits.npz (x (1797, 8, 8) float32, y (1797,) int64, and the train/test split),
cfc_digits.ckpt (ncps CfC, 16 units, Dense head) and lif_digits.ckpt (spyx
Linear-LIF-Linear-LI). Prints the test accuracies reached. Seeds are fixed.
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
    import keras

    from ncc.models import zoo

    model = zoo.cfc(units=16)
    tr, te = data["train"], data["test"]
    y_seq = np.repeat(data["y"][:, None], 8, axis=1)  # the label at every step
    weights = np.zeros((len(data["y"]), 8), np.float32)
    weights[:, -1] = 1.0  # ... but only the last step counts
    model.compile(keras.optimizers.Adam(1e-2),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data["x"][tr], y_seq[tr], sample_weight=weights[tr], batch_size=64,
              epochs=60, verbose=0)
    logits = np.asarray(model(data["x"][te]))[:, -1]
    return model, float(np.mean(logits.argmax(-1) == data["y"][te]))


def train_lif(data: dict[str, np.ndarray]) -> tuple[object, float]:
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from ncc.models import zoo

    net = zoo.lif(hidden=64)
    tr, te = data["train"], data["test"]

    def run(model: object, x: jax.Array) -> jax.Array:
        state = model.initial_state(x.shape[0])
        for t in range(x.shape[1]):
            out, state = model(x[:, t], state)
        return out

    def loss_fn(model: object, x: jax.Array, y: jax.Array) -> jax.Array:
        return optax.softmax_cross_entropy_with_integer_labels(run(model, x), y).mean()

    opt = nnx.Optimizer(net, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model: object, opt: object, x: jax.Array, y: jax.Array) -> jax.Array:
        loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
        opt.update(model, grads)
        return loss

    rng = np.random.default_rng(0)
    for _ in range(800):
        idx = rng.choice(tr, 128, replace=False)
        step(net, opt, jnp.asarray(data["x"][idx]), jnp.asarray(data["y"][idx]))
    logits = np.asarray(run(net, jnp.asarray(data["x"][te])))
    return net, float(np.mean(logits.argmax(-1) == data["y"][te]))


def main() -> int:
    from ncc.models.archive import atomic_write, npz_bytes
    from ncc.models.checkpoint import save_checkpoint

    OUT.mkdir(parents=True, exist_ok=True)
    data = digits()
    atomic_write(OUT / "digits.npz", npz_bytes(data, compress=True))
    cfc, cfc_acc = train_cfc(data)
    save_checkpoint(cfc, OUT / "cfc_digits.ckpt")
    lif, lif_acc = train_lif(data)
    save_checkpoint(lif, OUT / "lif_digits.ckpt")
    print(f"test accuracy: CfC {cfc_acc:.4f}, LIF {lif_acc:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
