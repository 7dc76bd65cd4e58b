"""Safe, reproducible files: JSON + npz, never pickle; zip archives read within limits.

`write_npz` writes a zip whose bytes depend only on the arrays (fixed
timestamps, sorted names), so compiling twice gives identical files.

Reading is defensive, because every archive ncc reads may come from someone else:

- zip members: names are checked before anything is read (no absolute paths,
  no `..`, no backslashes, no duplicates, no encrypted members, only stored or
  deflated data), and their declared sizes are checked against a stated limit
  (and the memory available) before any byte is decompressed. Members are then
  read in bounded chunks, so a header that lies about its size cannot make a
  read run past the limit.
- npz arrays: read with `allow_pickle=False`; each `.npy` header is parsed
  first and its declared size must equal the bytes the member holds; object
  arrays are refused (they would need pickle), and by default so is every
  dtype that is not a real number (strings, bytes, complex, structured,
  datetimes). `finite=True` also refuses NaN / inf, naming the array.

Every refusal is an `ArchiveError` with a one-line message naming the file,
the member or array, and what is wrong.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import numpy as np

_EPOCH = (1980, 1, 1, 0, 0, 0)

#: Default bound on the total decompressed size of an npz read by `read_npz` (data files,
#: IR constants, tables). Checkpoint weights have their own, smaller limit.
MAX_NPZ_BYTES = 1 << 30
#: Most arrays one npz may hold.
MAX_NPZ_ARRAYS = 10_000
#: Most members any zip archive may list (its central directory is read whole by zipfile).
MAX_ZIP_MEMBERS = 100_000
#: dtype kinds `read_npz` accepts by default: bool, signed / unsigned integers, floats.
REAL_KINDS = "biuf"

_CHUNK = 1 << 20
_COMPRESSIONS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}
_KIND_NAMES = {"U": "string", "S": "bytes", "c": "complex", "V": "structured / raw bytes",
               "O": "object", "M": "datetime", "m": "timedelta", "T": "string"}


class ArchiveError(ValueError):
    """A file is missing, corrupt, truncated or unsafe to load."""


# --- writing ---------------------------------------------------------------------------------


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


# --- zip members -----------------------------------------------------------------------------


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} bytes"


def available_memory() -> int | None:
    """Bytes of memory available to this process now (Linux MemAvailable), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def unsafe_member_name(name: str) -> str | None:
    """Why `name` is not a safe relative member path, or None when it is."""
    if not name:
        return "an empty name"
    if "\\" in name or "\x00" in name:
        return "a backslash or NUL byte"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "an absolute path"
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "a '..', '.' or empty path component"
    if any(ord(c) < 32 for c in name):
        return "a control character"
    return None


def check_members(zf: zipfile.ZipFile, what: str, *, limit: int,
                  expected: Iterable[str] | None = None,
                  limits: dict[str, int] | None = None,
                  suffix: str | None = None, max_members: int = MAX_ZIP_MEMBERS,
                  allow_dirs: bool = False) -> list[zipfile.ZipInfo]:
    """The members of `zf`, checked before anything is decompressed.

    what: the archive's name in messages. limit: most bytes all members may declare in
    total (also checked against the memory available now). expected: the exact member
    names the archive must hold (no more, no fewer). limits: per-member byte limits.
    suffix: every member name must end with it. allow_dirs: accept folder entries.
    Raises ArchiveError naming the member.
    """
    infos = zf.infolist()
    if len(infos) > max_members:
        raise ArchiveError(f"{what}: {len(infos)} members, more than the limit {max_members}")
    seen: set[str] = set()
    total = 0
    for info in infos:
        name = info.filename
        why = unsafe_member_name(name.removesuffix("/") if allow_dirs else name)
        if why is not None:
            raise ArchiveError(f"{what}: member {name!r} has an unsafe path ({why}); refusing")
        if name in seen:
            raise ArchiveError(f"{what}: member {name!r} appears twice; refusing")
        seen.add(name)
        if info.is_dir():
            if allow_dirs:
                continue
            raise ArchiveError(f"{what}: unexpected folder member {name!r}; refusing")
        if expected is not None and name not in expected:
            raise ArchiveError(f"{what}: unexpected member {name!r} (expected only "
                               f"{', '.join(sorted(expected))}); refusing")
        if suffix is not None and not name.endswith(suffix):
            raise ArchiveError(f"{what}: unexpected member {name!r} (every member must end "
                               f"with {suffix}); refusing")
        if info.flag_bits & 0x1:
            raise ArchiveError(f"{what}: member {name!r} is encrypted; refusing")
        if info.compress_type not in _COMPRESSIONS:
            raise ArchiveError(f"{what}: member {name!r} uses an unsupported compression "
                               f"(method {info.compress_type}); only stored or deflated")
        each = (limits or {}).get(name, limit)
        if info.file_size > each:
            raise ArchiveError(f"{what}: member {name!r} expands to {_size(info.file_size)}, "
                               f"over the limit of {_size(each)}; refusing")
        total += info.file_size
    if total > limit:
        raise ArchiveError(f"{what}: members expand to {_size(total)} in total, over the "
                           f"limit of {_size(limit)}; refusing")
    free = available_memory()
    if free is not None and total > free:
        raise ArchiveError(f"{what}: members expand to {_size(total)}, more than the "
                           f"{_size(free)} of memory available now")
    if expected is not None:
        missing = sorted(set(expected) - seen)
        if missing:
            raise ArchiveError(f"{what}: missing member {missing[0]!r}")
    return infos


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, what: str) -> bytes:
    """The bytes of one member, read in chunks and never more than it declared.

    A member whose data runs past its declared size, or whose checksum fails, is an
    ArchiveError (zipfile stops at the declared size; the bound here holds regardless).
    """
    limit = info.file_size
    chunks: list[bytes] = []
    got = 0
    try:
        with zf.open(info) as f:
            while True:
                chunk = f.read(min(_CHUNK, limit - got + 1))
                if not chunk:
                    break
                got += len(chunk)
                if got > limit:
                    raise ArchiveError(f"{what}: member {info.filename!r} holds more data than "
                                       f"its header declares ({_size(limit)}); refusing")
                chunks.append(chunk)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        if isinstance(e, ArchiveError):
            raise
        raise ArchiveError(f"{what}: member {info.filename!r} is corrupt or truncated "
                           f"({one_line(e)})") from None
    if got != limit:
        raise ArchiveError(f"{what}: member {info.filename!r} holds {got} bytes, its header "
                           f"declares {limit}; corrupt or truncated")
    return b"".join(chunks)


def open_zip(source: str | Path | IO[bytes], what: str) -> zipfile.ZipFile:
    """`zipfile.ZipFile(source)`, with a corrupt or truncated archive as ArchiveError."""
    try:
        return zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        raise ArchiveError(f"{what}: corrupt or truncated archive ({one_line(e)})") from None


def one_line(e: BaseException | str, limit: int = 300) -> str:
    """The first line of an error's message, at most `limit` characters (for one-line
    errors that quote another library's message)."""
    text = str(e).strip()
    line = text.splitlines()[0] if text else (type(e).__name__ if isinstance(e, BaseException)
                                              else "")
    return line if len(line) <= limit else line[: limit - 3] + "..."



# --- npz -------------------------------------------------------------------------------------


def _dtype_problem(dtype: np.dtype, kinds: str) -> str | None:
    if dtype.hasobject:
        return "pickle"
    if dtype.kind not in kinds or dtype.fields is not None or dtype.subdtype is not None:
        kind = _KIND_NAMES.get(dtype.kind, f"kind {dtype.kind!r}")
        return f"has dtype {dtype.str} ({kind}); only real numbers are accepted"
    return None


def _read_npy(data: bytes, name: str, what: str, kinds: str, finite: bool) -> np.ndarray:
    """One `.npy` member: header checked against its bytes before the array is built."""
    fp = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise ArchiveError(f"{what}: array {name!r} uses npy format {version}; only 1.0 "
                               "and 2.0 are read")
    except ValueError as e:
        if isinstance(e, ArchiveError):
            raise
        if "pickle" in str(e).lower() or "object" in str(e).lower():
            raise ArchiveError(f"{what}: contains pickled objects; refusing to load") from None
        raise ArchiveError(f"{what}: array {name!r} has a corrupt header "
                           f"({one_line(e)})") from None
    problem = _dtype_problem(dtype, kinds)
    if problem == "pickle":
        raise ArchiveError(f"{what}: contains pickled objects (array {name!r} has dtype "
                           "object); refusing to load")
    if problem is not None:
        raise ArchiveError(f"{what}: array {name!r} {problem}")
    if not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ArchiveError(f"{what}: array {name!r} has an invalid shape {shape!r}")
    declared = math.prod(shape) * dtype.itemsize
    held = len(data) - fp.tell()
    if declared != held:
        raise ArchiveError(f"{what}: array {name!r} declares shape {list(shape)} "
                           f"({declared} bytes) but holds {held} bytes; corrupt or forged")
    fp.seek(0)
    try:
        array = np.lib.format.read_array(fp, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise ArchiveError(f"{what}: contains pickled objects; refusing to load") from None
        raise ArchiveError(f"{what}: array {name!r} is corrupt ({one_line(e)})") from None
    if finite and array.dtype.kind == "f":
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise ArchiveError(f"{what}: array {name!r} has {bad} NaN or infinite value"
                               f"{'s' if bad > 1 else ''} of {array.size}; refusing (train "
                               "or export the model again)")
    return array


def _read_npz_zip(zf: zipfile.ZipFile, what: str, max_bytes: int, kinds: str,
                  finite: bool) -> dict[str, np.ndarray]:
    infos = check_members(zf, what, limit=max_bytes, suffix=".npy", max_members=MAX_NPZ_ARRAYS)
    arrays: dict[str, np.ndarray] = {}
    for info in infos:
        name = info.filename[: -len(".npy")]
        arrays[name] = _read_npy(read_member(zf, info, what), name, what, kinds, finite)
    return arrays


def npz_from_bytes(data: bytes, what: str, *, max_bytes: int = MAX_NPZ_BYTES,
                   kinds: str = REAL_KINDS, finite: bool = False) -> dict[str, np.ndarray]:
    """Decode npz bytes without pickle; `what` names the source in errors.

    max_bytes: most bytes the arrays may expand to. kinds: accepted dtype kinds (default
    real numbers: bool, int, uint, float). finite: refuse NaN / inf in float arrays.
    """
    with open_zip(io.BytesIO(data), what) as zf:
        return _read_npz_zip(zf, what, max_bytes, kinds, finite)


def read_npz(path: str | Path, *, max_bytes: int = MAX_NPZ_BYTES, kinds: str = REAL_KINDS,
             finite: bool = False) -> dict[str, np.ndarray]:
    """The arrays of an npz file (name -> array), checked as `npz_from_bytes` does."""
    path = Path(path)
    if not path.is_file():
        raise ArchiveError(f"{path}: no such file")
    with open_zip(path, str(path)) as zf:
        return _read_npz_zip(zf, str(path), max_bytes, kinds, finite)
