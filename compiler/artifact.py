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


def io_sections(g: Graph, io_names: dict[str, str], seq: int | None) -> dict[str, Any]:
    """What another program needs to run the artifact: every input and output tensor
    (role, shape, dtype, quantization) and the state threading, as the manifest lists
    them. `verify` rebuilds these from the IR and compares (`check_manifest`)."""
    tensors = []
    for name in g.inputs + g.outputs:
        t, role = g.tensors[name], g.roles[name]
        stacked = seq is not None and role in ("input", "dt", "output")
        tensors.append({
            "name": io_names[name], "ir_name": name, "role": role,
            "shape": ([seq] if stacked else []) + list(t.shape), "dtype": t.dtype,
            "quantization": t.quant.to_dict() if t.quant else None,
        })
    state = [{"state_in": io_names[s_in], "state_out": io_names[s_out],
              "initial": g.initial_state[s_in].tolist()} for s_in, s_out in g.state_pairs]
    return {"sequence_length": seq, "tensors": tensors, "state": state}


def _io_digest(sections: dict[str, Any]) -> str:
    return hashlib.sha256(json_bytes(sections)).hexdigest()


OUTPUT_PER_STEP = "per step: the step function's output at this step"
"""What an artifact's output means unless the frontend says more (Keras: return_sequences)."""


def build_manifest(g: Graph, art: Artifact, source: dict[str, Any]) -> dict[str, Any]:
    """The manifest: tensors with roles, shapes, dtypes, quantization; state threading;
    checksums of the I/O sections (`io_sha256`) and, added by `write_artifact`, of every
    file."""
    io = io_sections(g, art.io_names, art.sequence_length)
    return {
        "format": MANIFEST_FORMAT,
        "target": art.target,
        "ncc_version": __version__,
        "model": {"name": g.name, **source},
        "ir_sha256": graph_hash(g),
        "entry": art.entry,
        **io,
        "io_sha256": _io_digest(io),
        "output_semantics": g.metadata.get("output_semantics", OUTPUT_PER_STEP),
        "details": art.details,
        **({"widths": activation_widths(g)} if g.metadata.get("quantized") else {}),
    }


def activation_widths(g: Graph) -> dict[str, Any]:
    """Integer graph `g`'s activation and state tensors by width (weights stay int8):
    {"activations": "int8" | "int16" | "mixed", "int8": count, "int16": count,
    "int16_tensors": names} (what `ncc inspect` shows; `--precision auto` chooses them)."""
    by: dict[str, list[str]] = {"int8": [], "int16": []}
    for name, t in g.tensors.items():
        if name not in g.constants and t.quant is not None and t.dtype in by:
            by[t.dtype].append(name)
    return {"activations": g.metadata.get("activations"), "int8": len(by["int8"]),
            "int16": len(by["int16"]), "int16_tensors": sorted(by["int16"])}


def _first_difference(got: Any, want: Any, path: str) -> str | None:
    if isinstance(want, dict) and isinstance(got, dict):
        for key in sorted(set(want) | set(got)):
            found = _first_difference(got.get(key), want.get(key), f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(want, list) and isinstance(got, list) and len(got) == len(want):
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            found = _first_difference(a, b, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if got == want else f"{path} is {got!r}, the IR says {want!r}"


def check_manifest(art_dir: str | Path, manifest: dict[str, Any], g: Graph) -> None:
    """Raise ArchiveError naming the field if the manifest's tensors, quantization or state
    pairing differ from what the artifact's IR (checked by `check_files`) implies: a
    program that runs the artifact from its manifest would feed or read wrong values."""
    where = Path(art_dir) / "manifest.json"
    tensors = manifest.get("tensors")
    if not isinstance(tensors, list) or not all(isinstance(t, dict) for t in tensors):
        raise ArchiveError(f"{where}: tensors is not a list of tensor entries")
    io_names = {t.get("ir_name"): t.get("name") for t in tensors}
    if set(io_names) != set(g.inputs + g.outputs):
        raise ArchiveError(f"{where}: tensors list {sorted(map(str, io_names))}, the IR has "
                           f"inputs and outputs {sorted(g.inputs + g.outputs)}")
    want = io_sections(g, io_names, manifest.get("sequence_length"))
    got = {key: manifest.get(key) for key in want}
    found = _first_difference(got, want, "manifest")
    if found:
        raise ArchiveError(f"{where}: {found}; the manifest was modified")
    if manifest.get("io_sha256") != _io_digest(want):
        raise ArchiveError(f"{where}: io_sha256 does not match its tensors and state; the "
                           "manifest was modified")


def check_output_dir(out_dir: str | Path) -> Path:
    """`out_dir` as an artifact folder may be written: absent, or an ncc artifact folder
    (which is replaced as a whole). A file, or a folder holding anything else (the
    current folder, a user's project), is an ArchiveError: nothing of theirs is lost."""
    out = Path(out_dir)
    if out.name in ("", ".", "..") or out.resolve() == out.resolve().parent:
        raise ArchiveError(f"-o {out_dir}: name a new folder for the artifact (e.g. -o out/), "
                           "not the current folder, a parent or the root")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ArchiveError(f"-o {out_dir}: exists and is not a folder; choose another name")
    if out.is_dir() and any(out.iterdir()) and not (out / "manifest.json").is_file():
        raise ArchiveError(f"-o {out_dir}: the folder exists and is not an ncc artifact "
                           "folder; choose another name or remove it")
    return out


def staging_dir(out_dir: str | Path) -> Path:
    """A fresh hidden sibling of `out_dir` to build into (same file system: the move into
    place is a rename). Readable by all, like the files in it."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.ncc-"))
    tmp.chmod(0o755)
    return tmp


def publish(staged: Path, out_dir: str | Path) -> Path:
    """Move the complete folder `staged` to `out_dir`, replacing an artifact folder there
    as a whole (never mixing old and new files)."""
    out = check_output_dir(out_dir)
    if out.exists():
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
        out.rename(old / "artifact")
        staged.rename(out)
        shutil.rmtree(old)
    else:
        staged.rename(out)
    return out


def write_artifact(out_dir: str | Path, g: Graph, art: Artifact, source: dict[str, Any],
                   report: dict[str, Any] | None = None, reference: Graph | None = None) -> Path:
    """Write the folder atomically: on any failure, nothing at `out_dir` changes.

    g: the graph the artifact implements (`ir.*`: for integer targets, the golden
    model); reference: the float graph it approximates (`float.*`), if different.
    """
    out_dir = check_output_dir(out_dir)
    files = dict(art.files)
    for stem, graph in (("ir", g), ("float", reference)):
        if graph is not None:
            files[f"{stem}.json"] = json_bytes(graph_to_json(graph))
            files[f"{stem}.npz"] = npz_bytes(graph_arrays(graph))
    manifest = build_manifest(g, art, source)
    manifest["files"] = {k: hashlib.sha256(v).hexdigest() for k, v in sorted(files.items())}
    files["manifest.json"] = json_bytes(manifest)
    files["report.json"] = json_bytes(report or {})
    tmp = staging_dir(out_dir)
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        return publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
