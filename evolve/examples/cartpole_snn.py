"""Example (b): a small spiking controller evolved from scratch on cart-pole, in integer
space, then compiled to C and run on a Cortex-M4 under QEMU with the same return.

    python -m ncc.evolve.examples.cartpole_snn [--hidden 16] [--population 128]
        [--generations 300] [--episodes 4] [--steps 200] [--out /tmp/cartpole] [--quick]

The controller is spyx Linear-LIF-Linear-LI (4 observations -> 2 action logits), left at
its random initialization and quantized int8 (calibrated on random observations): every
FullyConnected weight and bias and the spiking threshold are then evolved. The task is the
classic cart-pole (Barto, Sutton & Anderson; the constants of Gym's CartPole-v1) written in
a few lines of JAX, its loop a `lax.scan` around the JAX golden model's step: observation
/ its scale -> the input grid -> one integer step -> action = argmax of the logits.
Return = steps before the pole falls (|theta| > 12 deg) or the cart leaves |x| <= 2.4, at
most `steps`, averaged over `episodes` fixed initial states.

Reproduction on the device: the best controller is compiled to C (target c) and the
integer observations of each episode are replayed on the emulated Cortex-M4
(`ncc.runtime.cortex_m`); its action at every step equals the golden model's, hence the
same trajectory and the same return (re-simulated from the M4's actions).
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

OBS_SCALE = np.array([2.4, 3.0, 0.21, 3.0], np.float32)
TAU, G, M_CART, M_POLE, HALF_LEN, FORCE = 0.02, 9.8, 1.0, 0.1, 0.5, 10.0


def cartpole_step(s, action):
    """One Euler step of cart-pole (float32, JAX); s = (x, x_dot, theta, theta_dot)."""
    import jax.numpy as jnp

    x, x_dot, th, th_dot = s[0], s[1], s[2], s[3]
    force = jnp.where(action == 1, FORCE, -FORCE).astype(jnp.float32)
    cos, sin = jnp.cos(th), jnp.sin(th)
    total, pml = M_CART + M_POLE, M_POLE * HALF_LEN
    temp = (force + pml * th_dot * th_dot * sin) / total
    th_acc = (G * sin - cos * temp) / (HALF_LEN * (4.0 / 3.0 - M_POLE * cos * cos / total))
    x_acc = temp - pml * th_acc * cos / total
    return jnp.stack([x + TAU * x_dot, x_dot + TAU * x_acc, th + TAU * th_dot,
                      th_dot + TAU * th_acc])


def failed(s):
    import jax.numpy as jnp

    return (jnp.abs(s[0]) > 2.4) | (jnp.abs(s[2]) > 12 * np.pi / 180)


def controller_graph(hidden: int, seed: int = 0):
    """The untrained spiking controller as an int8 integer graph (and its float graph)."""
    import spyx.nn
    from flax import nnx

    from ncc.compiler.pipeline import quantize_graph, to_graph
    from ncc.compiler.quantize import DEFAULT_OPTIONS

    net = spyx.nn.Sequential(
        nnx.Linear(4, hidden, rngs=nnx.Rngs(seed)),
        spyx.nn.LIF((hidden,), beta=0.8, rngs=nnx.Rngs(seed + 1)),
        nnx.Linear(hidden, 2, rngs=nnx.Rngs(seed + 2)),
        spyx.nn.LI((2,), beta=0.9, rngs=nnx.Rngs(seed + 3)),
    )
    g = to_graph(net, None)
    rng = np.random.default_rng(seed)
    cal = {"x": rng.uniform(-1, 1, (64, 20, 4)).astype(np.float32)}
    return quantize_graph(g, cal, DEFAULT_OPTIONS, None)


def initial_states(episodes: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed + 1000).uniform(-0.05, 0.05, (episodes, 4)).astype(
        np.float32)


def make_rollout(model, steps: int):
    """(member constants, initial state) -> (return, integer observations (T, 4), actions
    (T,)): the closed loop as one `lax.scan`."""
    import jax
    import jax.numpy as jnp

    from ncc.models.quantization.integer_jax import quantize_jax

    g = model.graph
    (x_name,) = g.by_role("input")
    p_in = g.tensors[x_name].quant
    (y_name,) = [n for n in g.outputs if g.roles[n] == "output"]

    def rollout(consts, s0):
        def body(carry, _):
            s, net, alive, ret = carry
            xq = quantize_jax(s / jnp.asarray(OBS_SCALE), p_in).astype(jnp.int8)
            out = model.step(consts, {x_name: xq.reshape(g.tensors[x_name].shape), **net})
            action = jnp.argmax(out[y_name].reshape(-1)).astype(jnp.int32)
            net = {s_in: out[s_out] for s_in, s_out in g.state_pairs}
            s = cartpole_step(s, action)
            alive = alive & ~failed(s)
            return (s, net, alive, ret + alive.astype(jnp.int32)), (xq, action)

        carry = (s0, model.initial_state(), jnp.bool_(True), jnp.int32(0))
        (_, _, _, ret), (xs, actions) = jax.lax.scan(body, carry, None, length=steps)
        return ret, xs, actions
    return rollout


def replay_return(actions: np.ndarray, s0: np.ndarray) -> int:
    """The return of an action sequence from s0 (the same float32 dynamics, eagerly)."""
    import jax.numpy as jnp

    s, ret = jnp.asarray(s0), 0
    for a in actions:
        s = cartpole_step(s, jnp.int32(a))
        if bool(failed(s)):
            break
        ret += 1
    return ret


def main(hidden: int = 16, population: int = 128, generations: int = 300, episodes: int = 4,
         steps: int = 200, strategy: str = "sep_cma_es", sigma: float = 4.0, seed: int = 0,
         out: str | Path | None = None, device_episodes: int = 1,
         progress: bool = True) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp

    from ncc.evolve.engine import Evolution, EvolveConfig
    from ncc.evolve.genome import select_parameters
    from ncc.evolve.writeback import apply, write_evolved_artifact

    t0 = time.perf_counter()
    out = Path(out or "/tmp/ncc_cartpole")
    g, reference = controller_graph(hidden, seed)
    s0 = initial_states(episodes, seed)
    params = select_parameters(g, ["weights", "biases", "thresholds"])
    data = {"s0": s0}

    def fitness(model, consts, data):
        rollout = make_rollout(model, steps)
        rets, _, _ = jax.vmap(lambda s: rollout(consts, s))(data["s0"])
        return jnp.mean(rets.astype(jnp.float32))

    cfg = EvolveConfig(strategy=strategy, population=population, generations=generations,
                       seed=seed, sigma=sigma, progress=progress)
    ev = Evolution(g, data, fitness, parameters=params, config=cfg)
    ev.run()
    evolved = apply(g, ev.best_constants())
    from ncc.compiler.golden_jax import JaxGolden

    model = JaxGolden(evolved)
    rollout = jax.jit(make_rollout(model, steps))
    episodes_out = []
    for i in range(episodes):
        ret, xs, actions = rollout({}, jnp.asarray(s0[i]))
        episodes_out.append((int(ret), np.asarray(xs), np.asarray(actions)))
    art = write_evolved_artifact(evolved, "c", out / "controller.c", reference=reference,
                                 source={"source": "ncc.evolve.examples.cartpole_snn"})
    result: dict[str, Any] = {
        "controller": f"spyx Linear-LIF({hidden})-Linear-LI, int8, evolved from its random "
                      "initialization", "strategy": strategy, "population": population,
        "generations": generations, "genes": ev.genome.size, "episodes": episodes,
        "max_steps": steps, "returns": [r for r, _, _ in episodes_out],
        "mean_return": float(np.mean([r for r, _, _ in episodes_out])),
        "final_fitness": ev.best_fitness(), "artifact": str(art)}
    from ncc.runtime import cortex_m

    missing = cortex_m.missing_tools()
    if missing:
        result["cortex_m4"] = f"skipped: no {', '.join(missing)} on PATH"
    else:
        (y_name,) = [n for n in evolved.outputs if evolved.roles[n] == "output"]
        m4 = []
        for i in range(min(device_episodes, episodes)):
            ret, xs, actions = episodes_out[i]
            trace = cortex_m.run(art, xs.reshape(len(xs), 1, 4))
            m4_actions = np.argmax(trace[y_name].reshape(len(xs), -1), -1)
            m4.append({"episode": i, "golden_return": ret,
                       "actions_identical": bool(np.array_equal(m4_actions, actions)),
                       "m4_return": replay_return(m4_actions, s0[i])})
        result["cortex_m4"] = m4
    result["total_s"] = time.perf_counter() - t0
    return result


def cli(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--population", type=int, default=128)
    ap.add_argument("--generations", type=int, default=300)
    ap.add_argument("--episodes", type=int, default=4)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--strategy", default="sep_cma_es")
    ap.add_argument("--sigma", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device-episodes", type=int, default=4,
                    help="episodes replayed on the Cortex-M4 (default 4)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: population 8, 2 generations, 2 episodes of 50 steps")
    a = ap.parse_args(argv)
    kw = dict(hidden=a.hidden, population=a.population, generations=a.generations,
              episodes=a.episodes, steps=a.steps, strategy=a.strategy, sigma=a.sigma,
              seed=a.seed, out=a.out, device_episodes=a.device_episodes)
    if a.quick:
        kw.update(population=8, generations=2, episodes=2, steps=50, device_episodes=1)
    print(json.dumps(main(**kw), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
