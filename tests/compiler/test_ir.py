"""The IR is a value: it round-trips through JSON + npz unchanged, and the verifier
rejects malformed graphs with a message naming the bad tensor."""

import copy
import json

import numpy as np
import pytest

from ncc.compiler.interpret import run_sequence
from ncc.compiler.ir import Graph, IRError, Op, QuantParams, Tensor, format_graph, verify
from ncc.compiler.pipeline import to_graph
from ncc.compiler.serialize import graph_arrays, graph_hash, graph_to_json, load_graph, save_graph


def _toy() -> Graph:
    """x (1,2), state s (1,2): s' = x @ w + s ; y = tanh(s')[:, :1] (a verified graph)."""
    t = {n: Tensor(n, (1, 2)) for n in ("x", "s", "xw", "s_next", "h")}
    t["w"] = Tensor("w", (2, 2))
    t["y"] = Tensor("y", (1, 1), quant=QuantParams((0.5,), (3,)))
    ops = [
        Op("matmul", ("x", "w"), "xw", source="toy.py:1"),
        Op("add", ("xw", "s"), "s_next"),
        Op("tanh", ("s_next",), "h"),
        Op("slice", ("h",), "y", {"starts": (0, 0), "stops": (1, 1), "steps": (1, 1)}),
    ]
    return verify(Graph(
        name="toy", tensors=t, inputs=["x", "s"], outputs=["y", "s_next"],
        roles={"x": "input", "s": "state_in", "y": "output", "s_next": "state_out"},
        state_pairs=[("s", "s_next")], constants={"w": np.eye(2, dtype=np.float32) * 0.5},
        ops=ops, initial_state={"s": np.zeros((1, 2), np.float32)},
        metadata={"note": "toy", "dims": [1, 2]},
    ))


def _assert_same_graph(a: Graph, b: Graph) -> None:
    assert graph_to_json(a) == graph_to_json(b)
    arrays_a, arrays_b = graph_arrays(a), graph_arrays(b)
    assert arrays_a.keys() == arrays_b.keys()
    for k in arrays_a:
        assert arrays_a[k].dtype == arrays_b[k].dtype, k
        np.testing.assert_array_equal(arrays_a[k], arrays_b[k], err_msg=k)
    assert graph_hash(a) == graph_hash(b)


@pytest.fixture(scope="module")
def cfc_graph(small_cfc):
    return to_graph(small_cfc)


@pytest.mark.parametrize("which", ["toy", "cfc"])
def test_json_npz_round_trip_is_exact(which, cfc_graph, tmp_path):
    g = _toy() if which == "toy" else cfc_graph
    paths = save_graph(g, tmp_path / "ir")
    assert [p.name for p in paths] == ["ir.json", "ir.npz"]
    back = load_graph(tmp_path / "ir")
    _assert_same_graph(g, back)
    assert format_graph(back) == format_graph(g)
    # and it still computes the same thing
    xs = np.random.default_rng(0).standard_normal((20, *g.tensors["x"].shape[1:]))
    a, b = run_sequence(g, xs.astype(np.float32)), run_sequence(back, xs.astype(np.float32))
    for name in g.outputs:
        np.testing.assert_array_equal(a[name], b[name])


def test_hash_sees_every_change():
    g = _toy()
    h = graph_hash(g)
    assert h == graph_hash(_toy())  # a value: equal graphs, equal hash
    changed_weight = g.replace(constants={"w": g.constants["w"] + np.float32(1e-7)})
    changed_init = g.replace(initial_state={"s": np.ones((1, 2), np.float32)})
    changed_source = g.replace(ops=[Op(o.kind, o.inputs, o.output, o.attrs, "other.py:9")
                                    for o in g.ops])
    hashes = {graph_hash(x) for x in (changed_weight, changed_init, changed_source)}
    assert h not in hashes and len(hashes) == 3


def test_printer_shows_every_tensor_and_role():
    text = format_graph(_toy())
    for piece in ("graph toy", "input     %x: float32[1,2]", "state_in  %s",
                  "%xw: float32[1,2] = matmul(%x, %w)", "output    %y",
                  "state     %s_next -> %s", "{int8 s=0.5 zp=3}"):
        assert piece in text


def _mutated(change):
    g = copy.deepcopy(_toy())
    change(g)
    return g


def _set_op(g, i, **kw):
    op = g.ops[i]
    fields = {"kind": op.kind, "inputs": op.inputs, "output": op.output, "attrs": op.attrs,
              "source": op.source, **kw}
    g.ops[i] = Op(**fields)


MALFORMED = {
    "undefined input": (lambda g: _set_op(g, 1, inputs=("xw", "ghost")), "'ghost'"),
    "read before defined": (lambda g: g.ops.insert(0, g.ops.pop(2)), "'s_next'"),
    "double assignment": (lambda g: _set_op(g, 2, output="xw"), "'xw' is assigned twice"),
    "wrong declared shape": (lambda g: g.tensors.update(xw=Tensor("xw", (1, 3))), "'xw'"),
    "wrong declared dtype": (lambda g: g.tensors.update(h=Tensor("h", (1, 2), "int8")), "'h'"),
    "missing output": (lambda g: (g.outputs.append("z"), g.roles.update(z="output")), "'z'"),
    "undeclared op output": (lambda g: _set_op(g, 2, output="hh"), "'hh'"),
    "bad state pair roles": (lambda g: g.state_pairs.append(("x", "y")), "('x', 'y')"),
    "state pair shape mismatch": (
        lambda g: (g.state_pairs.clear(), g.state_pairs.append(("s", "y"))), "'s'"),
    "missing initial state": (lambda g: g.initial_state.clear(), "'s'"),
    "constant data mismatch": (
        lambda g: g.constants.update(w=np.zeros((3, 2), np.float32)), "'w'"),
    "matmul shapes": (lambda g: _set_op(g, 0, inputs=("x", "x")), "'xw'"),
    "unknown op": (lambda g: _set_op(g, 2, kind="erf"), "'h'"),
    "missing attribute": (lambda g: _set_op(g, 3, attrs={"starts": (0, 0)}), "'y'"),
    "input listed twice": (lambda g: g.inputs.append("x"), "'x'"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_verifier_rejects_and_names_the_culprit(case):
    change, needle = MALFORMED[case]
    g = _mutated(change)
    with pytest.raises(IRError) as info:
        verify(g)
    assert needle in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


def test_loading_a_tampered_ir_is_verified(tmp_path):
    g = _toy()
    save_graph(g, tmp_path / "ir")
    spec = graph_to_json(g)
    spec["ops"][1]["inputs"] = ["xw", "nowhere"]
    (tmp_path / "ir.json").write_text(json.dumps(spec))
    with pytest.raises(IRError, match="'nowhere'"):
        load_graph(tmp_path / "ir")


def test_ir_json_of_the_older_quant_form_still_loads():
    """ir.json files written before `QuantParams` carried bits and signedness hold only
    {"scale", "zero_point", "dtype", "axis"}: they load to the same graph."""
    from ncc.compiler.serialize import graph_from_json

    g = _toy()
    spec = graph_to_json(g)
    for t in spec["tensors"]:
        if t["quant"]:
            t["quant"] = {k: t["quant"][k] for k in ("scale", "zero_point", "dtype", "axis")}
    old = graph_from_json(json.loads(json.dumps(spec)), graph_arrays(g))
    assert old.tensors["y"].quant == g.tensors["y"].quant == QuantParams((0.5,), (3,), 8, True)
    _assert_same_graph(old, g)


@pytest.mark.parametrize(("x_dtype", "entries", "ok"), [
    ("int16", 513, True), ("int16", 65536, True), ("int8", 256, True),
    ("int16", 512, False), ("int8", 513, False), ("int16", 256, False)])
def test_lut_takes_one_entry_per_level_or_the_compact_int16_form(x_dtype, entries, ok):
    g = Graph("t", {"x": Tensor("x", (1, 4), x_dtype), "t": Tensor("t", (entries,), x_dtype),
                    "y": Tensor("y", (1, 4), x_dtype)}, ["x"], ["y"],
              {"x": "input", "y": "output"}, [], {"t": np.zeros(entries, x_dtype)},
              [Op("lut", ("x", "t"), "y")])
    if ok:
        verify(g)
    else:
        with pytest.raises(IRError, match="one entry per"):
            verify(g)
