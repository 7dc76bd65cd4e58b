"""From evolution to device: the evolved constants written into the integer graph, lowered
again for any integer target through the target registry, and checked in the real runtime.

`apply` keeps the compiler's proofs: the graph is verified and every FullyConnected
accumulator is proven again (`int_safety.check_accumulator`) with the new weights and
biases, so a target lowers it as it would a freshly quantized model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ncc.compiler.artifact import load_artifact_graph, load_reference_graph, write_artifact
from ncc.compiler.int_safety import check_accumulator
from ncc.compiler.ir import Graph, verify
from ncc.targets.registry import get_target


def apply(g: Graph, constants: dict[str, np.ndarray]) -> Graph:
    """g with `constants` replacing its own (same shapes and dtypes), verified and with
    every dense accumulator proven again; raises OverflowRisk / IRError naming the op."""
    new = dict(g.constants)
    for name, value in constants.items():
        old = g.constants.get(name)
        if old is None:
            raise ValueError(f"{name!r} is not a constant of graph {g.name}")
        value = np.asarray(value)
        if value.shape != old.shape:
            raise ValueError(f"{name!r}: shape {value.shape}, graph has {old.shape}")
        if np.any(value.astype(np.int64) != value.astype(old.dtype).astype(np.int64)):
            raise ValueError(f"{name!r}: values outside {old.dtype}")
        new[name] = value.astype(old.dtype)
    out = verify(g.replace(constants=new, metadata={**g.metadata, "evolved": sorted(constants)}))
    producer = out.producer()
    for op in out.ops:
        if op.kind == "fully_connected":
            x, w, b = op.inputs
            src = producer.get(x)
            spikes = src is not None and src.kind == "cast" and \
                out.tensors[src.inputs[0]].dtype == "bool"
            check_accumulator(out.tensors[x].dtype, out.tensors[w].shape[0], out.constants[b]
                              if b in out.constants else np.zeros(1, np.int32),
                              op.attrs["shift"], f"op fully_connected -> {op.output!r}",
                              x_span=1 if spikes else None)
    return out


def write_evolved_artifact(g: Graph, target: str, out_dir: str | Path, *,
                           reference: Graph | None = None,
                           source: dict[str, Any] | None = None) -> Path:
    """Lower the (evolved) integer graph for the integer `target` and write the folder.

    reference: the float graph the artifact is validated against (the model the
    evolution started from: the evolved model approximates no float model any more,
    so the float comparison in report.json measures how far evolution moved)."""
    spec = get_target(target)
    if not spec.quantized:
        raise ValueError(f"target {spec.name} is float; evolved integer parameters need an "
                         "integer target")
    art = spec.lower(g, reference=reference, model=None, sequence_length=None)
    return write_artifact(Path(out_dir), g, art, source or {"source": "<evolved graph>"},
                          reference=reference)


def evolve_artifact_graphs(art_dir: str | Path) -> tuple[Graph, Graph]:
    """(integer graph, float reference) of an artifact folder, to evolve and write back."""
    return load_artifact_graph(art_dir), load_reference_graph(art_dir)


def runtime_predictions(art_dir: str | Path, xq: np.ndarray,
                        runtime: str | None = None) -> np.ndarray:
    """argmax of the last step's output for each sequence xq (N, T, F) (on the input grid),
    run in the artifact's real runtime (LiteRT, TFLite Micro, the C library, ...)."""
    from ncc.runtime.session import open_session

    session = open_session(art_dir, runtime)
    g = load_artifact_graph(art_dir)
    (x_name,) = g.by_role("input")
    out = next(n for n in g.outputs if g.roles[n] == "output")
    shape = g.tensors[x_name].shape
    preds = []
    for seq in xq:
        y = session.run(np.asarray(seq).reshape(len(seq), *shape))[out]
        preds.append(int(np.argmax(np.asarray(y)[-1].reshape(-1))))
    return np.asarray(preds)


def runtime_accuracy(art_dir: str | Path, xq: np.ndarray, y: np.ndarray,
                     runtime: str | None = None) -> tuple[int, float]:
    """(correct count, accuracy as float32 like the evolution's fitness) in the runtime."""
    correct = int(np.sum(runtime_predictions(art_dir, xq, runtime) == np.asarray(y)))
    return correct, float(np.float32(correct) * np.float32(1.0 / len(y)))
