"""Calibration records each tensor's range over whole sequences, state included."""

import numpy as np
import pytest

from ncc.compiler.calibrate import CalibrationError, record_ranges
from ncc.compiler.interpret import run_step
from ncc.compiler.pipeline import to_graph
from ncc.models import zoo


@pytest.fixture(scope="module")
def cfc_graph():
    return to_graph(zoo.cfc(units=8, backbone_units=8))


def test_ranges_cover_every_step_of_every_sequence(cfc_graph):
    g = cfc_graph
    x = np.random.default_rng(1).standard_normal((3, 20, 8)).astype(np.float32)
    ranges = record_ranges(g, x)
    # replay sequentially and check every observed value lies inside the recorded range
    for seq in x:
        state = dict(g.initial_state)
        for xt in seq:
            env = run_step(g, {"x": xt[None], **state}, every_tensor=True)
            for name, r in ranges.items():
                assert r.lo - 1e-5 <= env[name].min() and env[name].max() <= r.hi + 1e-5, name
            state = {a: env[b] for a, b in g.state_pairs}
    (s_in, s_out), = g.state_pairs
    assert ranges[s_out].hi > ranges[s_out].lo  # the recurrent state was seen moving


def test_percentile_range_is_inside_minmax_and_includes_zero(cfc_graph):
    x = np.random.default_rng(2).standard_normal((2, 30, 8)).astype(np.float32) + 3
    r = record_ranges(cfc_graph, x)["x"]
    lo, hi = r.percentile_range(99.0)
    assert r.lo > 0  # shifted data: the range must still be stretched to include 0
    assert lo == 0.0 and 0.0 < hi < r.hi


@pytest.mark.parametrize("x, message", [
    (np.zeros((2, 5, 7), np.float32), "shape"),
    (np.full((1, 5, 8), np.nan, np.float32), "NaN"),
    (np.zeros((0, 5, 8), np.float32), "empty"),
])
def test_bad_calibration_data_is_refused(cfc_graph, x, message):
    with pytest.raises(CalibrationError, match=message):
        record_ranges(cfc_graph, x)
