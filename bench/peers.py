"""The peer paths `ncc bench` compares against: what a user would try today.

- `ort_quantize_static`: onnxruntime's `quantize_static` (QDQ, int8) on ncc's own float
  ONNX export of one step (state as inputs), calibrated over the training split with the
  state threaded through the float model, so the calibrator sees realistic states;
- `tflite_converter`: `tf.lite.TFLiteConverter` full-int8 on the Keras model, whole
  (recurrent layer in the graph) and as a single-step `tf.function` with explicit state,
  each in a subprocess under KERAS_BACKEND=tensorflow with a timeout: a crash is a result.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def ort_quantize_static(float_art: Path, calib: np.ndarray, out: Path,
                        calib_dt: np.ndarray | None = None) -> Path:
    """QDQ-quantize `float_art`/model.onnx with onnxruntime, calibrated on sequences
    calib (N, T, F) [and their dt (N, T)]; returns the quantized file."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    from ncc.runtime.session import open_session

    session = open_session(float_art)
    feeds = _step_feeds(session, calib, calib_dt)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    out.parent.mkdir(parents=True, exist_ok=True)
    logging.getLogger().setLevel(logging.ERROR)  # its "consider pre-processing" advice
    quantize_static(str(float_art / session.manifest["entry"]), str(out), Reader(),
                    quant_format=QuantFormat.QDQ)
    return out


def _step_feeds(session: Any, xs: np.ndarray, dts: np.ndarray | None = None
                ) -> list[dict[str, np.ndarray]]:
    """Every step's feeds (x, state, dt) over sequences xs (N, T, F) and dts (N, T) (1.0
    when absent), state threaded."""
    by_name = {t["name"]: t for t in session.manifest["tensors"]}
    (x_name,) = session.names("input")
    feeds = []
    dts = np.ones(xs.shape[:2], np.float32) if dts is None else dts
    for seq, seq_dt in zip(xs, dts, strict=True):
        state = {s_in: init.astype(by_name[s_in]["dtype"]) for s_in, _, init in session.state}
        for x, dt in zip(seq, seq_dt, strict=True):
            f = {x_name: x.reshape(by_name[x_name]["shape"]).astype(np.float32), **state}
            for name in session.names("dt"):
                f[name] = np.full(by_name[name]["shape"], dt, np.float32)
            feeds.append(f)
            out = session._call(f)
            state = {s_in: out[s_out] for s_in, s_out, _ in session.state}
    return feeds


def open_peer_session(float_art: Path, model_file: Path) -> Any:
    """A session running `model_file` with the float artifact's manifest (same I/O)."""
    from ncc.compiler.artifact import read_manifest
    from ncc.runtime.session import OnnxSession

    manifest = read_manifest(float_art)
    return OnnxSession(float_art, {**manifest, "entry": str(model_file.resolve())})


def tflite_converter(model_ref: str, data: dict[str, np.ndarray], work: Path,
                     timeout: float = 240.0) -> dict[str, Any]:
    """Both converter paths; per path `status` (ok / failed / crashed / timeout), the last
    error line, and for `step` the outputs on `data` (see bench_tflite_peer)."""
    work.mkdir(parents=True, exist_ok=True)
    data_file = work / "peer_data.npz"
    np.savez(data_file, **data)
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    results: dict[str, Any] = {}
    for mode in ("sequence", "step"):
        out = work / f"peer_{mode}.npz"
        t0 = time.perf_counter()
        with tempfile.TemporaryFile() as err:
            try:
                rc = subprocess.run([sys.executable, "-m", "ncc.bench.tflite_peer", mode,
                                     model_ref, str(data_file), str(out)], env=env,
                                    stdout=subprocess.DEVNULL, stderr=err,
                                    timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                rc = None
            err.seek(0)
            lines = [ln for ln in err.read().decode(errors="replace").splitlines()
                     if ln.strip() and not ln.startswith(("W0", "I0", "E0"))]
        r: dict[str, Any] = {"seconds": round(time.perf_counter() - t0, 1), "returncode": rc}
        if rc is None:
            r["status"] = "timeout"
        elif rc < 0:
            r["status"] = f"crashed (signal {-rc})"
        elif rc > 0:
            r["status"] = "failed"
        else:
            r["status"] = "ok"
        if rc:
            r["error"] = (lines[-1] if lines else "")[:300]
        if rc == 0 and mode == "step":
            with np.load(out) as z:
                r.update({k: z[k] for k in z.files})
        results[mode] = r
    return results
