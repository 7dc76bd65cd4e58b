"""`--precision auto`: which activation groups need int16, found on the golden model.

Start from int8 everywhere. If the integer model misses the target on the calibration
sequences, measure each group's own noise: the model with every group at int16 except
that one (at int8), against the float reference. Promote the noisiest groups to int16,
fewest first, until the target is met:

- without labels: output SQNR against float >= `target_sqnr` dB (default 30);
- with labels `y` in the calibration data: accuracy at most `max_accuracy_drop` points
  below float's (argmax of the first output at the last step, as `ncc verify` scores).

`flash_budget` (bytes) bounds the search by the integer graph's constant bytes (weights, biases,
tables: what the artifact stores besides code); when the target cannot be met inside it,
the best choice that fits is returned and the report says so. Each evaluation is the
numpy golden model itself (quantize, then run), so what the search measures is what
every target computes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ncc import numerics as nx
from ncc.compiler.calibrate import TensorRange
from ncc.compiler.interpret import run_batch
from ncc.compiler.ir import Graph
from ncc.compiler.quantize import QuantOptions, activation_groups, quantize, spike_tensors

SEARCH_SEQUENCES = 64
SEARCH_STEPS = 2048
RANK_STEPS = 512
"""The search scores on the first calibration sequences: at most SEARCH_SEQUENCES of them,
and no more than SEARCH_STEPS steps in all (at least one whole sequence); the one-group-
at-a-time noise measurement that ranks the groups, on the first RANK_STEPS of those."""


@dataclass
class _Score:
    sqnr_db: float
    accuracy: float | None
    flash_bytes: int

    def as_dict(self) -> dict[str, Any]:
        return {"sqnr_db": self.sqnr_db, "accuracy": self.accuracy,
                "flash_bytes": self.flash_bytes}


def constant_bytes(q: Graph) -> int:
    """Bytes of integer graph `q`'s constants (weights, biases, tables)."""
    return int(sum(v.nbytes for v in q.constants.values()))


class _Scorer:
    """Quantize with given widths and score the golden model against float."""

    def __init__(self, reference: Graph, ranges: dict[str, TensorRange],
                 data: dict[str, np.ndarray], options: QuantOptions, steps: int = SEARCH_STEPS):
        self.reference, self.ranges, self.options = reference, ranges, options
        n = max(1, min(SEARCH_SEQUENCES, steps // max(1, data["x"].shape[1])))
        self.x = np.asarray(data["x"][:n], np.float32)
        self.dt = None if "dt" not in data else np.asarray(data["dt"][:n])
        self.y = None if "y" not in data else np.asarray(data["y"][:n]).reshape(-1)
        self.outputs = [n for n in reference.outputs if reference.roles[n] == "output"]
        want = run_batch(reference, self.x, self.dt)
        self.want = {n: want[n].astype(np.float64) for n in self.outputs}
        self.float_accuracy = self._accuracy(self.want)
        self.evaluations = 0

    def _accuracy(self, outs: dict[str, np.ndarray]) -> float | None:
        if self.y is None:
            return None
        last = outs[self.outputs[0]][:, -1].reshape(len(self.y), -1)
        return float(np.mean(last.argmax(-1) == self.y))

    def options_for(self, int16: list[list[str]]) -> QuantOptions:
        return replace(self.options, activations="int8",
                       widths=tuple((names[0], "int16") for names in int16))

    def __call__(self, int16: list[list[str]]) -> _Score:
        self.evaluations += 1
        q = quantize(self.reference, self.ranges, self.options_for(int16))
        (x_name,) = q.by_role("input")
        xq = nx.quantize(self.x, q.tensors[x_name].quant)
        dtq = None
        if self.dt is not None or q.by_role("dt"):
            (dt_name,) = q.by_role("dt")
            dts = np.ones(self.x.shape[:2], np.float32) if self.dt is None else self.dt
            dtq = nx.quantize(dts, q.tensors[dt_name].quant)
        raw = run_batch(q, xq, dtq)
        got = {n: nx.dequantize(raw[n], q.tensors[n].quant).astype(np.float64)
               for n in self.outputs}
        noise = sum(float(np.sum((got[n] - self.want[n]) ** 2)) for n in self.outputs)
        signal = sum(float(np.sum(self.want[n] ** 2)) for n in self.outputs)
        sqnr = float("inf") if noise == 0 else 10 * float(np.log10(max(signal, 1e-300) / noise))
        return _Score(sqnr, self._accuracy(got), constant_bytes(q))


def _meets(score: _Score, scorer: _Scorer, target: QuantOptions) -> bool:
    if scorer.float_accuracy is not None:
        return 100 * (scorer.float_accuracy - score.accuracy) <= target.max_accuracy_drop
    return score.sqnr_db >= target.target_sqnr


def _fits(score: _Score, target: QuantOptions) -> bool:
    return target.flash_budget is None or score.flash_bytes <= target.flash_budget


def choose_widths(reference: Graph, ranges: dict[str, TensorRange],
                  data: dict[str, np.ndarray], options: QuantOptions,
                  progress: Callable[[int, int], None] | None = None
                  ) -> tuple[QuantOptions, dict[str, Any]]:
    """(options with the chosen widths, the search's report for report.json).

    reference: the prepared float graph; ranges: its calibrated ranges; data: the
    calibration arrays (x (N, T, F), optional dt and labels y)."""
    target = options
    scorer = _Scorer(reference, ranges, data, options)
    spikes = spike_tensors(reference)  # exact 0/1 at any width: nothing to gain
    groups = [names for names in activation_groups(reference) if not set(names) <= spikes]
    total = len(groups) + 2
    tick = progress or (lambda done, n: None)
    tick(0, total)
    base = scorer([])
    criterion = ({"accuracy_drop_points": target.max_accuracy_drop,
                  "float_accuracy": scorer.float_accuracy}
                 if scorer.float_accuracy is not None else {"sqnr_db": target.target_sqnr})
    report: dict[str, Any] = {"mode": "auto", "target": criterion,
                              "flash_budget": target.flash_budget, "int8": base.as_dict(),
                              "sequences": int(len(scorer.x))}
    if _meets(base, scorer, target) or not groups:
        tick(total, total)
        return scorer.options_for([]), {**report, "met": _meets(base, scorer, target),
                                        "chosen": base.as_dict(), "tensors": [],
                                        "evaluations": scorer.evaluations}
    wide = scorer(groups)
    tick(1, total)
    # each group's own noise: every other group int16, this one int8 (ranked on fewer
    # steps: this is one evaluation per group, the rest of the search a few)
    ranker = _Scorer(reference, ranges, data, options, steps=RANK_STEPS)
    ranker_wide = ranker(groups)
    contribution = []
    for i, names in enumerate(groups):
        alone = ranker([other for other in groups if other is not names])
        own = _noise(alone.sqnr_db) - _noise(ranker_wide.sqnr_db)
        contribution.append(max(own, 0.0))
        tick(i + 2, total)
    order = sorted(range(len(groups)), key=lambda i: -contribution[i])
    scores: dict[int, _Score] = {0: base}

    def top(k: int) -> _Score:
        if k not in scores:
            scores[k] = wide if k == len(groups) else scorer([groups[i] for i in order[:k]])
        return scores[k]

    # the noisiest k first: bytes grow with k, and the error (nearly) falls with it, so
    # bisect for the largest k inside the budget, then for the fewest that meet the target
    fit = len(groups)
    if not _fits(top(fit), target):
        lo, fit = 0, len(groups)  # fits(lo), not fits(fit)
        while fit - lo > 1:
            mid = (lo + fit) // 2
            lo, fit = (mid, fit) if _fits(top(mid), target) else (lo, mid)
        fit = lo
    best: tuple[int, _Score] | None = None
    if fit and _meets(top(fit), scorer, target):
        lo, hi = 0, fit  # not meets(lo), meets(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if _meets(top(mid), scorer, target) else (mid, hi)
        best = (hi, top(hi))
    elif fit:
        for k in sorted(k for k in scores if 0 < k <= fit and _fits(scores[k], target)):
            if best is None or _better(scores[k], best[1], scorer):
                best = (k, scores[k])
    tick(total, total)
    if best is None:  # not even one promotion fits the budget
        best = (0, base)
    k, chosen = best
    promoted = {i for i in order[:k]}
    signal_noise = _noise(ranker_wide.sqnr_db)
    report.update({
        "met": _meets(chosen, scorer, target), "chosen": chosen.as_dict(),
        "int16": wide.as_dict(),
        "tensors": [{"tensors": groups[i], "width": "int16" if i in promoted else "int8",
                     "noise_share": contribution[i] / max(sum(contribution), 1e-300),
                     "sqnr_db_if_int8_alone": _db(contribution[i] + signal_noise)}
                    for i in order],
        "evaluations": scorer.evaluations + ranker.evaluations})
    return scorer.options_for([groups[i] for i in order[:k]]), report


def _better(a: _Score, b: _Score, scorer: _Scorer) -> bool:
    if scorer.float_accuracy is not None and a.accuracy != b.accuracy:
        return a.accuracy > b.accuracy
    return a.sqnr_db > b.sqnr_db


def _noise(sqnr_db: float) -> float:
    """Noise power relative to the signal."""
    return 0.0 if sqnr_db == float("inf") else 10.0 ** (-sqnr_db / 10.0)


def _db(noise: float) -> float:
    return float("inf") if noise <= 0 else -10.0 * float(np.log10(noise))
