"""What one step of an integer graph costs, counted from the graph: the figures a target's
manifest reports next to its own (which depend on its kernels)."""

from __future__ import annotations

import numpy as np

from ncc.compiler.ir import Graph

REQUANTIZING = frozenset({"qadd", "qsub", "qmul", "requantize"})


def work_per_step(g: Graph) -> dict[str, int]:
    """Per step at batch 1:
    - `macs`: multiply-accumulates of the fully_connected layers over their present
      (nonzero) weights, what a sparse kernel does;
    - `table_lookups`: elements looked up by `lut` ops;
    - `requantized_elements`: elements computed by qadd / qsub / qmul / requantize (one
      to three fixed-point multiplies each)."""
    macs = lookups = elements = 0
    for op in g.ops:
        out = g.tensors[op.output]
        if op.kind == "fully_connected":
            x, w = op.inputs[:2]
            rows = g.tensors[x].size // g.tensors[w].shape[0]
            weights = g.constants.get(w)
            present = (int(np.count_nonzero(weights)) if weights is not None
                       else g.tensors[w].size)
            macs += rows * present
        elif op.kind == "lut":
            lookups += out.size
        elif op.kind in REQUANTIZING:
            elements += out.size
    return {"macs": macs, "table_lookups": lookups, "requantized_elements": elements}
