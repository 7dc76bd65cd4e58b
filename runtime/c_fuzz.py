"""Hostile inputs for the C runtime: the compiled step under AddressSanitizer and
UndefinedBehaviorSanitizer, for many steps in one run.

Every input a C artifact takes is raw integers (x's and dt's grids), so any byte string is
a legal input. `fuzz` builds the artifact with the fuzz driver `runtime/c/host/ncc_fuzz.c`
(which walks x's rails, then feeds random bytes, resetting the state now and then) under
`-fsanitize=address,undefined -fno-sanitize-recover=all`, and runs it in `shards`
processes with different seeds; the first sanitizer report aborts its process.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from ncc.runtime.cbuild import build_executable, check_generated

SANITIZE = ("-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all")


def fuzz(art_dir: str | Path, steps: int, seed: int = 0, shards: int = 1,
         cc: str | None = None, timeout: float = 3600) -> dict[str, Any]:
    """Run `steps` hostile steps (split over `shards` processes) through the sanitized C
    step of the artifact in `art_dir`.

    Returns {"steps", "seconds" (wall), "reports": processes that reported, "stderr"}."""
    art_dir = Path(art_dir)
    check_generated(art_dir)
    with tempfile.TemporaryDirectory(prefix="ncc-fuzz-") as tmp:
        exe = build_executable(art_dir, Path(tmp) / "fuzz", cc=cc, flags=SANITIZE,
                               driver="ncc_fuzz.c")
        share = [steps // shards + (i < steps % shards) for i in range(shards)]
        start = time.perf_counter()
        procs = [subprocess.Popen([str(exe), str(n), str(seed * 1000 + i)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i, n in enumerate(share)]
        results = [p.communicate(timeout=timeout) for p in procs]
        seconds = time.perf_counter() - start
    failed = [(p, err) for p, (_, err) in zip(procs, results, strict=True)
              if p.returncode != 0 or err.strip()]
    done = sum(int(out.split()[1]) for out, _ in results if out.startswith("steps "))
    return {"steps": done, "seconds": seconds, "reports": len(failed),
            "stderr": "\n".join(err for _, err in failed)[-4000:]}
