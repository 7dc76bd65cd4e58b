"""ncc.models.quantization: numpy and JAX integer cores agree bit for bit; fake-quant is exact."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ncc.models import quantization as q
from ncc.models.observers import MinMaxObserver, PercentileObserver, make_observer

INT32 = st.integers(q.INT32_MIN, q.INT32_MAX)
SETTINGS = settings(max_examples=20, deadline=None)


def int32_arrays(min_value=q.INT32_MIN, max_value=q.INT32_MAX, size=64):
    return hnp.arrays(np.int64, size, elements=st.integers(min_value, max_value))


def exact_srdhm(a: int, b: int) -> int:
    """Python-int reference of gemmlowp SaturatingRoundingDoublingHighMul."""
    if a == b == q.INT32_MIN:
        return q.INT32_MAX
    ab = a * b
    total = ab + ((1 << 30) if ab >= 0 else 1 - (1 << 30))
    return abs(total) >> 31 if total >= 0 else -(abs(total) >> 31)


def exact_rdbp(x: int, e: int) -> int:
    """x / 2^e rounded half away from zero, from rationals."""
    from fractions import Fraction

    v = Fraction(x, 1 << e)
    r = abs(v)
    n = int(r) + (1 if r - int(r) >= Fraction(1, 2) else 0)
    return n if v >= 0 else -n


# --- integer core --------------------------------------------------------------------------


@SETTINGS
@given(int32_arrays(), int32_arrays())
def test_srdhm_numpy_jax_and_exact_reference_agree(a, b):
    a[:3], b[:2] = q.INT32_MIN, q.INT32_MIN
    ref = np.array([exact_srdhm(int(x), int(y)) for x, y in zip(a, b, strict=True)])
    np.testing.assert_array_equal(q.saturating_rounding_doubling_high_mul(a, b), ref)
    got = q.saturating_rounding_doubling_high_mul_jax(a.astype(np.int32), b.astype(np.int32))
    np.testing.assert_array_equal(np.asarray(got), ref)


@SETTINGS
@given(int32_arrays(), hnp.arrays(np.int64, 64, elements=st.integers(0, 31)))
def test_rounding_divide_by_pot_rounds_half_away(x, e):
    ref = np.array([exact_rdbp(int(v), int(k)) for v, k in zip(x, e, strict=True)])
    np.testing.assert_array_equal(q.rounding_divide_by_pot(x, e), ref)
    got = q.rounding_divide_by_pot_jax(x.astype(np.int32), e.astype(np.int32))
    np.testing.assert_array_equal(np.asarray(got), ref)


@SETTINGS
@given(int32_arrays(-(1 << 24), 1 << 24),
       hnp.arrays(np.int64, 64, elements=st.integers(1 << 30, (1 << 31) - 1)),
       hnp.arrays(np.int64, 64, elements=st.integers(-31, 6)))
def test_multiply_by_quantized_multiplier_numpy_equals_jax(x, m, shift):
    ref = q.multiply_by_quantized_multiplier(x, m, shift)
    got = q.multiply_by_quantized_multiplier_jax(x.astype(np.int32), m.astype(np.int32),
                                                 shift.astype(np.int32))
    np.testing.assert_array_equal(np.asarray(got), ref)
    # and it approximates x * m * 2^(shift - 31) within one step
    real = x * (m / 2.0 ** 31) * 2.0 ** shift
    assert np.all(np.abs(ref - real) <= 1.0 + np.abs(real) * 2.0 ** -30)


def test_multiply_by_quantized_multiplier_jit_equals_eager():
    rng = np.random.default_rng(3)
    x = rng.integers(-(1 << 20), 1 << 20, 5000).astype(np.int32)
    m = rng.integers(1 << 30, (1 << 31) - 1, 5000).astype(np.int32)
    s = rng.integers(-31, 4, 5000).astype(np.int32)
    jitted = jax.jit(q.multiply_by_quantized_multiplier_jax)(x, m, s)
    np.testing.assert_array_equal(np.asarray(jitted), q.multiply_by_quantized_multiplier(x, m, s))


@SETTINGS
@given(st.floats(1e-9, 1e3, allow_subnormal=False))
def test_quantize_multiplier_range_and_accuracy(real):
    m, shift = q.quantize_multiplier(real)
    assert (1 << 30) <= m < (1 << 31) or (m, shift) == (0, 0)
    if m:
        assert abs(m * 2.0 ** (shift - 31) - real) <= real * 2.0 ** -31
    mj, sj = q.quantize_multiplier_jax(jnp.float32(real))
    assert (int(mj), int(sj)) == q.quantize_multiplier(float(np.float32(real)))


def test_quantize_multiplier_edges():
    assert q.quantize_multiplier(0.0) == (0, 0)
    assert q.quantize_multiplier(2.0 ** -40) == (0, 0)
    assert q.quantize_multiplier(1.0) == (1 << 30, 1)
    assert q.quantize_multiplier(0.5) == (1 << 30, 0)
    with pytest.raises(ValueError):
        q.quantize_multiplier(-0.1)
    with pytest.raises(ValueError):
        q.quantize_multiplier(2.0 ** 31)


def test_round_half_away_ties_and_near_ties():
    x = np.array([0.5, -0.5, 1.5, -2.5, 0.49999997, -0.49999997, 2.4999998, 1e8 + 0.5],
                 np.float32)
    expected = np.array([1, -1, 2, -3, 0, -0, 2, np.float32(1e8 + 0.5)], np.float32)
    np.testing.assert_array_equal(q.round_half_away(x), expected)
    np.testing.assert_array_equal(np.asarray(q.round_half_away_jax(jnp.asarray(x))), expected)


# --- parameters ------------------------------------------------------------------------------


@SETTINGS
@given(st.floats(-100, 100), st.floats(-100, 100), st.sampled_from([(8, True), (16, True),
                                                                     (8, False), (4, True)]))
def test_asymmetric_params_cover_range_and_zero(lo, hi, grid):
    bits, signed = grid
    p = q.asymmetric_params(lo, hi, bits, signed)
    rlo, rhi = p.real_range()
    step = p.scale[0]
    assert rlo[0] <= min(lo, 0.0) + step and rhi[0] >= max(hi, 0.0) - step
    assert q.dequantize(q.quantize(np.float32(0.0), p), p) == 0.0


def test_params_json_round_trip_and_compiler_form():
    p = q.symmetric_params([0.5, 2.0, 0.0], bits=4, axis=0)
    d = json.loads(json.dumps(p.to_dict()))
    assert q.QuantParams.from_dict(d) == p
    assert p.zero_point == (0, 0, 0) and p.scale[1] == pytest.approx(2.0 / 7)
    legacy = {"scale": [0.1], "zero_point": [3], "dtype": "int16", "axis": None}
    assert q.QuantParams.from_dict(legacy).bits == 16
    assert q.QuantParams((0.1,), (0,)).scale[0] == float(np.float32(0.1)) or \
        q.QuantParams((0.1,), (0,)).scale[0] > 0.1


def test_power_of_two_scales():
    p = q.asymmetric_params(-1.3, 2.9, power_of_two=True)
    assert np.log2(p.scale[0]) == np.round(np.log2(p.scale[0]))
    assert p.real_range()[1][0] >= 2.9


def test_bad_params_are_rejected():
    with pytest.raises(ValueError):
        q.QuantParams((0.0,), (0,))
    with pytest.raises(ValueError):
        q.QuantParams((1.0,), (200,))
    with pytest.raises(ValueError):
        q.QuantParams((1.0, 2.0), (0, 0))  # two scales need an axis


# --- quantize / requantize / tables: numpy vs JAX --------------------------------------------

FLOATS = hnp.arrays(np.float32, 128, elements=st.floats(-1e4, 1e4, width=32))
PARAMS = st.builds(lambda lo, hi, bits, signed: q.asymmetric_params(-lo, hi, bits, signed),
                   st.floats(0.01, 50), st.floats(0.01, 50), st.sampled_from([4, 8, 16]),
                   st.booleans())


@SETTINGS
@given(FLOATS, PARAMS)
def test_quantize_dequantize_numpy_equals_jax(x, p):
    qn = q.quantize(x, p)
    assert qn.min() >= p.qmin and qn.max() <= p.qmax
    np.testing.assert_array_equal(np.asarray(jax.jit(q.quantize_jax, static_argnums=1)(x, p)), qn)
    np.testing.assert_array_equal(np.asarray(q.dequantize_jax(qn, p)), q.dequantize(qn, p))


@settings(max_examples=25, deadline=None)
@given(FLOATS, PARAMS, PARAMS)
def test_requantize_numpy_equals_jax_and_is_close(x, p_in, p_out):
    qi = q.quantize(x, p_in)
    ref = q.requantize(qi, p_in, p_out)
    requant = jax.jit(q.requantize_jax, static_argnums=(1, 2))
    np.testing.assert_array_equal(np.asarray(requant(qi, p_in, p_out)), ref)
    _, shift = q.quantize_multiplier(p_in.scale[0] / p_out.scale[0])
    if np.abs(qi.astype(np.int64) - p_in.zero_point[0]).max() << max(shift, 0) < 1 << 31:
        direct = q.quantize(q.dequantize(qi, p_in), p_out).astype(np.int64)
        assert np.all(np.abs(ref.astype(np.int64) - direct) <= 1)


def test_per_axis_quantize_uses_each_slice_scale():
    w = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32) * [1, 10, 100]
    p = q.params_for_tensor(w, 8, symmetric=True, axis=1)
    qw = q.quantize(w, p)
    assert np.all(np.abs(qw).max(axis=0) == 127)
    np.testing.assert_array_equal(np.asarray(q.quantize_jax(w, p)), qw)
    np.testing.assert_array_equal(np.asarray(q.fake_quant(w, p)), q.dequantize(qw, p))


@pytest.mark.parametrize("fn", sorted(q.TABLE_FUNCTIONS))
def test_table_entries_follow_the_formula(fn):
    p_in = q.asymmetric_params(-6, 4)
    p_out = q.asymmetric_params(0, 1) if fn == "sigmoid" else q.asymmetric_params(-1.8, 1.8)
    if fn == "exp":
        p_out = q.asymmetric_params(0, np.exp(4))
    table = q.build_table(fn, p_in, p_out)
    assert table.shape == (256,) and table.dtype == np.int8
    real = (np.arange(-128, 128) - p_in.zero_point[0]) * p_in.scale[0]
    f = {"sigmoid": lambda v: 1 / (1 + np.exp(-v)), "tanh": np.tanh, "exp": np.exp,
         "lecun_tanh": lambda v: 1.7159 * np.tanh(0.666 * v),
         "cospi": lambda v: np.cos(np.pi * v), "sinpi": lambda v: np.sin(np.pi * v),
         "rsqrt": lambda v: 1 / np.sqrt(np.maximum(v, 1e-20)),
         "softplus": lambda v: np.log1p(np.exp(v))}[fn]
    approx = f(real) / p_out.scale[0] + p_out.zero_point[0]
    assert np.all(np.abs(table - np.clip(approx, -128, 127)) <= 0.5 + 1e-9)
    x = np.linspace(-7, 5, 301, dtype=np.float32)
    qi = q.quantize(x, p_in)
    expected = q.dequantize(q.lookup(qi, table, p_in), p_out)
    np.testing.assert_array_equal(np.asarray(q.fake_quant_table(x, fn, p_in, p_out)), expected)


@pytest.mark.parametrize("fn", sorted(q.TABLE_FUNCTIONS))
def test_compact_int16_table_is_one_function_everywhere(fn):
    """On all 65,536 int16 inputs: the core's interpolated lookup = its JAX spelling (jit) =
    the golden numpy and JAX kernels = the fake-quant forward (QAT is deployment-exact)."""
    from ncc.compiler import golden
    from ncc.compiler.golden_jax import JaxGolden
    from ncc.compiler.ir import Graph, Op, Tensor

    p_in = q.int16_activation_params(-5.0, 5.0)
    p_out = q.int16_activation_params(*{"sigmoid": (0, 1), "exp": (0, 150)}.get(fn, (-1.8, 1.8)))
    table = q.deployed_table(fn, p_in, p_out)
    assert table.shape == (q.INTERP_ENTRIES,)
    levels = np.arange(-32768, 32768).astype(np.int16)
    want = q.interpolated_lookup(levels, table)
    assert len(np.unique(want)) > 1000  # the function moves over the grid
    np.testing.assert_array_equal(np.asarray(q.interpolated_lookup_jax(
        jnp.asarray(levels), jnp.asarray(table, jnp.int32))), want)
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda v: q.lookup_jax(v, table, p_in))(
        levels)), want)
    np.testing.assert_array_equal(golden.lut(levels, table), want)
    g = Graph("lut", {"x": Tensor("x", levels.shape, "int16", p_in),
                      "t": Tensor("t", table.shape, "int16"),
                      "y": Tensor("y", levels.shape, "int16", p_out)},
              ["x"], ["y"], {"x": "input", "y": "output"}, [], {"t": table},
              [Op("lut", ("x", "t"), "y")])
    np.testing.assert_array_equal(np.asarray(JaxGolden(g).step({}, {"x": levels})["y"]), want)
    x = q.dequantize(levels, p_in)
    np.testing.assert_array_equal(np.asarray(q.fake_quant_table(x, fn, p_in, p_out)),
                                  q.dequantize(want, p_out))


# --- fake-quant -------------------------------------------------------------------------------


@SETTINGS
@given(FLOATS, PARAMS)
def test_fake_quant_forward_is_exactly_on_the_grid(x, p):
    expected = q.dequantize(q.quantize(x, p), p)
    np.testing.assert_array_equal(np.asarray(q.fake_quant(x, p)), expected)
    np.testing.assert_array_equal(np.asarray(jax.jit(q.fake_quant, static_argnums=1)(x, p)),
                                  expected)


def test_fake_quant_gradient_straight_through_inside_zero_outside():
    p = q.asymmetric_params(-2.0, 3.0)
    lo, hi = (float(v[0]) for v in p.real_range())
    x = jnp.array([lo - 1.0, lo + 0.01, 0.123, hi - 0.01, hi + 1.0, 50.0])
    g = jax.grad(lambda v: jnp.sum(q.fake_quant(v, p) * jnp.arange(1.0, 7.0)))(x)
    np.testing.assert_array_equal(np.asarray(g), [0, 2, 3, 4, 0, 0])


def test_fake_quant_table_gradient_is_the_float_slope_inside():
    p_in, p_out = q.asymmetric_params(-4, 4), q.asymmetric_params(-1, 1)
    x = jnp.array([-9.0, -1.0, 0.5, 9.0])
    g = jax.grad(lambda v: jnp.sum(q.fake_quant_table(v, "tanh", p_in, p_out)))(x)
    np.testing.assert_allclose(np.asarray(g), [0, 1 - np.tanh(-1.0) ** 2,
                                               1 - np.tanh(0.5) ** 2, 0], rtol=1e-6)


def test_jaxpr_shows_custom_jvp_call_with_readable_params():
    p = q.params_for_tensor(np.array([[-1.0, 2.0], [0.5, -3.0]]), 8, symmetric=True, axis=1)
    p_act = q.asymmetric_params(-1, 5, bits=16)

    def step(x, w):
        h = q.fake_quant(x, p_act) @ q.fake_quant(w, p)
        return q.fake_quant_table(h, "sigmoid", p_act, q.asymmetric_params(0, 1)) + 1.0

    jaxpr = jax.make_jaxpr(jax.jit(step))(jnp.ones((1, 2)), jnp.ones((2, 2)))
    inner = jaxpr.eqns[0].params["jaxpr"]
    found = [q.fake_quant_spec_from_jaxpr_eqn(e) for e in inner.eqns]
    specs = [s for s in found if s is not None]
    assert [e.primitive.name for e in inner.eqns if q.fake_quant_spec_from_jaxpr_eqn(e)] == \
        ["custom_jvp_call"] * 3
    assert [s.kind for s in specs] == ["quant", "quant", "table"]
    assert specs[0].params == p_act and specs[1].params == p
    assert specs[2].fn == "sigmoid" and specs[2].in_params == p_act
    assert q.fake_quant_params_from_jaxpr_eqn(inner.eqns[-1]) is None  # the add
    assert sum(q.fake_quant_params_from_jaxpr_eqn(e) is not None for e in inner.eqns) == 3


def test_dynamic_fake_quant_is_recognized_and_on_its_grid():
    w = jnp.array([[0.3, -1.2], [2.5, 0.01]])
    scale = jnp.max(jnp.abs(w), axis=0) / 127
    out = q.fake_quant_dynamic(w, scale, 0.0, 8)
    steps = np.asarray(out) / np.asarray(scale)
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)
    eqn = jax.make_jaxpr(lambda v: q.fake_quant_dynamic(v, scale, 0.0))(w).eqns[-1]
    spec = q.fake_quant_spec_from_jaxpr_eqn(eqn)
    assert spec.kind == "dynamic" and spec.bits == 8 and spec.signed


def test_keras_fake_quant_matches_jax():
    p = q.asymmetric_params(-1.5, 2.5)
    x = np.linspace(-3, 3, 97, dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(q.keras_fake_quant(x, p)),
                                  q.dequantize(q.quantize(x, p), p))


# --- config and observers ----------------------------------------------------------------------


def test_quant_config_round_trip_and_validation():
    c = q.QuantConfig(weight_bits=4, state_bits=16, keep_float={"nonlinearities"})
    assert q.QuantConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert not c.quantizes("nonlinearities") and c.quantizes("weights")
    for bad in ({"weight_bits": 3}, {"state_bits": 12}, {"keep_float": {"biases"}}):
        with pytest.raises(ValueError):
            q.QuantConfig(**bad)


def test_minmax_observer_running_and_ema():
    batches = [np.array([-1.0, 2.0]), np.array([-3.0, 1.0]), np.array([0.5, 4.0])]
    run, ema = MinMaxObserver(), MinMaxObserver(momentum=0.5)
    s_run, s_ema = run.init(), ema.init()
    for b in batches:
        s_run, s_ema = jax.jit(run.update)(s_run, b), ema.update(s_ema, b)
    assert (float(s_run["lo"]), float(s_run["hi"])) == (-3.0, 4.0)
    assert float(s_ema["lo"]) == pytest.approx(0.5 * (0.5 * -1 + 0.5 * -3) + 0.5 * 0.5)
    assert float(s_ema["hi"]) == pytest.approx(0.5 * (0.5 * 2 + 0.5 * 1) + 0.5 * 4)
    p = run.params(s_run)
    lo, hi = (float(v[0]) for v in p.real_range())
    assert lo <= -3.0 + p.scale[0] and hi >= 4.0 - p.scale[0] and hi - lo >= 7.0
    with pytest.raises(ValueError):
        run.params(run.init())


def test_percentile_observer_ignores_outliers_and_per_axis_minmax():
    x = np.concatenate([np.linspace(-1, 1, 10000), [1000.0]]).astype(np.float32)
    obs = PercentileObserver(percentile=99.9)
    state = obs.update(obs.init(), x)
    assert float(state["hi"]) < 2.0
    per = make_observer("minmax", axis=1, channels=3)
    s = per.update(per.init(), np.array([[1.0, -2.0, 3.0], [-4.0, 5.0, 0.5]]))
    np.testing.assert_array_equal(np.asarray(s["hi"]), [1.0, 5.0, 3.0])
    assert per.params(s, symmetric=True).axis == 1


def test_int64_requantization_in_jax_int32_equals_the_numeric_core():
    """TFLite's int64 MBQM (16x8 dense layers), computed by JAX without 64-bit integers."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.integers(-2**31, 2**31, 20_000),
                        [-2**31, 2**31 - 1, 0, -1, 1, 65535, -65536, 65536]]).astype(np.int64)
    multipliers = np.array([1 << 30, 2**31 - 1, 1_500_000_000, 1_300_000_000, 2_147_418_112,
                            1_999_999_999, 1_800_000_000, 0x7FFF0000])
    shifts = np.array([-1, -20, -31, 0, -2, 1, 7, -15])
    got = np.asarray(q.multiply_by_quantized_multiplier_int64_jax(
        jnp.asarray(x.astype(np.int32))[:, None], multipliers, shifts))
    want = q.multiply_by_quantized_multiplier_int64(x[:, None], multipliers, shifts)
    fits = (want >= -2**31) & (want < 2**31)  # the kernel's result is an int32
    assert fits.sum() > 100_000
    np.testing.assert_array_equal(got[fits], want[fits])


# --- the training side's spellings of the core's kernel formulas -------------------------------


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float32, 24, elements=st.floats(-1e3, 1e3, width=32)),
       st.floats(1e-4, 0.5), hnp.arrays(np.float64, 24, elements=st.floats(1e-4, 0.5)))
def test_bias_quantization_in_jax_is_the_cores(bias, s_x, s_w):
    """`fake_quant_dense` quantizes its bias with `quantize_bias_jax`: the very integers of
    `ncc.numerics.quantize_bias` (the quantizer's), for any bias and scales."""
    p_x = q.QuantParams((s_x,), (0,))
    p_w = q.symmetric_params(s_w * 127, 8, axis=1)
    scale = q.bias_scale(p_x, p_w)
    bias[:3] = [1e9, -1e9, 0.5 * scale[2]]  # saturating both ways, a tie
    want = q.quantize_bias(bias, scale)
    np.testing.assert_array_equal(np.asarray(q.quantize_bias_jax(bias, scale)), want)
    np.testing.assert_array_equal(np.asarray(jax.jit(q.quantize_bias_jax, static_argnums=1)(
        bias, tuple(scale))), want)
    assert want[0] == q.INT32_F32_MAX and want[1] == -q.INT32_F32_MAX


@pytest.mark.parametrize("x_bits", [8, 16])
def test_fake_quant_dense_is_the_golden_fully_connected(x_bits):
    """The training side's dense layer equals the golden kernel fed with the core's bias,
    multipliers and weights, bit for bit (int8 and 16x8)."""
    from ncc.compiler import golden

    rng = np.random.default_rng(x_bits)
    p_x = q.asymmetric_params(-2.0, 3.0, 8) if x_bits == 8 else \
        q.symmetric_params(3.0, 16)
    p_out = q.asymmetric_params(-4.0, 6.0, x_bits) if x_bits == 8 else \
        q.symmetric_params(6.0, 16)
    kernel = rng.standard_normal((40, 12)).astype(np.float32) * 0.3
    bias = rng.standard_normal(12).astype(np.float32)
    p_w = q.params_for_tensor(kernel, 8, symmetric=True, axis=1)
    x = rng.uniform(-2.5, 3.5, (64, 40)).astype(np.float32)
    ours = np.asarray(q.fake_quant_dense(x, kernel, bias, p_x, p_w, p_out))
    scale, mult, shift = q.dense_multipliers(p_x, p_w, p_out)
    gold = golden.fully_connected(q.quantize(x, p_x), q.quantize(kernel, p_w),
                                  q.quantize_bias(bias, scale), x_zp=p_x.zero_point[0],
                                  multiplier=tuple(mult), shift=tuple(shift),
                                  out_zp=p_out.zero_point[0], dtype=p_out.dtype)
    np.testing.assert_array_equal(ours.view(np.uint32), q.dequantize(gold, p_out).view(np.uint32))


def test_table_functions_in_jax_and_keras_follow_the_cores():
    """The float functions behind tables (and their gradients) in JAX and keras.ops are the
    core's: same lecun_tanh constants, same curves."""
    from ncc.models.keras.base import lecun_tanh

    x = np.linspace(-6, 6, 241)
    for fn, f in q.TABLE_FUNCTIONS.items():
        np.testing.assert_allclose(np.asarray(q.JAX_TABLE_FUNCTIONS[fn](x.astype(np.float32))),
                                   f(x), rtol=2e-6, atol=2e-6, err_msg=fn)
    np.testing.assert_allclose(np.asarray(lecun_tanh(x.astype(np.float32))),
                               q.TABLE_FUNCTIONS["lecun_tanh"](x), rtol=2e-6, atol=2e-6)


def test_keras_ops_fake_quant_on_a_non_jax_backend_is_the_cores():
    """keras.ops spelling (what other Keras backends run) of `quantize` and of a table
    lookup, checked on Keras' numpy backend in a fresh interpreter."""
    import os
    import subprocess
    import sys

    code = """
import numpy as np
from ncc.models import quantization as q
p_in, p_out = q.asymmetric_params(-4.0, 3.0), q.asymmetric_params(-1.8, 1.8)
x = np.linspace(-5, 4, 2001, dtype=np.float32)
grid = q.dequantize(q.quantize(x, p_in), p_in)
assert np.array_equal(np.asarray(q.keras_fake_quant(x, p_in)), grid)
for fn in sorted(q.TABLE_FUNCTIONS):
    table = q.build_table(fn, p_in, p_out)
    want = q.dequantize(q.lookup(q.quantize(x, p_in), table, p_in), p_out)
    assert np.array_equal(np.asarray(q.keras_fake_quant_table(x, fn, p_in, p_out)), want), fn
# int16 input: the compact table, interpolated, on every level and beyond the rails
p16, o16 = q.int16_activation_params(-4.0, 4.0), q.int16_activation_params(-1.8, 1.8)
x16 = np.concatenate([q.dequantize(np.arange(-32768, 32768), p16), [-9.0, 9.0]]).astype(np.float32)
for fn in sorted(q.TABLE_FUNCTIONS):
    table = q.deployed_table(fn, p16, o16)
    assert table.shape == (q.INTERP_ENTRIES,)
    want = q.dequantize(q.interpolated_lookup(q.quantize(x16, p16), table), o16)
    assert np.array_equal(np.asarray(q.keras_fake_quant_table(x16, fn, p16, o16)), want), fn
print("ok")
"""
    env = {**os.environ, "KERAS_BACKEND": "numpy"}
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
