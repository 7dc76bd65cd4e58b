"""The graph builder the tracer and its trace rules (`trace`, `qat`) write IR into.

`GraphBuilder` accumulates tensors, constants and ops while a jaxpr is walked; rules
call `emit` for each op. Kept apart from `trace` so that rule modules need not import
the tracer (and the tracer imports them, one way).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ncc.compiler.ir import Op, Tensor, infer


class TraceError(ValueError):
    """The step function cannot be turned into IR."""


class UnsupportedPrimitive(TraceError):
    def __init__(self, primitive: str, where: str):
        self.primitive, self.where = primitive, where
        super().__init__(f"unsupported primitive '{primitive}' at {where}: ncc has no IR op "
                         "for it; rewrite that line with supported operations")


SUB_BYTE_INTS = ("int4", "int2")
"""Integer dtypes (ml_dtypes) a constant may hold that the IR widens to int8."""


def dtype_of(aval: Any) -> str:
    name = str(np.dtype(aval.dtype))
    if name not in ("float32", "int32", "bool", "int8", "int16", "uint8"):
        raise TraceError(f"dtype {name} is not supported (ncc traces float32 models)")
    return name


def sanitize(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") or "t"


class GraphBuilder:
    """Accumulates IR tensors, constants and ops while walking a jaxpr."""

    def __init__(self, const_names: dict[int, str]):
        self.tensors: dict[str, Tensor] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.ops: list[Op] = []
        self.const_names = const_names
        self._literals: dict[tuple[str, bytes], str] = {}
        self._count = 0
        self.source = ""
        # recognizer notes on tensors (e.g. `qwix_qat`: "this constant holds qwix integers")
        self.facts: dict[str, tuple[Any, ...]] = {}
        # `qat.constant_value`'s answers so far (None: not a constant); ops only grow
        self.known_values: dict[str, np.ndarray | None] = {}
        self._producers: dict[str, Op] = {}
        self._indexed = 0

    def producer(self, name: str) -> Op | None:
        """The op that computes `name` (the last one, if renamed), or None."""
        for op in self.ops[self._indexed:]:
            self._producers[op.output] = op
        self._indexed = len(self.ops)
        return self._producers.get(name)

    def fresh(self, hint: str = "t") -> str:
        while True:
            self._count += 1
            name = f"{hint}{self._count}"
            if name not in self.tensors:
                return name

    def declare(self, name: str, shape: Sequence[int], dtype: str) -> str:
        self.tensors[name] = Tensor(name, tuple(int(d) for d in shape), dtype)
        return name

    def constant(self, value: Any, hint: str | None = None) -> str:
        array = np.asarray(value)
        if str(array.dtype) in SUB_BYTE_INTS:  # e.g. qwix PTQ's int4 weights: same integers
            array = array.astype(np.int8)
        array = array.astype(dtype_of(array))
        key = (str(array.dtype) + str(array.shape), array.tobytes())
        if hint is None and array.size <= 16 and key in self._literals:
            return self._literals[key]
        name = sanitize(hint) if hint else ("k" if array.ndim == 0 else "w")
        name = name if name not in self.tensors else self.fresh(name + "_")
        if name in ("k", "w"):
            name = self.fresh(name)
        self.declare(name, array.shape, str(array.dtype))
        self.constants[name] = array
        if hint is None and array.size <= 16:
            self._literals[key] = name
        return name

    def emit(self, kind: str, inputs: Sequence[str], **attrs: Any) -> str:
        out = self.fresh()
        op = Op(kind, tuple(inputs), out, attrs, self.source)
        shape, dtype = infer(op, [self.tensors[n] for n in inputs])
        self.declare(out, shape, dtype)
        self.ops.append(op)
        return out
