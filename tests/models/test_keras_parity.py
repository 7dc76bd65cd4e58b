"""Same weights, same outputs: ncc CfC/LTC against ncps.keras 1.0.1 (max abs error <= 1e-5).

Layers run unrolled (eager JAX compiles a scan on every call; unrolled ops are cached).
"""

import ncps.keras as nk
import ncps.wirings as nw
import numpy as np
import pytest

from ncc.models.keras import LTC, CfC, load_ncps_weights

TOL = 1e-5


def _close(ours, theirs, *args):
    a = np.asarray(ours(*args))
    b = np.asarray(theirs(*args))
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= TOL
    return a


def _ncps_cfc(wiring, backbone, mode):
    if wiring == "autoncp":
        return nk.CfC(nw.AutoNCP(10, 3, seed=3), mode=mode, return_sequences=True, unroll=True)
    if wiring == "fc_wired":  # ncps WiredCfCCell over FullyConnected: signed masks
        return nk.CfC(nw.FullyConnected(6, output_dim=2), mode=mode, return_sequences=True,
                      unroll=True)
    return nk.CfC(6, mode=mode, backbone_units=5 if backbone else 128,
                  backbone_layers=2 if backbone else 0, return_sequences=True, unroll=True)


@pytest.mark.parametrize("mode", ["default", "pure", "no_gate"])
@pytest.mark.parametrize("wiring,backbone", [("fc", False), ("fc", True), ("fc_wired", False),
                                             ("autoncp", False)])
def test_cfc_matches_ncps(xs, dts, mode, wiring, backbone):
    theirs = _ncps_cfc(wiring, backbone, mode)
    theirs(xs)
    ours = CfC.from_ncps(theirs)
    y = _close(ours, theirs, xs)
    assert np.isfinite(y).all() and np.abs(y).max() > 1e-3
    # one step with a time span: ncps' plain CfCCell supports (x, t); compare cells directly
    if wiring == "fc":
        h = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
        step = (xs[:, 0], dts[:, :1])
        a = np.asarray(ours.cell(step, [h])[0])
        b = np.asarray(theirs.cell(step, [h])[0])
        assert np.abs(a - b).max() <= TOL


@pytest.mark.parametrize("mode", ["default", "pure", "no_gate"])
def test_cfc_backbone_on_sparse_wiring_is_refused_by_ncps_and_built_by_ncc(mode):
    with pytest.raises(ValueError):
        nk.CfC(nw.AutoNCP(10, 3), mode=mode, backbone_units=8)
    layer = CfC(nw.AutoNCP(10, 3), mode=mode, backbone_units=8)  # [x, h] -> sensory inputs
    assert layer.cell.wired_backbone


def test_dense_cfc_set_weights_lines_up_with_ncps(xs):
    theirs = nk.CfC(6, backbone_layers=0, return_sequences=True, unroll=True)
    theirs(xs)
    ours = CfC(6, unroll=True)
    ours(xs)
    ours.set_weights(theirs.get_weights())
    _close(ours, theirs, xs)


@pytest.mark.parametrize("wiring,mapping", [
    (lambda: 7, "affine"),
    (lambda: nw.FullyConnected(6, output_dim=2), "affine"),
    (lambda: nw.NCP(5, 4, 3, 3, 2, 2, 2, seed=3), "affine"),
    (lambda: nw.AutoNCP(10, 3, seed=5), "affine"),
    (lambda: nw.AutoNCP(10, 3, seed=5), "linear"),
    (lambda: nw.AutoNCP(10, 3, seed=5), None),
], ids=["fc-int", "fc-2-outputs", "ncp", "autoncp", "autoncp-linear", "autoncp-no-mapping"])
def test_ltc_matches_ncps(xs, wiring, mapping):
    theirs = nk.LTC(wiring(), input_mapping=mapping, output_mapping=mapping, ode_unfolds=4,
                    return_sequences=True, unroll=True)
    theirs(xs)
    ours = LTC.from_ncps(theirs)
    y = _close(ours, theirs, xs)
    assert np.isfinite(y).all()
    # same variable names and order: plain get/set_weights works too
    fresh = LTC(ours.wiring.copy(), input_mapping=mapping, output_mapping=mapping,
                ode_unfolds=4, unroll=True)
    fresh(xs)
    fresh.set_weights(theirs.get_weights())
    _close(fresh, theirs, xs)


def test_load_ncps_weights_into_own_layer_and_errors(xs):
    theirs = nk.CfC(nw.AutoNCP(10, 3, seed=3), return_sequences=True, unroll=True)
    theirs(xs)
    ours = CfC(nw.AutoNCP(10, 3, seed=3), unroll=True)
    ours(xs)
    load_ncps_weights(ours, theirs)
    _close(ours, theirs, xs)
    with pytest.raises(ValueError, match="not built"):
        CfC.from_ncps(nk.CfC(4))
    with pytest.raises(ValueError, match="build"):
        load_ncps_weights(CfC(nw.AutoNCP(10, 3, seed=3)), theirs)
    with pytest.raises(ValueError, match="mixed_memory"):
        CfC.from_ncps(nk.CfC(4, mixed_memory=True))
