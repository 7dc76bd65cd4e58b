"""The bundled models as integer graphs and the digits task on their input grid: what the
examples, tests and `ncc.bench.evolve_speed` evolve."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ncc.compiler.ir import Graph

BUNDLED = {"cfc": "cfc_digits.ckpt", "lif": "lif_digits.ckpt"}


def digits() -> dict[str, np.ndarray]:
    """x (1797, 8, 8) float32 in [0, 1], y, train and test indices (the bundled split)."""
    from ncc.models.archive import read_npz
    from ncc.models.zoo import bundled_dir

    return read_npz(bundled_dir() / "digits.npz")


@lru_cache(maxsize=8)
def bundled_float_graph(name: str) -> Graph:
    from ncc.compiler.load import load_model
    from ncc.compiler.pipeline import to_graph
    from ncc.models.zoo import bundled_dir

    return to_graph(load_model(str(bundled_dir() / BUNDLED[name])), None)


@lru_cache(maxsize=8)
def _quantized(name: str, calibration: int) -> tuple[Graph, Graph]:
    from ncc.compiler.pipeline import quantize_graph
    from ncc.compiler.quantize import DEFAULT_OPTIONS

    task = digits()
    cal = {"x": task["x"][task["train"][:calibration]]}
    return quantize_graph(bundled_float_graph(name), cal, DEFAULT_OPTIONS, None)


def bundled_integer_graph(name: str, calibration: int = 256) -> Graph:
    """The bundled `name` ("cfc" or "lif") quantized int8 (PTQ, minmax) on the first
    `calibration` train sequences."""
    return _quantized(name, calibration)[0]


def bundled_reference_graph(name: str, calibration: int = 256) -> Graph:
    """The float graph the quantizer annotated (the artifact's float reference)."""
    return _quantized(name, calibration)[1]


def quantize_inputs(g: Graph, x: np.ndarray) -> np.ndarray:
    """x (N, T, F) float -> the integer graph's input grid (the host's quantization)."""
    from ncc.numerics import quantize

    (x_name,) = g.by_role("input")
    return quantize(np.asarray(x, np.float32), g.tensors[x_name].quant)
