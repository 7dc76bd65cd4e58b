"""Rebatching runs N sequences per call with exactly the per-sequence integer results."""

import numpy as np
import pytest

from ncc import numerics as nx
from ncc.compiler.batch import rebatch
from ncc.compiler.interpret import run_batch, run_sequence
from ncc.compiler.ir import IRError
from ncc.compiler.pipeline import quantize_graph, to_graph
from ncc.models import zoo


@pytest.mark.parametrize("factory", [lambda: zoo.cfc(units=8), lambda: zoo.lif(hidden=8),
                                     lambda: zoo.ltc(units=14)])
def test_batched_golden_equals_sequence_by_sequence(factory):
    rng = np.random.default_rng(0)
    q, _ = quantize_graph(to_graph(factory()),
                          {"x": rng.standard_normal((4, 20, 8)).astype(np.float32)})
    xs = nx.quantize(rng.standard_normal((5, 25, 8)), q.tensors["x"].quant)
    batched = run_batch(q, xs)
    for i in range(5):
        single = run_sequence(q, xs[i][:, None])
        for name in q.outputs:
            assert np.array_equal(batched[name][i], single[name][:, 0]), name


def test_rebatch_sets_every_batched_shape_and_refuses_a_batch_free_graph():
    import jax.numpy as jnp

    from ncc.compiler.frontends import from_jax

    g = to_graph(zoo.cfc(units=8))
    gb = rebatch(g, 3)
    assert all(gb.tensors[n].shape[0] == 3 for n in gb.inputs + gb.outputs)
    assert gb.initial_state[gb.state_pairs[0][0]].shape[0] == 3

    def mixes_batch(x, h):  # transposes the batch axis away: not a per-sequence step
        y = jnp.sum(x.T * h, axis=0, keepdims=True)
        return y, y

    g = to_graph(from_jax(mixes_batch, (4,), jnp.zeros((1, 4))))
    with pytest.raises(IRError, match="batch"):
        rebatch(g, 3)
    out = run_batch(g, np.ones((2, 3, 4), np.float32))  # falls back to one at a time
    assert out["y"].shape == (2, 3, 4)


def test_absent_dt_means_one_on_the_dt_grid():
    """Without dts, the golden interpreters feed dt = 1.0 quantized (as every session does),
    not the raw integer 1."""
    from ncc.compiler.frontends import from_keras

    rng = np.random.default_rng(0)
    calib = {"x": rng.standard_normal((4, 20, 8)).astype(np.float32),
             "dt": rng.uniform(0.5, 8.0, (4, 20)).astype(np.float32)}
    q, _ = quantize_graph(to_graph(from_keras(zoo.cfc(units=8), uses_dt=True)), calib)
    (dt_name,) = q.by_role("dt")
    one = nx.quantize(np.ones(1, np.float32), q.tensors[dt_name].quant)
    assert int(one[0]) != 1  # the test means something only if the grids differ
    xs = nx.quantize(rng.standard_normal((3, 15, 8)), q.tensors["x"].quant)
    ones = np.full((3, 15), one[0], one.dtype)
    implicit, explicit = run_batch(q, xs), run_batch(q, xs, ones)
    single = run_sequence(q, xs[0][:, None])
    for name in q.outputs:
        assert np.array_equal(implicit[name], explicit[name]), name
        assert np.array_equal(single[name][:, 0], explicit[name][0]), name
