"""Integer-space evolution (`ncc.evolve`): genome decoding on the integer grid, checkpoints
that resume the same run, the sharded population path bit-identical to one device, and
write-back to the c and tflite-int8 targets whose runtime accuracy equals the fitness."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ncc.evolve.engine import Evolution, EvolveConfig, classification  # noqa: E402
from ncc.evolve.genome import Genome, select_parameters  # noqa: E402
from ncc.evolve.models import bundled_integer_graph, digits, quantize_inputs  # noqa: E402

PARAMS = ["w3_q", "t31_bias", "t18_threshold"]  # the LIF readout, its bias, the threshold


@pytest.fixture(scope="module")
def lif():
    return bundled_integer_graph("lif", calibration=64)


@pytest.fixture(scope="module")
def data(lif):
    task = digits()
    idx = task["test"][:48]
    return {"x": quantize_inputs(lif, task["x"][idx]), "y": task["y"][idx].astype(np.int32)}


def test_selection_and_genome_decode_stay_on_the_grid(lif):
    assert select_parameters(lif) == ["w1_q", "t7_bias", "w3_q", "t31_bias"]
    assert select_parameters(lif, ["thresholds"]) == ["t18_threshold"]
    genome = Genome(lif, PARAMS)
    back = genome.decode(genome.initial)
    for name in PARAMS:  # the graph's own values encode and decode exactly
        np.testing.assert_array_equal(back[name], lif.constants[name])
    wild = np.random.default_rng(0).standard_normal(genome.size).astype(np.float32) * 1e6
    for name, v in genome.decode(wild).items():
        lo, hi = genome.limits[name]
        assert v.dtype == lif.constants[name].dtype and v.min() >= lo and v.max() <= hi
    assert genome.limits["w3_q"] == (-127, 127)


def _config(tmp=None, **kw):
    base = {"population": 8, "generations": 6, "seed": 3, "progress": False,
            "checkpoint_dir": None if tmp is None else str(tmp), "checkpoint_every": 3}
    return EvolveConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def evolution(lif, data, tmp_path_factory):
    """6 generations, checkpoints every 3; a copy of the generation-3 checkpoint kept."""
    import shutil

    folder = tmp_path_factory.mktemp("ckpt")
    ev = Evolution(lif, data, parameters=PARAMS, config=_config(folder / "run"))
    ev.run(3)
    shutil.copytree(folder / "run", folder / "at3")
    ev.run(6)
    return ev, folder


def test_resume_from_checkpoint_continues_the_same_run(evolution, lif, data):
    ev, folder = evolution
    assert (folder / "at3" / "evolve.json").is_file() and (folder / "at3" / "evolve.npz").is_file()
    whole_best = list(ev.history["best"])
    whole_genomes = np.stack(ev.history["best_genome"])
    ev.state, ev.config.checkpoint_dir = None, str(folder / "at3")  # a fresh start, from disk
    ev.run()
    assert ev.generation == 6 and ev.history["best"] == whole_best
    np.testing.assert_array_equal(np.stack(ev.history["best_genome"]), whole_genomes)
    other = Evolution(lif, data, parameters=PARAMS[:1], config=_config(folder / "at3"))
    with pytest.raises(ValueError, match="different run"):
        other.load_checkpoint(folder / "at3")


def test_pgpe_with_a_spike_penalty_runs(lif, data):
    fit = classification("loss", activity="t24", activity_weight=0.1)
    small = {k: v[:16] for k, v in data.items()}
    ev = Evolution(lif, small, fit, parameters=["w3_q"],
                   config=_config(strategy="pgpe", generations=2))
    ev.run()
    assert len(ev.history["best"]) == 2 and np.isfinite(ev.best_fitness())


SHARDED = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from ncc.evolve.engine import Evolution, EvolveConfig
    from ncc.evolve.models import digits, quantize_inputs
    assert len(jax.devices()) == 4, jax.devices()
    from ncc.compiler.serialize import load_graph
    g = load_graph(sys.argv[1])
    task = digits(); idx = task["test"][:16]
    data = {"x": quantize_inputs(g, task["x"][idx]), "y": task["y"][idx].astype(np.int32)}
    runs = {}
    for n in (1, 4):
        cfg = EvolveConfig(population=8, generations=2, seed=1, devices=n, progress=False)
        ev = Evolution(g, data, parameters=["w3_q", "t31_bias"], config=cfg)
        ev.run()
        runs[n] = (ev.history["best"], np.stack(ev.history["best_genome"]).tolist())
    print(json.dumps({"same": runs[1] == runs[4], "best": runs[4][0]}))
""")


def test_sharded_population_over_4_cpu_devices_is_bit_identical(lif, tmp_path):
    from ncc.compiler.serialize import save_graph

    save_graph(lif, tmp_path / "lif")
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", SHARDED, str(tmp_path / "lif")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = __import__("json").loads(done.stdout.strip().splitlines()[-1])
    assert result["same"], result


@pytest.mark.parametrize("target", ["c", "tflite-int8"])
def test_evolved_artifact_accuracy_in_the_runtime_equals_the_fitness(evolution, lif, data,
                                                                     tmp_path, target):
    from ncc.evolve.models import bundled_reference_graph
    from ncc.evolve.writeback import apply, runtime_accuracy, write_evolved_artifact
    from ncc.runtime.verify import verify_artifact

    ev, _ = evolution
    evolved = apply(lif, ev.best_constants())
    assert evolved.metadata["evolved"] == sorted(PARAMS)
    out = write_evolved_artifact(evolved, target, tmp_path / f"lif.{target}",
                                 reference=bundled_reference_graph("lif", 64))
    correct, accuracy = runtime_accuracy(out, data["x"], data["y"])
    assert accuracy == ev.best_fitness(), (correct, ev.best_fitness())
    report = verify_artifact(out, data={"x": digits()["x"][digits()["test"][:4]]})
    assert report["passed"], report["golden"]


def test_chunked_population_scores_equal_numpy_accuracy(lif, data):
    """3 members 2 at a time: one lax.map chunk and a remainder (all at once: the sharded
    test below, 2 members per device)."""
    import jax
    from jax.sharding import Mesh

    from ncc.compiler.golden_jax import JaxGolden
    from ncc.evolve.engine import accuracy_count, score_population

    model = JaxGolden(lif, ["w3_q"])
    w = lif.constants["w3_q"].astype(np.int64)
    rng = np.random.default_rng(0)
    pop = np.stack([np.clip(w + rng.integers(-9, 10, w.shape), -127, 127)
                    for _ in range(3)]).astype(np.int8)
    small = {k: v[:16] for k, v in data.items()}
    fit = classification()
    mesh = Mesh(np.array(jax.devices()[:1]), ("pop",))
    got = jax.jit(lambda c: score_population(lambda m, d: fit(model, m, d), c, small, mesh,
                                             2))({"w3_q": pop})
    want = [accuracy_count(lif, {"w3_q": p}, small) / 16 for p in pop]
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-7)
    assert len(set(want)) > 1  # the members differ, so a mixed-up order would show
