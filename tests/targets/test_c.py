"""c: the C99 runtime computes exactly the golden model's bits, on x86 and on a Cortex-M4.

Every model runs 10,000 steps through the harness session (ctypes over the library the
system compiler builds) and must equal the golden integer model on every output and every
state. The same sources compile warning-free with gcc and clang, run clean under
AddressSanitizer + UndefinedBehaviorSanitizer and valgrind, and, cross-compiled for a
Cortex-M4, give the same bits under QEMU. Tests that need a tool skip, naming it, when it is
not installed (CI installs them all: .ci/run).
"""

import importlib.util
import os
import re
import shutil
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pytest

from ncc.compiler.artifact import load_artifact_graph, read_manifest, write_artifact
from ncc.compiler.data import stress_int8
from ncc.compiler.driver import compile_model
from ncc.compiler.interpret import run_batch, run_step
from ncc.compiler.ir import verify
from ncc.compiler.numerics import quantize
from ncc.models import zoo
from ncc.runtime import cortex_m
from ncc.runtime.cbuild import (
    WARNINGS,
    CModel,
    build_executable,
    build_library,
    run_executable,
)
from ncc.runtime.session import CSession, open_session
from ncc.targets import c as c_target

STEPS = 10_000
FEATURES = 8
MODELS = ("cfc", "cfc_ncp", "ltc", "lif", "cfc_dt")
# sequences x steps = STEPS. The golden model's cost is per step (sequences run batched),
# so the dense CfC keeps a 5,000-step horizon and LTC (ODE unfolds: the most ops per
# step) runs as 16 sequences of 625 steps
SEQUENCES = {"cfc": 2, "cfc_ncp": 8, "ltc": 16, "lif": 4, "cfc_dt": 8}
SHORT = 300  # steps under sanitizers and valgrind


def calibration(dt: bool = False, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    data = {"x": rng.standard_normal((8, 100, FEATURES)).astype(np.float32)}
    if dt:
        data["dt"] = rng.uniform(0.5, 2.0, (8, 100)).astype(np.float32)
    return data


def int8_inputs(steps: int, features: int = FEATURES, seed: int = 7) -> np.ndarray:
    return stress_int8(steps, features, seed)


def cfc_ncp():
    """ncps CfC on a sparse AutoNCP wiring (16 neurons, 10 motor), as zoo.ltc is."""
    import keras
    import ncps.keras
    from ncps.wirings import AutoNCP

    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((None, FEATURES)),
                             ncps.keras.CfC(AutoNCP(16, zoo.CLASSES, seed=0),
                                            return_sequences=True)], name="cfc_ncp")


def cfc_dt():
    """zoo.cfc fed a time delta per step (the step function's dt input)."""
    from ncc.compiler.frontends import from_keras

    return from_keras(zoo.cfc(units=8), uses_dt=True)


FACTORIES = {"cfc": lambda: zoo.cfc(units=8), "cfc_ncp": cfc_ncp, "ltc": lambda: zoo.ltc(16),
             "lif": lambda: zoo.lif(hidden=32), "cfc_dt": cfc_dt}


class Case:
    """A compiled model, its long input and the golden model's trace over it."""

    def __init__(self, name: str, root: Path):
        self.name = name
        self.art = root / name
        has_dt = name.endswith("_dt")
        compile_model(FACTORIES[name](), "c", self.art, calibration=calibration(has_dt),
                      verify_steps=0)
        self.g = load_artifact_graph(self.art)
        self.manifest = read_manifest(self.art)
        n = SEQUENCES[name]
        self.xs = int8_inputs(STEPS).reshape(n, STEPS // n, FEATURES)
        self.dts = None
        if has_dt:
            (dt_name,) = self.g.by_role("dt")
            spans = np.random.default_rng(3).uniform(0.25, 3.0, (n, STEPS // n))
            self.dts = quantize(spans.astype(np.float32), self.g.tensors[dt_name].quant)
        start = time.perf_counter()
        self.golden = run_batch(self.g, self.xs, self.dts)  # {name: (n, T, *shape[1:])}
        self.golden_seconds = time.perf_counter() - start

    def sequence(self, i: int, steps: int | None = None):
        """Sequence i's first `steps` inputs as the session wants them: x (T, 1, F)."""
        xs = self.xs[i, :steps, None, :]
        dts = None if self.dts is None else self.dts[i, :steps]
        return xs, dts

    def expect(self, got: dict[str, np.ndarray], i: int, where: str) -> None:
        """Every output and state of `got` equals golden sequence i, every step."""
        assert set(got) == set(self.g.outputs), where
        for name in self.g.outputs:
            want = self.golden[name][i, :len(got[name])]
            have = got[name].reshape(want.shape)
            assert have.dtype == want.dtype, f"{where} {name}: {have.dtype} != {want.dtype}"
            bad = np.argwhere(have != want)
            assert bad.size == 0, (f"{self.name} {where} {name}: {len(bad)} values differ, "
                                   f"first at (step, index) {bad[0].tolist()}")


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, Case]:
    root = tmp_path_factory.mktemp("c")
    return {name: Case(name, root) for name in MODELS}


def needs(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (CI installs it: .ci/run)")


# --- x86: the harness session, 10,000 steps ---------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_c_runtime_equals_golden_for_10k_steps(name, cases):
    case = cases[name]
    session = open_session(case.art)
    assert isinstance(session, CSession)
    n = len(case.xs)
    for i in range(n):
        xs, dts = case.sequence(i)
        case.expect(session.run(xs, dts), i, f"ctypes sequence {i}")
    assert n * case.xs.shape[1] == STEPS
    # the inputs exercised the model: outputs move and every state leaves its start
    y = case.golden[case.g.by_role("output")[0]]
    assert len(np.unique(y)) > 10
    for s_in, s_out in case.g.state_pairs:
        assert (case.golden[s_out] != case.g.initial_state[s_in].reshape(-1)).any(), s_out


def test_plain_step_of_a_dt_model_feeds_dt_one(cases):
    """ncc_step of a model with a time delta is ncc_step_dt with dt = 1.0 on dt's grid."""
    case = cases["cfc_dt"]
    (dt_name,) = case.g.by_role("dt")
    one = quantize(np.ones(1, np.float32), case.g.tensors[dt_name].quant)
    golden = run_batch(case.g, case.xs[:1, :500], np.full((1, 500), one[0]))
    model = CModel(build_library(case.art), has_dt=False)  # calls ncc_step
    by_name = {t["name"]: t for t in case.manifest["tensors"]}
    for t in range(500):
        y = np.zeros(by_name["y"]["shape"], np.int8)
        model.step(case.xs[0, t].reshape(1, -1), [], [y])
        np.testing.assert_array_equal(y.reshape(-1), golden["y"][0, t].reshape(-1))
        for i, (_, s_out) in enumerate(case.g.state_pairs):
            np.testing.assert_array_equal(model.get_state(i, "int8"),
                                          golden[s_out][0, t].reshape(-1))


# --- what the manifest says --------------------------------------------------------------------


def _fc_layers(g):
    for op in g.ops:
        if op.kind == "fully_connected":
            w = g.constants[op.inputs[1]]
            rows = g.tensors[op.inputs[0]].size // w.shape[0]
            yield op, w, rows


def test_sparse_ncp_skips_absent_synapses_and_counts_present_ones(cases):
    case = cases["cfc_ncp"]
    details = case.manifest["details"]
    sparse = {s["tensor"]: s for s in details["sparse_layers"]}
    assert sparse, "the AutoNCP wiring's masked layers should lower to synapse lists"
    source = (case.art / "model.c").read_text()
    assert source.count("ncc_sparse_fully_connected_s8(") == len(sparse)
    expected = dense = 0
    for op, w, rows in _fc_layers(case.g):
        present = int(np.count_nonzero(w))
        dense += rows * w.size
        if op.output in sparse:
            assert present / w.size <= c_target.SPARSE_DENSITY
            assert sparse[op.output] == {"tensor": op.output, "synapses": rows * present,
                                         "dense_size": w.size}
            expected += rows * present
        else:
            assert present / w.size > c_target.SPARSE_DENSITY
            expected += rows * w.size
    assert details["macs_per_step"] == expected < dense
    # a dense model has no synapse lists and counts every weight
    cfc = cases["cfc"].manifest["details"]
    assert cfc["sparse_layers"] == []
    assert cfc["macs_per_step"] == sum(r * w.size for _, w, r in _fc_layers(cases["cfc"].g))


def test_spiking_layers_report_synaptic_events(cases):
    case = cases["lif"]
    details = case.manifest["details"]
    (layer,) = details["spiking_layers"]  # Linear -> LIF -> Linear: the second one
    fcs = list(_fc_layers(case.g))
    op, w, rows = fcs[1]
    assert layer == {"tensor": op.output, "spikes": op.inputs[0], "neurons": w.shape[0],
                     "synapses": rows * int(np.count_nonzero(w))}
    assert details["max_synaptic_events_per_step"] == layer["synapses"]
    # the layer's input really is 0/1 spikes; a step's events are spikes x present fan-out
    state = dict(case.g.initial_state)
    fan_out = np.count_nonzero(w, axis=1)
    events = []
    for t in range(200):
        env = run_step(case.g, {"x": case.xs[0, t].reshape(1, -1), **state}, every_tensor=True)
        spikes = env[layer["spikes"]].reshape(-1)
        assert set(np.unique(spikes)) <= {0, 1}
        events.append(int(spikes @ fan_out))
        state = {s_in: env[s_out] for s_in, s_out in case.g.state_pairs}
    assert 0 < max(events) <= layer["synapses"]
    assert cases["cfc"].manifest["details"]["spiking_layers"] == []


def test_memory_footprint_in_manifest_and_header(cases):
    for case in cases.values():
        memory = case.manifest["details"]["memory"]
        state = sum(case.g.tensors[s].size * np.dtype(case.g.tensors[s].dtype).itemsize
                    for s, _ in case.g.state_pairs)
        assert memory["state_bytes"] == state > 0
        weights = sum(v.nbytes for v in case.g.constants.values())
        assert memory["weights_bytes"] >= 0.5 * weights
        assert memory["scratch_bytes"] > 0
        header = (case.art / "model.h").read_text()
        assert f"#define NCC_STATE_BYTES {state}" in header
        assert f"#define NCC_SCRATCH_BYTES {memory['scratch_bytes']}" in header
        assert re.search(r"static int8_t ncc_arena_s8\[\d+\];", (case.art / "model.c")
                         .read_text())


def test_runtime_uses_no_heap_libm_or_float():
    runtime = (Path(c_target.__file__).parent.parent / "runtime" / "c")
    for name in c_target.RUNTIME_FILES:
        code = re.sub(r"/\*.*?\*/", "", (runtime / name).read_text(), flags=re.S)
        for banned in ("malloc", "free(", "float", "double", "math.h", "stdlib.h", "stdio.h"):
            assert banned not in code, f"{name} uses {banned}"


# --- the compilers, sanitizers and valgrind ---------------------------------------------------


@pytest.mark.parametrize("cc", ["gcc", "clang"])
def test_warning_free_with_gcc_and_clang(cc, cases, tmp_path):
    needs(cc)
    for case in cases.values():
        for opt in ("-O0", "-O2"):
            # build_executable compiles with -std=c99 -Wall -Wextra -Werror -pedantic
            build_executable(case.art, tmp_path / f"{case.name}{opt}", cc=cc, flags=(opt,))
    assert WARNINGS == ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic")


def _sanitizing_compiler() -> str:
    """gcc links ASan/UBSan runtimes out of the box; clang needs libclang-rt-dev."""
    for cc in ("gcc", "clang"):
        if shutil.which(cc):
            return cc
    pytest.skip("gcc not installed (CI installs it: .ci/run)")


@pytest.mark.parametrize("name", MODELS)
def test_address_and_undefined_behaviour_sanitizers_are_clean(name, cases, tmp_path):
    case = cases[name]
    exe = build_executable(case.art, tmp_path / "asan", cc=_sanitizing_compiler(),
                           flags=("-O1", "-g", "-fno-omit-frame-pointer",
                                  "-fsanitize=address,undefined",
                                  "-fno-sanitize-recover=all"))
    xs, dts = case.sequence(0, SHORT)
    case.expect(run_executable(exe, case.manifest, xs, dts), 0, "asan+ubsan")


@pytest.mark.parametrize("name", MODELS)
def test_valgrind_is_clean(name, cases, tmp_path):
    needs("valgrind")
    case = cases[name]
    exe = build_executable(case.art, tmp_path / "model", flags=("-O1", "-g"))
    xs, dts = case.sequence(0, SHORT)
    got = run_executable(exe, case.manifest, xs, dts,
                         wrapper=("valgrind", "-q", "--error-exitcode=1",
                                  "--leak-check=full", "--errors-for-leak-kinds=all"))
    case.expect(got, 0, "valgrind")


def test_host_driver_rejects_a_truncated_step(cases, tmp_path):
    import subprocess

    case = cases["cfc"]
    exe = build_executable(case.art, tmp_path / "model")
    done = subprocess.run([str(exe)], input=b"\x01\x02\x03", capture_output=True)
    assert done.returncode == 1 and b"inside a step" in done.stderr


def test_timing_loop_inside_c_builds_clean_and_runs_the_model(cases, tmp_path):
    """runtime/c/host/ncc_bench.c (the bench's 'loop inside C' row) compiles warning-free
    with gcc and clang and steps the real model: its checksum is the golden model's."""
    import subprocess

    from ncc.runtime.cbuild import encode_steps, step_ns_in_c

    case = cases["cfc_dt"]
    for cc in ("gcc", "clang"):
        needs(cc)
        build_executable(case.art, tmp_path / f"bench_{cc}", cc=cc, driver="ncc_bench.c")
    xs, dts = case.sequence(0, 100)
    done = subprocess.run([str(tmp_path / "bench_gcc"), "100"],
                          input=encode_steps(case.manifest, xs, dts).tobytes(),
                          capture_output=True, check=True)
    ns, checksum = done.stdout.split()
    (y,) = case.g.by_role("output")
    first_byte = case.golden[y][0, :100].reshape(100, -1)[:, :1].view(np.uint8)[:, 0]
    assert int(checksum) == int(first_byte.astype(np.int64).sum())  # the golden steps ran
    assert float(ns) > 0
    assert step_ns_in_c(case.art, xs, dts, steps=1000) > 0


# --- Cortex-M4 under QEMU -------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_cortex_m4_under_qemu_equals_golden(name, cases):
    needs(cortex_m.CC, cortex_m.SIZE, cortex_m.QEMU)
    case = cases[name]
    xs, dts = case.sequence(0, 1000)  # LTC's sequences are 625 steps: all of one
    got = cortex_m.run(case.art, xs, dts, timeout=120)
    case.expect(got, 0, "cortex-m4 (qemu mps2-an386)")
    assert len(got[case.g.outputs[0]]) == min(1000, case.xs.shape[1])


def test_cortex_m4_flash_and_ram_from_arm_none_eabi_size(cases):
    needs(cortex_m.CC, cortex_m.SIZE)
    figures = {}
    for name, case in cases.items():
        fp = cortex_m.footprint(case.art)
        memory = case.manifest["details"]["memory"]
        objects = fp["objects"]
        assert set(objects) == {"model.o", "ncc_kernels.o"}
        assert objects["model.o"]["text"] >= memory["weights_bytes"]  # constants are rodata
        assert objects["model.o"]["bss"] >= memory["scratch_bytes"]  # the arenas
        assert objects["ncc_kernels.o"]["data"] == objects["ncc_kernels.o"]["bss"] == 0
        assert fp["flash_bytes"] == sum(o["text"] + o["data"] for o in objects.values())
        assert fp["ram_bytes"] == (sum(o["data"] + o["bss"] for o in objects.values())
                                   + memory["state_bytes"])
        assert case.manifest["details"]["cortex_m"] == fp  # measured at compile time too
        figures[name] = (fp["flash_bytes"], fp["ram_bytes"])
    print("cortex-m4 flash, RAM bytes:", figures)  # pytest -s


def test_footprint_without_the_toolchain_says_so(cases, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda tool: None)
    art = c_target.lower(cases["cfc"].g)
    assert art.details["cortex_m"] == {
        "not_measured": "arm-none-eabi-gcc and arm-none-eabi-size not on PATH (Debian: "
                        "gcc-arm-none-eabi)"}
    with pytest.raises(cortex_m.CortexMError, match="arm-none-eabi-gcc"):
        cortex_m.footprint(cases["cfc"].art)


# --- every kernel, on a hand-built graph -----------------------------------------------------


def _every_op_graph():
    """tests/targets/test_tflite.py's graph through every op the integer IR has."""
    path = Path(__file__).with_name("test_tflite.py")
    spec = importlib.util.spec_from_file_location("_ncc_test_tflite_graph", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return verify(module.every_op_graph())


def test_every_op_kernel_is_exact(tmp_path):
    g = _every_op_graph()
    art = c_target.lower(g)
    write_artifact(tmp_path / "ops", g, art, {"factory": "every_op_graph"})
    xs = int8_inputs(600, features=24, seed=11)[:, None, :]
    golden = run_batch(g, xs[None, :, 0, :])
    got = open_session(tmp_path / "ops").run(xs)
    for name in g.outputs:
        np.testing.assert_array_equal(got[name].reshape(golden[name][0].shape),
                                      golden[name][0], err_msg=name)
    manifest = read_manifest(tmp_path / "ops")
    steps = 200
    exe = build_executable(tmp_path / "ops", tmp_path / "ops.exe")
    host = run_executable(exe, manifest, xs[:steps])
    for name in g.outputs:
        np.testing.assert_array_equal(host[name].reshape(golden[name][0, :steps].shape),
                                      golden[name][0, :steps], err_msg=f"host {name}")
