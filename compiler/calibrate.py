"""Calibration: the range of every tensor over whole sequences, state included.

The float graph runs over every calibration sequence (vectorized across
sequences with `jax.vmap`, stepped through time so recurrent state evolves as
it will on the device). For each tensor we keep its min and max over all
sequences and steps, and a bounded random sample for percentile choices.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ncc.compiler.ir import Graph

SAMPLE_SIZE = 65536


class CalibrationError(ValueError):
    """Calibration data does not fit the model."""


@dataclass
class TensorRange:
    """Observed values of one float tensor: min, max, and a sample for percentiles."""

    lo: float = np.inf
    hi: float = -np.inf
    sample: list[np.ndarray] = field(default_factory=list)
    seen: int = 0

    def observe(self, values: np.ndarray, rng: np.random.Generator) -> None:
        values = values.reshape(-1)
        self.lo = min(self.lo, float(values.min()))
        self.hi = max(self.hi, float(values.max()))
        self.seen += values.size
        budget = max(1, SAMPLE_SIZE * values.size // max(self.seen, 1))
        self.sample.append(values if values.size <= budget else rng.choice(values, budget))

    def values(self) -> np.ndarray:
        return np.concatenate(self.sample) if self.sample else np.zeros(0, np.float32)

    def mse_range(self, levels: int = 256) -> tuple[float, float]:
        """The clipped range [a lo, a hi] (a in (0, 1]) whose uniform `levels`-step grid
        gives the least mean squared error on the sampled values: outliers may clip
        so that common values get finer steps."""
        v = self.values().astype(np.float64)
        lo, hi = min(self.lo, 0.0), max(self.hi, 0.0)
        best, best_err = (lo, hi), np.inf
        for a in np.linspace(1.0, 0.2, 33):
            step = (hi - lo) * a / (levels - 1)
            if step <= 0:
                break
            q = np.clip(np.round((v - lo * a) / step), 0, levels - 1) * step + lo * a
            err = float(np.mean((q - v) ** 2))
            if err < best_err:
                best, best_err = (lo * a, hi * a), err
        return best

    def percentile_range(self, pct: float) -> tuple[float, float]:
        """The central `pct` percent of the sampled values, always including 0."""
        v = self.values()
        lo, hi = np.percentile(v, [(100 - pct) / 2, 100 - (100 - pct) / 2])
        return min(float(lo), 0.0), max(float(hi), 0.0)


def check_data(g: Graph, x: np.ndarray, dt: np.ndarray | None) -> None:
    """Shapes and values: x (N, T, *features) finite; dt (N, T[, 1]) finite and > 0."""
    (x_name,) = g.by_role("input")
    features = g.tensors[x_name].shape[1:]
    if x.ndim != 2 + len(features) or tuple(x.shape[2:]) != tuple(features):
        raise CalibrationError(f"calibration x has shape {list(x.shape)}; the model takes "
                               f"(N, T, {', '.join(map(str, features))})")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise CalibrationError("calibration x is empty: need at least one sequence of one step")
    if not np.all(np.isfinite(x)):
        raise CalibrationError("calibration x contains NaN or Inf")
    if dt is not None:
        if dt.size != x.shape[0] * x.shape[1]:
            raise CalibrationError(f"calibration dt has shape {list(dt.shape)}; expected "
                                   f"({x.shape[0]}, {x.shape[1]}) like x")
        if not np.all(np.isfinite(dt)) or np.any(dt <= 0):
            raise CalibrationError("calibration dt must be finite and positive")


def record_ranges(g: Graph, x: np.ndarray, dt: np.ndarray | None = None, seed: int = 0,
                  progress: Callable[[int, int], None] | None = None) -> dict[str, TensorRange]:
    """Run `g` over x (N, T, *features) [and dt (N, T)]; ranges of every float tensor."""
    import jax
    import jax.numpy as jnp

    from ncc.compiler.interpret import run_step

    check_data(g, x, dt)
    n, steps = x.shape[:2]
    (x_name,) = g.by_role("input")
    dt_names = g.by_role("dt")
    step = jax.jit(jax.vmap(lambda feeds: run_step(g, feeds, jnp, every_tensor=True)))
    state = {k: np.broadcast_to(v, (n, *v.shape)) for k, v in g.initial_state.items()}
    ranges = {k: TensorRange() for k, t in g.tensors.items()
              if t.dtype == "float32" and k not in g.constants}
    rng = np.random.default_rng(seed)
    for t in range(steps):
        feeds = {x_name: x[:, t].reshape(n, *g.tensors[x_name].shape), **state}
        for name in dt_names:
            value = np.ones((n,)) if dt is None else dt.reshape(n, steps)[:, t]
            feeds[name] = value.reshape(n, *g.tensors[name].shape).astype(np.float32)
        env = {k: np.asarray(v) for k, v in step(feeds).items()}
        for name, r in ranges.items():
            r.observe(env[name], rng)
        state = {s_in: env[s_out] for s_in, s_out in g.state_pairs}
        if progress:
            progress(t + 1, steps)
    return ranges
