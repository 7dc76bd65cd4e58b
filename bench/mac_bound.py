"""The MAC bound of a model's step on this machine: a plain int8 dot-product loop over the
same matrix shapes, compiled with the same compiler and flags as the C artifact's timing.

For each dense layer of the integer graph (`fully_connected`, x (1, K), w (K, N)) the
generated program holds an int8 matrix [N][K] in rows and a vector x [K], and computes
the N int32 sums sum_k x[k] w[n][k]: the loop shape compilers vectorise (widening
multiply-add), nothing else (no bias, no requantization, no nonlinearity). Its time per
pass over all the layers is what the multiply-accumulates alone cost, the floor a C step
can approach. Each pass feeds one output byte back into the next pass's x, so the work
cannot be hoisted out of the timing loop.
"""

from __future__ import annotations

import functools
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ncc.compiler.ir import Graph

FLAGS = ("-O3", "-march=native")
"""Flags of both timings (the artifact's ncc_bench and this loop); without -march=native
where the compiler refuses it."""


def dense_shapes(g: Graph) -> list[tuple[int, int]]:
    """(K, N) of each fully_connected op of integer graph `g`, per row of its input."""
    shapes = []
    for op in g.ops:
        if op.kind == "fully_connected":
            k, n = g.tensors[op.inputs[1]].shape[-2:]
            rows = int(np.prod(g.tensors[op.inputs[0]].shape[:-1], dtype=np.int64))
            shapes += [(int(k), int(n))] * max(rows, 1)
    return shapes


def _layer(i: int, k: int, n: int, rows: int) -> list[str]:
    """Layer i's loop: `rows` outputs per pass over x (1: one dot per row; 4: x read once
    for four rows, as ncc's own kernel does), the rest one by one."""
    lines = [f"static void layer{i}(void) {{", "    int32_t n = 0, j;"]
    if rows > 1:
        accs = ", ".join(f"a{r} = 0" for r in range(rows))
        lines += [f"    for (; n + {rows} <= {n}; n += {rows}) {{",
                  f"        int32_t {accs};",
                  f"        for (j = 0; j < {k}; ++j) {{",
                  f"            int32_t v = x{i}[j];",
                  *(f"            a{r} += v * w{i}[n + {r}][j];" for r in range(rows)),
                  "        }",
                  *(f"        y{i}[n + {r}] = a{r};" for r in range(rows)),
                  "    }"]
    lines += [f"    for (; n < {n}; ++n) {{", "        int32_t acc = 0;",
              f"        for (j = 0; j < {k}; ++j) acc += (int32_t)x{i}[j] * w{i}[n][j];",
              f"        y{i}[n] = acc;", "    }", "}", ""]
    return lines


def bound_source(shapes: list[tuple[int, int]], passes: int, rows: int = 1) -> str:
    """C99 source timing `passes` passes of the plain loop over `shapes` (`rows` outputs
    per pass over x); prints "<ns per pass> <checksum>"."""
    parts = ["#include <stdint.h>", "#include <stdio.h>", "#include <time.h>", ""]
    for i, (k, n) in enumerate(shapes):
        parts += [f"static int8_t w{i}[{n}][{k}];", f"static int8_t x{i}[{k}];",
                  f"static int32_t y{i}[{n}];", *_layer(i, k, n, rows)]
    fill = "\n".join(
        f"    for (n = 0; n < {n}; ++n) for (j = 0; j < {k}; ++j) "
        f"w{i}[n][j] = (int8_t)((n * 31 + j * 17) % 255 - 127);\n"
        f"    for (j = 0; j < {k}; ++j) x{i}[j] = (int8_t)(j % 200 - 100);"
        for i, (k, n) in enumerate(shapes))
    body = "\n".join(f"        layer{i}();\n        x{i}[0] = (int8_t)y{i}[0];"
                     f"\n        sum += (unsigned long)(uint32_t)y{i}[0];"
                     for i in range(len(shapes)))
    parts += ["int main(void) {", "    long p;", "    int32_t n, j;",
              "    unsigned long sum = 0;", "    clock_t t0, t1;", fill,
              "    t0 = clock();", f"    for (p = 0; p < {passes}L; ++p) {{", body, "    }",
              "    t1 = clock();",
              f'    printf("%.3f %lu\\n", 1e9 * (double)(t1 - t0) / CLOCKS_PER_SEC / {passes}.0,'
              " sum);",
              "    (void)n; (void)j;", "    return 0;", "}", ""]
    return "\n".join(parts)


@functools.lru_cache(maxsize=8)
def compile_flags(cc: str) -> tuple[str, ...]:
    """FLAGS if `cc` accepts them, else FLAGS without -march=native."""
    probe = subprocess.run([cc, *FLAGS, "-x", "c", "-c", "-o", "/dev/null", "-"],
                           input="int x;\n", capture_output=True, text=True)
    return FLAGS if probe.returncode == 0 else tuple(f for f in FLAGS if "march" not in f)


def measure_bound(g: Graph, total_macs: float = 2e8, cc: str | None = None
                  ) -> dict[str, Any]:
    """The plain int8 loop over `g`'s dense shapes, timed over enough passes for about
    `total_macs` MACs in all, the faster of its two forms (one row per pass over x, four
    rows): step_us per pass (0.0 without dense layers), macs, shapes, macs_per_s, flags."""
    from ncc.runtime.cbuild import find_compiler

    shapes = dense_shapes(g)
    cc = find_compiler(cc)
    flags = compile_flags(cc)
    macs = sum(k * n for k, n in shapes)
    ns = 0.0
    if shapes:
        passes = max(1000, int(total_macs / macs))
        ns = min(_timed(bound_source(shapes, passes, rows), cc, flags) for rows in (1, 4))
    return {"step_us": ns / 1000, "macs": macs, "shapes": shapes,
            "macs_per_s": macs / ns * 1e9 if ns else None, "flags": " ".join(flags)}


def _timed(source: str, cc: str, flags: tuple[str, ...]) -> float:
    with tempfile.TemporaryDirectory(prefix="ncc-bound-") as tmp:
        src, exe = Path(tmp) / "bound.c", Path(tmp) / "bound"
        src.write_text(source)
        done = subprocess.run([cc, "-std=c99", *flags, "-o", str(exe), str(src)],
                              capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"building the MAC-bound loop failed:\n{done.stderr[-2000:]}")
        run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=600)
    if run.returncode:
        raise RuntimeError(f"the MAC-bound loop exited {run.returncode}")
    return float(run.stdout.split()[0])
