"""Canonicalization keeps every result identical and removes constant-only shape work."""

import jax.numpy as jnp
import keras
import ncps.keras
import numpy as np
import pytest
from ncps.wirings import AutoNCP

from ncc.compiler.frontends import from_jax, from_model
from ncc.compiler.interpret import run_step
from ncc.compiler.ir import Graph, Op, Tensor, verify
from ncc.compiler.passes import canonicalize
from ncc.compiler.trace import trace


def _lif():
    import spyx.nn
    from flax import nnx

    return spyx.nn.Sequential(
        nnx.Linear(4, 8, rngs=nnx.Rngs(0)), spyx.nn.LIF((8,), beta=0.8, rngs=nnx.Rngs(1)),
        nnx.Linear(8, 3, rngs=nnx.Rngs(2)), spyx.nn.LI((3,), beta=0.9, rngs=nnx.Rngs(3)))


def _keras(layer):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((None, 4)), layer, keras.layers.Dense(3)])
    # non-zero biases, so bias broadcasts and adds are real work, not x + 0
    model.set_weights([w + 0.1 for w in model.get_weights()])
    return model


def _jax():
    bias = jnp.arange(3, dtype=jnp.float32)

    def step(x, h):
        b = jnp.broadcast_to(bias.reshape(1, 3), (1, 3))  # shape work on a constant
        scale = jnp.ones((1, 3)) * 1.0 + 0.0               # identities on a constant
        h = jnp.tanh(x[:, :3] * scale + b + 0.5 * h)
        return h * 1.0, h
    return from_jax(step, (4,), jnp.zeros((1, 3), jnp.float32))


MODELS = {
    "cfc": lambda: _keras(ncps.keras.CfC(8, backbone_units=8, return_sequences=True)),
    "ltc": lambda: _keras(ncps.keras.LTC(AutoNCP(10, 3, seed=0), return_sequences=True)),
    "gru": lambda: _keras(keras.layers.GRU(6, return_sequences=True)),
    "lif": _lif,
    "jax": _jax,
}


def _feeds(g: Graph, rng):
    feeds = {}
    for name in g.inputs:
        t = g.tensors[name]
        feeds[name] = (2 * rng.standard_normal(t.shape)).astype(t.dtype)
    return feeds


def _const_only(g: Graph, kinds) -> list[Op]:
    return [op for op in g.ops if op.kind in kinds and all(n in g.constants for n in op.inputs)]


@pytest.mark.parametrize("name", MODELS)
def test_canonicalize_keeps_results_and_folds_constant_shape_ops(name):
    raw = trace(from_model(MODELS[name]()))
    canon = canonicalize(raw)
    assert raw.inputs == canon.inputs and raw.outputs == canon.outputs
    assert raw.state_pairs == canon.state_pairs
    # the raw trace did contain constant-only work, the canonical graph has none left
    assert _const_only(raw, {"reshape", "broadcast"})
    assert not _const_only(canon, {"reshape", "broadcast"})
    assert not [op for op in canon.ops if all(n in canon.constants for n in op.inputs)]
    # identities survive only where one value is two graph outputs (y and a state)
    assert all(op.output in canon.outputs for op in canon.ops if op.kind == "identity")
    assert len(canon.ops) < len(raw.ops)
    rng = np.random.default_rng(0)
    for _ in range(20):  # random inputs and random states, not only the initial state
        feeds = _feeds(raw, rng)
        before, after = run_step(raw, feeds), run_step(canon, feeds)
        for out in raw.outputs:
            np.testing.assert_array_equal(before[out], after[out], err_msg=out)


def test_canonicalize_removes_identities_and_dead_code():
    t = {n: Tensor(n, (1, 2)) for n in ("x", "s", "a", "b", "c", "dead", "y", "s_next")}
    t["one"], t["zero"], t["k"] = Tensor("one", (1, 2)), Tensor("zero", ()), Tensor("k", (2,))
    t["kb"] = Tensor("kb", (1, 2))
    g = verify(Graph(
        "ids", t, ["x", "s"], ["y", "s_next"],
        {"x": "input", "s": "state_in", "y": "output", "s_next": "state_out"},
        [("s", "s_next")],
        {"one": np.ones((1, 2), np.float32), "zero": np.zeros((), np.float32),
         "k": np.array([1.0, 2.0], np.float32)},
        [Op("mul", ("x", "one"), "a"), Op("add", ("a", "zero"), "b"),
         Op("identity", ("b",), "c"), Op("exp", ("x",), "dead"),
         Op("reshape", ("k",), "kb", {"shape": (1, 2)}),
         Op("add", ("c", "kb"), "y"), Op("add", ("y", "s"), "s_next")],
        {"s": np.zeros((1, 2), np.float32)}))
    canon = canonicalize(g)
    assert [(op.kind, op.inputs) for op in canon.ops] == [("add", ("x", "kb")),
                                                          ("add", ("y", "s"))]
    assert set(canon.constants) == {"kb"} and "dead" not in canon.tensors
    x, s = np.array([[0.5, -1.0]], np.float32), np.array([[2.0, 3.0]], np.float32)
    for out in ("y", "s_next"):
        np.testing.assert_array_equal(run_step(g, {"x": x, "s": s})[out],
                                      run_step(canon, {"x": x, "s": s})[out])
