"""IR graphs to and from JSON + npz (no pickle), and the IR's content hash."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ncc.compiler.ir import Graph, IRError, Op, QuantParams, Tensor, verify
from ncc.models.archive import ArchiveError, json_bytes, npz_bytes, read_npz

FORMAT = "ncc-ir/1"


def graph_to_json(g: Graph) -> dict[str, Any]:
    """Everything but the array data (constants and initial state go to the npz)."""
    return {
        "format": FORMAT,
        "name": g.name,
        "tensors": [
            {"name": t.name, "shape": list(t.shape), "dtype": t.dtype,
             "quant": t.quant.to_dict() if t.quant else None}
            for t in g.tensors.values()
        ],
        "inputs": list(g.inputs),
        "outputs": list(g.outputs),
        "roles": dict(g.roles),
        "state_pairs": [list(p) for p in g.state_pairs],
        "constants": list(g.constants),
        "initial_state": list(g.initial_state),
        "ops": [
            {"kind": op.kind, "inputs": list(op.inputs), "output": op.output,
             "attrs": _plain(op.attrs), "source": op.source}
            for op in g.ops
        ],
        "metadata": _plain(g.metadata),
    }


def graph_arrays(g: Graph) -> dict[str, np.ndarray]:
    arrays = {f"const/{k}": v for k, v in g.constants.items()}
    arrays.update({f"init/{k}": v for k, v in g.initial_state.items()})
    return arrays


def graph_from_json(spec: dict[str, Any], arrays: dict[str, np.ndarray]) -> Graph:
    if spec.get("format") != FORMAT:
        raise IRError(f"unsupported IR format {spec.get('format')!r} (expected {FORMAT})")
    tensors = {
        t["name"]: Tensor(t["name"], tuple(t["shape"]), t["dtype"],
                          QuantParams.from_dict(t["quant"]) if t["quant"] else None)
        for t in spec["tensors"]
    }
    try:
        constants = {k: arrays[f"const/{k}"] for k in spec["constants"]}
        initial = {k: arrays[f"init/{k}"] for k in spec["initial_state"]}
    except KeyError as e:
        raise IRError(f"IR arrays lack {e.args[0]!r}") from None
    ops = [Op(o["kind"], tuple(o["inputs"]), o["output"], _attrs(o["attrs"]), o["source"])
           for o in spec["ops"]]
    g = Graph(spec["name"], tensors, list(spec["inputs"]), list(spec["outputs"]),
              dict(spec["roles"]), [tuple(p) for p in spec["state_pairs"]], constants, ops,
              initial, spec.get("metadata", {}))
    return verify(g)


def save_graph(g: Graph, stem: str | Path) -> list[Path]:
    """Write `stem.json` and `stem.npz`; returns the two paths."""
    stem = Path(stem)
    paths = [stem.with_suffix(".json"), stem.with_suffix(".npz")]
    paths[0].write_bytes(json_bytes(graph_to_json(g)))
    paths[1].write_bytes(npz_bytes(graph_arrays(g)))
    return paths


MAX_IR_JSON_BYTES = 256 << 20
"""ir.json holds ops and attributes, not weights (those are in the npz): far below this."""


def load_graph(stem: str | Path) -> Graph:
    """The graph stored as `stem`.json + `stem`.npz (JSON and arrays only: nothing in an
    artifact folder is executed or unpickled); ArchiveError on any defect."""
    stem = Path(stem)
    path = stem.with_suffix(".json")
    try:
        if path.stat().st_size > MAX_IR_JSON_BYTES:
            raise ArchiveError(f"{path}: larger than {MAX_IR_JSON_BYTES >> 20} MiB; not an IR")
        spec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ArchiveError(f"{path}: cannot read IR ({type(e).__name__})") from None
    return graph_from_json(spec, read_npz(stem.with_suffix(".npz")))


def graph_hash(g: Graph) -> str:
    """sha256 over the canonical JSON and the array bytes: equal graphs, equal hash."""
    h = hashlib.sha256(json_bytes(graph_to_json(g)))
    h.update(npz_bytes(graph_arrays(g)))
    return h.hexdigest()


def _plain(obj: Any) -> Any:
    """Attributes as JSON values (tuples become lists, numpy scalars plain numbers)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _attrs(d: dict[str, Any]) -> dict[str, Any]:
    """Inverse of `_plain` for op attributes: lists back to tuples."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
