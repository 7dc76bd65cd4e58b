"""Measure a wired CfC with a backbone on digits: AutoNCP(32, 10 motor, sparsity 0.5) behind
a [64, 32] backbone (issue 18). Trains with `bench.models.train_keras` (Adam 1e-2, batch 64),
prints float test accuracy, then compiles to c (post-training int8, calibrated on 64 train
sequences) and prints the test accuracy of the golden integer model and of the C artifact
run through ctypes (with how many of its outputs equal golden), and its sparse layers.

    nice -n 10 python -m ncc.bench.wired_backbone_digits [EPOCHS] [OUT_DIR]
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")


def main(argv: list[str]) -> int:
    import keras
    import numpy as np

    from ncc.bench.models import digits, train_keras
    from ncc.compiler.artifact import load_artifact_graph, read_manifest
    from ncc.compiler.interpret import run_batch
    from ncc.models.keras import CfC
    from ncc.models.wirings import AutoNCP
    from ncc.numerics import quantize
    from ncc.runtime.session import open_session
    from ncc.targets.pipeline import build_artifact

    epochs = int(argv[0]) if argv else 20
    out = argv[1] if len(argv) > 1 else "wired_backbone_c"
    task = digits()
    keras.utils.set_random_seed(0)
    wiring = AutoNCP(units=32, output_size=10, sparsity_level=0.5, seed=0)
    model = keras.Sequential([keras.Input((None, 8)),
                              CfC(wiring, backbone_units=[64, 32], backbone_layers=2)],
                             name="cfc32_autoncp_backbone")
    start = time.perf_counter()
    train_keras(model, task, epochs)
    seconds = time.perf_counter() - start
    te, tr = task["test"], task["train"]
    logits = np.asarray(model.predict(task["x"][te], verbose=0))[:, -1]
    float_acc = float(np.mean(logits.argmax(-1) == task["y"][te]))
    print(f"float test accuracy {float_acc:.4f} ({len(te)} sequences, {epochs} epochs, "
          f"{seconds:.0f} s)")
    build_artifact(model, "c", out, calibration={"x": task["x"][tr][:64]})
    g = load_artifact_graph(out)
    (x_name,), (y_name,) = g.by_role("input"), g.by_role("output")
    xq = quantize(task["x"][te].astype(np.float32), g.tensors[x_name].quant)
    y = run_batch(g, xq)[y_name][:, -1].reshape(len(te), -1)
    int_acc = float(np.mean(y.argmax(-1) == task["y"][te]))
    session = open_session(out)  # the C artifact itself, built by the system compiler
    c_y = np.stack([session.run(xq[i][:, None])[y_name][-1].reshape(-1)
                    for i in range(len(te))])
    same = float(np.mean(c_y == y))
    details = read_manifest(out)["details"]
    print(f"int8 golden test accuracy {int_acc:.4f}; C artifact: "
          f"{float(np.mean(c_y.argmax(-1) == task['y'][te])):.4f}, "
          f"{same:.1%} of its last-step outputs identical to golden")
    print(f"sparse layers in C: {details['sparse_layers']}; MACs/step "
          f"{details['macs_per_step']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
