"""TFLite int8 target: the golden integer graph as a full-integer `.tflite` flatbuffer.

`lower(g)` writes `model.tflite` (schema version 3, file identifier "TFL3") computing
one timestep: inputs x, [dt], state_in...; outputs y, state_out..., all int8 (or all
int16 in 16x8 mode, weights int8) with exactly the compiler's quantization parameters.
The host threads state from step to step (recurrence stays outside the graph, DESIGN
"Measured facts").

The model is built directly with the flatbuffer object API of the schema that
`ai-edge-litert` ships: no TensorFlow, no converter. Each integer IR op maps to
builtins whose integer arithmetic is the golden kernel's (compiler/golden.py):

    fully_connected   RESHAPE, CONV_2D 1x1 (filter (N, 1, 1, K) per-channel on axis 0),
                      RESHAPE: LiteRT's int8 FULLY_CONNECTED rounds differently
    qadd / qsub       ADD / SUB
    qmul              MUL
    requantize        QUANTIZE int8 -> int8
    lut               CAST int8->int32, ADD int32 128, GATHER(table, index); int16: two
                      int8 GATHERs (high and low byte) recombined in int32, CAST; the
                      compact int16 table: int32 DIV / MUL / SUB for segment and offset,
                      byte GATHERs of both ends, integer interpolation, CAST
    comparisons       CAST int8->int32, then GREATER / ... / EQUAL on int32
    concat, reshape, broadcast, slice, transpose, max, min, where
                      CONCATENATION, RESHAPE, BROADCAST_TO, STRIDED_SLICE, TRANSPOSE,
                      MAXIMUM, MINIMUM, SELECT_V2: inputs and output share parameters,
                      so each is a copy of integers
    gather            GATHER (int8); int16: a one-hot 16x8 CONV_2D of multiplier 1
    cast bool->int8   CAST;  logical_not  LOGICAL_NOT

Tables and comparisons avoid int8 rescaling entirely: a CAST to int32 keeps the
integers and drops the quantization, so only raw integers are compared or indexed.

TFLite recomputes every ADD/SUB/MUL/FULLY_CONNECTED/QUANTIZE multiplier from the tensor
scales at Prepare time; `lower` recomputes them the same way (`tflite_params`) and
refuses a graph whose attributes differ, so an artifact never silently disagrees
with the golden model. Builtin LOGISTIC/TANH are never used: their bits differ
between LiteRT and TFLite Micro.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as fb

from ncc import numerics as nx
from ncc.compiler.artifact import Artifact
from ncc.compiler.int_safety import add_params, mul_is_portable, mul_multipliers
from ncc.compiler.ir import COMPARISONS, Graph, Op, QuantParams, Tensor
from ncc.compiler.quantize import IDENTITY_MULTIPLIER

TARGET = "tflite-int8"
SCHEMA_VERSION = 3
FILE_IDENTIFIER = b"TFL3"
BUFFER_ALIGNMENT = 16  # constants are read in place (int32 biases): keep them aligned

_TYPES = {"float32": fb.TensorType.FLOAT32, "int8": fb.TensorType.INT8,
          "int16": fb.TensorType.INT16, "int32": fb.TensorType.INT32,
          "int64": fb.TensorType.INT64, "uint8": fb.TensorType.UINT8,
          "bool": fb.TensorType.BOOL}
_COMPARE = {"greater": "GREATER", "greater_equal": "GREATER_EQUAL", "less": "LESS",
            "less_equal": "LESS_EQUAL", "equal": "EQUAL"}
# builtin -> its options table (FULLY_CONNECTED: not emitted, kept for the measurements)
_OPTIONS: dict[str, type] = {
    "CONV_2D": fb.Conv2DOptionsT, "FULLY_CONNECTED": fb.FullyConnectedOptionsT,
    "ADD": fb.AddOptionsT,
    "SUB": fb.SubOptionsT, "MUL": fb.MulOptionsT, "QUANTIZE": fb.QuantizeOptionsT,
    "CAST": fb.CastOptionsT, "GATHER": fb.GatherOptionsT, "DIV": fb.DivOptionsT,
    "CONCATENATION": fb.ConcatenationOptionsT, "RESHAPE": fb.ReshapeOptionsT,
    "BROADCAST_TO": fb.BroadcastToOptionsT, "STRIDED_SLICE": fb.StridedSliceOptionsT,
    "TRANSPOSE": fb.TransposeOptionsT, "MAXIMUM": fb.MaximumMinimumOptionsT,
    "MINIMUM": fb.MaximumMinimumOptionsT, "SELECT_V2": fb.SelectV2OptionsT,
    "LOGICAL_NOT": fb.LogicalNotOptionsT, "GREATER": fb.GreaterOptionsT,
    "GREATER_EQUAL": fb.GreaterEqualOptionsT, "LESS": fb.LessOptionsT,
    "LESS_EQUAL": fb.LessEqualOptionsT, "EQUAL": fb.EqualOptionsT,
}
# operator-code versions: the first version of each builtin that takes int8 (TFLite's
# op_version.cc); LiteRT looks kernels up by (builtin, version). Unlisted: version 1.
_VERSIONS = {"ADD": 2, "SUB": 2, "MUL": 2, "CONV_2D": 3, "QUANTIZE": 2, "GATHER": 2,
             "CONCATENATION": 2, "STRIDED_SLICE": 2, "TRANSPOSE": 2, "MAXIMUM": 2,
             "MINIMUM": 2, "BROADCAST_TO": 2}
_PLACEHOLDER_FOR_GREATER_OP_CODES = 127


class TfliteLoweringError(ValueError):
    """The integer graph has an op or parameter TFLite cannot reproduce bit for bit."""


# --- TFLite's Prepare-time parameters ------------------------------------------------------


def tflite_params(kind: str, ins: list[QuantParams], out: QuantParams) -> dict[str, Any]:
    """The integer parameters TFLite's Prepare derives from float32 tensor scales.

    kind: "ADD"/"SUB" (attributes as `int_safety.add_params` names them), "MUL",
    "QUANTIZE" (multiplier, shift) or "FULLY_CONNECTED" (per-channel tuples; ins =
    [input, weights]). `QuantParams` scales are float32 values, as the flatbuffer stores
    them; the formulas are the numeric core's, as TFLite Micro's Prepare computes them.
    """
    if kind in ("ADD", "SUB"):
        return add_params(*ins, out)
    if kind == "MUL":
        pa, pb = ins
        if not mul_is_portable(pa, pb, out):
            raise TfliteLoweringError(
                "MUL: LiteRT derives its multiplier in float32 and TFLite Micro in double, "
                f"and for scales {pa.scale[0]:.9g} * {pb.scale[0]:.9g} -> {out.scale[0]:.9g} "
                "they round apart; quantize with ncc (which picks portable MUL scales) or "
                "change the fake-quant scales")
        m, s = mul_multipliers(pa, pb, out)["double"]
        return {"multiplier": m, "shift": s}
    if kind == "QUANTIZE":
        m, s = (int(v) for v in nx.requantize_multipliers(ins[0], out, 0))
        return {"multiplier": m, "shift": s}
    if kind == "FULLY_CONNECTED":
        _, mult, shift = nx.dense_multipliers(ins[0], ins[1], out)
        return {"multiplier": tuple(int(m) for m in mult),
                "shift": tuple(int(s) for s in shift)}
    raise KeyError(kind)


# --- flatbuffer building -------------------------------------------------------------------


class _AlignedBuffer(fb.BufferT):
    """A constant's bytes in a vector aligned to BUFFER_ALIGNMENT."""

    def Pack(self, builder: flatbuffers.Builder) -> int:  # noqa: N802 (flatbuffers API)
        data = None
        if self.data is not None:
            payload = bytes(self.data)
            builder.StartVector(1, len(payload), BUFFER_ALIGNMENT)
            builder.head -= len(payload)
            builder.Bytes[builder.head:builder.head + len(payload)] = payload
            data = builder.EndVector()
        fb.BufferStart(builder)
        if data is not None:
            fb.BufferAddData(builder, data)
        return fb.BufferEnd(builder)


def _quantization(p: QuantParams | None, axis: int | None = None) -> fb.QuantizationParametersT:
    q = fb.QuantizationParametersT()
    if p is not None:
        q.scale = [float(np.float32(s)) for s in p.scale]
        q.zeroPoint = [int(z) for z in p.zero_point]
        q.quantizedDimension = int(axis if axis is not None else (p.axis or 0))
    return q


class _Model:
    """Tensors, buffers, operator codes and operators of the one subgraph."""

    def __init__(self) -> None:
        self.tensors: list[fb.TensorT] = []
        self.index: dict[str, int] = {}
        self.buffers: list[fb.BufferT] = [fb.BufferT()]  # buffer 0: the empty sentinel
        self.codes: list[fb.OperatorCodeT] = []
        self.code_index: dict[str, int] = {}
        self.operators: list[fb.OperatorT] = []
        self.count = 0

    def tensor(self, name: str, shape: tuple[int, ...], dtype: str,
               quant: QuantParams | None = None, data: np.ndarray | None = None,
               axis: int | None = None) -> int:
        """Declare a tensor (a constant if `data` is given); returns its index."""
        if name in self.index:
            raise TfliteLoweringError(f"tensor {name!r} declared twice")
        t = fb.TensorT()
        t.name, t.shape, t.type = name, [int(d) for d in shape], _TYPES[dtype]
        t.quantization = _quantization(quant, axis)
        if data is not None:
            buf = _AlignedBuffer()
            buf.data = np.ascontiguousarray(data, np.dtype(dtype).newbyteorder("<")).tobytes()
            t.buffer = len(self.buffers)
            self.buffers.append(buf)
        self.index[name] = len(self.tensors)
        self.tensors.append(t)
        return self.index[name]

    def declare(self, t: Tensor, value: np.ndarray | None = None) -> int:
        return self.tensor(t.name, t.shape, t.dtype, t.quant, value)

    def temp(self, op: Op, what: str, shape: tuple[int, ...], dtype: str,
             quant: QuantParams | None = None, data: np.ndarray | None = None) -> str:
        """A helper tensor named after the IR op it serves (`y__idx3`)."""
        self.count += 1
        name = f"{op.output}__{what}{self.count}"
        self.tensor(name, shape, dtype, quant, None if data is None else np.asarray(data, dtype))
        return name

    def const(self, op: Op, what: str, value: Any, dtype: str = "int32") -> str:
        value = np.asarray(value, dtype)
        return self.temp(op, what, value.shape, dtype, data=value)

    def emit(self, builtin: str, inputs: list[str], outputs: list[str], **options: Any) -> None:
        """Append operator `builtin`(inputs) -> outputs with the given options fields."""
        if builtin not in self.code_index:
            code = getattr(fb.BuiltinOperator, builtin)
            self.code_index[builtin] = len(self.codes)
            self.codes.append(fb.OperatorCodeT(
                deprecatedBuiltinCode=min(code, _PLACEHOLDER_FOR_GREATER_OP_CODES),
                version=_VERSIONS.get(builtin, 1), builtinCode=code))
        op = fb.OperatorT()
        op.opcodeIndex = self.code_index[builtin]
        op.inputs = [self.index[n] for n in inputs]
        op.outputs = [self.index[n] for n in outputs]
        cls = _OPTIONS.get(builtin)
        if cls is None and options:
            raise AttributeError(f"{builtin} has no options table for {sorted(options)}")
        if cls is not None:
            op.builtinOptionsType = getattr(fb.BuiltinOptions, cls.__name__[:-1])
            op.builtinOptions = cls()
            for key, value in options.items():
                if not hasattr(op.builtinOptions, key):
                    raise AttributeError(f"{cls.__name__} has no field {key!r}")
                setattr(op.builtinOptions, key, value)
        self.operators.append(op)

    def serialize(self, name: str, inputs: list[str], outputs: list[str]) -> bytes:
        sub = fb.SubGraphT()
        sub.tensors, sub.operators, sub.name = self.tensors, self.operators, name
        sub.inputs = [self.index[n] for n in inputs]
        sub.outputs = [self.index[n] for n in outputs]
        model = fb.ModelT()
        model.version, model.description = SCHEMA_VERSION, "ncc tflite-int8 step"
        model.operatorCodes, model.subgraphs, model.buffers = self.codes, [sub], self.buffers
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
        return bytes(builder.Output())


# --- lowering of one IR op -------------------------------------------------------------------


def _check(op: Op, what: str, got: Any, want: Any) -> None:
    if got != want:
        raise TfliteLoweringError(
            f"op {op.kind} -> {op.output!r}: TFLite derives {what}={want} from the tensor "
            f"scales, but the golden model uses {got}; the artifact would not be bit-exact")


def _quant(g: Graph, name: str, op: Op) -> QuantParams:
    q = g.tensors[name].quant
    if q is None or q.dtype not in ("int8", "int16") or g.tensors[name].dtype != q.dtype:
        raise TfliteLoweringError(f"op {op.kind} -> {op.output!r}: tensor {name!r} must be "
                                  f"quantized int8 or int16 (is {g.tensors[name].dtype})")
    if q.dtype == "int16" and any(z != 0 for z in q.zero_point):
        raise TfliteLoweringError(f"op {op.kind} -> {op.output!r}: int16 tensor {name!r} has "
                                  "a nonzero zero point; TFLite's 16x8 kernels are symmetric")
    return q


def _same_dtype(g: Graph, op: Op, names: list[str]) -> str:
    """TFLite's arithmetic builtins take one activation type for inputs and output."""
    dtypes = {g.tensors[n].dtype for n in names}
    if len(dtypes) > 1:
        raise TfliteLoweringError(f"op {op.kind} -> {op.output!r} mixes {sorted(dtypes)}; "
                                  "TFLite needs one activation type per op")
    return dtypes.pop()


def _same_params(g: Graph, op: Op, names: list[str]) -> None:
    """Data movement and max/min are copies in TFLite only when all parameters agree."""
    params = {(g.tensors[n].quant.scale, g.tensors[n].quant.zero_point) for n in names
              if g.tensors[n].quant is not None}
    if len(params) > 1:
        raise TfliteLoweringError(f"op {op.kind} -> {op.output!r}: inputs and output must "
                                  "share quantization parameters for an exact copy")


def _fully_connected(m: _Model, g: Graph, op: Op) -> None:
    """x (..., K) . w (K, N) + b, as RESHAPE (M, 1, 1, K) -> 1x1 CONV_2D -> RESHAPE (..., N).

    M = prod(...). The filter is w transposed to (N, 1, 1, K), per-channel on axis 0;
    the bias (N,) at scales s_x * s_w, int32 for int8 x and int64 for int16 x (the 16x8
    kernels accumulate in int64 only with an int64 bias; given an int32 bias LiteRT
    computed garbage, measured). CONV_2D rather than FULLY_CONNECTED: the
    int8 FULLY_CONNECTED of LiteRT 2.3 rounds its requantization once (half up) where
    the reference kernels, TFLite Micro and the golden model round twice; its
    reference CONV_2D rounds like them (measured in tests/targets/test_tflite.py).
    """
    x, w, b = op.inputs
    a = op.attrs
    px, pw, po = _quant(g, x, op), g.tensors[w].quant, _quant(g, op.output, op)
    act = _same_dtype(g, op, [x, op.output])
    if pw is None or any(z != 0 for z in pw.zero_point) or g.tensors[w].dtype != "int8":
        raise TfliteLoweringError(f"op fully_connected -> {op.output!r}: weights {w!r} must "
                                  "be int8 symmetric (zero point 0)")
    k, n_out = g.tensors[w].shape
    scales = pw.scale if len(pw.scale) == n_out else pw.scale * n_out
    pw_t = QuantParams(tuple(scales), (0,) * n_out, bits=8, axis=0)
    _check(op, "x_zp", a["x_zp"], px.zero_point[0])
    _check(op, "out_zp", a["out_zp"], po.zero_point[0])
    want = tflite_params("FULLY_CONNECTED", [px, pw_t], po)
    _check(op, "multiplier", tuple(a["multiplier"]) * (n_out // len(a["multiplier"])),
           want["multiplier"])
    _check(op, "shift", tuple(a["shift"]) * (n_out // len(a["shift"])), want["shift"])
    _dense_as_conv(m, g, op, g.constants[w], pw_t, g.constants[b], px, po, act)


def _dense_as_conv(m: _Model, g: Graph, op: Op, weights: np.ndarray, pw: QuantParams,
                   bias: np.ndarray, px: QuantParams, po: QuantParams, act: str) -> None:
    """op.output = op.inputs[0] (..., K) . weights (K, N) int8 + bias, as RESHAPE -> 1x1
    CONV_2D -> RESHAPE (see `_fully_connected`); pw per channel on axis 0."""
    x = op.inputs[0]
    k, n_out = weights.shape
    filt = np.ascontiguousarray(weights.T).reshape(n_out, 1, 1, k)
    f_name = m.temp(op, "filter", filt.shape, "int8", pw, filt)
    bias_type = "int64" if act == "int16" else "int32"  # int32 values either way
    b_name = m.temp(op, "bias", (n_out,), bias_type,
                    QuantParams(tuple(nx.bias_scale(px, pw)), (0,) * n_out, bits=32, axis=0),
                    bias)
    rows = g.tensors[x].size // k
    image = m.temp(op, "image", (rows, 1, 1, k), act, px)
    m.emit("RESHAPE", [x, m.const(op, "shape", [rows, 1, 1, k])], [image],
           newShape=[rows, 1, 1, k])
    conv = m.temp(op, "conv", (rows, 1, 1, n_out), act, po)
    m.emit("CONV_2D", [image, f_name, b_name], [conv], padding=fb.Padding.VALID,
           strideW=1, strideH=1, dilationWFactor=1, dilationHFactor=1,
           fusedActivationFunction=fb.ActivationFunctionType.NONE)
    shape = list(g.tensors[op.output].shape)
    m.emit("RESHAPE", [conv, m.const(op, "shape", shape)], [op.output], newShape=shape)


def _add_sub_mul(m: _Model, g: Graph, op: Op) -> None:
    a, b = op.inputs
    pa, pb, po = _quant(g, a, op), _quant(g, b, op), _quant(g, op.output, op)
    _same_dtype(g, op, [a, b, op.output])
    builtin = {"qadd": "ADD", "qsub": "SUB", "qmul": "MUL"}[op.kind]
    want = tflite_params(builtin, [pa, pb], po)
    if builtin == "MUL":
        want.update(a_zp=pa.zero_point[0], b_zp=pb.zero_point[0], out_zp=po.zero_point[0])
    for key, value in want.items():
        if key != "dtype":
            _check(op, key, op.attrs[key], value)
    if builtin != "MUL" and want["shift"] > 0:  # TFLite aborts the process in Prepare
        raise TfliteLoweringError(
            f"op {op.kind} -> {op.output!r}: TFLite's {builtin} needs an output multiplier "
            f"below 1, i.e. an output scale above 2 * max(input scales) / 2^"
            f"{want['left_shift']}; got {po.scale[0]:.6g} for inputs {pa.scale[0]:.6g}, "
            f"{pb.scale[0]:.6g} (an input whose range is far wider than the sum's)")
    # int16 ADD/SUB: the general kernel (left shift 15); the power-of-two-scale variant
    # would round differently
    pot = {} if builtin == "MUL" else {"potScaleInt16": False}
    m.emit(builtin, [a, b], [op.output], fusedActivationFunction=fb.ActivationFunctionType.NONE,
           **pot)


def _requantize(m: _Model, g: Graph, op: Op) -> None:
    (x,) = op.inputs
    px, po = _quant(g, x, op), _quant(g, op.output, op)
    want = {**tflite_params("QUANTIZE", [px], po), "in_zp": px.zero_point[0],
            "out_zp": po.zero_point[0]}
    a = op.attrs
    if ((a["multiplier"], a["shift"]) == IDENTITY_MULTIPLIER and a["in_zp"] == a["out_zp"] == 0
            and g.tensors[x].dtype == g.tensors[op.output].dtype):
        # the integers unchanged between two grids of one width (a decay folded into the
        # scales): RESHAPE copies the integers, whatever the tensors' scales
        shape = list(g.tensors[op.output].shape)
        m.emit("RESHAPE", [x, m.const(op, "shape", shape)], [op.output], newShape=shape)
        return
    for key, value in want.items():
        _check(op, key, op.attrs[key], value)
    m.emit("QUANTIZE", [x], [op.output])


def _widen(m: _Model, g: Graph, op: Op, name: str, shape: tuple[int, ...] | None = None,
           dtype: str | None = None) -> str:
    """int8/int16 tensor -> an int32 copy holding the same integers (CAST ignores
    quantization). shape, dtype: for a helper tensor that is not in the IR graph."""
    shape = g.tensors[name].shape if shape is None else shape
    wide = m.temp(op, "int32_", shape, "int32")
    m.emit("CAST", [name], [wide], inDataType=_TYPES[dtype or g.tensors[name].dtype],
           outDataType=fb.TensorType.INT32)
    return wide


def _gather_bytes(m: _Model, g: Graph, op: Op, values: np.ndarray, index: str,
                  shape: tuple[int, ...], what: str) -> str:
    """int16 `values`[index] as int32 minus 128: GATHERs of the high byte and of the low
    byte - 128 (int8 tables: TFLite Micro's GATHER takes int8 and float tables only, int16
    and int32 measured), recombined as high * 256 + low. Callers add the 128 back."""
    values = np.asarray(values, np.int32)
    parts = []
    for part_name, part in (("high", values >> 8), ("low", (values & 0xFF) - 128)):
        byte = m.temp(op, what + part_name, shape, "int8")
        m.emit("GATHER", [m.const(op, f"{what}table_{part_name}", part, "int8"), index], [byte],
               axis=0, batchDims=0)
        parts.append(_widen(m, g, op, byte, shape, "int8"))
    high, low = parts
    high256 = m.temp(op, what + "high256_", shape, "int32")
    total = m.temp(op, what + "sum", shape, "int32")
    _int32_op(m, op, "MUL", [high, m.const(op, "c256_", 256)], high256)
    _int32_op(m, op, "ADD", [high256, low], total)
    return total


def _lut(m: _Model, g: Graph, op: Op) -> None:
    """table[x - min]: CAST to int32, ADD -min (int32), GATHER along the table's axis 0.

    An int16 table (65,536 entries) is gathered as two int8 tables (`_gather_bytes`),
    recombined in int32 and CAST to int16. A compact int16 table (513 entries,
    `numerics.interpolated_lookup`) is interpolated in int32: u = x + 2^15, i = u DIV 128,
    f = u - 128 i (u >= 0: TFLite's int32 DIV truncates, so it floors); T[i] and T[i+1]
    gathered; y = T[i] + (d f + 64 + 2^23) DIV 128 - 2^16 with d = T[i+1] - T[i]
    (|d f + 64| < 2^23: the dividend is positive).
    """
    x, table = op.inputs
    dtype = g.tensors[x].dtype
    lo, hi = nx.dtype_range(dtype)
    compact = dtype == "int16" and g.tensors[table].shape == (nx.INTERP_ENTRIES,)
    if dtype not in ("int8", "int16") or (g.tensors[table].shape != (hi - lo + 1,)
                                          and not compact) or \
            g.tensors[table].dtype != g.tensors[op.output].dtype:
        raise TfliteLoweringError(f"op lut -> {op.output!r}: only int8 (int16) tables of 256 "
                                  f"(65,536 or {nx.INTERP_ENTRIES}) entries of the input's type")
    shape = g.tensors[x].shape
    index = m.temp(op, "index", shape, "int32")
    _int32_op(m, op, "ADD", [_widen(m, g, op, x), m.const(op, "offset", -lo)], index)
    if dtype == "int8":
        m.emit("GATHER", [table, index], [op.output], axis=0, batchDims=0)
        return
    values = g.constants[table]
    total = m.temp(op, "total", shape, "int32")
    if not compact:
        value = _gather_bytes(m, g, op, values, index, shape, "")
        _int32_op(m, op, "ADD", [value, m.const(op, "c128_", 128)], total)
    else:
        seg = 1 << nx.INTERP_SEGMENT_BITS

        def t32(what: str) -> str:
            return m.temp(op, what, shape, "int32")

        seg_c = m.const(op, "seg", seg)
        i, i128, f, nxt_i = t32("i"), t32("i128_"), t32("f"), t32("next")
        m.emit("DIV", [index, seg_c], [i], fusedActivationFunction=fb.ActivationFunctionType.NONE)
        _int32_op(m, op, "MUL", [i, seg_c], i128)
        _int32_op(m, op, "SUB", [index, i128], f)
        _int32_op(m, op, "ADD", [i, m.const(op, "one", 1)], nxt_i)
        base = _gather_bytes(m, g, op, values, i, shape, "base")  # T[i] - 128
        nxt = _gather_bytes(m, g, op, values, nxt_i, shape, "next")  # T[i+1] - 128
        d, df, num, q, yb = t32("d"), t32("df"), t32("num"), t32("q"), t32("yb")
        _int32_op(m, op, "SUB", [nxt, base], d)
        _int32_op(m, op, "MUL", [d, f], df)
        _int32_op(m, op, "ADD", [df, m.const(op, "round", seg // 2 + (1 << 23))], num)
        m.emit("DIV", [num, seg_c], [q], fusedActivationFunction=fb.ActivationFunctionType.NONE)
        _int32_op(m, op, "ADD", [base, q], yb)
        _int32_op(m, op, "ADD", [yb, m.const(op, "unbias", 128 - (1 << 16))], total)
    m.emit("CAST", [total], [op.output], inDataType=fb.TensorType.INT32,
           outDataType=fb.TensorType.INT16)


def _int32_op(m: _Model, op: Op, builtin: str, ins: list[str], out: str) -> None:
    """Plain int32 ADD / MUL (no quantization: exact integer arithmetic)."""
    m.emit(builtin, ins, [out], fusedActivationFunction=fb.ActivationFunctionType.NONE)


def _compare(m: _Model, g: Graph, op: Op) -> None:
    """Integer comparison on int32 copies: TFLite's int8 compare would rescale by the scales."""
    ins = [m.const(op, "threshold", g.constants[n]) if n in g.constants
           else _widen(m, g, op, n) if g.tensors[n].dtype in ("int8", "int16") else n
           for n in op.inputs]
    m.emit(_COMPARE[op.kind], ins, [op.output])


def _slice(m: _Model, g: Graph, op: Op) -> None:
    a, shape = op.attrs, g.tensors[op.inputs[0]].shape
    begin, end, strides, end_mask = [], [], [], 0
    for axis, (start, stop, step) in enumerate(zip(a["starts"], a["stops"], a["steps"],
                                                   strict=True)):
        start, stop, step = slice(start, stop, step).indices(shape[axis])
        begin.append(start)
        strides.append(step)
        if stop < 0:  # a negative step running to the front: "to the end" via the mask
            end_mask |= 1 << axis
            stop = 0
        end.append(stop)
    ins = [op.inputs[0], m.const(op, "begin", begin), m.const(op, "end", end),
           m.const(op, "strides", strides)]
    m.emit("STRIDED_SLICE", ins, [op.output], beginMask=0, endMask=end_mask)


def _read_as_is(g: Graph, op: Op) -> tuple[str, ...]:
    """The inputs an op's lowering reads unchanged (others it re-lays out or widens)."""
    if op.kind == "fully_connected":
        return op.inputs[:1]
    if op.kind in COMPARISONS:
        return tuple(n for n in op.inputs if n not in g.constants)
    return op.inputs


Lowering = Callable[[_Model, Graph, Op], None]


def _cast(m: _Model, g: Graph, op: Op) -> None:
    src, dst = g.tensors[op.inputs[0]].dtype, op.attrs["dtype"]
    if src != "bool" or dst not in ("int8", "int16"):
        raise TfliteLoweringError(f"op cast -> {op.output!r}: only bool -> int8/int16 (spikes)")
    m.emit("CAST", list(op.inputs), [op.output], inDataType=fb.TensorType.BOOL,
           outDataType=_TYPES[dst])


def _where(m: _Model, g: Graph, op: Op) -> None:
    _same_params(g, op, [*op.inputs[1:], op.output])
    m.emit("SELECT_V2", list(op.inputs), [op.output])


def _same_grid(builtin: str) -> Lowering:
    """An elementwise op TFLite computes on one shared grid (MAXIMUM, MINIMUM)."""
    def lower(m: _Model, g: Graph, op: Op) -> None:
        _same_params(g, op, [*op.inputs, op.output])
        m.emit(builtin, list(op.inputs), [op.output])
    return lower


CONCAT_MAX_INPUTS = 10  # TFLite Micro's CONCATENATION takes at most 10 inputs


def _concat(m: _Model, g: Graph, op: Op) -> None:
    """CONCATENATION; more than `CONCAT_MAX_INPUTS` inputs (a window's T steps) become
    concatenations of groups, then of the groups (same grid throughout: exact)."""
    _same_params(g, op, [*op.inputs, op.output])
    out = g.tensors[op.output]
    axis = op.attrs["axis"] % len(out.shape)
    inputs = list(op.inputs)
    shapes = {n: list(g.tensors[n].shape) for n in inputs}
    while len(inputs) > CONCAT_MAX_INPUTS:
        groups = [inputs[i:i + CONCAT_MAX_INPUTS]
                  for i in range(0, len(inputs), CONCAT_MAX_INPUTS)]
        inputs = []
        for group in groups:
            if len(group) == 1:
                inputs.append(group[0])
                continue
            shape = list(shapes[group[0]])
            shape[axis] = sum(shapes[n][axis] for n in group)
            part = m.temp(op, "part", tuple(shape), out.dtype, out.quant)
            m.emit("CONCATENATION", group, [part], axis=axis,
                   fusedActivationFunction=fb.ActivationFunctionType.NONE)
            shapes[part] = shape
            inputs.append(part)
    m.emit("CONCATENATION", inputs, [op.output], axis=axis,
           fusedActivationFunction=fb.ActivationFunctionType.NONE)


def _reshape(m: _Model, g: Graph, op: Op) -> None:
    _same_params(g, op, [*op.inputs, op.output])
    shape = list(g.tensors[op.output].shape)
    m.emit("RESHAPE", [op.inputs[0], m.const(op, "shape", shape)], [op.output], newShape=shape)


def _broadcast(m: _Model, g: Graph, op: Op) -> None:
    _same_params(g, op, [*op.inputs, op.output])
    m.emit("BROADCAST_TO", [op.inputs[0], m.const(op, "shape", op.attrs["shape"])],
           [op.output])


def _same_grid_slice(m: _Model, g: Graph, op: Op) -> None:
    _same_params(g, op, [*op.inputs, op.output])
    _slice(m, g, op)


def _gather(m: _Model, g: Graph, op: Op) -> None:
    """int8: GATHER. int16 (TFLite Micro's GATHER takes int8 and float only): along the last
    axis as a 16x8 dense layer with one-hot weights at weight scale 1, whose multiplier is
    exactly 1 (16-bit multiplier 2^14, shift 1): out = (x * 2^14 + 2^13) >> 14 = x."""
    _same_params(g, op, [*op.inputs, op.output])
    x = g.tensors[op.inputs[0]]
    axis = op.attrs["axis"] % len(x.shape)
    indices = np.asarray(op.attrs["indices"], np.int64)
    if x.dtype == "int8":
        m.emit("GATHER", [op.inputs[0], m.const(op, "indices", indices)], [op.output],
               axis=axis, batchDims=0)
        return
    if x.dtype != "int16" or axis != len(x.shape) - 1:
        raise TfliteLoweringError(f"op gather -> {op.output!r}: only int8, or int16 along the "
                                  "last axis")
    onehot = np.zeros((x.shape[-1], len(indices)), np.int8)
    onehot[indices, np.arange(len(indices))] = 1
    pw = QuantParams((1.0,) * len(indices), (0,) * len(indices), bits=8, axis=0)
    want = tflite_params("FULLY_CONNECTED", [x.quant, pw], x.quant)
    if set(want["multiplier"]) != {1 << 30} or set(want["shift"]) != {1}:
        raise TfliteLoweringError(f"op gather -> {op.output!r}: the one-hot layer's "
                                  "multiplier is not exactly 1")
    _dense_as_conv(m, g, op, onehot, pw, np.zeros(len(indices), np.int64), x.quant, x.quant,
                   "int16")


def _transpose(m: _Model, g: Graph, op: Op) -> None:
    _same_params(g, op, [*op.inputs, op.output])
    m.emit("TRANSPOSE", [op.inputs[0], m.const(op, "perm", op.attrs["perm"])], [op.output])


LOWERINGS: dict[str, Lowering] = {
    "fully_connected": _fully_connected,
    "qadd": _add_sub_mul, "qsub": _add_sub_mul, "qmul": _add_sub_mul,
    "requantize": _requantize,  # QUANTIZE int8/int16 -> int8/int16
    "lut": _lut,
    **{kind: _compare for kind in sorted(COMPARISONS)},
    "cast": _cast,
    "logical_not": lambda m, g, op: m.emit("LOGICAL_NOT", list(op.inputs), [op.output]),
    "where": _where,
    "max": _same_grid("MAXIMUM"), "min": _same_grid("MINIMUM"),
    "concat": _concat, "reshape": _reshape, "identity": _reshape, "broadcast": _broadcast,
    "slice": _same_grid_slice, "transpose": _transpose, "gather": _gather,
}
"""Integer IR op kind -> the function that emits its TFLite operators."""


def _lower_op(m: _Model, g: Graph, op: Op) -> None:
    lowering = LOWERINGS.get(op.kind)
    if lowering is None:
        raise TfliteLoweringError(f"op {op.kind} -> {op.output!r} has no exact tflite-int8 "
                                  "lowering (quantize the graph first; float ops are not "
                                  "supported)")
    lowering(m, g, op)


# --- entry point -------------------------------------------------------------------------------


def lower(g: Graph, *, reference: Graph | None = None, model: Any = None,
          sequence_length: int | None = None) -> Artifact:
    """tflite-int8 artifact of integer graph `g`: `model.tflite`, one step per invoke.

    Inputs and outputs keep their IR names (x, [dt], state_in...; y, state_out...).
    A graph output that no op computes (a constant) is materialized by a RESHAPE copy
    named `<name>__out<i>`: a TFLite output is an op's result.
    """
    if not g.metadata.get("quantized"):
        raise ValueError("tflite-int8 lowers a quantized graph; pass --calibration data")
    if sequence_length is not None:
        raise ValueError("tflite-int8 runs one step per invoke (TFLite has no Scan here; "
                         "the host threads state); drop --sequence-length")
    m = _Model()
    for name in g.inputs:
        _quant(g, name, Op("input", (), name))
        m.declare(g.tensors[name])
    # FULLY_CONNECTED re-lays out its weights and bias: declare other constants as they are
    # and comparisons read their constant thresholds as int32: declare the others as they are
    direct = {n for op in g.ops for n in _read_as_is(g, op)} | set(g.outputs)
    for name, value in g.constants.items():
        if name in direct:
            m.declare(g.tensors[name], value)
    for op in g.ops:
        m.declare(g.tensors[op.output])
        _lower_op(m, g, op)
    if len(set(g.outputs)) != len(g.outputs):
        raise TfliteLoweringError(f"graph outputs {g.outputs} name a tensor twice")
    computed = {op.output for op in g.ops}
    outputs: list[str] = []
    for name in g.outputs:
        _quant(g, name, Op("output", (), name))
        if name in computed:
            outputs.append(name)
            continue
        t = g.tensors[name]
        copy = Op("identity", (name,), f"{name}__out{len(outputs)}")
        m.tensor(copy.output, t.shape, t.dtype, t.quant)
        m.emit("RESHAPE", [name, m.const(copy, "shape", t.shape)], [copy.output],
               newShape=list(t.shape))
        outputs.append(copy.output)
    model = m.serialize(g.name, list(g.inputs), outputs)
    io_names = {n: n for n in g.inputs}
    io_names.update(zip(g.outputs, outputs, strict=True))
    return Artifact(target=TARGET, entry="model.tflite", files={"model.tflite": model},
                    io_names=io_names,
                    details={"schema_version": SCHEMA_VERSION,
                             "builtins": sorted(m.code_index),
                             "runtimes": {
                                 "LiteRT": "reference kernels (OpResolverType.BUILTIN_REF); "
                                           "the default resolver (XNNPACK, optimized CONV_2D) "
                                           "deviates by 1 LSB on some values",
                                 "TFLite Micro": "reference kernels"},
                             "exact": "bit-exact with the golden integer model"})
