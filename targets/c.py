"""C target: the golden integer graph as portable C99 over ncc's C runtime (`runtime/c`).

Pieces: `c_arena` (broadcasts and scratch planning), `c_emit` (one emitter per op),
`c_source` (model.h / model.c), `c_toolchain` (Cortex-M4 build flags and footprint).

The artifact folder builds alone: `model.h` (sizes, the context struct holding the
recurrent state, the API), `model.c` (constants as `static const` arrays, one step
function calling the runtime kernels in graph order over statically planned scratch
arenas) and copies of the runtime sources `ncc.h`, `ncc_kernels.c`.

API (model.h):

- `void ncc_init(ncc_ctx *ctx)` / `void ncc_reset(ncc_ctx *ctx)`: state to its initial value;
- `void ncc_step(ncc_ctx *ctx, const int8_t *x, int8_t *y)`: one timestep, state threaded
  in `ctx` (x and y are int16_t for a 16x8 graph, `QuantOptions(activations="int16")`:
  the pointer types follow the tensors' dtypes); models with a time delta also get
  `ncc_step_dt(ctx, x, dt, y)` (`ncc_step` then feeds dt = 1.0 on dt's grid);
- `void *ncc_state(ncc_ctx *ctx, int32_t i)`, `int32_t ncc_state_bytes(int32_t i)`,
  `int32_t ncc_ctx_size(void)`: generic access for hosts (tests, the Python session);
- `void ncc_step_bytes(ncc_ctx *ctx, const void *x, const void *dt, void *y)`: one step on
  byte buffers, for generic drivers (`runtime/c/host`, `runtime/c/cortex_m`): every output
  concatenated in manifest order (`NCC_OUTPUTS_BYTES`), dt NULL for 1.0.

Scratch buffers are file-static in model.c: one model instance runs at a time per
program (the state lives in each ctx, so contexts can be interleaved step by step).

Weight matrices whose int8 density is at most `SPARSE_DENSITY` (sparse NCP wirings,
whose masked synapses are exact zeros) become synapse lists (CSR by output neuron);
absent synapses are skipped, the bits are the same, and `macs_per_step` counts present
synapses only. The trade: a present synapse costs 3 bytes of flash (int8 weight, uint16
presynaptic index) instead of 1, an absent one nothing, so at NCP densities (1/2 to 2/3)
the step does a third to a half fewer MACs for up to twice the weight bytes.

An LTC's per-synapse grids arrive compacted onto the present synapses
(`compiler/synapses.py`): `gather` ops (ncc_gather; equal index lists share one int16
array) and selection layers (one weight per row, so synapse lists). `work_per_step` counts
what the step must do from the graph (present-weight MACs, table lookups, requantized
elements), next to this kernel's own `macs_per_step`.

Integer ops run on int8 activations (`_s8` kernels) or on int16 ones (TFLite's 16x8 mode,
`_s16` kernels: int8 weights, int32 biases, int64 accumulators); the kernel follows the
dtypes of the op's tensors, and a mix the runtime has no kernel for (e.g. a qadd of an int8
and an int16 tensor) is a `CTargetError` naming the op.

A dense layer fed by spikes (an integer cast of a bool comparison, zero point 0) is listed in
`details["spiking_layers"]`: its synaptic events per step are the present synapses of the
neurons that spiked, at most `synapses` (the figure a neuromorphic core is sized by).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from ncc.compiler.artifact import Artifact
from ncc.compiler.ir import Graph
from ncc.compiler.work import work_per_step
from ncc.targets.c_arena import explicit_broadcasts, plan_arenas
from ncc.targets.c_emit import (  # noqa: F401  (the c target's public names)
    CTYPES,
    FC16_MAX_SHIFT,
    SPARSE_DENSITY,
    CTargetError,
    Emitter,
    emit_op,
)
from ncc.targets.c_source import StepApi, model_c, model_h, state_bytes
from ncc.targets.c_toolchain import cortex_m_footprint

TARGET = "c"
RUNTIME_FILES = ("ncc.h", "ncc_kernels.c")


def runtime_sources() -> dict[str, bytes]:
    """The runtime files every C artifact carries: {file name: bytes}."""
    folder = resources.files("ncc.runtime").joinpath("c")
    return {name: folder.joinpath(name).read_bytes() for name in RUNTIME_FILES}


def _check(g: Graph, sequence_length: int | None) -> None:
    if not g.metadata.get("quantized"):
        raise CTargetError("the c target lowers a quantized graph; pass --calibration data")
    if sequence_length is not None:
        raise CTargetError("c artifacts run one step per call; drop --sequence-length")
    for name in g.inputs + g.outputs:
        if g.tensors[name].dtype not in CTYPES:
            raise CTargetError(f"c target: tensor {name!r} is {g.tensors[name].dtype}; "
                               f"the C runtime stores {sorted(CTYPES)}")


def generate(g: Graph) -> tuple[dict[str, bytes], Emitter, StepApi]:
    """The C files of integer graph `g` (model.h, model.c and the runtime's), the emitter
    that wrote them (memory and work figures) and the step's API. Deterministic: the
    runtime session regenerates them to check an artifact's sources before compiling."""
    _check(g, None)
    ops, tensors = explicit_broadcasts(g)
    wide = g.replace(tensors=tensors)
    e = Emitter(wide, plan_arenas(wide, ops), {op.output: op for op in ops})
    for i, op in enumerate(ops):
        emit_op(e, op, i)
    api = StepApi.of(g, e)
    files = {"model.h": model_h(g, api, e.arenas).encode(),
             "model.c": model_c(g, api, e).encode(), **runtime_sources()}
    return files, e, api


def lower(g: Graph, *, reference: Graph | None = None, model: Any = None,
          sequence_length: int | None = None) -> Artifact:
    """C artifact of integer graph `g`: files model.h, model.c, ncc.h, ncc_kernels.c."""
    _check(g, sequence_length)
    files, e, api = generate(g)
    n_state = state_bytes(g)
    details = {
        "exact": "bit-exact with the golden integer model",
        "language": "C99, no malloc, no libm, no floating point",
        "api": {"step": api.plain_sig, "step_dt": api.step_sig if api.dt_names else None,
                "init": "void ncc_init(ncc_ctx *ctx)", "reset": "void ncc_reset(ncc_ctx *ctx)"},
        "build": "cc -std=c99 -O2 -c model.c ncc_kernels.c",
        "memory": {"weights_bytes": e.const_bytes, "state_bytes": n_state,
                   "scratch_bytes": e.arenas.scratch_bytes},
        "macs_per_step": e.macs,
        "work_per_step": work_per_step(g),
        "sparse_layers": e.sparse,
        "spiking_layers": e.spiking,
        "max_synaptic_events_per_step": sum(s["synapses"] for s in e.spiking),
        "sparse_density_threshold": SPARSE_DENSITY,
        "cortex_m": cortex_m_footprint(files, n_state),
    }
    return Artifact(target=TARGET, entry="model.c", files=files,
                    io_names={n: n for n in g.inputs + g.outputs}, details=details)
