"""c: the C99 runtime computes exactly the golden model's bits, on x86 and on a Cortex-M4.

Every model runs 10,000 steps through the harness session (ctypes over the library the
system compiler builds) and must equal the golden integer model on every output and every
state; the 16x8 models (int16 activations, `QuantOptions(activations="int16")`) run 2,000
steps of int16 inputs over the whole range. The same sources compile warning-free with gcc
and clang, run clean under AddressSanitizer + UndefinedBehaviorSanitizer and valgrind, and,
cross-compiled for a Cortex-M4, give the same bits under QEMU. Tests that need a tool
skip, naming it, when it is not installed (CI installs them all: .ci/run).
"""

import importlib.util
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pytest

from ncc import numerics as nx
from ncc.cli.driver import compile_model
from ncc.compiler import int_safety
from ncc.compiler.artifact import load_artifact_graph, read_manifest, write_artifact
from ncc.compiler.data import stress_int8, stress_ints
from ncc.compiler.interpret import run_batch, run_step
from ncc.compiler.ir import Graph, Op, QuantParams, Tensor, verify
from ncc.compiler.quantize import DEFAULT_OPTIONS, QuantOptions
from ncc.models import zoo
from ncc.numerics import quantize
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
# 16x8 models: int16 activations, int8 weights; 2,000 steps each (golden: ~1 ms a step)
INT16 = QuantOptions(activations="int16")
STEPS16 = 2000
MODELS16 = ("cfc16", "cfc_ncp16", "lif16")
SEQUENCES.update({"cfc16": 2, "cfc_ncp16": 4, "lif16": 2})
CFC16 = "cfc16"  # the int16 model the compiler, sanitizer, valgrind and QEMU tests also build


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
             "lif": lambda: zoo.lif(hidden=32), "cfc_dt": cfc_dt,
             "cfc16": lambda: zoo.cfc(units=16), "cfc_ncp16": cfc_ncp,
             "lif16": lambda: zoo.lif(hidden=32)}


class Case:
    """A compiled model, its long input and the golden model's trace over it."""

    def __init__(self, name: str, root: Path):
        self.name = name
        self.art = root / name
        has_dt = name.endswith("_dt")
        options = INT16 if name in MODELS16 else DEFAULT_OPTIONS
        compile_model(FACTORIES[name](), "c", self.art, calibration=calibration(has_dt),
                      options=options, verify_steps=0)
        self.g = load_artifact_graph(self.art)
        self.manifest = read_manifest(self.art)
        n = SEQUENCES[name]
        steps = STEPS16 if name in MODELS16 else STEPS
        self.xs = stress_ints(steps, FEATURES, options.activations).reshape(n, steps // n,
                                                                            FEATURES)
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


@pytest.fixture(scope="module")
def cases16(tmp_path_factory) -> dict[str, Case]:
    """The 16x8 models (QuantOptions(activations="int16"))."""
    root = tmp_path_factory.mktemp("c16")
    return {name: Case(name, root) for name in MODELS16}


def case_of(request, name: str) -> Case:
    """An int8 or a 16x8 case by name, from its module fixture."""
    return request.getfixturevalue("cases16" if name in MODELS16 else "cases")[name]


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


@pytest.mark.parametrize("name", MODELS16)
def test_int16_c_runtime_equals_golden_for_2k_steps(name, cases16):
    """16x8: every output and state equal the golden model over 2,000 steps of int16
    inputs spanning the whole range; the _s16 kernels ran, sparse layers as synapse lists."""
    case = cases16[name]
    session = open_session(case.art)
    assert isinstance(session, CSession)
    for i in range(len(case.xs)):
        xs, dts = case.sequence(i)
        case.expect(session.run(xs, dts), i, f"ctypes sequence {i}")
    assert case.xs.size == STEPS16 * FEATURES
    assert case.xs.min() == -32768 and case.xs.max() == 32767
    y = case.golden[case.g.by_role("output")[0]]
    assert y.dtype == np.int16 and len(np.unique(y)) > 100
    for s_in, s_out in case.g.state_pairs:
        assert (case.golden[s_out] != case.g.initial_state[s_in].reshape(-1)).any(), s_out
    source = (case.art / "model.c").read_text()
    assert "_s16(" in source and not re.search(r"ncc_\w+_s8\(", source)
    assert "ncc_arena_s8" not in source  # every buffer is int16 (or bool, int32)
    details = case.manifest["details"]
    sparse = details["sparse_layers"]
    assert source.count("ncc_sparse_fully_connected_s16(") == len(sparse)
    assert bool(sparse) == (name == "cfc_ncp16")
    assert bool(details["spiking_layers"]) == (name == "lif16")  # spikes: int16 0/1
    tables = [op for op in case.g.ops if op.kind == "lut"]
    # compact tables: 513 int16 entries (1,026 bytes of flash each), interpolated in C
    assert tables and all(case.g.constants[op.inputs[1]].shape == (nx.INTERP_ENTRIES,)
                          for op in tables)
    assert source.count("ncc_lut_interp_s16(") == len(tables)
    assert 2 * nx.INTERP_ENTRIES * len(tables) <= details["memory"]["weights_bytes"] < 65536
    # the scratch arenas count int16 elements as 2 bytes
    arenas = re.findall(r"static (u?int\d+)_t ncc_arena_\w+\[(\d+)\];", source)
    assert details["memory"]["scratch_bytes"] == sum(
        int(n) * np.dtype(t).itemsize for t, n in arenas)
    assert details["api"]["step"].count("int16_t *") == 1 + len(case.g.by_role("output"))
    if "flash_bytes" in details["cortex_m"]:
        print(f"{name}: cortex-m4 flash {details['cortex_m']['flash_bytes']} B, "
              f"RAM {details['cortex_m']['ram_bytes']} B, {len(tables)} tables")


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
def test_warning_free_with_gcc_and_clang(cc, cases, cases16, tmp_path):
    needs(cc)
    for case in [*cases.values(), cases16[CFC16]]:
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


@pytest.mark.parametrize("name", [*MODELS, CFC16])
def test_address_and_undefined_behaviour_sanitizers_are_clean(name, request, tmp_path):
    case = case_of(request, name)
    exe = build_executable(case.art, tmp_path / "asan", cc=_sanitizing_compiler(),
                           flags=("-O1", "-g", "-fno-omit-frame-pointer",
                                  "-fsanitize=address,undefined",
                                  "-fno-sanitize-recover=all"))
    xs, dts = case.sequence(0, SHORT)
    case.expect(run_executable(exe, case.manifest, xs, dts), 0, "asan+ubsan")


FUZZ_STEPS = {"ltc": 4_000}  # LTC's per-synapse work is ~100x a CfC step's


@pytest.mark.parametrize("name", [*MODELS, *MODELS16])
def test_hostile_inputs_cause_no_sanitizer_report(name, request):
    """20,000 steps of random integers over the whole input range (rails, alternating
    rails, zeros, random dt grid values) through the sanitized step: no report. The full
    run (10^6 steps per bench model) is `python -m ncc.bench.fuzz_c`."""
    from ncc.runtime.c_fuzz import fuzz

    _sanitizing_compiler()
    result = fuzz(case_of(request, name).art, FUZZ_STEPS.get(name, 20_000), seed=1)
    assert result["reports"] == 0, result["stderr"]
    assert result["steps"] == FUZZ_STEPS.get(name, 20_000)


def test_the_fuzzer_sees_undefined_behaviour(tmp_path):
    """Its sanitizer flags do stop a program on a signed overflow (the check above can fail)."""
    from ncc.runtime.c_fuzz import SANITIZE

    cc = _sanitizing_compiler()
    src = tmp_path / "ub.c"
    src.write_text("#include <limits.h>\n#include <stdio.h>\nint main(void) { int x; "
                   "if (scanf(\"%d\", &x) != 1) return 2; x = x + INT_MAX; "
                   "printf(\"%d\\n\", x); return 0; }\n")
    exe = tmp_path / "ub"
    subprocess.run([cc, *SANITIZE, str(src), "-o", str(exe)], check=True)
    done = subprocess.run([str(exe)], input="5", capture_output=True, text=True)
    assert done.returncode != 0 and "overflow" in done.stderr


@pytest.mark.parametrize("name", [*MODELS, CFC16])
def test_valgrind_is_clean(name, request, tmp_path):
    needs("valgrind")
    case = case_of(request, name)
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


def test_cortex_m4_instruction_count_under_icount(cases):
    """QEMU -icount counts one guest instruction per ns and SysTick ticks at 25 MHz: the
    calibration loop reads exactly 40 instructions per tick and the count is deterministic.
    The DSP kernels (SMLAD) need fewer instructions than the portable ones, per step and
    per MAC of the int8 dense layers (their bits equal golden's: the QEMU test below)."""
    needs(cortex_m.CC, cortex_m.SIZE, cortex_m.QEMU)
    for name in ("cfc", "lif"):
        case = cases[name]
        xs, dts = case.sequence(0, 100)
        dsp = cortex_m.count_instructions(case.art, xs, dts)
        assert dsp == cortex_m.count_instructions(case.art, xs, dts)
        assert dsp["steps"] == 100 and dsp["instructions_per_tick"] == 40.0
        macs = case.manifest["details"]["macs_per_step"]
        # a MAC costs at least half an instruction (SMLAD: two); the rest of a step is
        # bounded by its work
        assert macs / 2 <= dsp["instructions_per_step"] < 200 * macs
        assert dsp["instructions_per_mac"] == round(dsp["instructions_per_step"] / macs, 2)
        portable = cortex_m.count_instructions(case.art, xs, dts, portable_kernels=True)
        assert portable["kernels"] == "portable C" and dsp["kernels"].startswith("DSP")
        assert dsp["instructions_per_step"] < portable["instructions_per_step"]
        dense = "dense_int8_instructions_per_mac"
        assert 0.5 < dsp[dense] < portable[dense] / 1.1, (name, dsp[dense], portable[dense])
        print(name, "cortex-m4 instructions:", dsp, portable)  # pytest -s


@pytest.mark.parametrize("name", [*MODELS, CFC16])
def test_cortex_m4_under_qemu_equals_golden(name, request):
    needs(cortex_m.CC, cortex_m.SIZE, cortex_m.QEMU)
    case = case_of(request, name)
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


def _int16_kernel_graph() -> Graph:
    """x (1, 24) and state s (1, 24), int16, through every _s16 kernel: a 65536-entry table,
    a compact 513-entry one (interpolated) with neighbours 65535 apart,
    a dense layer 648 deep whose accumulator leaves int32 at the rails, a sparse one (CSR),
    mul, sub, add (one with a scalar operand), requantize int16 -> int16 and int16 -> int8
    -> int16, and spikes (compare, cast to int16) into a dense layer."""
    P, Q, R = (QuantParams((s,), (0,), bits=16) for s in (1e-3, 3e-5, 2e-3))
    WIDE = QuantParams((0.7,), (0,), bits=16)  # the deep layer's output
    B = QuantParams((0.3,), (-5,))  # an int8 tensor in between
    S = QuantParams((1.0,), (0,), bits=16)  # spikes
    rng = np.random.default_rng(5)
    tensors: dict[str, Tensor] = {}
    constants: dict[str, np.ndarray] = {}
    ops: list[Op] = []

    def t(name, shape, dtype="int16", quant=None):
        tensors[name] = Tensor(name, tuple(shape), dtype, quant)
        return name

    def c(name, value, quant=None):
        constants[name] = np.asarray(value)
        return t(name, constants[name].shape, str(constants[name].dtype), quant)

    def op(kind, ins, out, shape, out_dtype="int16", quant=None, **attrs):
        t(out, shape, out_dtype, quant)
        ops.append(Op(kind, tuple(ins), out, attrs))
        return out

    def dense(name, x, w, po):
        pw = nx.params_for_tensor(w, 8, symmetric=True, axis=1)
        px = tensors[x].quant
        bias_scale, mult, shift = nx.dense_multipliers(px, pw, po)
        bias = nx.quantize_bias(rng.standard_normal(w.shape[1]), bias_scale)
        return op("fully_connected", [x, c(f"{name}_w", nx.quantize(w, pw), pw),
                                      c(f"{name}_b", bias, QuantParams(
                                          tuple(bias_scale), (0,) * w.shape[1], bits=32, axis=0))],
                  name, (1, w.shape[1]), quant=po, x_zp=0, multiplier=tuple(map(int, mult)),
                  shift=tuple(map(int, shift)), out_zp=0, dtype="int16")

    x, s = t("x", (1, 24), quant=P), t("s", (1, 24), quant=P)
    levels = np.arange(-32768, 32768)
    act = op("lut", [x, c("table", np.round(30000 * np.tanh(levels / 8000)).astype(np.int16))],
             "act", (1, 24), quant=Q)
    # a compact (interpolated) table whose neighbours differ by up to 65535: the extremes
    compact = rng.integers(-32768, 32768, nx.INTERP_ENTRIES).astype(np.int16)
    compact[:4] = [-32768, 32767, -32768, 32767]
    smooth = op("lut", [x, c("compact", compact)], "smooth", (1, 24), quant=Q)
    wide = op("concat", [x] * 27, "wide", (1, 648), quant=P, axis=-1)
    deep = dense("deep", wide, rng.uniform(0.9, 1.0, (648, 4)), WIDE)
    mask = rng.uniform(size=(24, 6)) < 0.4  # 60% of the synapses absent: a synapse list
    sparse = dense("sparse", act, rng.standard_normal((24, 6)) * mask, R)
    m, sh = nx.quantize_multiplier(Q.scale[0] / R.scale[0])
    rq = op("requantize", [act], "rq", (1, 24), quant=R, in_zp=0, multiplier=m, shift=sh,
            out_zp=0, dtype="int16")
    prod = op("qmul", [s, act], "prod", (1, 24), quant=P, a_zp=0, b_zp=0, out_zp=0,
              dtype="int16", **dict(zip(("multiplier", "shift"), nx.quantize_multiplier(
                  P.scale[0] * Q.scale[0] / P.scale[0]), strict=True)))
    diff = op("qsub", [prod, rq], "diff", (1, 24), quant=P, **int_safety.add_params(P, R, P))
    s_next = op("qadd", [diff, x], "s_next", (1, 24), quant=P, **int_safety.add_params(P, P, P))
    shifted = op("qadd", [x, c("offset", np.asarray([1234], np.int16), P)], "shifted",
                 (1, 24), quant=P, **int_safety.add_params(P, P, P))
    m8, s8 = nx.quantize_multiplier(P.scale[0] / B.scale[0])
    x8 = op("requantize", [x], "x8", (1, 24), "int8", B, in_zp=0, multiplier=m8, shift=s8,
            out_zp=B.zero_point[0], dtype="int8")
    m16, s16 = nx.quantize_multiplier(B.scale[0] / R.scale[0])
    x16 = op("requantize", [x8], "x16", (1, 24), quant=R, in_zp=B.zero_point[0],
             multiplier=m16, shift=s16, out_zp=0, dtype="int16")
    fired = op("greater", [x, c("theta", np.asarray([1000], np.int16), P)], "fired", (1, 24),
               "bool")
    spikes = op("cast", [fired], "spikes", (1, 24), quant=S, dtype="int16")
    driven = dense("driven", spikes, rng.standard_normal((24, 5)), R)
    sel = op("where", [fired, x, s], "sel", (1, 24), quant=P)
    outputs = [act, smooth, deep, sparse, shifted, x8, x16, driven, sel, s_next]
    roles = {x: "input", s: "state_in", **{o: "output" for o in outputs}, s_next: "state_out"}
    return verify(Graph("int16_kernels", tensors, [x, s], outputs, roles, [(s, s_next)],
                        constants, ops, {s: np.full((1, 24), 100, np.int16)},
                        {"quantized": True}))


S16_KERNELS = ("fully_connected_s16", "sparse_fully_connected_s16", "add_s16", "sub_s16",
               "mul_s16", "requantize_s16", "requantize_s16_s8", "requantize_s8_s16",
               "lut_s16", "lut_interp_s16")


def test_every_int16_kernel_is_exact_and_sanitizer_clean(tmp_path):
    g = _int16_kernel_graph()
    art = c_target.lower(g)
    source = art.files["model.c"].decode()
    for kernel in S16_KERNELS:
        assert f"ncc_{kernel}(" in source, kernel
    write_artifact(tmp_path / "ops16", g, art, {"factory": "int16_kernel_graph"})
    xs = stress_ints(800, 24, "int16", seed=11)[:, None, :]
    golden = run_batch(g, xs[None, :, 0, :])
    # the deep layer's accumulator leaves int32 at the rails (an int32 one would wrap)
    _, w, b = next(op for op in g.ops if op.output == "deep").inputs
    acc = np.tile(xs[:, 0, :].astype(np.int64), 27) @ g.constants[w] + g.constants[b]
    assert np.abs(acc).max() > 2**31 - 1
    got = open_session(tmp_path / "ops16").run(xs)
    for name in g.outputs:
        np.testing.assert_array_equal(got[name].reshape(golden[name][0].shape),
                                      golden[name][0], err_msg=name)
    exe = build_executable(tmp_path / "ops16", tmp_path / "ops16.exe",
                           cc=_sanitizing_compiler(),
                           flags=("-O1", "-g", "-fsanitize=address,undefined",
                                  "-fno-sanitize-recover=all"))
    host = run_executable(exe, read_manifest(tmp_path / "ops16"), xs)
    for name in g.outputs:
        np.testing.assert_array_equal(host[name].reshape(golden[name][0].shape),
                                      golden[name][0], err_msg=f"asan+ubsan {name}")


def test_mixed_widths_and_out_of_range_shifts_are_refused():
    g = _int16_kernel_graph()
    mixed = [Op(o.kind, ("diff", "x8"), o.output, o.attrs) if o.output == "s_next" else o
             for o in g.ops]
    with pytest.raises(c_target.CTargetError, match=r"qadd -> 's_next' on diff: int16, "
                                                    r"x8: int8"):
        c_target.lower(g.replace(ops=mixed))
    steep = [Op(o.kind, o.inputs, o.output, {**o.attrs, "shift": (15,) * 4})
             if o.output == "deep" else o for o in g.ops]
    with pytest.raises(c_target.CTargetError, match="shift 15 > 14"):
        c_target.lower(g.replace(ops=steep))


def _kernel(tmp_path, name: str, restype: str, defines: tuple[str, ...] = ()):
    """The runtime's function `name`(int64 x, int32 multiplier, int32 shift) from
    ncc_kernels.c built as a shared library (the warnings of every C test), with -D
    `defines`."""
    import ctypes
    import subprocess

    from ncc.runtime.cbuild import find_compiler, runtime_file

    lib = tmp_path / "libncc_kernels.so"
    subprocess.run([find_compiler(), *WARNINGS, "-O2", "-shared", "-fPIC",
                    *(f"-D{d}" for d in defines), "-o", str(lib),
                    str(runtime_file("ncc_kernels.c"))], check=True, capture_output=True)
    fn = getattr(ctypes.CDLL(str(lib)), name)
    fn.restype = getattr(ctypes, restype)
    fn.argtypes = [ctypes.c_int64, ctypes.c_int32, ctypes.c_int32]
    return fn


def test_int64_multiplier_matches_the_numeric_core(tmp_path):
    """ncc_multiply_by_quantized_multiplier_int64 (16x8 dense layers) against
    numerics.multiply_by_quantized_multiplier_int64 over its whole input range."""
    fn = _kernel(tmp_path, "ncc_multiply_by_quantized_multiplier_int64", "c_int64")
    rng = np.random.default_rng(0)
    edges_x = [-(1 << 47), (1 << 47) - 1, -1, 0, 1]
    edges_m = [0, 1 << 30, 0x7FFEFFFF, 0x7FFF0000, (1 << 31) - 1]
    x = np.concatenate([np.repeat(edges_x, 5), rng.integers(-(1 << 47), 1 << 47, 4000)])
    m = np.concatenate([np.tile(edges_m, 5), rng.integers(0, 1 << 31, 4000)])
    shift = rng.integers(-31, c_target.FC16_MAX_SHIFT + 1, len(x))
    want = nx.multiply_by_quantized_multiplier_int64(x, m, shift)
    got = np.array([fn(int(a), int(b), int(c)) for a, b, c in zip(x, m, shift, strict=True)])
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("form", ["NCC_MBQM_64BIT", "NCC_MBQM_32BIT"])
def test_multiplier_matches_the_numeric_core(form, tmp_path):
    """ncc_multiply_by_quantized_multiplier in both forms (one int64 rounding for 64-bit
    hosts, 32-bit steps for 32-bit cores: the Cortex-M4 build) against
    numerics.multiply_by_quantized_multiplier: int64 inputs wrapped to int32 after the
    left shift, every shift, multipliers at the edges, values at the rounding ties."""
    fn = _kernel(tmp_path, "ncc_multiply_by_quantized_multiplier", "c_int32", (form,))
    rng = np.random.default_rng(1)
    edges_x = [-(1 << 31), (1 << 31) - 1, -1, 0, 1, 1 << 40, -(1 << 33) - 5]
    edges_m = [0, 1, 1 << 30, (1 << 31) - 1, -(1 << 31)]
    shifts = np.arange(-31, 31)
    x = np.concatenate([np.repeat(edges_x, len(edges_m) * len(shifts)),
                        rng.integers(-(1 << 31), 1 << 31, 6000),
                        rng.integers(-(1 << 12), 1 << 12, 6000)])
    m = np.concatenate([np.tile(np.repeat(edges_m, len(shifts)), len(edges_x)),
                        rng.integers(0, 1 << 31, 12000)])
    shift = np.concatenate([np.tile(shifts, len(edges_x) * len(edges_m)),
                            rng.integers(-31, 31, 12000)])
    # ties: x * m / 2^(31 - shift) at exact halves
    t = rng.integers(-2000, 2000, 3000)
    sh = rng.integers(-12, 1, 3000)
    x = np.concatenate([x, t])
    m = np.concatenate([m, np.full(3000, 1 << 30)])
    shift = np.concatenate([shift, sh])
    want = nx.multiply_by_quantized_multiplier(x, m, shift)
    got = np.array([fn(int(a), int(b), int(c)) for a, b, c in zip(x, m, shift, strict=True)])
    np.testing.assert_array_equal(got, want)
