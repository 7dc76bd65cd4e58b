"""The fixed-point arithmetic matches TFLite's reference formulas, computed independently
here with Python's unbounded integers."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ncc import numerics as nx
from ncc.compiler import int_safety
from ncc.compiler.ir import QuantParams

INT32 = st.integers(-(2**31), 2**31 - 1)


def srdhm_reference(a: int, b: int) -> int:
    if a == b == -(2**31):
        return 2**31 - 1
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    total = ab + nudge
    return abs(total) // (1 << 31) * (1 if total >= 0 else -1)  # C truncation


def rdbpot_reference(x: int, e: int) -> int:
    mask = (1 << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if remainder > threshold else 0)


@settings(max_examples=300, deadline=None)
@given(INT32, INT32)
def test_doubling_high_mul_matches_reference(a, b):
    assert int(nx.saturating_rounding_doubling_high_mul(a, b)) == srdhm_reference(a, b)


@settings(max_examples=300, deadline=None)
@given(INT32, st.integers(0, 31))
def test_rounding_divide_by_pot_matches_reference(x, e):
    assert int(nx.rounding_divide_by_pot(x, e)) == rdbpot_reference(x, e)


@settings(max_examples=300, deadline=None)
@given(st.floats(1e-6, 1e3, allow_nan=False), st.integers(-(2**20), 2**20))
def test_multiplier_round_trip_and_application(real, x):
    m, shift = nx.quantize_multiplier(real)
    assert 2**30 <= m < 2**31
    assert abs(m * 2.0 ** (shift - 31) - real) <= real * 2**-30
    expected = rdbpot_reference(srdhm_reference(x * (1 << max(shift, 0)), m), max(-shift, 0))
    if abs(x * (1 << max(shift, 0))) < 2**31:
        assert int(nx.multiply_by_quantized_multiplier(x, m, shift)) == expected
        assert abs(expected - x * real) <= 1 + abs(x * real) * 2**-29


def test_quantize_rounds_half_away_from_zero_and_saturates():
    p = QuantParams((0.5,), (3,))
    x = np.array([0.25, -0.25, 0.75, 1000.0, -1000.0])
    assert nx.quantize(x, p).tolist() == [4, 2, 5, 127, -128]
    assert np.allclose(nx.dequantize(nx.quantize(x[:3], p), p), [0.5, -0.5, 1.0])


def test_params_from_range_cover_range_and_zero_exactly():
    p = nx.params_from_range(-0.3, 2.7)
    assert nx.dequantize(nx.quantize(np.zeros(1), p), p)[0] == 0.0
    lo, hi = nx.dequantize(np.array([-128, 127]), p)
    assert lo <= -0.3 + p.scale[0] and hi >= 2.7 - p.scale[0]
    p = nx.params_from_range(1.0, 2.0)  # stretched to include 0
    assert nx.quantize(np.zeros(1), p)[0] == -128


def test_per_channel_weights_are_symmetric_and_use_full_range():
    w = np.array([[1.0, -0.02], [-2.0, 0.01]], np.float32)
    p = nx.params_for_tensor(w, 8, symmetric=True, axis=1)
    q = nx.quantize(w, p)
    assert p.zero_point == (0, 0) and p.axis == 1
    assert np.abs(q).max(axis=0).tolist() == [127, 127]


def test_accumulator_bound_is_proved_or_refused():
    assert int_safety.check_accumulator("int8", 64, np.zeros(4, np.int32), (-5,), "op") < 2**31
    with pytest.raises(int_safety.OverflowRisk, match="dense_7.*beyond int32"):
        int_safety.check_accumulator("int8", 70_000, np.zeros(4, np.int32), (-5,), "dense_7")
    with pytest.raises(int_safety.OverflowRisk, match="beyond int32"):
        int_safety.check_accumulator("int8", 1000, np.zeros(4, np.int32), (8,), "op")


# --- compact int16 tables ---------------------------------------------------------------------

COMPACT_CASES = [  # fn, input range, output range: the grids a 16x8 CfC / LTC uses
    ("sigmoid", 8.0, (0.0, 1.0)), ("tanh", 4.0, (-1.0, 1.0)), ("tanh", 20.0, (-1.0, 1.0)),
    ("lecun_tanh", 3.0, (-1.8, 1.8)), ("exp", 6.0, (0.0, 1.0)),
]


@pytest.mark.parametrize(("fn", "span", "out"), COMPACT_CASES)
def test_compact_table_is_within_its_error_bound_of_the_float_function(fn, span, out):
    """On every int16 input, |interpolated - f / s_out| <= 1 + max|f''| h^2 / 8 output LSBs
    (entry rounding 1/2, interpolation rounding 1/2, the chord's curvature error at segment
    width h), measured against the saturated float function."""
    p_in = nx.int16_activation_params(-span, span)
    p_out = nx.int16_activation_params(*out)
    table = nx.build_interp_table(fn, p_in, p_out)
    assert table.shape == (nx.INTERP_ENTRIES,) and table.dtype == np.int16
    q = np.arange(-32768, 32768)
    got = nx.interpolated_lookup(q, table)
    real = nx.dequantize(q, p_in).astype(np.float64)
    f = nx.TABLE_FUNCTIONS[fn]
    want = np.clip(f(real) / p_out.scale[0], p_out.qmin, p_out.qmax)
    h = p_in.scale[0] * (1 << nx.INTERP_SEGMENT_BITS)
    fine = np.linspace(real[0], real[-1] + h, 1 << 18)
    curvature = np.abs(np.gradient(np.gradient(np.clip(
        f(fine) / p_out.scale[0], p_out.qmin, p_out.qmax), fine), fine))
    bound = 1.0 + curvature.max() * h * h / 8
    assert np.abs(got - want).max() <= bound, (np.abs(got - want).max(), bound)
    # entries are where the line passes at segment starts; output between the neighbours
    starts = q[::1 << nx.INTERP_SEGMENT_BITS]
    np.testing.assert_array_equal(nx.interpolated_lookup(starts, table), table[:-1])
    i = (q + 32768) >> nx.INTERP_SEGMENT_BITS
    lo = np.minimum(table[i], table[i + 1])
    hi = np.maximum(table[i], table[i + 1])
    assert np.all((got >= lo) & (got <= hi))
    # and it is as good as the 65,536-entry table to one LSB on these grids
    full = nx.build_table(fn, p_in, p_out).astype(np.int64)
    assert np.abs(got - full).max() <= (1 if span <= 8 and fn != "exp" else 16)
    assert nx.lookup(q, table, p_in).tolist() == got.tolist()


def test_compact_lookup_stays_in_int32_on_extreme_tables():
    """Neighbours 65535 apart: the result still lies between them (no wrap, no saturation)."""
    table = np.tile(np.array([-32768, 32767], np.int16), nx.INTERP_ENTRIES // 2 + 1)[
        :nx.INTERP_ENTRIES]
    q = np.arange(-32768, 32768)
    got = nx.interpolated_lookup(q, table)
    assert got.min() == -32768 and got.max() == 32767
    f = (q + 32768) & ((1 << nx.INTERP_SEGMENT_BITS) - 1)
    rising = ((q + 32768) >> nx.INTERP_SEGMENT_BITS) % 2 == 0
    want = np.where(rising, -32768 + (65535 * f + 64) // 128, 32767 + (-65535 * f + 64) // 128)
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="513"):
        nx.interpolated_lookup(q, table[:-1])
