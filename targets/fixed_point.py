"""fixed-point target: the golden integer graph as tables for neuromorphic chips and small runtimes.

Files: `tables.json` (buffers, state layout, layers with their integer parameters, spiking
populations, totals), `tables.npz` (every integer array, no pickle) and `tables.h` (the same
as C99 `static const` arrays and `#define`s, no structs). Their meaning and the golden
interpreter that runs them are in `compiler/tables.py`; `compiler/neurons.py` gives spiking
neurons integer thresholds on their membranes and decays as multipliers where exact.

Weights are int8 (K, N) matrices, or synapse lists (`pre`, `post`, `weight`, present
synapses only) when fewer than `SPARSE_DENSITY` of the entries are nonzero (sparse NCP
wirings). Activations are int8 or, in a 16x8 graph, int16: a `lut` layer's table then is
the compact form (513 entries, layer field `"interpolated": true`, read by
`ncc.numerics.interpolated_lookup`; `NCC_L<i>_TABLE_SEGMENT_BITS` in the header) or, for an
integer decay kept exact, 65536 entries. `NCC_L<i>_TABLE_OFFSET` (32768, or 128 for int8) is
what the header says to add to x before indexing it. Each population gets per-neuron
arrays `<pop>.threshold` (what its compare layer reads) and, for a fixed-point decay,
`<pop>.decay_multiplier` / `<pop>.decay_shift`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ncc import numerics as nx
from ncc.compiler.artifact import Artifact
from ncc.compiler.c_names import CNames
from ncc.compiler.ir import OPS, Graph
from ncc.compiler.neurons import Population, neuromorphic_form
from ncc.compiler.tables import FORMAT, JSON_FILE, NPZ_FILE, SPARSE_DENSITY, synapse_list
from ncc.models.archive import json_bytes, npz_bytes
from ncc.numerics import quantize

TARGET = "fixed-point"
HEADER = "tables.h"
CTYPES = {"int8": "int8_t", "int16": "int16_t", "int32": "int32_t", "uint8": "uint8_t",
          "bool": "uint8_t"}
KIND_IDS = {kind: i for i, kind in enumerate(OPS)}
RESET_IDS = {"none": 0, "subtract": 1, "zero": 2}


class FixedPointError(ValueError):
    """The graph cannot be written as tables (float graph, unsupported dtype)."""


def _bits(dtype: str) -> int:
    return 1 if dtype == "bool" else 8 * np.dtype(dtype).itemsize


def _nbytes(dtype: str, size: int) -> int:
    return size * (1 if dtype == "bool" else np.dtype(dtype).itemsize)


def _plain(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v.item() if isinstance(v, np.generic) else v


def _scratch_bytes(g: Graph) -> int:
    """Peak bytes of op results alive at once (inputs and states excluded)."""
    last = {n: i for i, op in enumerate(g.ops) for n in op.inputs}
    for n in g.outputs:
        last[n] = len(g.ops)
    peak, live = 0, {}
    for i, op in enumerate(g.ops):
        t = g.tensors[op.output]
        live[op.output] = _nbytes(t.dtype, t.size)
        peak = max(peak, sum(live.values()))
        live = {n: b for n, b in live.items() if last.get(n, i) > i}
    return peak


def _spike_buffers(g: Graph) -> set[str]:
    """int8 0/1 tensors cast from a comparison: spikes."""
    return {op.output for op in g.ops
            if op.kind == "cast" and g.tensors[op.inputs[0]].dtype == "bool"}


def _population_spec(pop: Population, arrays: dict[str, np.ndarray],
                     g: Graph) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": pop.name, "kind": pop.kind, "neurons": pop.neurons,
                            "state_in": pop.state_in, "offset": pop.offset,
                            "membrane": pop.membrane, "reset": pop.reset,
                            "membrane_bits": _bits(g.tensors[pop.membrane].dtype),
                            "membrane_quant": g.tensors[pop.membrane].quant.to_dict(),
                            "decay": pop.decay, "current": pop.current, "layers": pop.layers}
    if pop.threshold is not None:
        key = f"{pop.name}.threshold"
        arrays[key] = np.full(pop.neurons, pop.threshold, g.tensors[pop.membrane].dtype)
        spec.update(threshold=key, spikes=pop.spikes)
    if pop.decay is not None and pop.decay["form"] == "multiplier":
        arrays[f"{pop.name}.decay_multiplier"] = np.full(pop.neurons,
                                                         pop.decay["multiplier"], np.int32)
        arrays[f"{pop.name}.decay_shift"] = np.full(pop.neurons, pop.decay["shift"], np.int32)
    return spec


def build_tables(g: Graph) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(tables.json document, tables.npz arrays) for quantized graph `g`."""
    g, pops = neuromorphic_form(g)
    arrays: dict[str, np.ndarray] = {}
    matrices: dict[str, dict[str, Any]] = {}
    populations = [_population_spec(p, arrays, g) for p in pops]
    producer = g.producer()
    threshold_of = {producer[p.spikes].inputs[0]: f"{p.name}.threshold"  # compare -> array
                    for p in pops if p.threshold is not None}
    spikes = _spike_buffers(g)
    layers, macs, synapses, events_max = [], 0, 0, 0
    for op in g.ops:
        inputs = list(op.inputs)
        layer: dict[str, Any] = {"kind": op.kind, "output": op.output,
                                 "params": {k: _plain(v) for k, v in op.attrs.items()}}
        if op.output in threshold_of:  # a population's threshold: its per-neuron array
            inputs[1] = threshold_of[op.output]
        if op.kind == "fully_connected":
            x, w, _ = op.inputs
            weights = g.constants[w]
            rows = g.tensors[x].size // weights.shape[0]
            present = int(np.count_nonzero(weights))
            if weights.size and present / weights.size < SPARSE_DENSITY:
                pre, post, weight = synapse_list(weights)
                arrays.update({f"{w}.pre": pre, f"{w}.post": post, f"{w}.weight": weight})
                matrices[w] = {"storage": "synapses", "shape": list(weights.shape),
                               "synapses": present}
                macs += rows * present
            else:
                arrays[w] = weights
                matrices[w] = {"storage": "dense", "shape": list(weights.shape),
                               "synapses": present}
                macs += rows * weights.size
            synapses += present
            if x in spikes:
                layer["spike_input"] = True
                events_max += rows * present
        if op.kind == "lut" and nx.is_interpolated(g.constants[op.inputs[1]],
                                                   8 * np.dtype(g.tensors[op.inputs[0]].dtype)
                                                   .itemsize):
            layer["interpolated"] = True
        for name in inputs:
            if name in g.constants and name not in matrices and name not in arrays:
                arrays[name] = g.constants[name]
        layer["inputs"] = inputs
        layers.append(layer)
    buffers = {}
    for name, t in g.tensors.items():
        if name in g.constants:
            continue
        buffers[name] = {"shape": list(t.shape), "dtype": t.dtype, "bits": _bits(t.dtype),
                         "bytes": _nbytes(t.dtype, t.size), "role": g.roles.get(name),
                         "quant": t.quant.to_dict() if t.quant else None}
    state, offset = [], 0
    for s_in, s_out in g.state_pairs:
        t = g.tensors[s_in]
        arrays[f"{s_in}.initial"] = np.asarray(g.initial_state[s_in], t.dtype)
        size = _nbytes(t.dtype, t.size)
        state.append({"state_in": s_in, "state_out": s_out, "shape": list(t.shape),
                      "dtype": t.dtype, "bits": _bits(t.dtype), "offset_bytes": offset,
                      "bytes": size, "initial": f"{s_in}.initial"})
        offset += size
    for name in g.by_role("dt"):
        arrays[f"{name}.one"] = quantize(np.ones(g.tensors[name].shape, np.float32),
                                         g.tensors[name].quant)
    weight_bytes = sum(a.nbytes for k, a in arrays.items()
                       if not k.endswith((".initial", ".one")))
    totals = {"weights_bytes": int(weight_bytes), "state_bytes": offset,
              "scratch_bytes": _scratch_bytes(g), "macs_per_step": macs, "synapses": synapses,
              "synaptic_events_per_step_max": events_max, "layers": len(layers)}
    spec = {"format": FORMAT, "model": g.name, "inputs": list(g.inputs),
            "outputs": list(g.outputs), "roles": dict(g.roles), "buffers": buffers,
            "state": state, "layers": layers, "matrices": matrices,
            "populations": populations,
            "arrays": {k: {"dtype": str(a.dtype), "shape": list(a.shape)}
                       for k, a in sorted(arrays.items())},
            "totals": totals}
    return spec, arrays


# --- C header --------------------------------------------------------------------------------


def _literal(v: int) -> str:
    return "(-2147483647 - 1)" if v == -(1 << 31) else str(int(v))


def _c_array(ctype: str, ident: str, values: np.ndarray, comment: str) -> list[str]:
    flat = [int(v) for v in np.asarray(values).reshape(-1)] or [0]
    rows = [", ".join(_literal(v) for v in flat[i:i + 16]) for i in range(0, len(flat), 16)]
    return [f"/* {comment} */", f"static const {ctype} {ident}[{len(flat)}] = {{",
            "    " + ",\n    ".join(rows), "};"]


def header(spec: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
    """tables.h: every array as static const, the layout and the layers as #defines."""
    names = CNames()
    buf_ids = {name: i for i, name in enumerate(spec["buffers"])}
    h = [f"/* Generated by ncc (target {TARGET}): do not edit. Tables of model "
         f"{spec['model']}. */", "#ifndef NCC_TABLES_H", "#define NCC_TABLES_H", "",
         "#include <stdint.h>", "", f'#define NCC_TABLES_FORMAT "{FORMAT}"',
         "", "/* layer kinds (ncc IR op kinds) */"]
    h += [f"#define NCC_KIND_{k.upper()} {i}" for k, i in KIND_IDS.items()]
    h += ["#define NCC_RESET_NONE 0", "#define NCC_RESET_SUBTRACT 1", "#define NCC_RESET_ZERO 2",
          "", "/* buffers: id, elements, bits per element, zero point */",
          f"#define NCC_BUFFER_COUNT {len(buf_ids)}"]
    for name, b in spec["buffers"].items():
        m = names(name, "NCC_BUF").upper()
        size = int(np.prod(b["shape"]))
        h.append(f"#define {m}_ID {buf_ids[name]} /* {name}: {b['dtype']}{b['shape']}"
                 f"{', ' + b['role'] if b['role'] else ''} */")
        h.append(f"#define {m}_SIZE {size}")
        h.append(f"#define {m}_BITS {b['bits']}")
        if b["quant"] and len(b["quant"]["zero_point"]) == 1:
            h.append(f"#define {m}_ZERO_POINT {b['quant']['zero_point'][0]} "
                     f"/* scale {b['quant']['scale'][0]:.9g} */")
    h += ["", "/* recurrent state, packed: byte offset, bytes, bits per element */",
          f"#define NCC_STATE_COUNT {len(spec['state'])}",
          f"#define NCC_STATE_BYTES {spec['totals']['state_bytes']}"]
    for i, s in enumerate(spec["state"]):
        h += [f"#define NCC_STATE{i}_OFFSET {s['offset_bytes']} /* {s['state_in']} <- "
              f"{s['state_out']} */", f"#define NCC_STATE{i}_BYTES {s['bytes']}",
              f"#define NCC_STATE{i}_BITS {s['bits']}",
              f"#define NCC_STATE{i}_IN {names(s['state_in'], 'NCC_BUF').upper()}_ID",
              f"#define NCC_STATE{i}_OUT {names(s['state_out'], 'NCC_BUF').upper()}_ID"]
    h += ["", "/* arrays (tables.npz) */"]
    idents = {}
    for key in sorted(arrays):
        a = arrays[key]
        idents[key] = names(key, "ncc").lower()
        ctype = "int32_t" if a.dtype in (np.int64, np.int32) else CTYPES[str(a.dtype)]
        h += _c_array(ctype, idents[key], a, f"{key}: {a.dtype}{list(a.shape)}")
    totals = spec["totals"]
    h += ["", "/* layers, in execution order: kind, output buffer, inputs (buffer ids, or "
          "arrays), integer parameters */", f"#define NCC_LAYER_COUNT {len(spec['layers'])}",
          f"#define NCC_MACS_PER_STEP {totals['macs_per_step']}",
          f"#define NCC_WEIGHTS_BYTES {totals['weights_bytes']}",
          f"#define NCC_SCRATCH_BYTES {totals['scratch_bytes']}"]
    for i, layer in enumerate(spec["layers"]):
        p = f"NCC_L{i}"
        h.append(f"#define {p}_KIND NCC_KIND_{layer['kind'].upper()} /* {layer['output']} */")
        h.append(f"#define {p}_OUT {buf_ids[layer['output']]}")
        for j, name in enumerate(layer["inputs"]):
            m = spec["matrices"].get(name)
            if m is not None and m["storage"] == "synapses":
                h += [f"#define {p}_IN{j}_SYNAPSES {m['synapses']} /* {name}: "
                      f"{m['shape'][0]}x{m['shape'][1]} */",
                      f"#define {p}_IN{j}_PRE {idents[name + '.pre']}",
                      f"#define {p}_IN{j}_POST {idents[name + '.post']}",
                      f"#define {p}_IN{j}_WEIGHT {idents[name + '.weight']}"]
            elif name in idents:
                h.append(f"#define {p}_IN{j} {idents[name]}")
            else:
                h.append(f"#define {p}_IN{j} {buf_ids[name]} /* {name} */")
        if layer["kind"] == "lut":  # y = table[x + offset], offset = -min(x's dtype)
            x_dtype = spec["buffers"][layer["inputs"][0]]["dtype"]
            offset = -int(np.iinfo(np.dtype(x_dtype)).min)
            h.append(f"#define {p}_TABLE_OFFSET {offset} /* {x_dtype} x */")
            if layer.get("interpolated"):
                h.append(f"#define {p}_TABLE_SEGMENT_BITS {nx.INTERP_SEGMENT_BITS} /* u = x + "
                         f"OFFSET, i = u >> SEGMENT_BITS, f = u & 127: y = (T[i] * 128 + "
                         "(T[i+1] - T[i]) * f + 64) >> 7 */")
        for key, value in sorted(layer["params"].items()):
            macro = f"{p}_{key.upper()}"
            if isinstance(value, bool) or value is None:
                continue
            if isinstance(value, str):
                h.append(f"/* {macro}: {value} */")
            elif isinstance(value, list):
                flat = np.asarray(value, np.int64).reshape(-1)
                h += _c_array("int32_t", f"ncc_l{i}_{key}", flat, f"layer {i} {key}")
                h.append(f"#define {macro} ncc_l{i}_{key}")
            else:
                h.append(f"#define {macro} {_literal(int(value))}")
    h += ["", "/* spiking and leaky-integrator populations */",
          f"#define NCC_POPULATION_COUNT {len(spec['populations'])}"]
    for i, pop in enumerate(spec["populations"]):
        p = f"NCC_POP{i}"
        h += [f"/* {pop['name']}: {pop['kind']}, decay {pop['decay']} */",
              f"#define {p}_NEURONS {pop['neurons']}",
              f"#define {p}_STATE {names(pop['state_in'], 'NCC_BUF').upper()}_ID",
              f"#define {p}_OFFSET {pop['offset']}",
              f"#define {p}_MEMBRANE_BITS {pop['membrane_bits']}",
              f"#define {p}_RESET NCC_RESET_{pop['reset'].upper()}"]
        if "threshold" in pop:
            h.append(f"#define {p}_THRESHOLD {idents[pop['threshold']]}")
    h += ["", "#endif /* NCC_TABLES_H */", ""]
    return "\n".join(h)


def lower(g: Graph, *, reference: Graph | None = None, model: Any = None,
          sequence_length: int | None = None) -> Artifact:
    """Tables artifact of quantized graph `g`: tables.json, tables.npz, tables.h."""
    if not g.metadata.get("quantized"):
        raise FixedPointError("the fixed-point target writes a quantized graph; pass "
                              "--calibration data (or compile a QAT model)")
    if sequence_length is not None:
        raise FixedPointError("fixed-point tables run one step per call; drop "
                              "--sequence-length")
    for name, t in g.tensors.items():
        if t.dtype not in CTYPES:
            raise FixedPointError(f"fixed-point: tensor {name!r} is {t.dtype}; tables hold "
                                  f"{sorted(CTYPES)}")
    spec, arrays = build_tables(g)
    files = {JSON_FILE: json_bytes(spec), NPZ_FILE: npz_bytes(arrays),
             HEADER: header(spec, arrays).encode()}
    totals = spec["totals"]
    details = {
        "exact": "the table interpreter (ncc.compiler.tables) is bit-exact with the golden "
                 "integer model",
        "files": {"tables": JSON_FILE, "arrays": NPZ_FILE, "c_header": HEADER},
        "memory": {k: totals[k] for k in ("weights_bytes", "state_bytes", "scratch_bytes")},
        "macs_per_step": totals["macs_per_step"],
        "synapses": totals["synapses"],
        "synaptic_events_per_step_max": totals["synaptic_events_per_step_max"],
        "sparse_layers": [{"weights": k, "synapses": m["synapses"],
                           "dense_size": int(np.prod(m["shape"]))}
                          for k, m in spec["matrices"].items() if m["storage"] == "synapses"],
        "sparse_density_threshold": SPARSE_DENSITY,
        "populations": [{k: p[k] for k in ("name", "kind", "neurons", "reset")}
                        for p in spec["populations"]],
    }
    return Artifact(target=TARGET, entry=JSON_FILE, files=files,
                    io_names={n: n for n in g.inputs + g.outputs}, details=details)
