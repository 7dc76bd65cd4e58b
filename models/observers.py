"""Range observers: watch tensors during calibration or QAT, then give frozen QuantParams.

Pure functions over a small state of arrays ({"lo", "hi", "count"}), so they run
inside `jax.jit` / `lax.scan` and can be held in nnx Variables or Keras variables:

    state = observer.init()              # shape () (per tensor) or (channels,)
    state = observer.update(state, x)    # traceable
    params = observer.params(state, bits=8, symmetric=False)   # concrete, numpy

`MinMaxObserver`: running min / max, or an exponential moving average of the
per-batch min / max when `momentum` is set (first batch initializes).
`PercentileObserver`: per-batch low / high percentiles, EMA-combined (momentum
default 0.9), robust to outliers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np

from ncc.models.quantization import QuantParams, params_from_range

__all__ = ["MinMaxObserver", "PercentileObserver", "make_observer"]


def _reduce_axes(x: Any, axis: int | None) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(x.ndim))
    axis = axis % x.ndim
    return tuple(i for i in range(x.ndim) if i != axis)


def _ema(state: dict, lo: Any, hi: Any, momentum: float | None) -> dict:
    first = state["count"] == 0
    if momentum is None:
        new_lo, new_hi = jnp.minimum(state["lo"], lo), jnp.maximum(state["hi"], hi)
    else:
        new_lo = momentum * state["lo"] + (1.0 - momentum) * lo
        new_hi = momentum * state["hi"] + (1.0 - momentum) * hi
    return {"lo": jnp.where(first, lo, new_lo), "hi": jnp.where(first, hi, new_hi),
            "count": state["count"] + 1}


@dataclass(frozen=True)
class MinMaxObserver:
    """Running (or EMA, `momentum` in [0, 1)) min / max; per tensor or per `axis`."""

    momentum: float | None = None
    axis: int | None = None
    channels: int = 1

    def init(self) -> dict[str, Any]:
        shape = () if self.axis is None else (self.channels,)
        return {"lo": jnp.zeros(shape, jnp.float32), "hi": jnp.zeros(shape, jnp.float32),
                "count": jnp.zeros((), jnp.int32)}

    def update(self, state: dict[str, Any], x: Any) -> dict[str, Any]:
        x = jnp.asarray(x, jnp.float32)
        axes = _reduce_axes(x, self.axis)
        return _ema(state, jnp.min(x, axis=axes), jnp.max(x, axis=axes), self.momentum)

    def params(self, state: dict[str, Any], bits: int = 8, *, symmetric: bool = False,
               power_of_two: bool = False) -> QuantParams:
        """Frozen parameters covering the observed range (and 0)."""
        if int(np.asarray(state["count"])) == 0:
            raise ValueError("observer saw no data: run calibration before freezing")
        return params_from_range(np.asarray(state["lo"]), np.asarray(state["hi"]), bits,
                                 symmetric=symmetric, axis=self.axis,
                                 power_of_two=power_of_two)


@dataclass(frozen=True)
class PercentileObserver(MinMaxObserver):
    """Low / high `percentile` of each batch (|x| percentile if symmetric use), EMA-combined."""

    momentum: float | None = 0.9
    percentile: float = 99.99

    def update(self, state: dict[str, Any], x: Any) -> dict[str, Any]:
        x = jnp.asarray(x, jnp.float32)
        axes = _reduce_axes(x, self.axis)
        lo = jnp.percentile(x, 100.0 - self.percentile, axis=axes)
        hi = jnp.percentile(x, self.percentile, axis=axes)
        return _ema(state, lo, hi, self.momentum)


def make_observer(kind: str = "minmax", momentum: float | None = None,
                  percentile: float = 99.99, axis: int | None = None,
                  channels: int = 1) -> MinMaxObserver:
    """Observer by name ("minmax" or "percentile"), as QuantConfig.observer names it."""
    if kind == "minmax":
        return MinMaxObserver(momentum, axis, channels)
    if kind == "percentile":
        return PercentileObserver(0.9 if momentum is None else momentum, axis, channels,
                                  percentile)
    raise ValueError(f"unknown observer {kind!r}; choose 'minmax' or 'percentile'")
