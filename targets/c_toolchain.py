"""The Cortex-M4 toolchain the c target and the runtime share: build flags, and the
flash/RAM footprint of a C artifact from `arm-none-eabi-size`."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

SOURCES = ("model.c", "ncc_kernels.c")  # what a program compiles (with its own main)
WARNINGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic")
# Cortex-M4 footprint: arm-none-eabi-gcc objects sized by arm-none-eabi-size
ARM_CC = "arm-none-eabi-gcc"
ARM_SIZE = "arm-none-eabi-size"
ARM_CPU_FLAGS = ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=soft")  # no FPU needed
ARM_OPT_FLAGS = ("-Os", "-ffunction-sections", "-fdata-sections")


class FootprintError(RuntimeError):
    """The cross-compiler or arm-none-eabi-size failed; the message has its output."""


def run_tool(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise FootprintError(f"{' '.join(cmd)} exited {done.returncode}:\n"
                             f"{(done.stderr + done.stdout)[-2000:]}")
    return done.stdout


def arm_objects(src: Path, build: Path) -> list[Path]:
    """model.o and ncc_kernels.o of the C files in `src`, built for a Cortex-M4."""
    objects = []
    for source in SOURCES:
        obj = build / Path(source).with_suffix(".o").name
        run_tool([ARM_CC, *ARM_CPU_FLAGS, *WARNINGS, *ARM_OPT_FLAGS, "-c", str(src / source),
                  "-o", str(obj)])
        objects.append(obj)
    return objects


def arm_sizes(paths: list[Path]) -> dict[str, dict[str, int]]:
    """arm-none-eabi-size (Berkeley format: text includes rodata) -> {file name: {text,
    data, bss}}."""
    sizes = {}
    for line in run_tool([ARM_SIZE, *map(str, paths)]).splitlines()[1:]:
        text, data, bss, _dec, _hex, name = line.split(maxsplit=5)
        sizes[Path(name).name] = {"text": int(text), "data": int(data), "bss": int(bss)}
    return sizes


def cortex_m_footprint(files: dict[str, bytes], state_bytes: int) -> dict[str, Any]:
    """Flash and RAM of the model on a Cortex-M4, from `arm-none-eabi-size` of model.o and
    ncc_kernels.o: flash = text (code, weights, tables) + data; RAM = data + bss (the
    scratch arenas) + the state (ncc_ctx, which the caller allocates). Without the
    toolchain, {"not_measured": why}; the figures depend on the compiler version named."""
    missing = [t for t in (ARM_CC, ARM_SIZE) if shutil.which(t) is None]
    if missing:
        return {"not_measured": f"{' and '.join(missing)} not on PATH (Debian: "
                                "gcc-arm-none-eabi)"}
    try:
        with tempfile.TemporaryDirectory(prefix="ncc-m4-") as tmp:
            folder = Path(tmp)
            for name, data in files.items():
                (folder / name).write_bytes(data)
            objects = arm_sizes(arm_objects(folder, folder))
        version = run_tool([ARM_CC, "-dumpversion"]).strip()
    except (FootprintError, OSError, subprocess.TimeoutExpired) as e:
        return {"not_measured": f"cross-compilation failed: {e}"[:2000]}
    data = sum(o["data"] for o in objects.values())
    return {
        "flash_bytes": sum(o["text"] for o in objects.values()) + data,
        "ram_bytes": data + sum(o["bss"] for o in objects.values()) + state_bytes,
        "state_bytes": state_bytes,
        "objects": objects,
        "definition": "flash = text (code, weights, tables) + data; RAM = data + bss "
                      "(scratch) + state (ncc_ctx); the whole runtime counted, unused "
                      "kernels included",
        "compiler": f"{ARM_CC} {version}",
        "flags": " ".join(ARM_CPU_FLAGS + ARM_OPT_FLAGS),
    }
