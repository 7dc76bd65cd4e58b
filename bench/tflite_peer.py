"""Peer path for `ncc bench`: what a user gets today from `tf.lite.TFLiteConverter`.

Run as a subprocess under KERAS_BACKEND=tensorflow (the converter needs TF-backed
Keras, and it may segfault, which must not take the benchmark down):

    python -m ncc.bench.tflite_peer MODE MODEL DATA OUT

MODE is `sequence` (the whole Keras model, recurrent layer inside the graph, full-int8
with a representative dataset: DESIGN.md records a segfault in the calibrator) or
`step` (one timestep as a `tf.function` with the recurrent state as an explicit input
and output, full-int8; the host threads the state). DATA is an .npz with `calib`
(N, T, F), `test` (M, T, F) and `long` (1, L, F), float. For `step`, OUT (.npz) gets
the int8 model run in LiteRT (default kernels), dequantized: `test` (M, T, classes) and
`long` (1, L, classes), plus `tflite_bytes` and `step_us` (median per-step latency).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def _keras_parts(model: Any) -> tuple[Any, list[Any]]:
    """(the recurrent layer, the per-step layers after it) of a Sequential model."""
    layers = list(model.layers)
    rnn = [i for i, layer in enumerate(layers) if hasattr(layer, "cell")]
    if len(rnn) != 1 or rnn[0] != 0:
        raise ValueError("expected Sequential([recurrent layer, per-step heads...])")
    return layers[0], layers[1:]


def convert_sequence(model: Any, calib: np.ndarray) -> bytes:
    """The whole model, full-int8, as the TFLite docs describe it."""
    import tensorflow as tf

    def representative() -> Any:
        for x in calib[:100]:
            yield [x[None].astype(np.float32)]

    steps, features = calib.shape[1:]
    # a fixed (1, T, F) signature: with a dynamic T the converter rejects the TensorList ops
    fn = tf.function(lambda x: model(x), input_signature=[
        tf.TensorSpec([1, steps, features], tf.float32)])
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def _state_size(rnn: Any) -> int:
    size = rnn.cell.state_size
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def convert_step(model: Any, calib: np.ndarray) -> tuple[bytes, int]:
    """One step with explicit state, full-int8; calibration threads the state over `calib`."""
    import tensorflow as tf

    rnn, heads = _keras_parts(model)
    units = _state_size(rnn)
    features = calib.shape[-1]

    @tf.function(input_signature=[tf.TensorSpec([1, features], tf.float32),
                                  tf.TensorSpec([1, units], tf.float32)])
    def step(x: Any, h: Any) -> Any:
        out, new = rnn.cell(x, [h])
        new = new[0] if isinstance(new, (list, tuple)) else new
        for layer in heads:
            out = layer(out)
        return out, new  # TFLite names them Identity, Identity_1 in this order

    def representative() -> Any:
        for seq in calib[:200]:
            h = np.zeros((1, units), np.float32)
            for x in seq:
                yield [x[None].astype(np.float32), h]
                h = step(tf.constant(x[None]), tf.constant(h))[1].numpy()

    conv = tf.lite.TFLiteConverter.from_concrete_functions([step.get_concrete_function()],
                                                           step)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert(), units


def run_step_model(flat: bytes, xs: np.ndarray, units: int) -> tuple[np.ndarray, float]:
    """Run the converted step over sequences xs (N, T, F) in LiteRT, threading the state.
    Returns (N, T, classes) dequantized outputs and the median per-step time in µs."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=flat, num_threads=1)
    interp.allocate_tensors()
    ins = {d["name"]: d for d in interp.get_input_details()}
    outs = {d["name"]: d for d in interp.get_output_details()}
    y_out, h_out = outs["Identity"], outs["Identity_1"]

    def q(v: np.ndarray, d: dict[str, Any]) -> np.ndarray:
        s, z = d["quantization"]
        return np.clip(np.round(v / s) + z, -128, 127).astype(np.int8)

    def dq(v: np.ndarray, d: dict[str, Any]) -> np.ndarray:
        s, z = d["quantization"]
        return (v.astype(np.float32) - z) * s

    result = []
    times = []
    for seq in xs:
        h = q(np.zeros((1, units), np.float32), ins["h"])
        ys = []
        for x in seq:
            t0 = time.perf_counter()
            interp.set_tensor(ins["x"]["index"], q(x[None], ins["x"]))
            interp.set_tensor(ins["h"]["index"], h)
            interp.invoke()
            y = interp.get_tensor(y_out["index"])
            h = interp.get_tensor(h_out["index"])
            times.append(time.perf_counter() - t0)
            ys.append(dq(y, y_out)[0])
        result.append(np.stack(ys))
    return np.stack(result), float(np.median(times) * 1e6)


def main(argv: list[str]) -> int:
    mode, model_ref, data_file, out = argv
    os.environ["KERAS_BACKEND"] = "tensorflow"
    from ncc.compiler.load import load_model

    model = load_model(model_ref)
    data = dict(np.load(data_file))
    if mode == "sequence":
        flat = convert_sequence(model, data["calib"])
        Path(out).write_bytes(flat)
        return 0
    flat, units = convert_step(model, data["calib"])
    test, _ = run_step_model(flat, data["test"], units)
    long, step_us = run_step_model(flat, data["long"], units)
    np.savez(out, test=test, long=long, tflite_bytes=len(flat), step_us=step_us)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
