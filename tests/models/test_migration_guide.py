"""The Keras plan's migration guide (issue 18) runs as written, with ncc's import path.

Both code blocks of the guide, `ncps.keras` replaced by `ncc.models.keras` and nothing
else changed (the plan's copy has its second block's closing brackets repeated and its
indentation lost, typesetting debris fixed here), run under the JAX backend and, in a
subprocess with KERAS_BACKEND=tensorflow, under TensorFlow (the test extras install
tensorflow-cpu; without it that half skips, naming it). Each block's models then run on a
sequence and have the shapes the guide implies.
"""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

EXISTING_USERS = """\
# Old way
from ncc.models.keras import CfC
model = CfC(units=32)

# New way
from ncc.models.keras import CfC, FullyConnected
wiring = FullyConnected(units=32)
model = CfC(wiring)
"""

NEW_FEATURES = """\
# Using wiring patterns
from ncc.models.keras import AutoNCP, CfC

wiring = AutoNCP(
    units=32,
    output_size=10,
    sparsity_level=0.5
)
model = CfC(
    wiring,
    backbone_units=[64, 32],
    backbone_layers=2
)
"""


def run_guide() -> dict[str, tuple[int, ...]]:
    """Run both blocks and their models on a (2, 5, 8) sequence; {block: output shape}.

    The first block's old-way half runs on its own too (the new way rebinds `model`): the
    two layers it builds are the same CfC (equal configs), so only the new one is called.
    """
    old_way, _ = EXISTING_USERS.split("\n\n")
    x = np.random.default_rng(0).standard_normal((2, 5, 8)).astype(np.float32)
    shapes, models = {}, {}
    for name, block in (("old way", old_way), ("existing users", EXISTING_USERS),
                        ("new features", NEW_FEATURES)):
        scope: dict = {}
        exec(compile(block, f"<migration guide: {name}>", "exec"), scope)  # noqa: S102
        models[name] = scope["model"]
    config = {k: v for k, v in models["old way"].get_config().items() if k != "name"}
    assert config == {k: v for k, v in models["existing users"].get_config().items()
                      if k != "name"}
    for name in ("existing users", "new features"):
        y = np.asarray(models[name](x))
        assert np.isfinite(y).all(), name
        shapes[name] = tuple(y.shape)
    cell = models["new features"].cell  # the NCP stays sparse behind the backbone
    assert cell.wired_backbone and all(m is not None for m in cell.masks)
    assert tuple(cell.backbone[0].kernel.shape) == (8 + 32, 64)
    return shapes


EXPECTED = {"existing users": (2, 5, 32), "new features": (2, 5, 10)}


def test_migration_guide_runs_under_jax():
    import keras

    assert keras.backend.backend() == "jax"
    assert run_guide() == EXPECTED


def test_migration_guide_runs_under_tensorflow():
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("tensorflow is not importable (the test extras install tensorflow-cpu)")
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, __file__], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "tensorflow " + repr(EXPECTED)


if __name__ == "__main__":  # the TensorFlow side
    import keras

    shapes = run_guide()
    print(keras.backend.backend(), repr(shapes))
