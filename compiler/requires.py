"""Optional packages and system tools: import them, or fail with one line that says
what to install.

The plain install (`pip install .`) has everything `ncc compile` and `ncc demo` need;
a few runtimes and the bench peers are extras or system tools.
"""

from __future__ import annotations

import importlib
from types import ModuleType

PIP_NAMES = {
    "ai_edge_litert": "ai-edge-litert", "tflite_micro": "tflite-micro",
    "tensorflow": "tensorflow-cpu", "sklearn": "scikit-learn", "matplotlib": "matplotlib",
    "onnxruntime": "onnxruntime", "onnx": "onnx", "nir": "nir", "spyx": "spyx",
    "ncps": "ncps", "hypothesis": "hypothesis",
    "qwix": "'ncc[spyx-quant]'",  # spyx.quant's quantizer (or: pip install 'qwix>=0.1.8')
}
"""Import name -> the PyPI distribution that provides it."""


class MissingDependency(RuntimeError):
    """A package or tool this step needs is not installed; the message says how to get it."""


def install_hint(module: str) -> str:
    """The pip command for top-level import name `module`."""
    top = module.split(".")[0]
    return f"pip install {PIP_NAMES.get(top, top)}"


def require(module: str, purpose: str) -> ModuleType:
    """Import `module`, or raise MissingDependency naming it, `purpose` and the pip command."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        missing = e.name or module
        raise MissingDependency(f"{purpose} needs the Python package {missing.split('.')[0]!r}"
                                f", which is not installed: {install_hint(missing)}") from None
