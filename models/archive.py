"""Safe, reproducible files: JSON + npz, never pickle.

`write_npz` writes a zip whose bytes depend only on the arrays (fixed
timestamps, sorted names), so compiling twice gives identical files.
`read_npz` refuses object arrays (which would need pickle) and reports a
corrupt or truncated file as `ArchiveError` naming the path.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

_EPOCH = (1980, 1, 1, 0, 0, 0)


class ArchiveError(ValueError):
    """A file is missing, corrupt, truncated or unsafe to load."""


def npz_bytes(arrays: dict[str, np.ndarray], compress: bool = False) -> bytes:
    """The deterministic npz encoding of `arrays` (name -> array), deflated if `compress`."""
    buf = io.BytesIO()
    mode = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", compression=mode) as zf:
        for name in sorted(arrays):
            array = np.asarray(arrays[name])
            if array.dtype == object:
                raise ArchiveError(f"array {name!r} has dtype object; refusing to pickle")
            entry = io.BytesIO()
            np.lib.format.write_array(entry, array, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            zf.writestr(info, entry.getvalue(), compress_type=mode)
    return buf.getvalue()


def npz_from_bytes(data: bytes, what: str) -> dict[str, np.ndarray]:
    """Decode npz bytes without pickle; `what` names the source in errors."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise ArchiveError(f"{what}: contains pickled objects; refusing to load") from None
        raise ArchiveError(f"{what}: corrupt array data ({e})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise ArchiveError(f"{what}: not a valid npz archive ({e})") from None


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise ArchiveError(f"{path}: no such file")
    return npz_from_bytes(path.read_bytes(), str(path))


def json_bytes(obj: Any) -> bytes:
    """Canonical JSON: sorted keys, two-space indent, trailing newline."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file, so a crash leaves no half file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; artifacts are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
