"""`.keras` round trips (safe_mode=True) under JAX and TensorFlow, and across the two.

The TensorFlow side runs this file as a script in a subprocess with
KERAS_BACKEND=tensorflow (Keras fixes its backend at import).
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

TOL = 1e-5


def make_models():
    """Small models covering both cells, wirings, dt inputs, both directions, states.

    Unrolled over a fixed T = 5: eager calls then reuse cached ops instead of compiling scans.
    """
    import keras

    from ncc.models.keras import LTC, NCP, AutoNCP, CfC, Random

    keras.utils.set_random_seed(0)
    x, t = keras.Input((5, 4)), keras.Input((5,))
    y = CfC(AutoNCP(10, 3, seed=1), bidirectional=True, merge_mode="ave", unroll=True)([x, t])
    models = {"cfc_ncp_bidir_dt": keras.Model([x, t], y)}
    models["cfc_backbone_pure"] = keras.Sequential([
        keras.Input((5, 4)),
        CfC(8, mode="pure", backbone_units=[6, 5], backbone_dropout=0.1, activation="relu",
            unroll=True),
        keras.layers.Dense(2)])
    models["cfc_random_nogate"] = keras.Sequential([
        keras.Input((5, 4)), CfC(Random(6, 2, 0.5, 1), mode="no_gate", fully_recurrent=False,
                                    return_sequences=False, unroll=True)])
    x, t = keras.Input((5, 4)), keras.Input((5, 1))
    y, h = LTC(NCP(3, 3, 2, 2, 2, 2, 2, seed=4), ode_unfolds=3, input_mapping="linear",
               output_mapping=None, return_state=True, return_sequences=False,
               initialization_ranges={"cm": (0.5, 0.5)}, unroll=True)([x, t])
    models["ltc_ncp_dt_state"] = keras.Model([x, t], [y, h])
    return models


def inputs(model):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 4)).astype(np.float32)
    if len(model.inputs) == 1:
        return [x]
    dt = rng.uniform(0.2, 2.0, (2, 5) + tuple(model.inputs[1].shape[2:])).astype(np.float32)
    return [x, dt]


def outputs(model):
    out = model(inputs(model), training=False)
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


def save_all(folder: Path) -> None:
    """Save every model and its outputs (npz) under `folder`, with this process' backend."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, model in make_models().items():
        model.save(folder / f"{name}.keras")
        np.savez(folder / f"{name}.npz", *outputs(model))


def check_all(folder: Path) -> list[str]:
    """Load every saved model (safe_mode) and compare with its saved outputs."""
    import keras

    import ncc.models.keras  # noqa: F401  (registers the ncc classes)

    problems = []
    for path in sorted(folder.glob("*.keras")):
        model = keras.models.load_model(path, safe_mode=True)
        with np.load(path.with_suffix(".npz"), allow_pickle=False) as saved:
            expected = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        got = outputs(model)
        err = max(float(np.abs(a - b).max()) for a, b in zip(got, expected, strict=True))
        if err > TOL:
            problems.append(f"{path.name}: max abs error {err}")
    return problems


def _tensorflow(command: str, folder: Path) -> None:
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, __file__, command, str(folder)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_round_trip_jax_and_cross_backend(tmp_path):
    import keras

    assert keras.backend.backend() == "jax"
    jax_dir, tf_dir = tmp_path / "jax", tmp_path / "tf"
    save_all(jax_dir)
    assert len(list(jax_dir.glob("*.keras"))) == 4
    assert check_all(jax_dir) == []  # JAX -> JAX
    # TensorFlow: loads the JAX files (JAX -> TF), then saves and reloads its own (TF -> TF)
    _tensorflow("check-and-save", tmp_path)
    assert check_all(tf_dir) == []  # TF -> JAX


def test_config_round_trip_keeps_wiring_and_arguments():
    import keras

    from ncc.models.keras import LTC, AutoNCP, CfC

    wiring = AutoNCP(10, 3, seed=7)
    wiring.build(4)
    wiring.adjacency_matrix[0, 1] = 1 - wiring.adjacency_matrix[0, 1] or -1  # hand edit
    for layer in (CfC(wiring, mode="pure", bidirectional=True, merge_mode=None, name="c"),
                  LTC(wiring.copy(), ode_unfolds=2, epsilon=1e-6, go_backwards=True)):
        spec = keras.saving.serialize_keras_object(layer)
        back = keras.saving.deserialize_keras_object(spec, safe_mode=True)
        assert type(back) is type(layer)
        assert back.get_config() == layer.get_config()
        np.testing.assert_array_equal(back.wiring.adjacency_matrix, wiring.adjacency_matrix)


if __name__ == "__main__":  # the TensorFlow side of test_round_trip_jax_and_cross_backend
    command, root = sys.argv[1], Path(sys.argv[2])
    import keras

    assert keras.backend.backend() == "tensorflow"
    failures = check_all(root / "jax")
    save_all(root / "tf")
    failures += check_all(root / "tf")
    if failures:
        sys.exit("\n".join(failures))
