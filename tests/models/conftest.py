"""Fixtures for the training-side suites: small fixed inputs for the liquid layers."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def xs() -> np.ndarray:
    """(batch 3, T 5, F 4) standard-normal inputs."""
    return np.random.default_rng(7).standard_normal((3, 5, 4)).astype(np.float32)


@pytest.fixture(scope="session")
def dts() -> np.ndarray:
    """(batch 3, T 5) irregular time spans in [0.2, 2)."""
    return np.random.default_rng(8).uniform(0.2, 2.0, (3, 5)).astype(np.float32)
