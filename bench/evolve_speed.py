"""Population scoring speed: the JAX golden model (`ncc.compiler.golden_jax`) vs the numpy
golden loop, in member-steps per second (one member running one sequence for one step).

    python -m ncc.bench.evolve_speed [--model cfc] [--populations 256,1024,4096]
                                     [--devices N] [--host-devices N] [--chunk N]
                                     [--out PATH]

Both score the same members on the same data: the bundled model quantized int8, the
digits test split (360 sequences of 8 steps), each member the model with its
FullyConnected weights perturbed by +-1 LSB. The numpy figure is `interpret.run_batch`
(rebatched, one member at a time, as an evolution loop without JAX would run);
the JAX figure is one jitted call scoring the whole population (fitness = accuracy), the
population axis sharded over `--devices` devices (default: all), each device scoring
`--chunk` members at a time (`ncc.evolve.engine.score_population`). The numpy loop is
timed again between the JAX repeats and each ratio uses the numpy time measured there.
`--host-devices N` fakes N CPU devices (XLA_FLAGS) to exercise the sharded path on a CPU.
The JSON goes to bench/results/evolve_speed_<platform>.json unless --out says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="cfc", choices=["cfc", "lif"])
    ap.add_argument("--ir", help="an artifact folder of the model to score instead of "
                    "quantizing the bundled one here (its ir.json/ir.npz: no Keras needed)")
    ap.add_argument("--populations", default="256,1024,4096")
    ap.add_argument("--devices", type=int, default=None)
    ap.add_argument("--host-devices", type=int, default=None)
    ap.add_argument("--numpy-members", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=None,
                    help="members each device scores at once (0: all; default: "
                    "ncc.evolve.engine.default_chunk())")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.host_devices:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={args.host_devices}")

    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from ncc.compiler.golden_jax import JaxGolden
    from ncc.compiler.interpret import run_batch
    from ncc.evolve.engine import classification, default_chunk, score_population
    from ncc.evolve.genome import select_parameters
    from ncc.evolve.models import bundled_integer_graph, digits, quantize_inputs

    if args.ir:
        from ncc.compiler.artifact import load_artifact_graph

        g = load_artifact_graph(args.ir)
    else:
        g = bundled_integer_graph(args.model)
    task = digits()
    te = task["test"]
    xq = quantize_inputs(g, task["x"][te])
    y = task["y"][te].astype(np.int32)
    n_seq, steps = xq.shape[:2]
    names = [n for n in select_parameters(g, ["weights"])]
    model = JaxGolden(g, names)
    base = model.member_constants()
    rng = np.random.default_rng(0)

    def members(p: int) -> dict[str, np.ndarray]:
        return {k: np.clip(v[None].astype(np.int16) + rng.integers(-1, 2, (p, *v.shape)),
                           -127, 127).astype(v.dtype) for k, v in base.items()}

    # numpy golden: one member at a time
    (out_name,) = [n for n in g.outputs if g.roles[n] == "output"]
    pop_np = members(args.numpy_members)

    def numpy_member(i: int) -> tuple[float, float, float]:
        """(accuracy, wall seconds, process CPU seconds) of numpy member i."""
        t0, c0 = time.perf_counter(), time.process_time()
        gi = g.replace(constants={**g.constants, **{k: v[i] for k, v in pop_np.items()}})
        logits = run_batch(gi, xq)[out_name][:, -1].reshape(n_seq, -1)
        return (float(np.mean(np.argmax(logits, -1) == y)), time.perf_counter() - t0,
                time.process_time() - c0)

    first = [numpy_member(i) for i in range(args.numpy_members)]
    acc_np = [a for a, _, _ in first]
    numpy_times = [t for _, t, _ in first]
    load_start = os.getloadavg()[0]

    devices = jax.devices()[: args.devices] if args.devices else jax.devices()
    mesh = Mesh(np.array(devices), ("pop",))
    fit = classification()
    data = {"x": jax.device_put(jnp.asarray(xq), NamedSharding(mesh, PartitionSpec())),
            "y": jax.device_put(jnp.asarray(y), NamedSharding(mesh, PartitionSpec()))}

    chunk = default_chunk() if args.chunk is None else (args.chunk or None)

    @jax.jit
    def score(consts):
        return score_population(lambda c, d: fit(model, c, d), consts, data, mesh, chunk)

    # the JAX scores of the numpy members must be the numpy accuracies
    check = np.asarray(score({k: jnp.asarray(v) for k, v in pop_np.items()}))
    assert np.allclose(check, acc_np), (check, acc_np)
    results = []
    for p in [int(s) for s in args.populations.split(",")]:
        p -= p % len(devices)
        pop = jax.device_put({k: jnp.asarray(v) for k, v in members(p).items()},
                             NamedSharding(mesh, PartitionSpec("pop")))
        t0 = time.perf_counter()
        jax.block_until_ready(score(pop))
        compile_s = time.perf_counter() - t0
        times, near, cpu, near_cpu = [], [], [], []
        for r in range(args.repeats):  # interleaved: the load on a shared host drifts
            _, wall, cpu_s = numpy_member(r % args.numpy_members)
            near.append(wall)
            near_cpu.append(cpu_s)
            t0, c0 = time.perf_counter(), time.process_time()
            jax.block_until_ready(score(pop))
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        numpy_times += near
        best, numpy_near = min(times), min(near)
        # CPU seconds (all threads): what each side costs, whatever share of the
        # cores the other processes on the host leave it
        cpu_ratio = min(near_cpu) * p / min(cpu)
        rate = p * n_seq * steps / best
        numpy_rate = n_seq * steps / numpy_near
        results.append({"population": p, "seconds_per_population": best,
                        "first_call_s": compile_s, "member_steps_per_s": rate,
                        "numpy_seconds_per_member": numpy_near,
                        "numpy_member_steps_per_s": numpy_rate,
                        "ratio_vs_numpy": rate / numpy_rate,
                        "cpu_seconds_per_population": min(cpu),
                        "numpy_cpu_seconds_per_member": min(near_cpu),
                        "cpu_time_ratio_vs_numpy": cpu_ratio})
        print(f"population {p}: {best:.3f} s, {rate:,.0f} member-steps/s, numpy "
              f"{numpy_near:.4f} s/member: {rate / numpy_rate:.0f}x (CPU time: "
              f"{cpu_ratio:.0f}x)", file=sys.stderr)
    numpy_s = min(numpy_times)
    plat = devices[0].platform
    report = {
        "model": f"bundled {args.model}, int8 PTQ", "data": f"digits test, {n_seq} x {steps}",
        "evolved": names, "platform": plat, "device_kind": devices[0].device_kind,
        "devices": len(devices), "host": platform.node() and platform.machine(),
        "cpu_count": os.cpu_count(), "jax_version": jax.__version__,
        "chunk": chunk, "numpy_seconds_per_member": numpy_s,
        "numpy_member_steps_per_s": n_seq * steps / numpy_s,
        "load_average_1min": [load_start, os.getloadavg()[0]],
        "note": "best of repeats; each population's ratio is against the numpy loop timed "
                "between its own repeats (same load); cpu_time_ratio: process CPU seconds "
                "(all threads) per member, numpy over JAX",
        "jax": results,
    }
    out = Path(args.out) if args.out else (Path(__file__).resolve().parent / "results" /
                                           f"evolve_speed_{plat}.json")
    if args.out is None and len(devices) > 1:
        out = out.with_name(f"evolve_speed_{plat}_x{len(devices)}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
