"""Shared fixtures and helpers for the compiler, target, runtime and CLI suites."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

FEATURES = 4
STEPS = 1000


def keras_sequential(layer, head: int | None = 3, features: int = FEATURES, seed: int = 0):
    """keras.Sequential([Input((None, F)), layer, Dense(head)]) with fixed weights."""
    import keras

    keras.utils.set_random_seed(seed)
    layers = [keras.Input((None, features)), layer]
    if head:
        layers.append(keras.layers.Dense(head))
    return keras.Sequential(layers)


def tree_files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`, by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(out: Path) -> list[str]:
    """The artifact folder itself or any temporary sibling a failed write could leave."""
    if not out.parent.exists():
        return []
    return sorted(p.name for p in out.parent.iterdir()
                  if p.name == out.name or p.name.startswith(f".{out.name}."))


def final_line(err: str, prefix: str) -> str:
    """A command's one message line on stderr (after the phase lines, which are all it may
    print besides); it must start with `prefix` ("ncc compile: error: ")."""
    from ncc.cli.progress import without_phase_lines

    lines = without_phase_lines(err)
    assert len(lines) == 1 and lines[0].startswith(prefix), err
    return lines[0]


@pytest.fixture(scope="session")
def helpers():
    """The module-level helpers, as a fixture (test modules cannot import conftest)."""
    import types

    return types.SimpleNamespace(keras_sequential=keras_sequential, tree_files=tree_files,
                                 leftovers=leftovers, final_line=final_line,
                                 FEATURES=FEATURES, STEPS=STEPS)


@pytest.fixture(scope="session")
def sequence() -> np.ndarray:
    """One 1,000-step standard-normal sequence, (1, T, F), batch-major as Keras wants."""
    return np.random.default_rng(1234).standard_normal((1, STEPS, FEATURES)).astype(np.float32)


@pytest.fixture(scope="session")
def time_spans() -> np.ndarray:
    """Irregular time spans matching `sequence`: (1, T, 1), uniform in [0.2, 2)."""
    return np.random.default_rng(99).uniform(0.2, 2.0, (1, STEPS, 1)).astype(np.float32)


@pytest.fixture(scope="session")
def small_cfc():
    """A small ncps CfC + Dense model shared by tests that need any real Keras model."""
    import ncps.keras

    return keras_sequential(ncps.keras.CfC(8, backbone_units=8, return_sequences=True))


@pytest.fixture(scope="session")
def small_cfc_artifact(small_cfc, tmp_path_factory) -> Path:
    """`small_cfc` compiled once to onnx-float (no validation run)."""
    from ncc.cli.driver import compile_model

    out = tmp_path_factory.mktemp("art") / "cfc.onnx-float"
    return compile_model(small_cfc, "onnx-float", out, verify_steps=0).out_dir
