"""Post-training quantization of spyx 1.0 neuron nets, every neuron type (issue 14, item 5).

Each net is `Sequential(Linear(8, 32), <neuron>((32,)), Linear(32, 4), LI((4,)))` at
spyx's random initialisation, driven by Bernoulli spike inputs (p = 0.2). ncc compiles it
(calibrated on other spike sequences of the same kind) and the golden model, which every
integer target computes bit for bit, is held to the traced float net:

- readout SQNR: 10 log10(sum y^2 / sum (y_q - y)^2) over every step of the LI readout;
- mean relative error: the mean over steps of |y_q - y|_2 / |y|_2 (steps where the float
  readout is zero are left out);
- spike recall and precision of the hidden layer: of the float net's spikes, the share
  the integer net also fires at the same step and neuron, and of the integer net's spikes,
  the share the float net fires.

Run: `python -m ncc.bench.spiking_ptq [--steps 500] [--out bench/results/spiking_ptq.json]`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

NEURONS = ("LIF", "CuBaLIF", "RLIF", "ALIF", "IF", "RIF", "RCuBaLIF")
FEATURES, HIDDEN, CLASSES = 8, 32, 4


def spyx_net(neuron: str, seed: int = 0) -> Any:
    """The random spyx net with hidden neuron type `neuron`."""
    import spyx.nn
    from flax import nnx

    keys = [nnx.Rngs(seed * 10 + i) for i in range(4)]
    return spyx.nn.Sequential(nnx.Linear(FEATURES, HIDDEN, rngs=keys[0]),
                              getattr(spyx.nn, neuron)((HIDDEN,), rngs=keys[1]),
                              nnx.Linear(HIDDEN, CLASSES, rngs=keys[2]),
                              spyx.nn.LI((CLASSES,), rngs=keys[3]))


def spike_inputs(n: int, steps: int, seed: int) -> np.ndarray:
    """Bernoulli(0.2) spikes, (n, steps, FEATURES) float32."""
    rng = np.random.default_rng(seed)
    return (rng.random((n, steps, FEATURES)) < 0.2).astype(np.float32)


def measure(neuron: str, precision: str, steps: int = 500,
            calibration_sequences: int = 16) -> dict[str, Any]:
    """Readout SQNR, mean relative error and spike recall/precision of one net."""
    from ncc.compiler.interpret import run_step
    from ncc.compiler.pipeline import quantize_graph, to_graph
    from ncc.compiler.quantize import QuantOptions
    from ncc.numerics import dequantize, quantize

    g = to_graph(spyx_net(neuron), (FEATURES,))
    calibration = {"x": spike_inputs(calibration_sequences, steps, seed=1)}
    q, reference = quantize_graph(g, calibration, QuantOptions(activations=precision))
    (x_name,) = q.by_role("input")
    (y_name,) = [n for n in q.outputs if q.roles[n] == "output"][:1]
    spikes = [op.output for op in q.ops if op.kind == "cast"
              and q.tensors[op.inputs[0]].dtype == "bool" and op.output in reference.tensors]
    xs = spike_inputs(1, steps, seed=2)[0]
    s_ref, s_int = dict(reference.initial_state), dict(q.initial_state)
    ys_ref, ys_int, fired_ref, fired_int = [], [], [], []
    for x in xs:
        x = x.reshape(q.tensors[x_name].shape)
        r = run_step(reference, {x_name: x, **s_ref}, every_tensor=True)
        i = run_step(q, {x_name: quantize(x, q.tensors[x_name].quant), **s_int},
                     every_tensor=True)
        ys_ref.append(np.asarray(r[y_name], np.float64).reshape(-1))
        ys_int.append(dequantize(i[y_name], q.tensors[y_name].quant).astype(np.float64)
                      .reshape(-1))
        fired_ref.append(np.concatenate([np.asarray(r[s]).reshape(-1) > 0.5 for s in spikes]))
        fired_int.append(np.concatenate([np.asarray(i[s]).reshape(-1) > 0 for s in spikes]))
        s_ref = {a: r[b] for a, b in reference.state_pairs}
        s_int = {a: i[b] for a, b in q.state_pairs}
    y, yq = np.stack(ys_ref), np.stack(ys_int)
    noise = float(np.sum((yq - y) ** 2))
    norms = np.linalg.norm(y, axis=1)
    live = norms > 0
    rel = np.linalg.norm(yq - y, axis=1)[live] / norms[live]
    f_ref, f_int = np.stack(fired_ref), np.stack(fired_int)
    both = float(np.sum(f_ref & f_int))
    return {"neuron": neuron, "precision": precision, "steps": steps,
            "activations": q.metadata.get("activations"),
            "readout_sqnr_db": (float("inf") if noise == 0 else
                                10 * float(np.log10(float(np.sum(y ** 2)) / noise))),
            "mean_relative_error": float(rel.mean()) if rel.size else 0.0,
            "spike_recall": both / max(float(f_ref.sum()), 1.0),
            "spike_precision": both / max(float(f_int.sum()), 1.0),
            "float_spikes": int(f_ref.sum()), "integer_spikes": int(f_int.sum())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--precision", nargs="+", default=["int8", "auto", "int16"])
    parser.add_argument("--neurons", nargs="+", default=list(NEURONS))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    rows = []
    for neuron in args.neurons:
        for precision in args.precision:
            row = measure(neuron, precision, args.steps)
            rows.append(row)
            print(f"{neuron:<9} {precision:<5} ({row['activations']:<5}) readout SQNR "
                  f"{row['readout_sqnr_db']:6.1f} dB, mean relative error "
                  f"{row['mean_relative_error']:7.2%}, spike recall {row['spike_recall']:.3f}"
                  f", precision {row['spike_precision']:.3f}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
