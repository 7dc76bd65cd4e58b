"""Importing the compiler, the golden model or a target loads no JAX, Flax, Keras or
TensorFlow: the numeric core (`ncc.numerics`) is numpy only, and only tracing imports JAX."""

from __future__ import annotations

import subprocess
import sys

import pytest

CORE_MODULES = [
    "ncc.numerics",
    "ncc.compiler.ir",
    "ncc.compiler.golden",
    "ncc.compiler.quantize",
    "ncc.compiler.interpret",
    "ncc.compiler.passes",
    "ncc.compiler.serialize",
    "ncc.compiler.artifact",
    "ncc.targets.c",
    "ncc.targets.tflite",
    "ncc.targets.onnx_int8",
    "ncc.targets.onnx",
    "ncc.targets.fixed_point",
]
HEAVY = ("jax", "jaxlib", "flax", "keras", "tensorflow")

_PROBE = """
import importlib, sys
importlib.import_module(sys.argv[1])
print(" ".join(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_modules_import_no_jax(module):
    """In a fresh interpreter, `import module` leaves none of HEAVY in sys.modules."""
    done = subprocess.run([sys.executable, "-c", _PROBE.format(heavy=HEAVY), module],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [], f"import {module} loads {done.stdout.split()}"
