"""Fixed-point tables: the integer model as data, and the golden interpreter that runs them.

The `fixed-point` target (targets/fixed_point.py) writes a quantized graph as
`tables.json` (layout, layers, neuron populations) and `tables.npz` (every integer
array); a neuromorphic toolchain or a small runtime reads those instead of the IR.
This module defines what the files mean and runs them: `TableModel.step` evaluates
the layers in order with the golden kernels of `compiler/golden.py` (through the
interpreter's kernel table), so the tables are proven bit-exact with the golden model.

Layers are the integer IR ops with their parameters (`kind` is the op kind, `params`
its attributes, `inputs` name runtime buffers or arrays). A weight matrix is stored
dense (`int8 (K, N)`) or, when sparse, as a synapse list: arrays `<w>.pre`, `<w>.post`
(int32 indices) and `<w>.weight` (int8), present synapses only, sorted by (pre, post).

Activations are int8, or int16 in a 16x8 graph (`QuantOptions(activations="int16")`):
buffers, thresholds and initial states then hold int16, and a `lut` layer's table is the
compact form, 513 int16 entries interpolated (`"interpolated": true`; the golden `lut`
kernel, `ncc.numerics.interpolated_lookup`), or 65536 entries, y = table[x + 32768];
weights stay int8, biases int32.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ncc.compiler.interpret import evaluate
from ncc.compiler.ir import Op
from ncc.models.archive import ArchiveError, read_npz

FORMAT = "ncc-tables/1"
SPARSE_DENSITY = 0.85  # sparser int8 matrices (wiring masks) become synapse lists
JSON_FILE, NPZ_FILE = "tables.json", "tables.npz"


def synapse_list(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nonzero entries of w (K, N) as (pre (S,), post (S,), weight (S,)), sorted by pre, post."""
    pre, post = np.nonzero(w)
    return pre.astype(np.int32), post.astype(np.int32), w[pre, post]


def dense_from_synapses(pre: np.ndarray, post: np.ndarray, weight: np.ndarray,
                        shape: tuple[int, int]) -> np.ndarray:
    """The (K, N) int8 matrix a synapse list stands for (absent synapses are zero)."""
    w = np.zeros(shape, np.int8)
    w[pre, post] = weight
    return w


@dataclass
class TableModel:
    """Tables loaded from `tables.json` + `tables.npz`, ready to step.

    spec: the JSON document; arrays: npz contents by key. `events` counts synaptic events
    (a spike times its present outgoing synapses) since construction or `reset_counts`.
    """

    spec: dict[str, Any]
    arrays: dict[str, np.ndarray]
    events: int = 0
    steps: int = 0
    _matrices: dict[str, np.ndarray] = field(default_factory=dict)
    _fanout: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.spec.get("format") != FORMAT:
            raise ArchiveError(f"tables: unknown format {self.spec.get('format')!r}, "
                               f"expected {FORMAT!r}")
        for key, m in self.spec["matrices"].items():
            if m["storage"] == "synapses":
                w = dense_from_synapses(self.arrays[f"{key}.pre"], self.arrays[f"{key}.post"],
                                        self.arrays[f"{key}.weight"], tuple(m["shape"]))
            else:
                w = self.arrays[key]
            self._matrices[key] = w
            self._fanout[key] = np.count_nonzero(w, axis=1)

    @property
    def buffers(self) -> dict[str, dict[str, Any]]:
        return self.spec["buffers"]

    def operand(self, name: str, env: dict[str, np.ndarray]) -> np.ndarray:
        if name in self._matrices:
            return self._matrices[name]
        if name in self.arrays:
            return self.arrays[name]
        return env[name]

    def initial_state(self) -> dict[str, np.ndarray]:
        return {s["state_in"]: self.arrays[s["initial"]] for s in self.spec["state"]}

    def step(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One timestep. feeds: every input buffer (x, dt, state_in) by name -> outputs
        and next states by name, each with its buffer's dtype and shape."""
        env = {name: np.asarray(feeds[name]).astype(self.buffers[name]["dtype"])
               for name in self.spec["inputs"]}
        for layer in self.spec["layers"]:
            args = [self.operand(n, env) for n in layer["inputs"]]
            op = Op(layer["kind"], tuple(layer["inputs"]), layer["output"], layer["params"])
            out = self.buffers[layer["output"]]
            env[layer["output"]] = np.asarray(evaluate(op, args)).astype(out["dtype"])
            if layer.get("spike_input"):
                fanout = self._fanout[layer["inputs"][1]]
                self.events += int(np.sum((args[0] != 0) * fanout))
        self.steps += 1
        return {name: env[name] for name in self.spec["outputs"]}

    def run(self, xs: np.ndarray, dts: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """xs: (T, *x_shape), x's dtype (int8 or int16); dts: (T, *dt_shape) or None
        (dt = 1.0 on its grid).
        Returns each output and next state stacked over time, (T, *shape)."""
        (x_name,) = [n for n in self.spec["inputs"] if self.spec["roles"][n] == "input"]
        dt_names = [n for n in self.spec["inputs"] if self.spec["roles"][n] == "dt"]
        state = self.initial_state()
        trace: dict[str, list[np.ndarray]] = {n: [] for n in self.spec["outputs"]}
        for t in range(len(xs)):
            feeds = {x_name: np.reshape(xs[t], self.buffers[x_name]["shape"]), **state}
            for name in dt_names:
                feeds[name] = (self.arrays[f"{name}.one"] if dts is None
                               else np.reshape(dts[t], self.buffers[name]["shape"]))
            out = self.step(feeds)
            for name, value in out.items():
                trace[name].append(value)
            state = {s["state_in"]: out[s["state_out"]] for s in self.spec["state"]}
        return {k: np.stack(v) for k, v in trace.items()}

    def reset_counts(self) -> None:
        self.events = self.steps = 0


def read_tables(folder: str | Path) -> TableModel:
    """Load `tables.json` + `tables.npz` from an artifact folder (no pickle)."""
    folder = Path(folder)
    path = folder / JSON_FILE
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArchiveError(f"{folder}: no {JSON_FILE}; not a fixed-point artifact") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ArchiveError(f"{path}: unreadable tables ({e})") from None
    return TableModel(spec, read_npz(folder / NPZ_FILE))
