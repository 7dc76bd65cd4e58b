"""`Evolution`: evosax ask/tell over integer genomes, scored by the JAX golden model.

One generation is one jitted function of (strategy state, generation number): the keys
come from `fold_in(seed, generation)`, so a run resumed from a checkpoint draws exactly
what the uninterrupted run drew. With several JAX devices the decoded population is
sharded over a `Mesh` axis "pop" for scoring, while the strategy's own arithmetic (ask,
tell) runs replicated: the float reductions of the update see the same operands in the
same order on any device count, so sharding changes no bit.

Fitness is maximized (evosax minimizes; the engine negates).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ncc.compiler.golden_jax import JaxGolden
from ncc.compiler.ir import Graph
from ncc.evolve.genome import Genome, select_parameters

STRATEGIES = ("sep_cma_es", "cma_es", "pgpe", "open_es", "snes")
CHECKPOINT_FORMAT = "ncc-evolve-1"

# (model, member constants, data) -> scalar fitness (higher is better), pure JAX
Fitness = Callable[[JaxGolden, dict[str, jax.Array], dict[str, jax.Array]], jax.Array]


@dataclass
class EvolveConfig:
    strategy: str = "sep_cma_es"
    population: int = 64
    generations: int = 50
    seed: int = 0
    sigma: float = 0.5  # initial step, in genome units (~ integer LSBs)
    checkpoint_dir: str | None = None
    checkpoint_every: int = 10
    devices: int | None = None  # None: every JAX device; the population axis is sharded
    chunk: int | None = None  # members scored at once per device (None: `default_chunk()`)
    progress: bool = True
    strategy_options: dict[str, Any] = field(default_factory=dict)


def classification(objective: str = "accuracy", activity: str | None = None,
                   activity_weight: float = 0.0, output: str | None = None) -> Fitness:
    """Fitness on data {"x": (N, T, F) int on the input grid, "y": (N,) labels}: the
    output's last step is the logits. objective "accuracy" (fraction correct, exactly what
    the runtime's argmax gives) or "loss" (minus the mean cross-entropy of the dequantized
    logits). activity: a tensor to penalize (e.g. a spike tensor): minus
    activity_weight * its mean over sequences, steps and units."""
    if objective not in ("accuracy", "loss"):
        raise ValueError(f"objective must be 'accuracy' or 'loss', not {objective!r}")

    def fitness(model: JaxGolden, consts: dict[str, jax.Array],
                data: dict[str, jax.Array]) -> jax.Array:
        g = model.graph
        out = output or next(n for n in g.outputs if g.roles[n] == "output")
        names = [out] + ([activity] if activity else [])
        trace = model.run_batch(consts, data["x"], data.get("dt"), outputs=names,
                                last=not activity)
        logits = trace[out] if not activity else trace[out][:, -1]
        logits = logits.reshape(logits.shape[0], -1)
        if objective == "accuracy":
            # count * fl32(1 / N): one IEEE float32 product, the same on every backend and
            # in `writeback.runtime_accuracy` (XLA's float division need not round
            # correctly)
            right = jnp.sum((jnp.argmax(logits, -1) == data["y"]).astype(jnp.int32))
            score = right.astype(jnp.float32) * jnp.float32(1.0 / logits.shape[0])
        else:
            q = g.tensors[out].quant
            z = (logits.astype(jnp.int32) - int(q.zero_point[0])).astype(jnp.float32) * float(
                q.scale[0])
            logp = jax.nn.log_softmax(z, -1)
            score = jnp.mean(jnp.take_along_axis(logp, data["y"][:, None], -1))
        if activity:
            score = score - activity_weight * jnp.mean(trace[activity].astype(jnp.float32))
        return score
    return fitness


def default_chunk() -> int | None:
    """Members a device scores at once: 4 on a CPU (on this shared 2-core host, 2x less wall
    time than the whole population at once, measured interleaved; the same CPU time), all
    of them (None) on an accelerator."""
    return 4 if jax.default_backend() == "cpu" else None


def score_population(fn: Callable[[dict[str, jax.Array], dict[str, jax.Array]], jax.Array],
                     consts: dict[str, jax.Array], data: dict[str, jax.Array], mesh: Mesh,
                     chunk: int | None = None) -> jax.Array:
    """fn(one member's constants, data) -> scalar, for each of the P members of `consts`
    (leading axis P, a multiple of the mesh size): the members split over the mesh axis
    "pop", each device scoring its own `chunk` at a time (`lax.map`; None: all at once),
    data replicated. Returns (P,). Jit it."""
    pop, rep = PartitionSpec("pop"), PartitionSpec()

    def local(c, d):
        one = lambda m: fn(m, d)  # noqa: E731
        n = jax.tree_util.tree_leaves(c)[0].shape[0]
        if chunk is None or chunk >= n:
            return jax.vmap(one)(c)
        return jax.lax.map(one, c, batch_size=chunk)
    # check_vma off: the golden model's scans start from replicated constant states
    return jax.shard_map(local, mesh=mesh, in_specs=(pop, rep), out_specs=pop,
                         check_vma=False)(consts, data)


def accuracy_count(g: Graph, consts: dict[str, np.ndarray],
                   data: dict[str, np.ndarray]) -> int:
    """How many sequences graph g with `consts` replacing its own classifies right (the
    integer behind "accuracy"), by the numpy golden model (the definition; no compile)."""
    from ncc.compiler.interpret import run_batch

    gi = g.replace(constants={**g.constants, **consts})
    out = next(n for n in g.outputs if g.roles[n] == "output")
    logits = run_batch(gi, np.asarray(data["x"]))[out][:, -1]
    return int(np.sum(np.argmax(logits.reshape(len(logits), -1), -1) == data["y"]))


def _strategy(name: str, population: int, genome: Genome, options: dict[str, Any]):
    from evosax import algorithms as al

    classes = {"sep_cma_es": al.Sep_CMA_ES, "cma_es": al.CMA_ES, "pgpe": al.PGPE,
               "open_es": al.Open_ES, "snes": al.SNES}
    if name not in classes:
        raise ValueError(f"unknown strategy {name!r}; choose from {STRATEGIES}")
    return classes[name](population_size=population, solution=jnp.zeros(genome.size),
                         **options)


class Evolution:
    """Evolve `parameters` (constant names; default: every FullyConnected weight and bias)
    of integer graph `g` to maximize `fitness` on `data` (arrays, placed on the devices
    once). `run()` returns the best genome found; `history` holds per generation the best
    and mean fitness and the best genome so far."""

    def __init__(self, g: Graph, data: dict[str, np.ndarray], fitness: Fitness | None = None,
                 parameters: list[str] | None = None, config: EvolveConfig | None = None,
                 limits: dict[str, tuple[int, int]] | None = None):
        self.config = config or EvolveConfig()
        cfg = self.config
        names = select_parameters(g) if parameters is None else list(parameters)
        self.genome = Genome(g, names, limits)
        self.model = JaxGolden(g, names, self.genome.limits)
        self.graph = g
        self.fitness = fitness or classification()
        self.strategy = _strategy(cfg.strategy, cfg.population, self.genome,
                                  cfg.strategy_options)
        self.params = self._strategy_params()
        devices = jax.devices()[: cfg.devices] if cfg.devices else jax.devices()
        if cfg.population % len(devices):
            raise ValueError(f"population {cfg.population} does not split over "
                             f"{len(devices)} devices; use a multiple of {len(devices)}")
        self.mesh = Mesh(np.array(devices), ("pop",))
        replicated = NamedSharding(self.mesh, PartitionSpec())
        self.data = {k: jax.device_put(jnp.asarray(v), replicated) for k, v in data.items()}
        # outputs pinned replicated, as `_place` puts the initial state: one compile
        self._generation = jax.jit(self._generation_fn, out_shardings=replicated)
        self.state = None
        self.generation = 0
        self.history: dict[str, list] = {"best": [], "mean": [], "best_genome": []}

    def _strategy_params(self):
        p = self.strategy.default_params
        fields = getattr(p, "__dataclass_fields__", {})
        if "std_init" in fields:
            p = p.replace(std_init=self.config.sigma)
        return p

    # --- one generation ---------------------------------------------------------------------
    def score(self, population: jax.Array) -> jax.Array:
        """Fitness of each genome of `population` (P, size), sharded over the mesh."""
        pop_sharded = NamedSharding(self.mesh, PartitionSpec("pop"))
        consts = jax.vmap(lambda genes: self.genome.decode(genes, jnp))(population)
        consts = jax.lax.with_sharding_constraint(consts, pop_sharded)
        chunk = default_chunk() if self.config.chunk is None else self.config.chunk
        f = score_population(lambda c, d: self.fitness(self.model, c, d), consts, self.data,
                             self.mesh, chunk)
        return jax.lax.with_sharding_constraint(f, NamedSharding(self.mesh, PartitionSpec()))

    def _generation_fn(self, state, generation):
        key = jax.random.fold_in(jax.random.key(self.config.seed), generation)
        k_ask, k_tell = jax.random.split(key)
        population, state = self.strategy.ask(k_ask, state, self.params)
        replicated = NamedSharding(self.mesh, PartitionSpec())
        population = jax.lax.with_sharding_constraint(population, replicated)
        f = self.score(population)
        state, _ = self.strategy.tell(k_tell, population, -f, state, self.params)
        return state, jnp.max(f), jnp.mean(f)

    def _place(self, state):
        """The strategy state replicated on the mesh, every leaf strongly typed (evosax's
        init leaves Python scalars, weakly typed): one compile for every generation."""
        state = jax.tree_util.tree_map(
            lambda x: x if _is_key(x) else np.asarray(jnp.asarray(x)), state)
        return jax.device_put(state, NamedSharding(self.mesh, PartitionSpec()))

    def init(self) -> None:
        key = jax.random.key(self.config.seed)
        state = self.strategy.init(key, jnp.asarray(self.genome.initial), self.params)
        self.state = self._place(state)
        self.generation = 0
        self.history = {"best": [], "mean": [], "best_genome": []}

    # --- driving ----------------------------------------------------------------------------
    def run(self, generations: int | None = None) -> np.ndarray:
        """Run until `generations` (default: config.generations) have been done in total;
        resumes from the config's checkpoint folder if it holds one."""
        cfg = self.config
        total = cfg.generations if generations is None else generations
        if self.state is None:
            if not (cfg.checkpoint_dir and self.load_checkpoint(cfg.checkpoint_dir)):
                self.init()
        bar = Progress(total, cfg.progress)
        while self.generation < total:
            t0 = time.perf_counter()
            self.state, best, mean = self._generation(self.state,
                                                      jnp.int32(self.generation))
            self.generation += 1
            self.history["best"].append(float(best))
            self.history["mean"].append(float(mean))
            self.history["best_genome"].append(np.asarray(self.state.best_solution))
            bar.update(self.generation, -float(self.state.best_fitness), float(best),
                       float(mean), time.perf_counter() - t0)
            if cfg.checkpoint_dir and (self.generation % cfg.checkpoint_every == 0
                                       or self.generation == total):
                self.save_checkpoint(cfg.checkpoint_dir)
        bar.close()
        return self.best_genome()

    def best_genome(self) -> np.ndarray:
        return np.asarray(self.state.best_solution)

    def best_fitness(self) -> float:
        return -float(self.state.best_fitness)

    def best_constants(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in self.genome.decode(self.best_genome()).items()}

    # --- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self, folder: str | Path) -> Path:
        """evolve.json (config, generation, fitness history) + evolve.npz (strategy state
        leaves, best genomes); written to temporary names, then renamed."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        leaves = jax.tree_util.tree_leaves(self.state)
        arrays = {f"state_{i}": np.asarray(jax.random.key_data(x) if _is_key(x) else x)
                  for i, x in enumerate(leaves)}
        arrays["best_genome"] = np.stack(self.history["best_genome"]) if \
            self.history["best_genome"] else np.zeros((0, self.genome.size), np.float32)
        meta = {"format": CHECKPOINT_FORMAT, "generation": self.generation,
                "config": {k: v for k, v in asdict(self.config).items()
                           if k not in ("checkpoint_dir", "progress", "devices", "chunk")},
                "parameters": self.genome.names, "genome_size": self.genome.size,
                "best": self.history["best"], "mean": self.history["mean"],
                "best_fitness": self.best_fitness()}
        tmp_npz = folder / ".evolve.npz.tmp"
        with open(tmp_npz, "wb") as fh:
            np.savez(fh, **arrays)
        tmp_json = folder / ".evolve.json.tmp"
        tmp_json.write_text(json.dumps(meta, indent=1))
        os.replace(tmp_npz, folder / "evolve.npz")
        os.replace(tmp_json, folder / "evolve.json")
        return folder

    def load_checkpoint(self, folder: str | Path) -> bool:
        """Restore from `folder` if it holds a checkpoint of this run (same strategy,
        population, parameters, seed); False if there is none; ValueError on a mismatch."""
        folder = Path(folder)
        if not (folder / "evolve.json").is_file():
            return False
        meta = json.loads((folder / "evolve.json").read_text())
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{folder}: not an ncc evolution checkpoint")
        mine = {k: v for k, v in asdict(self.config).items()
                if k not in ("checkpoint_dir", "progress", "devices", "chunk", "generations")}
        theirs = {k: v for k, v in meta["config"].items() if k != "generations"}
        if mine != theirs or meta["parameters"] != self.genome.names:
            raise ValueError(f"{folder}: checkpoint of a different run ({theirs}, "
                             f"parameters {meta['parameters']})")
        self.init()
        with np.load(folder / "evolve.npz", allow_pickle=False) as z:
            leaves, treedef = jax.tree_util.tree_flatten(self.state)
            restored = []
            for i, old in enumerate(leaves):
                value = z[f"state_{i}"]
                if _is_key(old):
                    restored.append(jax.random.wrap_key_data(jnp.asarray(value)))
                else:
                    if value.shape != np.shape(old):
                        raise ValueError(f"{folder}: state leaf {i} has shape {value.shape}, "
                                         f"expected {np.shape(old)}")
                    restored.append(jnp.asarray(value, dtype=jnp.asarray(old).dtype))
            self.state = self._place(jax.tree_util.tree_unflatten(treedef, restored))
            self.history = {"best": list(meta["best"]), "mean": list(meta["mean"]),
                            "best_genome": list(z["best_genome"])}
        self.generation = int(meta["generation"])
        return True


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


class Progress:
    """Best / mean fitness per generation on stderr: one rewritten line on a terminal, one
    line per generation otherwise."""

    def __init__(self, total: int, enabled: bool = True):
        self.total, self.enabled = total, enabled
        self.tty = enabled and sys.stderr.isatty()

    def update(self, gen: int, best_so_far: float, best: float, mean: float,
               seconds: float) -> None:
        if not self.enabled:
            return
        width = 20
        filled = width * gen // max(self.total, 1)
        line = (f"[{'#' * filled}{'.' * (width - filled)}] gen {gen}/{self.total} "
                f"best {best_so_far:.4f} (this gen {best:.4f}, mean {mean:.4f}) "
                f"{seconds:.2f}s")
        if self.tty:
            sys.stderr.write("\r" + line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
