"""Artifact folders: what a target produced, its manifest, written all or nothing.

A compiled model is a folder holding the target's files, the IR it came from
(`ir.json` + `ir.npz`, the float reference and, quantized, the golden model),
`manifest.json` (everything another program needs to run the artifact) and
`report.json` (what validation measured).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ncc.compiler import __version__
from ncc.compiler.ir import Graph
from ncc.compiler.serialize import graph_arrays, graph_hash, graph_to_json, load_graph
from ncc.models.archive import ArchiveError, json_bytes, npz_bytes

MANIFEST_FORMAT = "ncc-artifact/1"


@dataclass
class Artifact:
    """A target's output. io_names maps IR tensor names to the artifact's names."""

    target: str
    entry: str
    files: dict[str, bytes]
    io_names: dict[str, str]
    sequence_length: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


def build_manifest(g: Graph, art: Artifact, source: dict[str, Any]) -> dict[str, Any]:
    """The manifest: tensors with roles, shapes, dtypes, quantization; state threading."""
    seq = art.sequence_length
    tensors = []
    for name in g.inputs + g.outputs:
        t, role = g.tensors[name], g.roles[name]
        stacked = seq is not None and role in ("input", "dt", "output")
        tensors.append({
            "name": art.io_names[name], "ir_name": name, "role": role,
            "shape": ([seq] if stacked else []) + list(t.shape), "dtype": t.dtype,
            "quantization": t.quant.to_dict() if t.quant else None,
        })
    state = [{"state_in": art.io_names[s_in], "state_out": art.io_names[s_out],
              "initial": g.initial_state[s_in].tolist()} for s_in, s_out in g.state_pairs]
    return {
        "format": MANIFEST_FORMAT,
        "target": art.target,
        "ncc_version": __version__,
        "model": {"name": g.name, **source},
        "ir_sha256": graph_hash(g),
        "entry": art.entry,
        "sequence_length": seq,
        "tensors": tensors,
        "state": state,
        "details": art.details,
    }


def write_artifact(out_dir: str | Path, g: Graph, art: Artifact, source: dict[str, Any],
                   report: dict[str, Any] | None = None, reference: Graph | None = None) -> Path:
    """Write the folder atomically: on any failure, nothing at `out_dir` changes.

    g: the graph the artifact implements (`ir.*`: for integer targets, the golden
    model); reference: the float graph it approximates (`float.*`), if different.
    """
    out_dir = Path(out_dir)
    files = dict(art.files)
    for stem, graph in (("ir", g), ("float", reference)):
        if graph is not None:
            files[f"{stem}.json"] = json_bytes(graph_to_json(graph))
            files[f"{stem}.npz"] = npz_bytes(graph_arrays(graph))
    manifest = build_manifest(g, art, source)
    manifest["files"] = {k: hashlib.sha256(v).hexdigest() for k, v in sorted(files.items())}
    files["manifest.json"] = json_bytes(manifest)
    files["report.json"] = json_bytes(report or {})
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{tmp.name[-8:]}")
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def read_manifest(art_dir: str | Path) -> dict[str, Any]:
    path = Path(art_dir) / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArchiveError(f"{art_dir}: not an ncc artifact folder (no manifest.json)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ArchiveError(f"{path}: unreadable manifest ({e})") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ArchiveError(f"{path}: unknown manifest format {manifest.get('format')!r}")
    return manifest


def check_files(art_dir: str | Path, manifest: dict[str, Any]) -> None:
    """Raise ArchiveError if any file differs from the checksum the manifest records."""
    for name, digest in manifest["files"].items():
        path = Path(art_dir) / name
        if not path.is_file():
            raise ArchiveError(f"{art_dir}: missing {name}")
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise ArchiveError(f"{path}: checksum mismatch; the artifact was modified")


def load_artifact_graph(art_dir: str | Path) -> Graph:
    """The graph the artifact implements (integer graphs are the golden model)."""
    return load_graph(Path(art_dir) / "ir")


def load_reference_graph(art_dir: str | Path) -> Graph:
    """The float graph the artifact is validated against."""
    stem = Path(art_dir) / "float"
    return load_graph(stem if stem.with_suffix(".json").is_file() else Path(art_dir) / "ir")


def update_report(art_dir: str | Path, report: dict[str, Any]) -> None:
    from ncc.models.archive import atomic_write

    atomic_write(Path(art_dir) / "report.json", json_bytes(report))
