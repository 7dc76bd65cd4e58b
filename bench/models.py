"""The `ncc bench` suite: models trained on small real tasks whose data ships with a package.

Tasks, both on scikit-learn's 8x8 digits (the bundled `digits.npz` and its split):

- `digits`: each image read row by row, 8 steps of 8 pixel intensities in [0, 1];
- `digits-dt`: the same images irregularly sampled: 6 of the 8 rows, kept in order, each
  with `dt`, the time since the previous kept row (in rows: 1, 2 or 3).

The quick suite is the two bundled models (trained by `bench/train_bundled.py`); the full
suite adds CfC 32/64 (FullyConnected with and without backbone, AutoNCP: a sparse wiring
masks the kernels and takes no backbone), LTC on
AutoNCP, a CuBaLIF network, a CfC on `digits-dt` and spyx's LRU and Mamba (sequence
layers between two Linear layers), each trained here from fixed seeds
(a minute or less each on two CPU cores).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Task = dict[str, np.ndarray]  # x (N, T, 8) float32, y (N,), train/test indices, [dt (N, T)]


@dataclass
class Case:
    """One benchmarked model: `make(task)` returns a (trained) model or a MODEL reference."""

    name: str
    make: Callable[[Task], Any]
    spiking: bool
    trained: bool
    task: str = "digits"
    keras_ref: str | None = None  # a MODEL reference the TFLite converter peer can load


def digits() -> Task:
    """The bundled digits task: x (1797, 8, 8) in [0, 1], y, train and test indices."""
    from ncc.models.archive import read_npz
    from ncc.models.zoo import bundled_dir

    return read_npz(bundled_dir() / "digits.npz")


def irregular(task: Task, keep: int = 6, seed: int = 0) -> Task:
    """`task` with each sequence sampled at `keep` of its T steps (sorted, random per
    sequence) and dt (N, keep) = steps since the previous kept one (the first counts from
    step -1)."""
    x = task["x"]
    n, steps = x.shape[:2]
    rng = np.random.default_rng(seed)
    idx = np.sort(np.stack([rng.choice(steps, keep, replace=False) for _ in range(n)]), 1)
    dt = np.diff(idx, axis=1, prepend=-1).astype(np.float32)
    return {**task, "x": np.take_along_axis(x, idx[:, :, None], 1), "dt": dt}


TASKS: dict[str, Callable[[], Task]] = {"digits": digits,
                                        "digits-dt": lambda: irregular(digits())}


# ---- training --------------------------------------------------------------------------------

def train_keras(model: Any, task: Task, epochs: int = 60) -> Any:
    """Adam (1e-2), batch 64, cross-entropy on the train split. A model with per-step
    outputs (N, T, 10) is scored on its last step only; a model with two inputs gets
    [x, dt]."""
    import keras

    tr = task["train"]
    inputs = [task["x"][tr], task["dt"][tr]] if "dt" in task else task["x"][tr]
    y, weights = task["y"][tr], None
    first = [a[:1] for a in inputs] if isinstance(inputs, list) else inputs[:1]
    if np.ndim(model(first)) == 3:
        steps = task["x"].shape[1]
        y = np.repeat(y[:, None], steps, axis=1)
        weights = np.zeros(y.shape, np.float32)
        weights[:, -1] = 1.0
    model.compile(keras.optimizers.Adam(1e-2),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(inputs, y, sample_weight=weights, batch_size=64, epochs=epochs, verbose=0)
    return model


def train_last_step(net: Any, task: Task, logits: Callable[[Any, Any], Any],
                    steps: int = 800) -> Any:
    """BPTT with Adam (1e-2) on batches of 128 train sequences: cross-entropy of
    `logits(model, x (B, T, 8))`, the last step's (B, 10)."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    def loss_fn(model: Any, x: jax.Array, y: jax.Array) -> jax.Array:
        return optax.softmax_cross_entropy_with_integer_labels(logits(model, x), y).mean()

    opt = nnx.Optimizer(net, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model: Any, opt: Any, x: jax.Array, y: jax.Array) -> jax.Array:
        loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
        opt.update(model, grads)
        return loss

    rng = np.random.default_rng(0)
    for _ in range(steps):
        idx = rng.choice(task["train"], 128, replace=False)
        step(net, opt, jnp.asarray(task["x"][idx]), jnp.asarray(task["y"][idx]))
    return net


def train_snn(net: Any, task: Task, steps: int = 800) -> Any:
    """A step model (spyx style: `model(x_t, state) -> (out, state)`) trained by
    `train_last_step`; the readout's last step is the logits."""
    def run(model: Any, x: Any) -> Any:
        state = model.initial_state(x.shape[0])
        for t in range(x.shape[1]):
            out, state = model(x[:, t], state)
        return out

    return train_last_step(net, task, run, steps)


# ---- models ----------------------------------------------------------------------------------

def _bundled(file: str) -> str:
    from ncc.models.zoo import bundled_dir

    return str(bundled_dir() / file)


def cfc_wired(units: int, backbone_units: int | None = None, epochs: int = 20,
              autoncp: bool = True) -> Callable[[Task], Any]:
    """ncc's Keras CfC on AutoNCP (10 motor neurons = logits) or FullyConnected + Dense."""
    def make(task: Task) -> Any:
        import keras

        from ncc.models.keras import CfC
        from ncc.models.wirings import AutoNCP, FullyConnected

        keras.utils.set_random_seed(0)
        wiring = AutoNCP(units, output_size=10, seed=0) if autoncp else FullyConnected(units)
        backbone = {"backbone_units": backbone_units, "backbone_layers": 1} \
            if backbone_units else {"backbone_layers": 0}
        layers = [keras.Input((None, 8)), CfC(wiring, **backbone)]
        if not autoncp:
            layers.append(keras.layers.Dense(10))
        name = f"cfc{units}_{'autoncp' if autoncp else 'fc'}"
        return train_keras(keras.Sequential(layers, name=name), task, epochs)
    return make


def cfc_fc(units: int, backbone_units: int = 16, epochs: int = 60) -> Callable[[Task], Any]:
    """zoo.cfc (ncps CfC, FullyConnected, backbone) + Dense head."""
    def make(task: Task) -> Any:
        from ncc.models import zoo

        return train_keras(zoo.cfc(units=units, backbone_units=backbone_units), task, epochs)
    return make


def ltc_autoncp(units: int, epochs: int = 20) -> Callable[[Task], Any]:
    """ncc's Keras LTC on AutoNCP (10 motor neurons = logits). (ncps' LTC does not train
    under Keras 3 + JAX: its int32 mask weights are handed to the gradient.)"""
    def make(task: Task) -> Any:
        import keras

        from ncc.models.keras import LTC
        from ncc.models.wirings import AutoNCP

        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((None, 8)), LTC(AutoNCP(units, 10, seed=0))],
                                 name=f"ltc{units}_autoncp")
        return train_keras(model, task, epochs)
    return make


def cfc_dt(units: int = 16, epochs: int = 60) -> Callable[[Task], Any]:
    """ncc's Keras CfC taking [x, dt] (time spans), + Dense head."""
    def make(task: Task) -> Any:
        import keras

        from ncc.models.keras import CfC

        keras.utils.set_random_seed(0)
        x_in, dt_in = keras.Input((None, 8)), keras.Input((None,))
        y = keras.layers.Dense(10)(CfC(units)([x_in, dt_in]))
        return train_keras(keras.Model([x_in, dt_in], y, name=f"cfc{units}_dt"), task, epochs)
    return make


def cuba_lif(hidden: int = 64, steps: int = 800) -> Callable[[Task], Any]:
    """spyx Linear-CuBaLIF-Linear-LI."""
    def make(task: Task) -> Any:
        import spyx.nn
        from flax import nnx

        net = spyx.nn.Sequential(
            nnx.Linear(8, hidden, rngs=nnx.Rngs(0)),
            spyx.nn.CuBaLIF((hidden,), alpha=0.7, beta=0.8, rngs=nnx.Rngs(1)),
            nnx.Linear(hidden, 10, rngs=nnx.Rngs(2)),
            spyx.nn.LI((10,), beta=0.9, rngs=nnx.Rngs(3)),
        )
        return train_snn(net, task, steps)
    return make


class SequenceNet:
    """Linear -> a spyx 1.0 sequence layer (`spyx.ssm.LRU` or `Mamba`) -> Linear, over a
    time-major sequence u (T, B, 8) -> logits (T, B, 10); built lazily (flax import)."""

    def __new__(cls, kind: str, width: int = 32, state: int = 32) -> Any:
        import spyx.ssm
        from flax import nnx

        class Net(nnx.Module):
            def __init__(self) -> None:
                self.encoder = nnx.Linear(8, width, rngs=nnx.Rngs(0))
                self.ssm = (spyx.ssm.LRU(width, state, rngs=nnx.Rngs(1)) if kind == "LRU"
                            else spyx.ssm.Mamba(width, state, rngs=nnx.Rngs(1)))
                self.decoder = nnx.Linear(width, 10, rngs=nnx.Rngs(2))

            def __call__(self, u: Any) -> Any:
                return self.decoder(self.ssm(self.encoder(u)))

        Net.__name__ = Net.__qualname__ = f"{kind}Net"
        return Net()


def train_sequence(net: Any, task: Task, steps: int = 600) -> Any:
    """A sequence model u (T, B, 8) -> (T, B, 10) trained by `train_last_step`."""
    import jax.numpy as jnp

    return train_last_step(net, task, lambda model, x: model(jnp.swapaxes(x, 0, 1))[-1],
                           steps)


def ssm(kind: str, steps: int = 600) -> Callable[[Task], Any]:
    """A spyx `LRU` or `Mamba` between two Linear layers, trained on the task."""
    def make(task: Task) -> Any:
        return train_sequence(SequenceNet(kind), task, steps)
    return make


def suite(full: bool) -> list[Case]:
    """The bundled models; with `full`, the trained zoo as well."""
    cases = [Case("cfc16 (bundled)", lambda task: _bundled("cfc_digits.ckpt"), False, True,
                  keras_ref=_bundled("cfc_digits.ckpt")),
             Case("lif64 (bundled)", lambda task: _bundled("lif_digits.ckpt"), True, True)]
    if full:
        cases += [
            Case("cfc32 fully connected, backbone 16", cfc_fc(32), False, True),
            Case("cfc64 fully connected, no backbone", cfc_wired(64, autoncp=False), False, True),
            Case("cfc64 AutoNCP, no backbone", cfc_wired(64), False, True),
            Case("cfc32 AutoNCP, no backbone", cfc_wired(32), False, True),
            Case("ltc32 AutoNCP", ltc_autoncp(32), False, True),
            Case("cuba-lif64 (spyx)", cuba_lif(64), True, True),
            Case("cfc16 with dt (irregular digits)", cfc_dt(16), False, True, task="digits-dt"),
            Case("LRU 32 (spyx.ssm, between Linear layers)", ssm("LRU"), False, True),
            Case("Mamba 32 (spyx.ssm, between Linear layers)", ssm("Mamba"), False, True),
        ]
    return cases
