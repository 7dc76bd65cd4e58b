"""Every target ncc compiles for, by name: what it is and where its `lower` lives.

A target module exports one function with one signature (`Lower`):

    lower(graph, *, reference=None, model=None, sequence_length=None) -> Artifact

`graph` is the integer IR for quantized targets and the float IR otherwise; a target
uses what else it needs (onnx-qdq the float `reference` the quantizer annotated, nir the
loaded source `model`) and ignores the rest. Modules are imported when a target is
lowered, not when the registry is read, so `ncc --help` stays fast.

Adding a target: write `targets/<name>.py` with `lower`, add one `Target` row below,
and a session in `ncc.runtime.session` that runs its artifact (ARCHITECTURE.md).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ncc.compiler.artifact import Artifact
    from ncc.compiler.ir import Graph


class Lower(Protocol):
    def __call__(self, graph: Graph, *, reference: Graph | None = None, model: Any = None,
                 sequence_length: int | None = None) -> Artifact: ...


@dataclass(frozen=True)
class Target:
    """One target. `quantized`: lowers the integer IR (needs calibration or QAT
    parameters); `exact`: its runtime must reproduce the golden model bit for bit
    (else its deviation is measured); `spiking_only`: takes LIF-family models only;
    `uses_model`: `lower` reads the loaded source model, not only the IR."""

    name: str
    summary: str
    module: str
    quantized: bool
    exact: bool = True
    spiking_only: bool = False
    uses_model: bool = False

    def lower(self, graph: Graph, *, reference: Graph | None = None, model: Any = None,
              sequence_length: int | None = None) -> Artifact:
        fn: Lower = importlib.import_module(self.module).lower
        return fn(graph, reference=reference, model=model, sequence_length=sequence_length)


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("onnx-float", "float ONNX step (opset 18), run by onnxruntime",
           "ncc.targets.onnx", quantized=False),
    Target("onnx-int8", "integer ONNX step, bit-exact with the golden model in onnxruntime",
           "ncc.targets.onnx_int8", quantized=True),
    Target("onnx-qdq", "QDQ ONNX at ncc's parameters (runtime rounding, deviation measured)",
           "ncc.targets.onnx_qdq", quantized=True, exact=False),
    Target("tflite-int8", "full-integer .tflite, bit-exact in LiteRT and TFLite Micro",
           "ncc.targets.tflite", quantized=True),
    Target("c", "C99 source over ncc's no-heap runtime, for x86 and Cortex-M",
           "ncc.targets.c", quantized=True),
    Target("fixed-point", "neuromorphic-style integer tables (JSON + npz + C header)",
           "ncc.targets.fixed_point", quantized=True),
    Target("nir", "NIR graph of a spiking model, for neuromorphic toolchains",
           "ncc.targets.nir", quantized=False, spiking_only=True, uses_model=True),
)}
ALIASES = {"onnx": "onnx-float"}


def get_target(name: str) -> Target:
    """The target called `name` (or an alias); a ValueError lists the valid names."""
    target = TARGETS.get(ALIASES.get(name, name))
    if target is None:
        raise ValueError(f"unknown target {name!r}; available: {', '.join(TARGETS)}")
    return target
