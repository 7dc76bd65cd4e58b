"""QAT: a fake-quant model compiles with its own parameters, and its forward is the golden model.

The model: an Elman RNN step written with ncc's fake-quant points (calibrate, then
`freeze(weights=True)`), its dense layers as `fake_quant_dense` (the integer kernel in JAX)
and its tanh as the deployed table. No calibration data reaches the compiler.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from flax import nnx  # noqa: E402

from ncc import numerics as nx  # noqa: E402
from ncc.cli.driver import compile_model
from ncc.compiler import int_safety  # noqa: E402
from ncc.compiler.interpret import run_sequence  # noqa: E402
from ncc.compiler.pipeline import quantize_graph, to_graph  # noqa: E402
from ncc.compiler.quantize import QuantizationError  # noqa: E402
from ncc.compiler.trace import TraceError  # noqa: E402
from ncc.models.nnx.fake_quant import FakeQuant, QuantDense, freeze, set_mode  # noqa: E402
from ncc.models.quantization import (  # noqa: E402
    fake_quant,
    fake_quant_dense,  # noqa: E402
    fake_quant_table,
)

F, U, N_OUT, STEPS = 6, 16, 3, 1000


class QATRNN(nnx.Module):
    """h' = tanh(W [x, h] + b), y = V h' + c; x and h share one grid (one point, q_h)."""

    def __init__(self, *, rngs: nnx.Rngs, exact_dense: bool = True, bits: int = 8) -> None:
        self.cell, self.head = QuantDense(F + U, U, rngs=rngs), QuantDense(U, N_OUT, rngs=rngs)
        self.cell.bias[...] = 0.1 * jax.random.normal(rngs.params(), (U,))
        self.head.bias[...] = 0.1 * jax.random.normal(rngs.params(), (N_OUT,))
        self.q_h, self.q_pre, self.q_y = FakeQuant(bits), FakeQuant(bits), FakeQuant(bits)
        self.exact_dense = exact_dense

    def initial_state(self, batch_size: int) -> jax.Array:
        return jnp.zeros((batch_size, U))

    def _dense(self, layer: QuantDense, z: jax.Array, p_in: FakeQuant,
               p_out: FakeQuant) -> jax.Array:
        if p_out.mode == "quant" and p_out.enabled and self.exact_dense:
            return fake_quant_dense(z, layer.kernel[...], layer.bias[...], p_in.params,
                                    layer.params, p_out.params)
        return p_out(layer(z))

    def __call__(self, x: jax.Array, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        z = jnp.concatenate([self.q_h(x), h], axis=-1)
        pre = self._dense(self.cell, z, self.q_h, self.q_pre)
        if self.q_pre.mode == "quant":
            h = fake_quant_table(pre, "tanh", self.q_pre.params, self.q_h.params)
        else:
            h = self.q_h(jnp.tanh(pre))
        return self._dense(self.head, h, self.q_h, self.q_y), h


def inputs(n: int, steps: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, steps, F)).astype(np.float32)


def qat_model(exact_dense: bool = True, bits: int = 8) -> QATRNN:
    model = QATRNN(rngs=nnx.Rngs(0), exact_dense=exact_dense, bits=bits)
    set_mode(model, "calibrate")
    xs = inputs(4, 40, 1)
    h = model.initial_state(4)
    for t in range(xs.shape[1]):
        _, h = model(xs[:, t], h)
    freeze(model, weights=True)
    return model


def forward(model: QATRNN, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fake-quant forward in JAX float32: (y (T, N_OUT), h (T, U)) for xs (T, F)."""
    step = nnx.jit(lambda m, x, h: m(x, h))
    h, ys, hs = model.initial_state(1), [], []
    for x in xs:
        y, h = step(model, x[None], h)
        ys.append(np.asarray(y)[0])
        hs.append(np.asarray(h)[0])
    return np.stack(ys), np.stack(hs)


@pytest.fixture(scope="module")
def model() -> QATRNN:
    return qat_model()


@pytest.fixture(scope="module")
def compiled(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("qat") / "onnx"
    return compile_model(model, "onnx-int8", out, input_shape=(F,), verify_steps=STEPS)


def test_compiles_with_its_own_parameters(model, compiled):
    q, manifest = compiled.graph, compiled.manifest
    io = {t["ir_name"]: t["quantization"] for t in manifest["tensors"]}
    (state_in,), (state_out,) = q.by_role("state_in"), q.by_role("state_out")
    expected = {"x": model.q_h.params, state_in: model.q_h.params,
                state_out: model.q_h.params, "y": model.q_y.params}
    for name, p in expected.items():
        assert io[name] == p.to_dict(), name
    weights = {op.inputs[1]: op for op in q.ops if op.kind == "fully_connected"}
    assert len(weights) == 2
    for layer in (model.cell, model.head):
        w = next(n for n in weights if q.constants[n].shape == layer.kernel[...].shape)
        assert q.tensors[w].quant == layer.params
        np.testing.assert_array_equal(q.constants[w],
                                      nx.quantize(np.asarray(layer.kernel[...]),
                                                  q.tensors[w].quant))
    pre = {q.tensors[op.output].quant for op in weights.values()}
    assert model.q_pre.params in pre


def test_fake_quant_forward_equals_golden_bit_for_bit(model, compiled):
    q = compiled.graph
    xs = inputs(1, STEPS, 7)[0]
    y_fq, h_fq = forward(model, xs)
    xq = nx.quantize(xs, q.tensors["x"].quant)
    out = run_sequence(q, xq[:, None])
    (state_out,) = q.by_role("state_out")
    y_gold = nx.dequantize(out["y"][:, 0], q.tensors["y"].quant)
    h_gold = nx.dequantize(out[state_out][:, 0], q.tensors[state_out].quant)
    assert y_fq.dtype == y_gold.dtype == np.float32
    np.testing.assert_array_equal(y_fq.view(np.uint32), y_gold.view(np.uint32))
    np.testing.assert_array_equal(h_fq.view(np.uint32), h_gold.view(np.uint32))
    assert len(np.unique(out["y"])) > 20  # the outputs move over the grid


def test_onnxruntime_is_bit_exact(compiled):
    report = compiled.report
    assert report["passed"], report
    assert all(m["identical"] == 1.0 for m in report["golden"].values())


def test_16_bit_fake_quant_forward_equals_golden_and_onnxruntime(tmp_path):
    """16-bit activations: the dense layers requantize with TFLite's int64 (16x8) form in
    JAX's int32 arithmetic, and still equal the golden model and onnxruntime."""
    model = qat_model(bits=16)
    result = compile_model(model, "onnx-int8", tmp_path / "onnx", input_shape=(F,),
                           verify_steps=300)
    assert result.report["passed"], result.report
    q = result.graph
    assert {q.tensors[n].dtype for n in q.inputs + q.outputs} == {"int16"}
    xs = inputs(1, 300, 7)[0]
    y_fq, h_fq = forward(model, xs)
    out = run_sequence(q, nx.quantize(xs, q.tensors["x"].quant)[:, None])
    y_gold = nx.dequantize(out["y"][:, 0], q.tensors["y"].quant)
    np.testing.assert_array_equal(y_fq.view(np.uint32), y_gold.view(np.uint32))
    assert len(np.unique(out["y"])) > 200


def test_float_fake_quant_dense_is_not_the_integer_kernel():
    """Why `fake_quant_dense`: fake_quant(x @ fake_quant(W) + b) rounds differently from
    the int8 kernel (float32 sums, float bias, double-rounding requantization)."""
    model = qat_model(exact_dense=False)
    g = to_graph(model, (F,))
    q, _ = quantize_graph(g, None)  # still fully covered by the model's own parameters
    xs = inputs(1, 300, 7)[0]
    y_fq, _ = forward(model, xs)
    out = run_sequence(q, nx.quantize(xs, q.tensors["x"].quant)[:, None])
    y_gold = nx.dequantize(out["y"][:, 0], q.tensors["y"].quant)
    step = float(q.tensors["y"].quant.scale[0])
    diff = np.abs(y_fq - y_gold)
    assert np.max(diff) <= 8 * step  # close, but not the same bits
    assert np.any(diff > 0)


def test_partial_qat_needs_calibration():
    model = QATRNN(rngs=nnx.Rngs(0))
    model.q_y.enabled = False  # y left in float: its range must be calibrated
    set_mode(model, "calibrate")
    model(inputs(1, 1, 0)[:, 0], model.initial_state(1))
    freeze(model, weights=True)
    model.q_y.enabled = False
    g = to_graph(model, (F,))
    with pytest.raises(QuantizationError, match="no fake-quant parameters"):
        quantize_graph(g, None)
    q, _ = quantize_graph(g, {"x": inputs(2, 20, 3)})
    assert q.tensors["x"].quant == model.q_h.params


def test_conflicting_presets_are_named():
    with pytest.raises(QuantizationError, match="different fake-quant parameters"):
        quantize_graph(to_graph(QATConflict(qat_model()), (F,)), None)


class QATConflict(nnx.Module):
    """x fake-quantized on its own grid, concatenated with a state on another."""

    def __init__(self, inner: QATRNN) -> None:
        self.inner = inner

    def initial_state(self, batch_size: int) -> jax.Array:
        return self.inner.initial_state(batch_size)

    def __call__(self, x: jax.Array, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        p = self.inner.q_pre.params
        return fake_quant(x, p), fake_quant(jnp.concatenate([fake_quant(x, p), h], -1)[:, :U],
                                            self.inner.q_h.params)


def test_dynamic_weights_must_be_frozen():
    model = QATRNN(rngs=nnx.Rngs(0), exact_dense=False)
    set_mode(model, "calibrate")
    model(inputs(1, 1, 0)[:, 0], model.initial_state(1))
    freeze(model)  # weights still fake-quantized with live scales
    with pytest.raises(TraceError, match="freeze"):
        to_graph(model, (F,))


# --- fake_quant_binary: the int8 ADD / SUB / MUL kernels in JAX ------------------------------


@pytest.mark.parametrize("kind", ["add", "sub", "mul"])
def test_fake_quant_binary_is_the_golden_kernel(kind):
    from ncc.compiler import golden
    from ncc.models.quantization import asymmetric_params, fake_quant_binary

    rng = np.random.default_rng({"add": 0, "sub": 1, "mul": 2}[kind])
    p_a, p_b = asymmetric_params(-1.3, 0.7, 8), asymmetric_params(-0.2, 2.9, 8)
    p_out = asymmetric_params(-2.5, 3.1, 8) if kind != "mul" else asymmetric_params(-1, 1, 8)
    a = rng.uniform(-1.5, 1.0, (64, 33)).astype(np.float32)
    b = rng.uniform(-0.5, 3.2, (64, 33)).astype(np.float32)
    ours = np.asarray(fake_quant_binary(kind, a, b, p_a, p_b, p_out))
    ia, ib, io = (p for p in (p_a, p_b, p_out))
    qa, qb = nx.quantize(a, ia), nx.quantize(b, ib)
    if kind == "mul":
        m, s = nx.quantize_multiplier(ia.scale[0] * ib.scale[0] / io.scale[0])
        gold = golden.qmul(qa, qb, a_zp=ia.zero_point[0], b_zp=ib.zero_point[0],
                           multiplier=m, shift=s, out_zp=io.zero_point[0])
    else:
        gold = getattr(golden, "q" + kind)(qa, qb, **int_safety.add_params(ia, ib, io))
    np.testing.assert_array_equal(ours.view(np.uint32),
                                  nx.dequantize(gold, io).view(np.uint32))
    grads = jax.grad(lambda u, v: fake_quant_binary(kind, u, v, p_a, p_b, p_out).sum(),
                     (0, 1))(a, b)
    expected = {"add": (1, 1), "sub": (1, -1), "mul": (b, a)}[kind]
    for g, e in zip(grads, expected, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.broadcast_to(e, a.shape))


def test_a_qat_product_keeps_its_arithmetic_even_when_not_portable():
    """The quantizer makes MUL parameters portable between LiteRT and TFLite Micro, but never
    those a QAT model fixed: there the training forward defines the bits."""
    from ncc.compiler.frontends import from_jax
    from ncc.models.quantization import QuantParams as CoreParams
    from ncc.models.quantization import fake_quant_binary

    pa, pb, po = (CoreParams((s,), (z,), 8, True) for s, z in (
        (0.025373712182044983, -17), (0.026936296373605728, -4), (0.03950349986553192, -9)))
    assert not int_safety.mul_is_portable(*(p for p in (pa, pb, po)))

    def step(x, h):
        y = fake_quant_binary("mul", fake_quant(x, pa), fake_quant(h, pb), pa, pb, po)
        return y, fake_quant(jnp.clip(fake_quant(x, pa), -0.9, 0.9), pb)

    g = to_graph(from_jax(step, (4,), jnp.zeros((1, 4))))
    q, _ = quantize_graph(g, None)
    assert [op.kind for op in q.ops].count("qmul") == 1
    assert "requantize" not in {op.kind for op in q.ops}
    xs = np.random.default_rng(0).uniform(-0.99, 0.99, (50, 1, 4)).astype(np.float32)
    out = run_sequence(q, nx.quantize(xs, q.tensors["x"].quant))
    h, ys = jnp.zeros((1, 4)), []
    for x in xs:
        y, h = step(jnp.asarray(x), h)
        ys.append(np.asarray(y))
    np.testing.assert_array_equal(np.stack(ys).view(np.uint32),
                                  nx.dequantize(out["y"], q.tensors["y"].quant).view(np.uint32))


# --- a QAT CfC cell: compiles with its own parameters, its forward is the golden model -------


def qat_cfc(wiring, **kwargs):
    from ncc.models.nnx.liquid import CfCCell, run_cell
    from ncc.models.quantization import QuantConfig

    cell = CfCCell(4, wiring, quantization=QuantConfig(), rngs=nnx.Rngs(0), **kwargs)
    rng = np.random.default_rng(1)
    set_mode(cell, "calibrate")
    run_cell(cell, jnp.asarray(rng.uniform(-1, 1, (4, 40, 4)), jnp.float32),
             jnp.asarray(rng.uniform(0.2, 2.0, (4, 40)), jnp.float32))
    freeze(cell, weights=True)
    assert cell.exact()
    return cell


@pytest.mark.parametrize("name", ["dense_backbone", "ncp_no_gate"])
def test_qat_cfc_cell_forward_equals_golden_over_1000_steps(name, tmp_path):
    from ncc.models.wirings import AutoNCP

    cell = qat_cfc(8, backbone_units=8) if name == "dense_backbone" else \
        qat_cfc(AutoNCP(10, 3, seed=1), mode="no_gate")
    compiled = compile_model(cell, "onnx-int8", tmp_path / name, input_shape=(4,),
                             verify_steps=200)  # no calibration data: the cell's own grids
    q = compiled.graph
    assert compiled.report["passed"], compiled.report
    (state_in,), (state_out,) = q.by_role("state_in"), q.by_role("state_out")
    for tensor in ("x", state_in, state_out):
        assert q.tensors[tensor].quant == cell.q_state.params  # one grid
    assert q.tensors["dt"].quant == cell.q_dt.params

    rng = np.random.default_rng(7)
    xs = rng.uniform(-1, 1, (STEPS, 4)).astype(np.float32)
    dts = rng.uniform(0.2, 2.0, STEPS).astype(np.float32)  # irregular time spans
    step = nnx.jit(lambda m, x, h, dt: m(x, h, dt))
    h, ys, hs = cell.initial_state(1), [], []
    for x, dt in zip(xs, dts, strict=True):
        y, h = step(cell, x[None], h, dt[None])
        ys.append(np.asarray(y)[0])
        hs.append(np.asarray(h)[0])
    out = run_sequence(q, nx.quantize(xs, q.tensors["x"].quant)[:, None],
                       nx.quantize(dts, q.tensors["dt"].quant)[:, None, None])
    y_gold = nx.dequantize(out["y"][:, 0], q.tensors["y"].quant)
    h_gold = nx.dequantize(out[state_out][:, 0], q.tensors[state_out].quant)
    np.testing.assert_array_equal(np.stack(ys).view(np.uint32), y_gold.view(np.uint32))
    np.testing.assert_array_equal(np.stack(hs).view(np.uint32), h_gold.view(np.uint32))
    assert len(np.unique(out[state_out])) > 20  # the state moves over the grid


# --- the NNX liquid cells compile: float cells from calibration data, QAT cells alone --------


def _sequences(n: int, steps: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, steps, 4)).astype(np.float32)


@pytest.mark.parametrize("kind", ["cfc", "ltc"])
def test_nnx_liquid_cells_compile_from_calibration(kind, tmp_path):
    from ncc.models.nnx.liquid import CfCCell, LTCCell
    from ncc.models.wirings import AutoNCP

    cls = CfCCell if kind == "cfc" else LTCCell
    cell = cls(4, AutoNCP(8, 2, seed=1), rngs=nnx.Rngs(0))
    compiled = compile_model(cell, "onnx-int8", tmp_path / kind, input_shape=(4,),
                             calibration={"x": _sequences(4, 30, 1)}, verify_steps=50)
    assert compiled.report["passed"], compiled.report
    assert compiled.graph.tensors["y"].shape == (1, 2)


def test_qat_ltc_cell_compiles_with_its_own_parameters(tmp_path):
    from ncc.models.nnx.liquid import LTCCell, run_cell
    from ncc.models.quantization import QuantConfig
    from ncc.models.wirings import AutoNCP

    cell = LTCCell(4, AutoNCP(8, 2, seed=1), quantization=QuantConfig(), rngs=nnx.Rngs(0))
    rng = np.random.default_rng(3)  # trained mappings (all-ones / zeros would fold away)
    for name in ("input_w", "input_b", "output_w", "output_b"):
        p = getattr(cell, name)
        p[...] = jnp.asarray(rng.uniform(0.5, 1.5, p[...].shape) if name.endswith("w")
                             else rng.uniform(-0.3, 0.3, p[...].shape), jnp.float32)
    set_mode(cell, "calibrate")
    run_cell(cell, jnp.asarray(_sequences(4, 30, 1)))
    freeze(cell, weights=True)
    compiled = compile_model(cell, "onnx-int8", tmp_path / "ltc", input_shape=(4,),
                             verify_steps=50)  # no calibration data
    q = compiled.graph
    assert compiled.report["passed"], compiled.report
    (state_out,) = q.by_role("state_out")
    assert q.tensors[state_out].quant == cell.q_state.params
    assert q.tensors["y"].quant == cell.q_y.params
    assert q.tensors["x"].quant == cell.q_x.params


# --- a QAT spiking net: integer membranes, thresholds and decays compile as they are ---------


def qat_snn(kind: str, membrane_bits: int = 8):
    import spyx

    from ncc.models.nnx.spiking import (
        QuantCuBaLIF,
        QuantIF,
        QuantLI,
        QuantLIF,
        link_grids,
        set_quantized,
    )
    from ncc.models.quantization import QuantConfig, QuantParams

    cfg, rngs, hidden = QuantConfig(membrane_bits=membrane_bits), nnx.Rngs(0), 16
    th = {"threshold": 0.75, "config": cfg}  # theta = 1 would make spikes * theta vanish
    neuron = {"lif": lambda: QuantLIF((hidden,), rngs=rngs, **th),  # per-neuron beta
              "lif_shift_zero": lambda: QuantLIF((hidden,), decay_shift=3, reset="zero",
                                                 rngs=rngs, **th),
              "if": lambda: QuantIF((hidden,), **th),
              "cuba": lambda: QuantCuBaLIF((hidden,), alpha=0.8, beta=0.9, rngs=rngs,
                                           **th)}[kind]()
    spikes_in = FakeQuant(8, symmetric=True)  # the input's grid: spikes, exactly 0 / 1
    spikes_in.params, spikes_in.mode = QuantParams((1.0,), (0,), 8, True), "quant"
    net = spyx.nn.Sequential(spikes_in, QuantDense(F, hidden, rngs=rngs), neuron,
                             QuantDense(hidden, N_OUT, rngs=rngs),
                             QuantLI((N_OUT,), beta=0.9, config=cfg))
    net.layers[1].kernel[...] *= 2.0  # enough current to fire often
    net.input_shape = (F,)
    set_quantized(net, True)
    set_mode(net, "quant")
    freeze(net, weights=True)
    assert link_grids(net) == 2  # both dense layers compute the int8 kernel itself
    return net


@pytest.mark.parametrize("membrane_bits", [8, 16])  # int16 membranes among int8 activations
@pytest.mark.parametrize("kind", ["lif", "lif_shift_zero", "if", "cuba"])
def test_qat_spiking_net_forward_equals_golden_over_1000_steps(kind, membrane_bits, tmp_path):
    net = qat_snn(kind, membrane_bits)
    q, _ = quantize_graph(to_graph(net, (F,)), None)  # no calibration: the net's own grids
    xs = (np.random.default_rng(5).random((STEPS, F)) < 0.4).astype(np.float32)
    step = nnx.jit(lambda m, x, s: m(x, s))
    state, ys, fired = net.initial_state(1), [], 0
    for x in xs:
        y, state = step(net, x[None], state)
        ys.append(np.asarray(y)[0])
    out = run_sequence(q, nx.quantize(xs, q.tensors["x"].quant)[:, None])
    y_gold = nx.dequantize(out["y"][:, 0], q.tensors["y"].quant)
    np.testing.assert_array_equal(np.stack(ys) + 0.0, y_gold + 0.0)  # (-0.0 == 0.0)
    fired = [op for op in q.ops if op.kind == "cast"]
    assert fired and len(np.unique(out["y"])) > 10  # spikes reach the readout
    if kind == "lif":  # per-neuron decays: a diagonal fully-connected with exact multipliers
        assert sum(op.kind == "fully_connected" for op in q.ops) == 3
    membranes = {q.tensors[s].dtype for s, _ in q.state_pairs}
    assert membranes == {f"int{membrane_bits}"}
    compiled = compile_model(net, "onnx-int8", tmp_path / kind, input_shape=(F,),
                             verify_steps=100)
    assert compiled.report["passed"], compiled.report
