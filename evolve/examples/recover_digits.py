"""Example (a): recover the accuracy a CfC on AutoNCP loses to int8 post-training
quantization by evolving its deployed integer weights and biases, then ship the evolved
model to a device target and check the runtime's accuracy is the evolution's fitness.

    python -m ncc.evolve.examples.recover_digits [--units 32] [--epochs 20]
        [--population 64] [--generations 60] [--strategy sep_cma_es] [--target c]
        [--out /tmp/recover_digits] [--quick]

Steps: train ncc's Keras CfC on an AutoNCP wiring (10 motor neurons = logits) on the
bundled digits train split (Adam, as `bench/models.py` does); quantize it int8 (minmax,
calibrated on the train split); evolve every FullyConnected weight and bias in integer
space, fitness = accuracy on the train split scored by the JAX golden model; write the
best member back, lower it for `--target`, run it in the target's runtime on the same
sequences (its accuracy must equal the final fitness) and verify it bit for bit against
the golden model. Prints float / PTQ / evolved accuracy on the test split as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "jax")


def train_cfc_autoncp(task: dict[str, np.ndarray], units: int, epochs: int) -> Any:
    import keras

    from ncc.models.keras import CfC
    from ncc.models.wirings import AutoNCP

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((None, 8)),
                              CfC(AutoNCP(units, output_size=10, seed=0), backbone_layers=0)],
                             name=f"cfc{units}_autoncp")
    tr = task["train"]
    steps = task["x"].shape[1]
    y = np.repeat(task["y"][tr][:, None], steps, axis=1)
    weights = np.zeros(y.shape, np.float32)
    weights[:, -1] = 1.0  # scored on the last step
    model.compile(keras.optimizers.Adam(1e-2),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    if epochs:  # 0: the untrained model (smoke runs of the pipeline)
        model.fit(task["x"][tr], y, sample_weight=weights, batch_size=64, epochs=epochs,
                  verbose=0)
    return model


def main(units: int = 32, epochs: int = 20, population: int = 64, generations: int = 60,
         strategy: str = "sep_cma_es", target: str = "c", out: str | Path | None = None,
         sigma: float = 0.5, seed: int = 0, fit_sequences: int | None = None,
         checkpoint_every: int = 10, progress: bool = True) -> dict[str, Any]:
    import jax

    from ncc.compiler.pipeline import quantize_graph, to_graph
    from ncc.compiler.quantize import DEFAULT_OPTIONS
    from ncc.evolve.engine import Evolution, EvolveConfig, accuracy_count
    from ncc.evolve.models import digits, quantize_inputs
    from ncc.evolve.writeback import apply, runtime_accuracy, write_evolved_artifact
    from ncc.runtime.verify import verify_artifact

    t0 = time.perf_counter()
    out = Path(out or "/tmp/ncc_recover_digits")
    task = digits()
    tr, te = task["train"], task["test"]
    if fit_sequences:
        tr = tr[:fit_sequences]
    model = train_cfc_autoncp(task, units, epochs)
    logits = np.asarray(model.predict(task["x"][te], verbose=0))[:, -1]
    float_acc = float(np.mean(np.argmax(logits, -1) == task["y"][te]))
    g_float = to_graph(model, None)
    g, reference = quantize_graph(g_float, {"x": task["x"][task["train"]]}, DEFAULT_OPTIONS,
                                  None)
    fit_data = {"x": quantize_inputs(g, task["x"][tr]), "y": task["y"][tr].astype(np.int32)}
    test_data = {"x": quantize_inputs(g, task["x"][te]), "y": task["y"][te].astype(np.int32)}
    ptq_acc = accuracy_count(g, {}, test_data) / len(te)
    cfg = EvolveConfig(strategy=strategy, population=population, generations=generations,
                       seed=seed, sigma=sigma, checkpoint_dir=str(out / "checkpoint"),
                       checkpoint_every=checkpoint_every, progress=progress)
    ev = Evolution(g, fit_data, config=cfg)
    t_evolve = time.perf_counter()
    prep_s = t_evolve - t0
    ev.run()
    evolve_s = time.perf_counter() - t_evolve
    evolved = apply(g, ev.best_constants())
    test_acc = accuracy_count(evolved, {}, test_data) / len(te)
    art = write_evolved_artifact(evolved, target, out / f"evolved.{target}", reference=reference,
                                 source={"source": "ncc.evolve.examples.recover_digits"})
    correct, runtime_fit = runtime_accuracy(art, fit_data["x"], fit_data["y"])
    report = verify_artifact(art, data={"x": task["x"][te][:8]})
    result = {
        "model": f"CfC{units} AutoNCP, {epochs} epochs", "strategy": strategy,
        "population": population, "generations": generations,
        "parameters": ev.genome.names, "genes": ev.genome.size,
        "test_accuracy": {"float": float_acc, "int8_ptq": ptq_acc, "int8_evolved": test_acc},
        "fit_sequences": len(tr),
        "fitness": {"initial": accuracy_count(g, {}, fit_data) / len(tr),
                    "final": ev.best_fitness()},
        "target": target, "artifact": str(art),
        "runtime_fitness": runtime_fit, "runtime_correct": correct,
        "runtime_equals_fitness": runtime_fit == ev.best_fitness(),
        "verified_bit_exact": bool(report["passed"]),
        "prepare_s": prep_s, "evolve_s": evolve_s, "total_s": time.perf_counter() - t0,
        "jax_devices": [str(d) for d in jax.devices()],
    }
    return result


def cli(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--units", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--population", type=int, default=64)
    ap.add_argument("--generations", type=int, default=60)
    ap.add_argument("--strategy", default="sep_cma_es")
    ap.add_argument("--target", default="c")
    ap.add_argument("--sigma", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: CfC16, 2 epochs, population 8, 3 generations")
    a = ap.parse_args(argv)
    kw = dict(units=a.units, epochs=a.epochs, population=a.population,
              generations=a.generations, strategy=a.strategy, target=a.target, out=a.out,
              sigma=a.sigma, seed=a.seed)
    if a.quick:
        kw.update(units=16, epochs=2, population=8, generations=3, fit_sequences=128)
    print(json.dumps(main(**kw), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
