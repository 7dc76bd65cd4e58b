"""Model inputs: checkpoints round-trip, unsafe or broken files are refused in one line."""

import io
import json
import zipfile

import jax.numpy as jnp
import numpy as np
import pytest

from ncc.compiler.load import ModelLoadError, load_model
from ncc.compiler.trace import UnsupportedPrimitive
from ncc.models.archive import ArchiveError
from ncc.models.checkpoint import load_checkpoint, save_checkpoint


def _lif_net():
    import spyx.nn
    from flax import nnx

    return spyx.nn.Sequential(
        nnx.Linear(4, 16, rngs=nnx.Rngs(0)), spyx.nn.LIF((16,), beta=0.8, rngs=nnx.Rngs(1)),
        nnx.Linear(16, 3, rngs=nnx.Rngs(2)), spyx.nn.LI((3,), beta=0.9, rngs=nnx.Rngs(3)))


def test_keras_checkpoint_round_trip(small_cfc, sequence, tmp_path):
    path = save_checkpoint(small_cfc, tmp_path / "cfc.ckpt")
    loaded = load_checkpoint(path)
    assert loaded is not small_cfc
    np.testing.assert_array_equal(np.asarray(loaded(sequence[:, :200])),
                                  np.asarray(small_cfc(sequence[:, :200])))
    # through the compiler's loader too
    again = load_model(str(path))
    np.testing.assert_array_equal(np.asarray(again(sequence[:, :50])),
                                  np.asarray(small_cfc(sequence[:, :50])))


def test_a_keras_file_loads_without_drawing_the_weights_it_overwrites(tmp_path):
    """Random initializers give zeros while a saved model rebuilds (they would XLA-compile
    a sampler per shape); every weight still comes back from the file, outside the load
    they draw again, and a `.keras` file round-trips every weight bit for bit."""
    import keras

    from ncc.models import zoo
    from ncc.models.keras.loading import placeholder_initializers

    with placeholder_initializers():
        inside = keras.layers.Dense(5)
        inside.build((None, 3))
    outside = keras.layers.Dense(5)
    outside.build((None, 3))
    assert not np.any(np.asarray(inside.kernel)) and np.any(np.asarray(outside.kernel))
    model = zoo.cfc(16)
    model.save(tmp_path / "m.keras")
    loaded = load_model(str(tmp_path / "m.keras"))
    assert len(loaded.weights) == len(model.weights)
    for a, b in zip(loaded.weights, model.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert all(np.any(np.asarray(w)) for w in loaded.weights if "kernel" in w.path)


def test_spyx_checkpoint_round_trip(sequence, tmp_path):
    import spyx.nn
    from flax import nnx

    net = _lif_net()
    # train-like change, so a freshly built net with the same seeds would differ
    net.layers[0].kernel.set_value(net.layers[0].kernel.get_value() * 1.7)
    net.layers[1].beta.set_value(jnp.asarray(0.65))
    path = save_checkpoint(net, tmp_path / "lif.ckpt")
    loaded = load_checkpoint(path)
    assert isinstance(loaded, spyx.nn.Sequential) and isinstance(loaded.layers[0], nnx.Linear)
    xs = jnp.asarray(2 * sequence[0, :300, None])
    ref, got = spyx.nn.run(net, xs)[0], spyx.nn.run(loaded, xs)[0]
    assert float(jnp.std(ref)) > 1e-2
    np.testing.assert_array_equal(np.asarray(got), np.asarray(ref))
    fresh = spyx.nn.run(_lif_net(), xs)[0]
    assert not np.array_equal(np.asarray(fresh), np.asarray(ref))


def _rewrite_ckpt(src, dst, spec=None, weights=None):
    with zipfile.ZipFile(src) as zf:
        spec_bytes = zf.read("spec.json") if spec is None else json.dumps(spec).encode()
        weight_bytes = zf.read("weights.npz") if weights is None else weights
    with zipfile.ZipFile(dst, "w") as zf:
        zf.writestr("spec.json", spec_bytes)
        zf.writestr("weights.npz", weight_bytes)
    return dst


@pytest.mark.parametrize("cls", ["subprocess:Popen", "builtins:eval", "os:system",
                                 "spyxevil.nn:LIF"])
def test_checkpoint_class_outside_allowlist_is_refused(cls, tmp_path):
    path = save_checkpoint(_lif_net(), tmp_path / "lif.ckpt")
    with zipfile.ZipFile(path) as zf:
        spec = json.loads(zf.read("spec.json"))
    spec["module"]["layers"][1]["class"] = cls
    bad = _rewrite_ckpt(path, tmp_path / "bad.ckpt", spec=spec)
    with pytest.raises(ArchiveError, match="outside the allowed packages"):
        load_checkpoint(bad)
    with pytest.raises(ModelLoadError, match="refusing"):
        load_model(str(bad))


def test_checkpoint_with_pickled_weights_is_refused(small_cfc, tmp_path):
    path = save_checkpoint(small_cfc, tmp_path / "cfc.ckpt")
    buf = io.BytesIO()
    np.savez(buf, **{"0000": np.array([{"evil": 1}], dtype=object)}, allow_pickle=True)
    bad = _rewrite_ckpt(path, tmp_path / "pickled.ckpt", weights=buf.getvalue())
    with pytest.raises(ArchiveError, match="pickle"):
        load_checkpoint(bad)


def test_factory_reference_loads_and_reports_unsupported_primitive(tmp_path, monkeypatch):
    (tmp_path / "ncc_t_factory_mod.py").write_text(
        "import jax.numpy as jnp\n"
        "from ncc.compiler.frontends import from_jax\n"
        "\n"
        "def step(x, h):\n"
        "    h = jnp.cumsum(x, axis=-1) + h\n"
        "    return h, h\n"
        "\n"
        "def make():\n"
        "    return from_jax(step, (4,), jnp.zeros((1, 4)))\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    from ncc.compiler.pipeline import to_graph

    step = load_model("ncc_t_factory_mod:make")
    with pytest.raises(UnsupportedPrimitive) as info:
        to_graph(step)
    assert info.value.primitive == "cumsum"
    assert info.value.where.endswith("ncc_t_factory_mod.py:5")
    with pytest.raises(ModelLoadError, match="no attribute 'nothere'"):
        load_model("ncc_t_factory_mod:nothere")
    with pytest.raises(ModelLoadError, match="cannot import"):
        load_model("ncc_t_no_such_module_xyz:make")
