"""The genome: a flat float vector that decodes to a member's integer constants.

Each evolved tensor is a block of genes. A gene is measured in the tensor's `unit` (one
integer step for weights, thresholds and tables; for a bias, the accumulator change that
moves the layer's output by about one LSB, 1 / (multiplier 2^(shift - 31)), per channel),
so one isotropic step size suits every block. Decoding rounds to the integer grid (half
away from zero) and clips to the tensor's limits (int8 weights +-127, the dtype range
otherwise): every genome a strategy proposes is a valid deployed model.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ncc import numerics as nx
from ncc.compiler.ir import COMPARISONS, Graph

KINDS = ("weights", "biases", "thresholds", "tables")


def select_parameters(g: Graph, kinds: Iterable[str] = ("weights", "biases"),
                      names: Iterable[str] = ()) -> list[str]:
    """Names of g's integer constants of the given kinds (FullyConnected weights and
    biases, constant operands of comparisons (spiking thresholds), lut tables (decays,
    activation tables)), plus any `names` given explicitly, in graph order."""
    kinds = set(kinds)
    unknown = kinds - set(KINDS)
    if unknown:
        raise ValueError(f"unknown parameter kinds {sorted(unknown)}; choose from {KINDS}")
    found: list[str] = []
    for op in g.ops:
        picks = []
        if op.kind == "fully_connected":
            picks += [op.inputs[1]] if "weights" in kinds else []
            picks += [op.inputs[2]] if "biases" in kinds else []
        elif op.kind in COMPARISONS and "thresholds" in kinds:
            picks += list(op.inputs)
        elif op.kind == "lut" and "tables" in kinds:
            picks += [op.inputs[1]]
        found += [p for p in picks if p in g.constants and p not in found]
    for n in names:
        if n not in g.constants:
            raise ValueError(f"{n!r} is not a constant of graph {g.name}")
        if n not in found:
            found.append(n)
    return found


@dataclass(frozen=True)
class Block:
    name: str
    shape: tuple[int, ...]
    dtype: str
    lo: int
    hi: int
    unit: np.ndarray  # float32, broadcast to shape


class Genome:
    """The genes of `names` in graph g: `size` floats; `initial` encodes g's own values."""

    def __init__(self, g: Graph, names: Iterable[str],
                 limits: dict[str, tuple[int, int]] | None = None):
        from ncc.compiler.golden_jax import default_limits

        self.blocks: list[Block] = []
        for n in names:
            v = g.constants[n]
            lo, hi = (limits or {}).get(n, default_limits(g, n))
            self.blocks.append(Block(n, tuple(v.shape), str(v.dtype), int(lo), int(hi),
                                     _unit(g, n)))
        self.size = int(sum(int(np.prod(b.shape)) for b in self.blocks))
        self.initial = self.encode({n: g.constants[n] for n in self.names})

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.blocks]

    @property
    def limits(self) -> dict[str, tuple[int, int]]:
        return {b.name: (b.lo, b.hi) for b in self.blocks}

    def encode(self, values: dict[str, np.ndarray]) -> np.ndarray:
        parts = [np.asarray(values[b.name], np.float64) / np.broadcast_to(b.unit, b.shape)
                 for b in self.blocks]
        return np.concatenate([p.ravel() for p in parts]).astype(np.float32)

    def decode(self, genes, xp=np):
        """genes (size,) float -> {name: integer array}, rounded and clipped (numpy or
        jax.numpy; vmap it for a population)."""
        out, at = {}, 0
        for b in self.blocks:
            n = int(np.prod(b.shape))
            raw = xp.reshape(genes[at:at + n], b.shape) * xp.asarray(b.unit, xp.float32)
            t = xp.trunc(raw)
            r = t + xp.where(xp.abs(raw - t) >= 0.5, xp.sign(raw), 0.0)
            # clip in float32 first: int32 limits are not exact in float32
            r = xp.clip(r, float(np.float32(b.lo)) if b.lo > -2**24 else -2.0**31 + 128,
                        float(np.float32(b.hi)) if b.hi < 2**24 else 2.0**31 - 128)
            out[b.name] = xp.clip(r.astype(xp.int32), b.lo, b.hi).astype(b.dtype)
            at += n
        return out


def _unit(g: Graph, name: str) -> np.ndarray:
    for op in g.ops:
        if op.kind == "fully_connected" and op.inputs[2] == name:
            m = np.asarray(op.attrs["multiplier"], np.float64) * np.exp2(
                np.asarray(op.attrs["shift"], np.float64) - 31)
            return np.maximum(1.0, np.round(1.0 / np.maximum(m, 1e-30))).astype(np.float32)
    return np.ones((), np.float32)


def int_range(dtype: str) -> tuple[int, int]:
    return nx.dtype_range(dtype)
