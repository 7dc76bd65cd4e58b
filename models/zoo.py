"""Small bundled example models, built from fixed seeds (no download).

Each factory is a valid `ncc compile` reference, e.g. `ncc.models.zoo:cfc`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "jax")


def bundled_dir() -> Path:
    """The folder of the bundled trained checkpoints and the digits data (`bundled/`)."""
    return Path(__file__).resolve().parent / "bundled"


FEATURES = 8  # scikit-learn digits read row by row: 8 pixels per step
CLASSES = 10


def cfc(units: int = 16, mode: str = "default", backbone_units: int = 16,
        backbone_layers: int = 1) -> Any:
    """Keras CfC (ncps maths) with a Dense head: (T, 8) -> (T, 10) logits."""
    import keras
    import ncps.keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((None, FEATURES)),
        ncps.keras.CfC(units, mode=mode, backbone_units=backbone_units,
                       backbone_layers=backbone_layers, return_sequences=True),
        keras.layers.Dense(CLASSES),
    ], name=f"cfc{units}_{mode}")


def ltc(units: int = 16) -> Any:
    """Keras LTC on an AutoNCP wiring with 10 motor neurons: (T, 8) -> (T, 10)."""
    import keras
    import ncps.keras
    from ncps.wirings import AutoNCP

    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((None, FEATURES)),
        ncps.keras.LTC(AutoNCP(units, CLASSES, seed=0), return_sequences=True),
    ], name=f"ltc{units}_autoncp")


def lif(hidden: int = 32) -> Any:
    """spyx spiking net Linear-LIF-Linear-LI: 8 inputs -> 10 membrane readouts."""
    import spyx.nn
    from flax import nnx

    return spyx.nn.Sequential(
        nnx.Linear(FEATURES, hidden, rngs=nnx.Rngs(0)),
        spyx.nn.LIF((hidden,), beta=0.8, rngs=nnx.Rngs(1)),
        nnx.Linear(hidden, CLASSES, rngs=nnx.Rngs(2)),
        spyx.nn.LI((CLASSES,), beta=0.9, rngs=nnx.Rngs(3)),
    )


def lru() -> Any:
    """The bundled LRU digits classifier (`bundled/lru_digits.ckpt`, trained by
    `models/examples/lru_digits.py`, QAT'd at 16x8 and frozen): one pixel a step,
    (T, 1) -> (T, 10) logits; compile it with `--activations int16`."""
    from ncc.models.checkpoint import load_checkpoint

    return load_checkpoint(bundled_dir() / "lru_digits.ckpt")
