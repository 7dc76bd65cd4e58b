"""The C runtime under hostile input: every bench model's architecture, at int8 and in the
16x8 mode, compiled to `c` and fed STEPS random integer steps (whole input range, both
rails) under AddressSanitizer + UndefinedBehaviorSanitizer (`ncc.runtime.c_fuzz`).

    python -m ncc.bench.fuzz_c [--steps 1000000] [-o bench/results]

Weights are the architectures' seeded initial ones (training changes values, not code
paths). Writes fuzz_c.json and prints one line per model: steps, seconds, reports.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "jax")


def _keras_cfc(units: int, autoncp: bool, dt: bool = False) -> Callable[[], Any]:
    def make() -> Any:
        import keras

        from ncc.models.keras import CfC
        from ncc.models.wirings import AutoNCP, FullyConnected

        keras.utils.set_random_seed(0)
        wiring = AutoNCP(units, output_size=10, seed=0) if autoncp else FullyConnected(units)
        if dt:
            x_in, dt_in = keras.Input((None, 8)), keras.Input((None,))
            y = keras.layers.Dense(10)(CfC(units)([x_in, dt_in]))
            return keras.Model([x_in, dt_in], y)
        layers = [keras.Input((None, 8)), CfC(wiring, backbone_layers=0)]
        return keras.Sequential(layers + ([] if autoncp else [keras.layers.Dense(10)]))
    return make


def _ltc_autoncp(units: int) -> Callable[[], Any]:
    def make() -> Any:
        import keras

        from ncc.models.keras import LTC
        from ncc.models.wirings import AutoNCP

        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((None, 8)), LTC(AutoNCP(units, 10, seed=0))])
    return make


def _cuba_lif(hidden: int) -> Callable[[], Any]:
    def make() -> Any:
        import spyx.nn
        from flax import nnx

        return spyx.nn.Sequential(
            nnx.Linear(8, hidden, rngs=nnx.Rngs(0)),
            spyx.nn.CuBaLIF((hidden,), alpha=0.7, beta=0.8, rngs=nnx.Rngs(1)),
            nnx.Linear(hidden, 10, rngs=nnx.Rngs(2)),
            spyx.nn.LI((10,), beta=0.9, rngs=nnx.Rngs(3)),
        )
    return make


def _bundled(name: str) -> Callable[[], Any]:
    def make() -> Any:
        from ncc.models.zoo import bundled_dir

        return str(bundled_dir() / name)
    return make


def _zoo_cfc() -> Any:
    from ncc.models import zoo

    return zoo.cfc(units=32, backbone_units=16)


MODELS: dict[str, Callable[[], Any]] = {
    "cfc16 (bundled)": _bundled("cfc_digits.ckpt"),
    "lif64 (bundled)": _bundled("lif_digits.ckpt"),
    "cfc32 fully connected, backbone 16": _zoo_cfc,
    "cfc64 fully connected, no backbone": _keras_cfc(64, autoncp=False),
    "cfc64 AutoNCP": _keras_cfc(64, autoncp=True),
    "cfc32 AutoNCP": _keras_cfc(32, autoncp=True),
    "ltc32 AutoNCP": _ltc_autoncp(32),
    "cuba-lif64 (spyx)": _cuba_lif(64),
    "cfc16 with dt": _keras_cfc(16, autoncp=False, dt=True),
}


def main(argv: list[str] | None = None) -> int:
    from ncc.compiler.quantize import QuantOptions
    from ncc.runtime.c_fuzz import fuzz
    from ncc.targets.pipeline import build_artifact

    p = argparse.ArgumentParser(prog="python -m ncc.bench.fuzz_c", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1_000_000)
    p.add_argument("--only", help="models whose name contains this")
    p.add_argument("-o", "--output", default="bench/results")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ncc-fuzz-art-") as tmp:
        for name, make in MODELS.items():
            if args.only and args.only not in name:
                continue
            dt = "dt" in name
            calib = {"x": rng.standard_normal((4, 32, 8)).astype(np.float32)}
            if dt:
                calib["dt"] = rng.uniform(0.5, 2.0, (4, 32)).astype(np.float32)
            for activations in ("int8", "int16"):
                out = Path(tmp) / f"{len(rows)}"
                build_artifact(make(), "c", out, calibration=calib,
                               options=QuantOptions(activations=activations))
                result = fuzz(out, args.steps, seed=len(rows))
                row = {"model": name, "activations": activations,
                       **{k: result[k] for k in ("steps", "seconds", "reports")}}
                rows.append(row)
                print(f"{name:<36} {activations:<5} {row['steps']:>9,} steps "
                      f"{row['seconds']:8.1f} s  sanitizer reports: {row['reports']}",
                      flush=True)
                if result["reports"]:
                    print(result["stderr"], file=sys.stderr)
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "fuzz_c.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if not any(r["reports"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
