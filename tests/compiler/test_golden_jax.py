"""The JAX golden model (`compiler/golden_jax.py`) against the numpy golden model, bit for
bit: every integer op kind over random parameters and inputs (rails included), the bundled
CfC and LIF models and a 16x8 model over 1,000 steps, and a population under `vmap`."""

from __future__ import annotations

import jax  # noqa: E402
import numpy as np
import pytest

jnp = jax.numpy

from ncc import numerics as nx  # noqa: E402
from ncc.compiler.golden_jax import GoldenJaxError, JaxGolden  # noqa: E402
from ncc.compiler.interpret import run_batch, run_sequence, run_step  # noqa: E402
from ncc.compiler.ir import Graph, Op, Tensor, verify  # noqa: E402

BATCH = 64


def _ints(rng, shape, dtype):
    lo, hi = nx.dtype_range(dtype)
    x = rng.integers(lo, hi + 1, shape)
    x.flat[:4] = [lo, hi, lo, hi][: x.size]  # the rails
    return x.astype(dtype)


def _one_op(kind, ins, consts, attrs, out_dtype, out_shape):
    """A one-step graph: inputs `ins` {name: (shape, dtype)}, constants, one op -> out."""
    tensors = {n: Tensor(n, s, d) for n, (s, d) in ins.items()}
    tensors.update({n: Tensor(n, v.shape, str(v.dtype)) for n, v in consts.items()})
    tensors["out"] = Tensor("out", out_shape, out_dtype)
    names = list(ins) + list(consts)
    g = Graph("op", tensors, list(ins), ["out"], {**{n: "input" for n in ins}, "out": "output"},
              [], dict(consts), [Op(kind, tuple(names), "out", attrs)])
    return verify(g)


def _mult(rng, n=None):
    m = rng.integers(1 << 30, 1 << 31, n)
    return m if n is not None else int(m)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("x_dtype", ["int8", "int16"])
def test_fully_connected_matches_numpy(seed, x_dtype):
    rng = np.random.default_rng(seed)
    k, n = int(rng.integers(1, 40)), int(rng.integers(1, 12))
    w = rng.integers(-127, 128, (k, n)).astype(np.int8)
    bias = rng.integers(-(1 << 20), 1 << 20, n).astype(np.int32)
    lo, hi = nx.dtype_range(x_dtype)
    shifts = rng.integers(-12, 3, n) if x_dtype == "int8" else rng.integers(-12, -6, n)
    attrs = {"x_zp": int(rng.integers(lo // 2, hi // 2)) if x_dtype == "int8" else 0,
             "multiplier": tuple(int(v) for v in _mult(rng, n)),
             "shift": tuple(int(v) for v in shifts), "out_zp": int(rng.integers(-20, 20)),
             "dtype": x_dtype}
    g = _one_op("fully_connected", {"x": ((BATCH, k), x_dtype)}, {"w": w, "b": bias},
                attrs, x_dtype, (BATCH, n))
    feeds = {"x": _ints(rng, (BATCH, k), x_dtype)}
    want = run_step(g, feeds)["out"]
    got = jax.jit(lambda f: JaxGolden(g).step({}, f))(feeds)["out"]
    np.testing.assert_array_equal(np.asarray(got), want)


@pytest.mark.parametrize("depth", [100, 700])  # float32 dot (exact) and int32 dot
def test_deep_fully_connected_matches_numpy(depth):
    rng = np.random.default_rng(depth)
    w = rng.integers(-127, 128, (depth, 5)).astype(np.int8)
    bias = rng.integers(-(1 << 20), 1 << 20, 5).astype(np.int32)
    attrs = {"x_zp": 3, "multiplier": tuple(int(v) for v in _mult(rng, 5)),
             "shift": (-12, -10, -14, -11, -13), "out_zp": -4, "dtype": "int8"}
    g = _one_op("fully_connected", {"x": ((8, depth), "int8")}, {"w": w, "b": bias},
                attrs, "int8", (8, 5))
    feeds = {"x": _ints(rng, (8, depth), "int8")}
    got = jax.jit(lambda f: JaxGolden(g).step({}, f))(feeds)["out"]
    np.testing.assert_array_equal(np.asarray(got), run_step(g, feeds)["out"])


def test_fully_connected_overflowing_int32_still_matches():
    """int8 accumulators that wrap int32 (huge bias, left shift): the numpy golden wraps
    them at MBQM, so must the JAX one."""
    rng = np.random.default_rng(7)
    w = rng.integers(-127, 128, (16, 4)).astype(np.int8)
    bias = np.array([2**31 - 10, -2**31 + 10, 2**30, 0], np.int32)
    attrs = {"x_zp": -128, "multiplier": (1 << 30,) * 4, "shift": (3, 1, 0, 4),
             "out_zp": 5, "dtype": "int8"}
    g = _one_op("fully_connected", {"x": ((BATCH, 16), "int8")}, {"w": w, "b": bias},
                attrs, "int8", (BATCH, 4))
    feeds = {"x": _ints(rng, (BATCH, 16), "int8")}
    got = jax.jit(lambda f: JaxGolden(g).step({}, f))(feeds)["out"]
    np.testing.assert_array_equal(np.asarray(got), run_step(g, feeds)["out"])


def test_16x8_refuses_an_accumulator_beyond_int32():
    w = np.ones((4096, 2), np.int8)
    attrs = {"x_zp": 0, "multiplier": (1 << 30,) * 2, "shift": (-20, -20), "out_zp": 0,
             "dtype": "int16"}
    g = _one_op("fully_connected", {"x": ((1, 4096), "int16")},
                {"w": w, "b": np.zeros(2, np.int32)}, attrs, "int16", (1, 2))
    with pytest.raises(GoldenJaxError, match="fully_connected -> 'out'.*2\\^31"):
        JaxGolden(g, member=["w"])


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(("kind", "dtype"), [
    (kind, dtype) for kind in ("qadd", "qsub", "qmul", "requantize", "lut", "lut_compact")
    for dtype in ("int8", "int16") if (kind, dtype) != ("lut_compact", "int8")])
def test_elementwise_int_ops_match_numpy(kind, dtype, seed):
    rng = np.random.default_rng(seed)
    lo, hi = nx.dtype_range(dtype)
    shape = (BATCH, 8)
    zp = (lambda: int(rng.integers(-100, 100))) if dtype == "int8" else (lambda: 0)
    consts = {}
    ins = {"a": (shape, dtype)}
    if kind in ("qadd", "qsub"):
        ins["b"] = (shape, dtype)
        attrs = {"a_zp": zp(), "b_zp": zp(), "a_multiplier": _mult(rng),
                 "a_shift": int(rng.integers(-3, 1)), "b_multiplier": _mult(rng),
                 "b_shift": int(rng.integers(-3, 1)), "multiplier": _mult(rng),
                 "shift": int(rng.integers(-22, -8)), "out_zp": zp(),
                 "left_shift": 20 if dtype == "int8" else 15, "dtype": dtype}
    elif kind == "qmul":
        ins["b"] = (shape, dtype)
        attrs = {"a_zp": zp(), "b_zp": zp(), "multiplier": _mult(rng),
                 "shift": int(rng.integers(-16, 0)), "out_zp": zp(), "dtype": dtype}
    elif kind == "requantize":
        attrs = {"in_zp": zp(), "multiplier": _mult(rng), "shift": int(rng.integers(-4, 3)),
                 "out_zp": zp(), "dtype": dtype}
    elif kind == "lut_compact":  # random int16 entries: neighbours up to 65535 apart
        consts["table"] = _ints(rng, (nx.INTERP_ENTRIES,), dtype)
        attrs = {}
    else:
        consts["table"] = _ints(rng, (1 << (8 * np.dtype(dtype).itemsize),), dtype)
        attrs = {}
    g = Graph("op", {**{n: Tensor(n, s, d) for n, (s, d) in ins.items()},
                     **{n: Tensor(n, v.shape, str(v.dtype)) for n, v in consts.items()},
                     "out": Tensor("out", shape, dtype)},
              list(ins), ["out"], {**{n: "input" for n in ins}, "out": "output"}, [],
              consts, [Op(kind.removesuffix("_compact"), (*ins, *consts), "out", attrs)])
    feeds = {n: _ints(rng, s, d) for n, (s, d) in ins.items()}
    want = run_step(g, feeds)["out"]
    got = jax.jit(lambda f: JaxGolden(g).step({}, f))(feeds)["out"]
    np.testing.assert_array_equal(np.asarray(got), want)


def test_generic_kernels_match_numpy():
    """Comparisons, select, cast and data movement, as an integer graph uses them."""
    rng = np.random.default_rng(3)
    t = {"a": Tensor("a", (1, 6), "int8"), "th": Tensor("th", (1,), "int8"),
         "c": Tensor("c", (1, 6), "bool"), "s": Tensor("s", (1, 6), "int8"),
         "j": Tensor("j", (1, 12), "int8"), "k": Tensor("k", (1, 4), "int8"),
         "r": Tensor("r", (2, 2), "int8"), "m": Tensor("m", (1, 6), "int8"),
         "out": Tensor("out", (2,), "int8")}
    ops = [Op("greater_equal", ("a", "th"), "c"), Op("cast", ("c",), "s", {"dtype": "int8"}),
           Op("concat", ("a", "s"), "j", {"axis": 1}),
           Op("slice", ("j",), "k", {"starts": (0, 3), "stops": (1, 11), "steps": (1, 2)}),
           Op("reshape", ("k",), "r", {"shape": (2, 2)}),
           Op("where", ("c", "a", "s"), "m"),
           Op("reduce_max", ("r",), "out", {"axes": (1,)})]
    g = verify(Graph("g", t, ["a"], ["out", "m"], {"a": "input", "out": "output",
                                                    "m": "output"}, [],
                     {"th": np.array([3], np.int8)}, ops))
    for _ in range(5):
        feeds = {"a": _ints(rng, (1, 6), "int8")}
        want = run_step(g, feeds)
        got = jax.jit(lambda f: JaxGolden(g).step({}, f))(feeds)
        for k in g.outputs:
            np.testing.assert_array_equal(np.asarray(got[k]), want[k])


# --- whole models -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bundled_graphs():
    from ncc.evolve.models import bundled_integer_graph

    return {name: bundled_integer_graph(name, calibration=64) for name in ("cfc", "lif")}


@pytest.mark.parametrize("name", ["cfc", "lif"])
def test_bundled_models_match_numpy_over_1000_steps(bundled_graphs, name):
    g = bundled_graphs[name]
    rng = np.random.default_rng(11)
    xs = np.concatenate([_ints(rng, (2, 1000, 8), "int8"),
                         np.full((1, 1000, 8), 127, np.int8)])
    want = run_batch(g, xs)
    model = JaxGolden(g)
    got = jax.jit(lambda x: model.run_batch({}, x))(xs)
    for k in g.outputs:
        np.testing.assert_array_equal(np.asarray(got[k]).reshape(want[k].shape), want[k])


def test_population_vmap_matches_numpy_per_member(bundled_graphs):
    """Each member its own weights, biases and threshold: vmap over members and batch."""
    g = bundled_graphs["lif"]
    member = ["w1_q", "t7_bias", "t18_threshold"]
    model = JaxGolden(g, member)
    rng = np.random.default_rng(5)
    base = model.member_constants()
    pop = {k: np.stack([np.clip(v.astype(np.int64) + rng.integers(-3, 4, v.shape) * (
        1 if v.dtype == np.int8 else 500), *model.limits[k]).astype(v.dtype)
        for _ in range(3)]) for k, v in base.items()}
    xs = _ints(rng, (4, 20, 8), "int8")
    fn = jax.jit(jax.vmap(lambda c: model.run_batch(c, xs, outputs=["y"], last=True)))
    got = np.asarray(fn(pop)["y"])
    for i in range(3):
        gi = g.replace(constants={**g.constants, **{k: v[i] for k, v in pop.items()}})
        for j in range(4):
            want = run_sequence(gi, xs[j][:, None])["y"][-1]
            np.testing.assert_array_equal(got[i, j], want)


@pytest.fixture(scope="module")
def cfc16x8(helpers):
    import ncps.keras

    from ncc.compiler.pipeline import quantize_graph, to_graph
    from ncc.compiler.quantize import QuantOptions

    model = helpers.keras_sequential(ncps.keras.CfC(8, backbone_units=8, return_sequences=True),
                                     features=4)
    g = to_graph(model, None)
    cal = {"x": np.random.default_rng(0).standard_normal((8, 50, 4)).astype(np.float32)}
    return quantize_graph(g, cal, QuantOptions(activations="int16"), None)[0]


def test_16x8_model_matches_numpy_over_1000_steps(cfc16x8):
    g = cfc16x8
    assert g.tensors[g.by_role("input")[0]].dtype == "int16"
    rng = np.random.default_rng(2)
    xs = _ints(rng, (2, 1000, 4), "int16")
    want = run_batch(g, xs)
    got = jax.jit(lambda x: JaxGolden(g).run_batch({}, x))(xs)
    for k in g.outputs:
        np.testing.assert_array_equal(np.asarray(got[k]).reshape(want[k].shape), want[k])


# --- the CPU schedule: lut indices written out before the gather ------------------------

@pytest.mark.parametrize("dtype", ["int8", "int16"])
def test_materialized_indices_are_every_value_exactly(dtype):
    from ncc.compiler.golden_jax import materialized

    lo, hi = nx.dtype_range(dtype)
    every = np.arange(lo, hi + 1).astype(dtype).reshape(-1, 64)
    got = np.asarray(jax.jit(materialized)(every))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, every.astype(np.int32))
    assert materialized(jnp.zeros((3, 0), dtype)).shape == (3, 0)  # no channels


@pytest.mark.parametrize("shape", [(BATCH, 1), (5, 67), (3, 128)])  # K=1, prime > 64, blocks
@pytest.mark.parametrize("dtype", ["int8", "int16"])
def test_lut_with_and_without_materialized_indices_matches_numpy(shape, dtype):
    rng = np.random.default_rng(shape[1])
    table = _ints(rng, (1 << (8 * np.dtype(dtype).itemsize),), dtype)
    g = _one_op("lut", {"a": (shape, dtype)}, {"table": table}, {}, dtype, shape)
    feeds = {"a": _ints(rng, shape, dtype)}
    want = run_step(g, feeds)["out"]
    for materialize in (True, False):
        model = JaxGolden(g, materialize_lut=materialize)
        assert model.materialize_lut is materialize
        got = jax.jit(lambda f, m=model: m.step({}, f))(feeds)["out"]
        np.testing.assert_array_equal(np.asarray(got), want)
    assert JaxGolden(g).materialize_lut is (jax.default_backend() == "cpu")
