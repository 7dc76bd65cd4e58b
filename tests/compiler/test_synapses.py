"""Synapse compaction (compiler/synapses.py): per-synapse work on present synapses only,
the same values, and regions it must leave alone."""

import numpy as np
import pytest

from ncc.compiler.interpret import run_sequence
from ncc.compiler.ir import Graph, IRError, Op, Tensor, verify
from ncc.compiler.synapses import compact_synapses

S, D = 6, 5


def synapse_graph(mask: np.ndarray, tail: str = "sum") -> Graph:
    """An LTC-like step: v (1, D) state, x (1, S) input.
    a = mask * w * sigmoid(sigma * (x[:, :, None] - mu));  v' = v + sum_S a + sum_S a * erev
    tail: "sum" (as above), "output" (a is also an output), "sub" (a is used by an op
    that is not a sum)."""
    rng = np.random.default_rng(0)
    tensors: dict[str, Tensor] = {}
    constants: dict[str, np.ndarray] = {}
    ops: list[Op] = []

    def t(name, shape):
        tensors[name] = Tensor(name, tuple(shape))
        return name

    def c(name, value):
        constants[name] = np.asarray(value, np.float32)
        return t(name, constants[name].shape)

    def op(kind, ins, out, out_shape, **attrs):
        ops.append(Op(kind, tuple(ins), out, attrs))
        return t(out, out_shape)

    x, v = t("x", (1, S)), t("v", (1, D))
    x3 = op("reshape", [x], "x3", (1, S, 1), shape=(1, S, 1))
    v3 = op("reshape", [v], "v3", (1, 1, D), shape=(1, 1, D))
    diff = op("sub", [x3, c("mu", rng.normal(size=(1, S, D)))], "diff", (1, S, D))
    arg = op("mul", [c("sigma", rng.uniform(3, 8, (1, S, D))), diff], "arg", (1, S, D))
    shifted = op("add", [arg, v3], "shifted", (1, S, D))  # a [1, 1, D] entry
    syn = op("sigmoid", [shifted], "syn", (1, S, D))
    act = op("mul", [syn, c("w", mask * rng.uniform(0.1, 1, (S, D)))], "act", (1, S, D))
    act_erev = op("mul", [act, c("erev", rng.choice([-1.0, 1.0], (1, S, D)))], "act_erev",
                  (1, S, D))
    total = op("reduce_sum", [act], "total", (1, D), axes=(1,))
    drive = op("reduce_sum", [act_erev], "drive", (1, D), axes=(1,))
    fan_out = op("reduce_sum", [act], "fan_out", (1, S), axes=(2,))  # sum over D
    everything = op("reduce_sum", [act], "everything", (1,), axes=(1, 2))
    v_next = op("add", [op("add", [v, total], "vt", (1, D)), drive], "v_next", (1, D))
    outputs = [v_next, fan_out, everything]
    if tail == "output":
        outputs.append(act)
    elif tail == "sub":
        outputs.append(op("sub", [act, c("one", 1.0)], "leak", (1, S, D)))
    roles = {x: "input", v: "state_in", v_next: "state_out",
             **{o: "output" for o in outputs if o != v_next}}
    return verify(Graph("synapses", tensors, [x, v], outputs, roles, [(v, v_next)],
                        constants, ops, {v: np.zeros((1, D), np.float32)}, {}))


def wiring(density: float, seed: int = 1) -> np.ndarray:
    m = (np.random.default_rng(seed).random((S, D)) < density).astype(np.float32)
    m[0, 0] = 1.0  # at least one synapse
    return m


def run(g: Graph, xs: np.ndarray) -> dict[str, np.ndarray]:
    return run_sequence(g, xs)


def test_a_sparse_region_runs_on_its_synapses_and_computes_the_same():
    mask = wiring(0.3)
    g = synapse_graph(mask)
    c = compact_synapses(g)
    nnz = int(mask.sum())
    grid_ops = [op for op in c.ops if c.tensors[op.output].shape[-2:] == (S, D)]
    assert grid_ops == []  # no op runs on the whole grid any more
    for name in ("diff", "arg", "shifted", "syn", "act", "act_erev"):
        assert c.tensors[name].shape == (1, nnz)
    gathers = [op for op in c.ops if op.kind == "gather"]
    assert len(gathers) == 2  # x onto each synapse's source, v onto its destination
    xs = np.random.default_rng(2).normal(size=(40, 1, S)).astype(np.float32)
    want, got = run(g, xs), run(c, xs)
    for name in g.outputs:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_each_exit_becomes_a_selection_with_one_entry_per_synapse():
    mask = wiring(0.3)
    c = compact_synapses(synapse_graph(mask))
    made = c.producer()
    total, fan_out = made["total"], made["fan_out"]
    assert total.kind == fan_out.kind == "matmul"
    for op, width in ((total, D), (fan_out, S)):
        select = c.constants[op.inputs[1]]
        assert select.shape == (int(mask.sum()), width)
        np.testing.assert_array_equal(select.sum(axis=1), 1.0)
    assert made["everything"].kind == "reduce_sum"


@pytest.mark.parametrize("tail", ["output", "sub"])
def test_a_region_read_other_than_by_a_sum_stays_dense(tail):
    g = synapse_graph(wiring(0.3), tail)
    assert compact_synapses(g) is g


def test_a_dense_wiring_stays_dense():
    g = synapse_graph(wiring(0.95))
    assert compact_synapses(g) is g


def test_a_sum_of_two_masked_terms_keeps_their_union():
    """(a * m1 + b * m2) summed: present where either mask is."""
    rng = np.random.default_rng(3)
    m1, m2 = wiring(0.2, 4), wiring(0.2, 5)
    tensors = {"x": Tensor("x", (1, S)), "x3": Tensor("x3", (1, S, 1)),
               "a": Tensor("a", (1, S, D)), "b": Tensor("b", (1, S, D)),
               "ab": Tensor("ab", (1, S, D)), "y": Tensor("y", (1, D)),
               "m1": Tensor("m1", (S, D)), "m2": Tensor("m2", (S, D))}
    constants = {"m1": m1 * rng.uniform(1, 2, (S, D)).astype(np.float32),
                 "m2": m2 * rng.uniform(1, 2, (S, D)).astype(np.float32)}
    ops = [Op("reshape", ("x",), "x3", {"shape": (1, S, 1)}),
           Op("mul", ("x3", "m1"), "a"), Op("mul", ("x3", "m2"), "b"),
           Op("add", ("a", "b"), "ab"), Op("reduce_sum", ("ab",), "y", {"axes": (1,)})]
    g = verify(Graph("union", tensors, ["x"], ["y"], {"x": "input", "y": "output"}, [],
                     constants, ops, {}, {}))
    c = compact_synapses(g)
    assert c.tensors["ab"].shape == (1, int(((m1 + m2) > 0).sum()))
    xs = rng.normal(size=(5, 1, S)).astype(np.float32)
    np.testing.assert_allclose(run(c, xs)["y"], run(g, xs)["y"], rtol=1e-5, atol=1e-6)


def test_gather_checks_its_indices():
    tensors = {"x": Tensor("x", (1, 4)), "y": Tensor("y", (1, 2))}
    g = Graph("g", tensors, ["x"], ["y"], {"x": "input", "y": "output"}, [], {},
              [Op("gather", ("x",), "y", {"axis": 1, "indices": (0, 4)})], {}, {})
    with pytest.raises(IRError, match=r"indices outside \[0, 4\)"):
        verify(g)



def test_the_work_counted_is_the_present_synapses():
    """work_per_step on the quantized compact graph: one sigmoid lookup per present
    synapse, and the four sums (two onto D, one onto S, one over all) nnz MACs each."""
    from ncc.compiler.pipeline import quantize_graph
    from ncc.compiler.work import work_per_step

    mask = wiring(0.3)
    nnz = int(mask.sum())
    data = {"x": np.random.default_rng(4).normal(size=(4, 20, S)).astype(np.float32)}
    q, _ = quantize_graph(compact_synapses(synapse_graph(mask)), data)
    work = work_per_step(q)
    assert work["table_lookups"] == nnz
    assert work["macs"] == 4 * nnz
    dense, _ = quantize_graph(synapse_graph(mask), data)
    assert work_per_step(dense)["table_lookups"] == S * D
