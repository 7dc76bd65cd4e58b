"""Train a CfC and an LTC on scikit-learn's 8x8 digits, read row by row (8 steps x 8 pixels).

    python models/examples/train_liquid_digits.py [--epochs 40] [--seed 0]

Prints the test accuracy of each model (a stratified 25% hold-out).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from ncc.models.keras import LTC, AutoNCP, CfC  # noqa: E402


def digits(seed: int) -> tuple[np.ndarray, ...]:
    """(x_train, x_test, y_train, y_test); x: (N, 8 steps, 8 pixels) in [0, 1]."""
    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)
    return tuple(train_test_split(x, data.target, test_size=0.25, random_state=seed,
                                  stratify=data.target))


def models(seed: int) -> dict[str, keras.Model]:
    keras.utils.set_random_seed(seed)
    cfc = keras.Sequential([
        keras.Input((8, 8)),
        CfC(32, backbone_units=32, return_sequences=False),
        keras.layers.Dense(10),
    ], name="cfc32")
    ltc = keras.Sequential([
        keras.Input((8, 8)),
        LTC(AutoNCP(32, output_size=10, seed=seed), return_sequences=False),
    ], name="ltc32_autoncp")  # the 10 motor neurons are the logits
    return {"CfC": cfc, "LTC": ltc}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    x_train, x_test, y_train, y_test = digits(args.seed)
    for name, model in models(args.seed).items():
        model.compile(keras.optimizers.Adam(0.01),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        start = time.perf_counter()
        model.fit(x_train, y_train, epochs=args.epochs, batch_size=64, verbose=0)
        _, accuracy = model.evaluate(x_test, y_test, verbose=0)
        print(f"{name:4s} {model.count_params():6d} params  test accuracy {accuracy:.4f}  "
              f"({time.perf_counter() - start:.1f} s, {args.epochs} epochs)")


if __name__ == "__main__":
    main()
