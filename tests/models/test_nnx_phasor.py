"""NNX phasor layers (`ncc.models.nnx.phasor`): float mode equals spyx 1.0's
`spyx.phasor.PhasorMLP` / `ResonateFire`; after calibrate + freeze the fake-quant forward
is the golden model of the compiled artifact, bit for bit over 1,000 steps, and the c and
tflite-int8 artifacts are identical to that golden model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import spyx.phasor
from flax import nnx

from ncc import numerics as nx
from ncc.cli.driver import compile_model
from ncc.compiler.interpret import run_sequence
from ncc.models.nnx import PhasorMLP, ResonateFire, run_resonate_fire
from ncc.models.nnx.fake_quant import freeze, set_mode
from ncc.models.nnx.phasor import UNIT_GRID, rsqrt_grid
from ncc.models.quantization import QuantConfig

D, H, OUT = 4, 8, 3


def _inputs(steps: int, batch: int, seed: int) -> np.ndarray:
    """(T, B, D) standard-normal, time-major."""
    return np.random.default_rng(seed).standard_normal((steps, batch, D)).astype(np.float32)


def _mlp(layer: PhasorMLP, xs: np.ndarray) -> np.ndarray:
    return np.asarray(nnx.jit(lambda m, x: m(x))(layer, jnp.asarray(xs)))


def _resonate(layer: ResonateFire, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The step scanned over time under jit: (spikes (T, B, D), states (T, B, 2 D))."""
    graphdef, state = nnx.split(layer)

    def run(xs):
        def body(h, x):
            s, h = nnx.merge(graphdef, state)(x, h)
            return h, (s, h)

        return jax.lax.scan(body, layer.initial_state(xs.shape[1]), xs)[1]

    spikes, hs = jax.jit(run)(jnp.asarray(xs))
    return np.asarray(spikes), np.asarray(hs)


def _sqnr(want: np.ndarray, got: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(want**2) / np.sum((got - want) ** 2)))


# --- float: spyx's layers ---------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1, 2])
def test_phasor_mlp_float_equals_spyx(depth):
    ref = spyx.phasor.PhasorMLP(D, H, OUT, depth, rngs=nnx.Rngs(3))
    ours = PhasorMLP(D, H, OUT, depth, rngs=nnx.Rngs(3))  # spyx's draws, in spyx's order
    linears = [m for m in ref.layers if hasattr(m, "kernel_re")]
    for mine, theirs in zip(ours.layers, linears, strict=True):
        for name in ("kernel_re", "kernel_im", "bias_re", "bias_im"):
            np.testing.assert_array_equal(np.asarray(getattr(mine, name)[...]),
                                          np.asarray(getattr(theirs, name)[...]))
    np.testing.assert_array_equal(np.asarray(ours.readout_im[...]),
                                  np.asarray(ref.readout.proj.kernel_im[...]))
    xs = _inputs(1000, 2, 0)
    want = np.asarray(jax.jit(ref)(jnp.asarray(xs)))
    got = _mlp(PhasorMLP.from_spyx(ref), xs)
    assert np.abs(got - want).max() <= 1e-5
    assert np.abs(want).max() > 0.5


def test_resonate_fire_float_equals_spyx_step_for_step():
    ref = spyx.phasor.ResonateFire((D,), rngs=nnx.Rngs(3))
    ours = ResonateFire((D,), rngs=nnx.Rngs(3))
    for name in ("raw_lambda", "omega"):
        np.testing.assert_array_equal(np.asarray(getattr(ours, name)[...]),
                                      np.asarray(getattr(ref, name)[...]))
    xs = _inputs(1000, 2, 1)
    want = np.asarray(jax.jit(ref.parallel)(jnp.asarray(xs)))

    def spyx_states(xs):
        return jax.lax.scan(lambda z, x: (ref(x, z)[1],) * 2, ref.initial_state(2), xs)[1]

    z = np.asarray(jax.jit(spyx_states)(jnp.asarray(xs)))
    spikes, hs = _resonate(ResonateFire.from_spyx(ref), xs)
    np.testing.assert_array_equal(spikes, want)
    assert np.abs(hs - np.concatenate([z.real, z.imag], -1)).max() <= 1e-5
    assert 0.02 < want.mean() < 0.98  # it spikes, neither never nor always
    scalar = ResonateFire((D,), lambda_init=0.1, omega_init=0.5, rngs=nnx.Rngs(0))
    ref_scalar = spyx.phasor.ResonateFire((D,), lambda_init=0.1, omega_init=0.5,
                                          rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(_resonate(scalar, xs[:100])[0],
                                  np.asarray(jax.jit(ref_scalar.parallel)(xs[:100])))


# --- QAT: calibrate, freeze; the forward is the compiled artifact's golden model --------------


@pytest.fixture(scope="module")
def spyx_mlp():
    return spyx.phasor.PhasorMLP(D, H, OUT, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def spyx_resonate():
    return spyx.phasor.ResonateFire((D,), rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def qat_mlp(spyx_mlp) -> PhasorMLP:
    layer = PhasorMLP.from_spyx(spyx_mlp, quantization=QuantConfig())
    set_mode(layer, "calibrate")
    layer(jnp.asarray(_inputs(200, 4, 1)))
    frozen = freeze(layer, weights=True)
    assert {"q_x", "q_y", "w_y", "layers/0/q_r2", "layers/1/w"} <= set(frozen)
    assert layer.exact()
    return layer


@pytest.fixture(scope="module")
def qat_resonate(spyx_resonate) -> ResonateFire:
    layer = ResonateFire.from_spyx(spyx_resonate, quantization=QuantConfig())
    set_mode(layer, "calibrate")
    nnx.jit(run_resonate_fire)(layer, jnp.asarray(_inputs(30, 16, 1)))
    frozen = freeze(layer, weights=True)
    assert set(frozen) == {"q_state", "w_h"} and layer.exact()
    return layer


def _golden(q, xs: np.ndarray) -> dict[str, np.ndarray]:
    """The golden model over time-major xs, every output dequantized."""
    out = run_sequence(q, nx.quantize(xs, q.tensors["x"].quant))
    return {o: nx.dequantize(out[o], q.tensors[o].quant) for o in q.outputs}


@pytest.mark.parametrize("target", ["c", "tflite-int8"])
def test_qat_phasor_mlp_equals_golden_over_1000_steps(target, qat_mlp, tmp_path):
    res = compile_model(qat_mlp, target, tmp_path / target, verify_steps=300)
    q, report = res.graph, res.report
    assert report["exactness"]["passed"], report
    assert report["golden"]["y"] == {"identical": 1.0, "max_lsb": 0}  # the artifact
    kinds = [op.kind for op in q.ops]
    assert kinds.count("fully_connected") == 3 and kinds.count("lut") == 4  # cos, sin, 2 rsqrt
    assert q.tensors["x"].quant == qat_mlp.q_x.params
    assert q.tensors["y"].quant == qat_mlp.q_y.params

    xs = _inputs(1000, 1, 7)
    got = _mlp(qat_mlp, xs)
    want = _golden(q, xs)["y"].reshape(got.shape)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    assert len(np.unique(got)) > 50  # the output moves over its grid


@pytest.mark.parametrize("target", ["c", "tflite-int8"])
def test_qat_resonate_fire_equals_golden_over_1000_steps(target, qat_resonate, tmp_path):
    res = compile_model(qat_resonate, target, tmp_path / target, verify_steps=300)
    q, report = res.graph, res.report
    assert report["exactness"]["passed"], report
    for out in q.outputs:  # spikes and the state
        assert report["golden"][out] == {"identical": 1.0, "max_lsb": 0}
    (state_in,), (state_out,) = q.by_role("state_in"), q.by_role("state_out")
    for tensor in ("x", state_in, state_out):
        assert q.tensors[tensor].quant == qat_resonate.q_state.params  # one grid
    assert [op.kind for op in q.ops].count("fully_connected") == 1

    xs = _inputs(1000, 1, 7)
    spikes, hs = _resonate(qat_resonate, xs)
    gold = _golden(q, xs)
    np.testing.assert_array_equal(spikes.view(np.uint32), gold["y"].view(np.uint32))
    np.testing.assert_array_equal(hs.view(np.uint32), gold[state_out].view(np.uint32))
    assert 0.02 < spikes.mean() < 0.98
    assert len(np.unique(hs)) > 100  # the state moves over its grid


def test_qat_is_close_to_float_and_trains(spyx_mlp, qat_mlp, spyx_resonate, qat_resonate):
    """The deployed arithmetic against spyx's float (SQNR, spike agreement), and the
    straight-through gradient reaches every parameter."""
    xs = _inputs(1000, 1, 9)
    mlp_db = _sqnr(np.asarray(jax.jit(spyx_mlp)(jnp.asarray(xs))), _mlp(qat_mlp, xs))
    assert mlp_db >= 17  # 20.3 dB measured; PTQ of spyx's form: 0 dB (min/max), 15.4 (pct.)
    spikes, hs = _resonate(qat_resonate, xs)
    _, hs_float = _resonate(ResonateFire.from_spyx(spyx_resonate), xs)
    want = np.asarray(jax.jit(spyx_resonate.parallel)(jnp.asarray(xs)))
    assert (spikes == want).mean() >= 0.99 and _sqnr(hs_float, hs) >= 25

    grads = nnx.grad(lambda m: jnp.sum(m(jnp.asarray(xs[:20])) ** 2))(qat_mlp)
    for path in (("layers", 0, "kernel_re"), ("layers", 1, "bias_im"), ("readout_im",)):
        g = grads
        for key in path:
            g = g[key]
        g = np.asarray(g[...])
        assert np.all(np.isfinite(g)) and np.any(g != 0), path
    grads = nnx.grad(lambda m: jnp.sum(run_resonate_fire(m, jnp.asarray(xs[:20]))[1] ** 2))(
        qat_resonate)
    for name in ("raw_lambda", "omega"):
        g = np.asarray(grads[name][...])
        assert np.all(np.isfinite(g)) and np.any(g != 0), name


def test_rsqrt_grid_is_bounded():
    """1 / |u| on the table's grid: its top is the value at the smallest non-zero |u|^2 level,
    so r2 = 0 saturates there and the normalised output stays on the unit grid."""
    p_r2 = nx.asymmetric_params(0.0, 4.0)
    p_g = rsqrt_grid(p_r2)
    table = nx.build_table("rsqrt", p_r2, p_g)
    assert table[p_r2.zero_point[0] - p_r2.qmin] == table[p_r2.zero_point[0] + 1 - p_r2.qmin]
    assert table.max() == 127 and nx.dequantize(127, p_g) <= 1 / np.sqrt(p_r2.scale[0]) + 1e-6
    assert UNIT_GRID.scale[0] == pytest.approx(1 / 127) and UNIT_GRID.zero_point[0] == 0


def test_qat_checkpoints_round_trip_with_their_grids(qat_mlp, qat_resonate, tmp_path):
    from ncc.models.checkpoint import load_checkpoint, save_checkpoint

    mlp = load_checkpoint(save_checkpoint(qat_mlp, tmp_path / "mlp.ckpt"))
    assert isinstance(mlp, PhasorMLP) and mlp.exact()
    assert mlp.layers[1].q_r2.params == qat_mlp.layers[1].q_r2.params
    assert mlp.w_y.params == qat_mlp.w_y.params
    xs = _inputs(50, 1, 2)
    np.testing.assert_array_equal(_mlp(mlp, xs), _mlp(qat_mlp, xs))
    rf = load_checkpoint(save_checkpoint(qat_resonate, tmp_path / "rf.ckpt"))
    assert isinstance(rf, ResonateFire) and rf.exact()
    assert rf.w_h.params == qat_resonate.w_h.params
    np.testing.assert_array_equal(_resonate(rf, xs)[1], _resonate(qat_resonate, xs)[1])
    plain = load_checkpoint(save_checkpoint(ResonateFire((D,), lambda_init=0.2, rngs=nnx.Rngs(1)),
                                            tmp_path / "plain.ckpt"))
    assert plain.lambda_init == 0.2 and not plain.quantized


def test_refusals_say_why():
    with pytest.raises(ValueError, match="int8 throughout"):
        PhasorMLP(D, H, OUT, quantization=QuantConfig(activation_bits=16), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="1-axis hidden_shape"):
        ResonateFire((2, 3), rngs=nnx.Rngs(0))
    layer = PhasorMLP(D, H, OUT, quantization=QuantConfig(), rngs=nnx.Rngs(0))
    set_mode(layer, "quant")
    with pytest.raises(ValueError, match="calibrated and frozen"):
        layer(jnp.zeros((1, D)))
