"""Hostile inputs for the C runtime: the compiled step under AddressSanitizer and
UndefinedBehaviorSanitizer, fed random integers over the whole input range (both rails,
alternating rails, zeros, random dt grid values) for many steps in one run.

Every input a C artifact takes is raw integers (the input's and dt's grids), so any
byte string is a legal input: `fuzz` draws them, streams them through the host driver
(`runtime/c/host/ncc_main.c`) built with `-fsanitize=address,undefined
-fno-sanitize-recover=all`, and reports the steps run and any sanitizer report (the
first one aborts the program).
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ncc.compiler.artifact import read_manifest
from ncc.compiler.data import stress_ints
from ncc.runtime.cbuild import build_executable, check_generated

SANITIZE = ("-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all")
CHUNK = 20_000  # steps generated and written at a time


def _step_bytes(manifest: dict[str, Any], steps: int, rng: np.random.Generator,
                structured: bool) -> bytes:
    """`steps` steps of x (and dt) as the host driver reads them: random integers over the
    dtype's range, or (structured) `stress_ints`' sine, rails, alternation and zeros."""
    columns = []
    for role in ("input", "dt"):
        for t in (t for t in manifest["tensors"] if t["role"] == role):
            size = int(np.prod(t["shape"]))
            dtype = np.dtype(t["dtype"])
            if structured:
                values = stress_ints(steps, size, t["dtype"], seed=int(rng.integers(1 << 30)))
            else:
                info = np.iinfo(dtype)
                values = rng.integers(int(info.min), int(info.max) + 1, (steps, size))
            columns.append(values.astype(dtype).reshape(steps, -1).view(np.uint8))
    return np.concatenate(columns, axis=1).tobytes()


def fuzz(art_dir: str | Path, steps: int, seed: int = 0, cc: str | None = None,
         timeout: float = 3600) -> dict[str, Any]:
    """Run `steps` hostile steps through the sanitized C step of the artifact in `art_dir`.

    Returns {"steps", "seconds", "reports": 0 or 1, "stderr": the sanitizer's report}."""
    art_dir = Path(art_dir)
    check_generated(art_dir)
    manifest = read_manifest(art_dir)
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="ncc-fuzz-") as tmp:
        exe = build_executable(art_dir, Path(tmp) / "fuzz", cc=cc, flags=SANITIZE)
        start = time.perf_counter()
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=err)
            assert proc.stdin is not None
            done = 0
            try:
                while done < steps:
                    n = min(CHUNK, steps - done)
                    proc.stdin.write(_step_bytes(manifest, n, rng, structured=done == 0))
                    done += n
                proc.stdin.close()
            except BrokenPipeError:  # the sanitizer stopped the program
                pass
            code = proc.wait(timeout=timeout)
            err.seek(0)
            report = err.read().decode(errors="replace")
        seconds = time.perf_counter() - start
    return {"steps": done, "seconds": seconds, "reports": int(code != 0 or bool(report)),
            "stderr": report[-4000:]}
