"""spyx 1.0 state-space and phasor layers compile as steps (issue 16, items 1-2).

`spyx.ssm.LRU`, `S5Diag` and `Mamba` take a whole time-major sequence and run their
recurrence with an associative scan; ncc compiles the step it takes out of the scan, in
complex numbers lowered to pairs of real tensors. `MambaBlock`'s causal convolution over
time becomes a window state. The float artifact is held to spyx's own sequence output,
every integer artifact to the golden model over one 2,000-step sequence (each layer
quantized once, the one integer graph lowered to every target), and the deployed state
to the float state (SQNR).
"""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ncc.cli.driver import compile_model
from ncc.compiler.interpret import run_batch, run_sequence
from ncc.compiler.pipeline import quantize_graph, to_graph
from ncc.compiler.quantize import QuantOptions
from ncc.compiler.trace import TraceError, UnsupportedPrimitive
from ncc.numerics import dequantize, quantize
from ncc.runtime.session import open_session
from ncc.runtime.validate import compare
from ncc.runtime.verify import verify_artifact
from ncc.targets.pipeline import lower_artifact

D = 4


def _layer(name: str):
    import spyx.phasor
    import spyx.ssm
    from flax import nnx

    rngs = nnx.Rngs(0)
    return {"LRU": lambda: spyx.ssm.LRU(D, 8, rngs=rngs),
            "S5Diag": lambda: spyx.ssm.S5Diag(D, 8, rngs=rngs),
            "Mamba": lambda: spyx.ssm.Mamba(D, 4, rngs=rngs),
            "MambaBlock": lambda: spyx.ssm.MambaBlock(D, 4, rngs=rngs),  # d_inner 8, k 4
            "PhasorMLP": lambda: spyx.phasor.PhasorMLP(D, 8, 3, rngs=rngs),
            "ResonateFire": lambda: spyx.phasor.ResonateFire((D,), rngs=rngs)}[name]()


@pytest.fixture(scope="module")
def layers():
    return {name: _layer(name) for name in ("LRU", "S5Diag", "Mamba", "MambaBlock",
                                            "PhasorMLP", "ResonateFire")}


@pytest.fixture(scope="module")
def calibration():
    """Two 2,000-step sequences to calibrate on."""
    return {"x": np.random.default_rng(5).standard_normal((2, 2000, D)).astype(np.float32)}


@pytest.mark.parametrize("name", ["LRU", "S5Diag", "Mamba", "MambaBlock", "PhasorMLP"])
def test_float_artifact_matches_spyx_over_1000_steps(name, layers, tmp_path):
    layer = layers[name]
    u = np.random.default_rng(3).standard_normal((1000, 1, D)).astype(np.float32)
    want = np.asarray(jax.jit(layer)(jnp.asarray(u)))[:, 0]
    res = compile_model(layer, "onnx-float", tmp_path / name, verify_steps=0)
    (y,) = res.graph.by_role("output")
    got = open_session(res.out_dir).run(u)[y].reshape(want.shape)
    assert np.abs(got - want).max() <= 1e-4
    assert np.abs(want[-100:]).max() > 0.1  # the output is alive at the end, not decayed
    # the scan's carry is the state (its real and imaginary parts); PhasorMLP has none;
    # MambaBlock's is the conv window (the last k - 1 = 3 inputs of 8 channels) and h
    states = {s: res.graph.tensors[s].shape for s, _ in res.graph.state_pairs}
    assert len(states) == {"PhasorMLP": 0, "Mamba": 1, "MambaBlock": 2}.get(name, 2)
    if name == "MambaBlock":
        assert states["state_window0"] == (1, 3, 8)


INTEGER = [("onnx-int8", None), ("tflite-int8", None), ("tflite-int8", "tflm"), ("c", None),
           ("fixed-point", None)]
# op kinds each layer's float step must hold (MambaBlock's window: concat and slice)
KINDS = {"LRU": {"matmul", "mul", "add"}, "S5Diag": {"matmul"}, "Mamba": {"softplus", "exp"},
         "MambaBlock": {"concat", "slice", "softplus", "sigmoid"}, "PhasorMLP": {"cos", "sin"}}


@pytest.fixture(scope="module")
def long_sequence():
    """The one 2,000-step sequence every integer artifact runs (not calibration data)."""
    return {"x": np.random.default_rng(6).standard_normal((1, 2000, D)).astype(np.float32)}


@pytest.fixture(scope="module", params=list(KINDS))
def quantized(request, layers, calibration, tmp_path_factory):
    """(name, float IR, integer IR, float reference, {target: folder}, folder root): one
    trace and one quantization per layer; a target's folder is lowered on first use and
    then shared (the .tflite runs in LiteRT and in TFLite Micro)."""
    name = request.param
    g = to_graph(layers[name])
    golden, reference = quantize_graph(g, calibration)
    return name, g, golden, reference, {}, tmp_path_factory.mktemp(name)


@pytest.mark.parametrize("target,runtime", INTEGER)
def test_integer_artifacts_are_golden_over_2000_steps(quantized, target, runtime,
                                                      long_sequence):
    """LRU, S5Diag, Mamba, MambaBlock and PhasorMLP on onnx-int8, tflite-int8 (LiteRT and
    TFLite Micro), c and fixed-point: every output and state bit for bit the golden
    model's over 2,000 steps."""
    name, g, golden, reference, folders, root = quantized
    if target not in folders:
        folders[target] = lower_artifact(golden, target, root / target, reference=reference,
                                         source={"source": f"<spyx {name}>"})
    report = verify_artifact(folders[target], data=long_sequence, runtime=runtime)
    assert report["exactness"]["passed"] and report["steps"] == 2000
    assert report["runtime"] == (runtime or "default")
    assert set(report["golden"]) == set(golden.outputs)  # the output and every state
    for out in golden.outputs:
        assert report["golden"][out] == {"identical": 1.0, "max_lsb": 0}, out
    assert len(golden.state_pairs) == {"PhasorMLP": 0, "Mamba": 1}.get(name, 2)
    assert KINDS[name] <= {op.kind for op in g.ops}
    if name == "LRU":
        assert report["outputs"]["y"]["sqnr_db"] >= 25


def test_resonate_fire_is_golden_in_c(layers, calibration, tmp_path):
    """ResonateFire (a complex membrane behind a step API, spikes) in c, 300 steps."""
    cut = {"x": calibration["x"][:, :300]}
    res = compile_model(layers["ResonateFire"], "c", tmp_path / "rf", calibration=cut,
                        verify_steps=300)
    assert res.report["exactness"]["passed"]
    assert all(res.report["golden"][o]["identical"] == 1.0 for o in res.graph.outputs)
    assert {"greater", "cast"} <= {op.kind for op in to_graph(layers["ResonateFire"]).ops}


def test_resonate_fire_step_equals_its_parallel_form(layers):
    layer = layers["ResonateFire"]
    xs = np.random.default_rng(4).standard_normal((300, 1, D)).astype(np.float32)
    want = np.asarray(jax.jit(layer.parallel)(jnp.asarray(xs)))
    got = run_sequence(to_graph(layer), xs)["y"]
    np.testing.assert_array_equal(got, want)
    assert 0.02 < want.mean() < 0.98  # it spikes, neither never nor always


def _state_sqnr(layer, activations: str, xs: np.ndarray) -> list[float]:
    """SQNR (dB) of each state of the golden model against the float model's state."""
    from ncc.compiler.pipeline import quantize_graph

    g = to_graph(layer)
    golden, _ = quantize_graph(g, {"x": xs}, QuantOptions(activations=activations))
    want = run_batch(g, xs)
    (x_name,) = golden.by_role("input")
    got = run_batch(golden, quantize(xs, golden.tensors[x_name].quant))
    return [compare(want[s], dequantize(got[s], golden.tensors[s].quant))["sqnr_db"]
            for _, s in golden.state_pairs]


def test_state_sqnr_int16_beats_int8(layers, calibration):
    xs = calibration["x"][:, :200]
    int8, int16 = (_state_sqnr(layers["LRU"], a, xs) for a in ("int8", "int16"))
    assert min(int8) >= 25 and min(int16) >= min(int8) + 12


def test_state_starts_at_zero_and_carries_the_recurrence(layers):
    g = to_graph(layers["LRU"])
    assert all(not np.any(v) for v in g.initial_state.values())
    # an impulse at t = 0 rings on through the state alone (the input is zero after it)
    xs = np.zeros((20, 1, D), np.float32)
    xs[0] = 1.0
    out = run_sequence(g, xs)
    want = np.asarray(jax.jit(layers["LRU"])(jnp.asarray(xs)))
    np.testing.assert_allclose(out["y"][:, 0], want[:, 0], atol=1e-5)
    assert np.abs(out["y"][5:]).max() > 1e-3


def test_complex_lowering_matches_jax():
    """mul, div, exp of an imaginary argument, abs, conj, real/imag of data-dependent
    complex values, in a plain JAX step with a complex state."""
    from ncc.compiler.frontends import from_jax
    from ncc.compiler.trace import trace

    w = np.arange(12).reshape(3, 4) / 7 - 0.5
    wc = (w + 0.3j * w[::-1]).astype(np.complex64)

    def step(x, h):
        z = jax.lax.complex(x, 0.5 * x) @ wc
        z = z * jnp.exp(1j * x[:, :1]) / (1.5 + 0.1j + jnp.conj(z) * 0.1)
        h = 0.8 * h + jnp.abs(z) - jnp.imag(z) * jnp.real(z)
        return h, h

    g = trace(from_jax(step, (3,), jnp.zeros((1, 4))))
    assert not any("complex" in t.dtype for t in g.tensors.values())
    xs = np.random.default_rng(2).standard_normal((8, 1, 3)).astype(np.float32)
    h, want = jnp.zeros((1, 4)), []
    for x in xs:
        y, h = step(jnp.asarray(x), h)
        want.append(np.asarray(y))
    np.testing.assert_allclose(run_sequence(g, xs)["y"], np.stack(want), atol=1e-5)


def test_container_input_size_is_the_first_layers():
    """A container's sub-modules come in name order ("decoder" before "encoder"), not call
    order: the input size is the stated size on which the container runs, and its step is
    its sequence form."""
    import spyx.ssm
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self):
            self.encoder = nnx.Linear(D, 8, rngs=nnx.Rngs(0))
            self.lru = spyx.ssm.LRU(8, 8, rngs=nnx.Rngs(1))
            self.decoder = nnx.Linear(8, 3, rngs=nnx.Rngs(2))

        def __call__(self, u):
            return self.decoder(self.lru(self.encoder(u)))

    net = Net()
    g = to_graph(net)
    (x,) = g.by_role("input")
    assert g.tensors[x].shape[-1] == D
    u = np.random.default_rng(0).standard_normal((1, 50, D)).astype(np.float32)
    ref = np.asarray(net(jnp.asarray(u.transpose(1, 0, 2)))).transpose(1, 0, 2)
    assert np.abs(run_batch(g, u)["y"] - ref).max() <= 1e-5


def test_grouped_dilated_causal_conv_is_a_window():
    """A grouped (2 groups), dilated (2) causal conv over time, 4 -> 6 channels: its step
    (a window of the last (3 - 1) * 2 = 4 inputs, one dense) is its sequence form."""
    from flax import nnx

    class Conv(nnx.Module):
        def __init__(self):
            self.conv = nnx.Conv(D, 6, kernel_size=(3,), kernel_dilation=(2,),
                                 feature_group_count=2, padding=((4, 0),), rngs=nnx.Rngs(0))

        def __call__(self, u):
            return jnp.transpose(self.conv(jnp.transpose(u, (1, 0, 2))), (1, 0, 2))

    net = Conv()
    g = to_graph(net, (D,))
    assert [g.tensors[s].shape for s, _ in g.state_pairs] == [(1, 4, D)]
    u = np.random.default_rng(1).standard_normal((40, 1, D)).astype(np.float32)
    want = np.asarray(net(jnp.asarray(u)))
    assert np.abs(run_sequence(g, u)["y"] - want).max() <= 1e-5
    assert np.abs(want[10:]).max() > 0.1


def test_refusals_say_why():
    import spyx.ssm
    from flax import nnx

    class LookAhead(nnx.Module):  # a conv over time padded on both sides reads t + 1
        def __init__(self):
            self.conv = nnx.Conv(D, D, kernel_size=(3,), padding="SAME", rngs=nnx.Rngs(0))

        def __call__(self, u):
            return jnp.transpose(self.conv(jnp.transpose(u, (1, 0, 2))), (1, 0, 2))

    with pytest.raises(TraceError, match=r"not causal \(padding \(1, 1\).*reads inputs after t"):
        to_graph(LookAhead(), (D,))
    chunked = spyx.ssm.ChunkedSSM(_layer("LRU"), _layer("LRU"), chunk_size=4)
    with pytest.raises(TraceError, match="not divisible by chunk_size"):
        to_graph(chunked)

    class Cache(nnx.Module):  # keeps every input: state that grows with T
        def __call__(self, u):
            def f(c, x):
                return c, x
            keys, _ = jax.lax.scan(f, jnp.zeros_like(u), u)
            return jnp.mean(keys, axis=0, keepdims=True) * jnp.ones_like(u)

    with pytest.raises(TraceError, match="changes with the sequence length"):
        to_graph(Cache(), (D,))

    class NotLinear(nnx.Module):
        def __call__(self, u):
            return jax.lax.associative_scan(jnp.maximum, u, axis=0)

    with pytest.raises(TraceError, match="not the linear recurrence"):
        to_graph(NotLinear(), (D,))


def test_unsupported_complex_op_names_primitive_and_line():
    from flax import nnx

    class LogLRU(nnx.Module):
        def __init__(self):
            self.inner = _layer("LRU")

        def __call__(self, u):
            z = self.inner(u).astype(jnp.complex64) * 1j
            return jnp.real(jnp.log(z))  # the line the error names

    with pytest.raises(UnsupportedPrimitive) as info:
        to_graph(LogLRU(), (D,))
    assert info.value.primitive.startswith("log on complex numbers")
    lines, first = inspect.getsourcelines(LogLRU.__call__)
    line = first + next(i for i, text in enumerate(lines) if "jnp.log" in text)
    assert info.value.where.endswith(f"test_ssm.py:{line}")
