"""The quantizer: integer IR structure, constraints, and clear refusals."""

import numpy as np
import pytest

from ncc import numerics as nx
from ncc.compiler import int_safety
from ncc.compiler.calibrate import CalibrationError
from ncc.compiler.frontends import from_jax
from ncc.compiler.interpret import run_sequence
from ncc.compiler.ir import INTEGER_OPS
from ncc.compiler.pipeline import quantize_graph, to_graph
from ncc.compiler.quantize import QuantizationError
from ncc.models import zoo


def calib(n=8, t=60, f=8, seed=0):
    return {"x": np.random.default_rng(seed).standard_normal((n, t, f)).astype(np.float32)}


@pytest.fixture(scope="module")
def cfc_q():
    return quantize_graph(to_graph(zoo.cfc(units=8, backbone_units=8)), calib())


@pytest.fixture(scope="module")
def lif_q():
    return quantize_graph(to_graph(zoo.lif(hidden=16)), calib())


def test_integer_graph_has_no_float_left(cfc_q):
    q, _ = cfc_q
    assert all(t.dtype != "float32" for t in q.tensors.values())
    assert {op.kind for op in q.ops} & INTEGER_OPS
    assert not {"sigmoid", "tanh", "exp", "matmul"} & {op.kind for op in q.ops}
    # unary chains (lecun_tanh's scale-tanh-scale) are single tables: a table feeds
    # another table only where its result is also used elsewhere
    made = q.producer()
    users = q.consumers()
    luts = [op for op in q.ops if op.kind == "lut"]
    assert luts
    for op in luts:
        src = made.get(op.inputs[0])
        if src is not None and src.kind == "lut":
            assert len(users[src.output]) > 1


def test_state_keeps_its_parameters_through_the_recurrence(cfc_q, lif_q):
    for q, _ in (cfc_q, lif_q):
        for s_in, s_out in q.state_pairs:
            assert q.tensors[s_in].quant == q.tensors[s_out].quant
            assert q.initial_state[s_in].dtype == np.int8


def test_concat_inputs_share_parameters(cfc_q):
    q, _ = cfc_q
    (concat,) = [op for op in q.ops if op.kind == "concat"]
    params = {q.tensors[n].quant for n in (*concat.inputs, concat.output)}
    assert len(params) == 1


def test_spikes_are_exact_zero_or_one(lif_q):
    q, ref = lif_q
    spikes = [op.output for op in q.ops if op.kind == "cast"]
    assert spikes and all(q.tensors[s].quant.scale == (1.0,) for s in spikes)
    x = nx.quantize(calib(1, 200, seed=3)["x"][0][:, None], q.tensors["x"].quant)
    from ncc.compiler.interpret import run_step

    state = dict(q.initial_state)
    seen = set()
    for xt in x:
        env = run_step(q, {"x": xt, **state}, every_tensor=True)
        for s in spikes:
            seen |= set(np.unique(env[s]).tolist())
        state = {a: env[b] for a, b in q.state_pairs}
    assert seen == {0, 1}


def test_golden_tracks_float_on_cfc(cfc_q):
    q, ref = cfc_q
    x = calib(1, 300, seed=5)["x"][0][:, None]
    y_float = run_sequence(ref, x)["y"]
    y_int = nx.dequantize(run_sequence(q, nx.quantize(x, q.tensors["x"].quant))["y"],
                          q.tensors["y"].quant)
    sqnr = 10 * np.log10(np.sum(y_float**2) / np.sum((y_int - y_float) ** 2))
    assert sqnr > 20


def test_missing_or_bad_calibration_is_a_clear_error():
    g = to_graph(zoo.cfc(units=4, backbone_units=4))
    with pytest.raises(QuantizationError, match="--calibration"):
        quantize_graph(g, None)
    with pytest.raises(CalibrationError, match="NaN"):
        quantize_graph(g, {"x": np.full((2, 5, 8), np.nan, np.float32)})
    with pytest.raises(CalibrationError, match="shape"):
        quantize_graph(g, {"x": np.zeros((2, 5, 3), np.float32)})


def test_ops_without_integer_form_are_refused():
    import jax.numpy as jnp

    def step(x, h):  # a product of two activations through a matmul
        h = jnp.tanh(x @ jnp.ones((4, 4)) + h) @ jnp.tanh(h).T @ jnp.ones((1, 4))
        return h, h

    g = to_graph(from_jax(step, (4,), jnp.zeros((1, 4))))
    with pytest.raises(QuantizationError, match="both operands are activations"):
        quantize_graph(g, calib(f=4))


def test_overflowing_accumulator_is_refused():
    import jax.numpy as jnp

    w = jnp.ones((70_000, 2)) * 1e-3

    def step(x, h):
        y = x @ w + h
        return y, y

    g = to_graph(from_jax(step, (70_000,), jnp.zeros((1, 2))))
    with pytest.raises(int_safety.OverflowRisk, match="70000-term.*beyond int32"):
        quantize_graph(g, calib(n=1, t=2, f=70_000))


@pytest.mark.parametrize("activations", ["int8", "int16"])
@pytest.mark.parametrize("fn", ["cos", "sin", "softplus"])
def test_the_ssm_nonlinearities_become_tables_as_accurate_as_the_grids(fn, activations):
    """y = fn(2x): its table (256 entries at int8, the 513-entry interpolated form at int16)
    tracks the float function on the input grid within the bound each form states."""
    import jax
    import jax.numpy as jnp

    from ncc.compiler.quantize import QuantOptions

    f = {"cos": jnp.cos, "sin": jnp.sin, "softplus": jax.nn.softplus}[fn]

    def step(x, h):
        y = f(2.0 * x)
        return y, 0.5 * h + y

    g = to_graph(from_jax(step, (8,), jnp.zeros((1, 8))))
    q, ref = quantize_graph(g, calib(), QuantOptions(activations=activations))
    assert any(op.kind == "lut" for op in q.ops)
    xs = np.linspace(-3, 3, 400, dtype=np.float32).reshape(50, 1, 8)
    (x_name,), (y_name,) = q.by_role("input"), [n for n in q.outputs if q.roles[n] == "output"]
    p_x, p_y = q.tensors[x_name].quant, q.tensors[y_name].quant
    got = nx.dequantize(run_sequence(q, nx.quantize(xs, p_x))[y_name], p_y)
    want = run_sequence(ref, nx.dequantize(nx.quantize(xs, p_x), p_x))[y_name]
    err = np.max(np.abs(got - want)) / p_y.scale[0]  # output LSBs
    if activations == "int8":
        assert err <= 0.5 + 1e-3  # an exact table: the rounding of its entry
    else:  # the interpolation bound the core states: 1 + max|f''| h^2 / 8, h a segment
        curvature = {"cos": 4.0, "sin": 4.0, "softplus": 1.0}[fn]  # of f(2x), per x^2
        h = (1 << nx.INTERP_SEGMENT_BITS) * p_x.scale[0]
        assert err <= 1 + curvature * h * h / 8 / p_y.scale[0]
