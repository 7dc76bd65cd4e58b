"""Static memory for the C step: explicit broadcasts, then scratch buffers placed by
liveness, one arena per element type (no heap)."""

from __future__ import annotations

from dataclasses import dataclass

from ncc.compiler.ir import COMPARISONS, Graph, Op, Tensor

ALIASES = ("reshape", "identity")  # ops whose result shares its input's storage
ELEMENTWISE = ("qadd", "qsub", "qmul", "max", "min", "where") + tuple(sorted(COMPARISONS))
SUFFIX = {"int8": "s8", "int16": "s16", "int32": "s32"}
ARENA_CTYPES = {"s8": "int8_t", "u8": "uint8_t", "s16": "int16_t", "s32": "int32_t"}
ARENA_ITEMSIZE = {"s8": 1, "u8": 1, "s16": 2, "s32": 4}


@dataclass
class Buffer:
    """A scratch region: `size` elements of `dtype` live over op indices [first, last]."""

    dtype: str
    size: int
    first: int
    last: int
    offset: int = 0


@dataclass
class ArenaPlan:
    """storage: tensor -> the tensor whose storage it shares (aliases); buffers: op result
    -> its region; sizes: arena name -> elements."""

    storage: dict[str, str]
    buffers: dict[str, Buffer]
    sizes: dict[str, int]

    @property
    def scratch_bytes(self) -> int:
        return sum(size * ARENA_ITEMSIZE[arena_suffix(k)] for k, size in self.sizes.items())


def arena_name(dtype: str) -> str:
    """The C array holding scratch values of `dtype` (bool shares uint8's)."""
    return f"ncc_arena_{'u8' if dtype in ('bool', 'uint8') else SUFFIX[dtype]}"


def arena_suffix(name: str) -> str:
    return name.rsplit("_", 1)[1]


def explicit_broadcasts(g: Graph) -> tuple[list[Op], dict[str, Tensor]]:
    """Elementwise inputs neither of the output's size nor scalar get a `broadcast` op."""
    ops: list[Op] = []
    tensors = dict(g.tensors)
    for op in g.ops:
        out = tensors[op.output]
        ins = list(op.inputs)
        if op.kind in ELEMENTWISE:
            for i, name in enumerate(ins):
                t = tensors[name]
                if t.size not in (1, out.size):  # equal sizes share the flat layout
                    wide = f"{name}__bcast_{op.output}"
                    tensors[wide] = Tensor(wide, out.shape, t.dtype, t.quant)
                    ops.append(Op("broadcast", (name,), wide, {"shape": out.shape}))
                    ins[i] = wide
        ops.append(Op(op.kind, tuple(ins), op.output, op.attrs, op.source))
    return ops, tensors


def plan_arenas(g: Graph, ops: list[Op]) -> ArenaPlan:
    """Aliases share their input's storage; other op results get arena offsets by
    first-fit over live intervals, in definition order (deterministic)."""
    storage: dict[str, str] = {}
    buffers: dict[str, Buffer] = {}
    end = len(ops)
    for i, op in enumerate(ops):
        if op.kind in ALIASES:
            storage[op.output] = storage.get(op.inputs[0], op.inputs[0])
            continue
        t = g.tensors[op.output]
        buffers[op.output] = Buffer(t.dtype, t.size, i, i)
    for i, op in enumerate(ops):
        for name in op.inputs:
            root = storage.get(name, name)
            if root in buffers:
                buffers[root].last = max(buffers[root].last, i)
    for name in g.outputs:
        root = storage.get(name, name)
        if root in buffers:
            buffers[root].last = end
    sizes: dict[str, int] = {}
    placed: dict[str, list[Buffer]] = {}
    for buf in buffers.values():
        key = arena_name(buf.dtype)
        live = sorted((b for b in placed.get(key, []) if b.first <= buf.last
                       and buf.first <= b.last), key=lambda b: b.offset)
        offset = 0
        for other in live:
            if offset + buf.size <= other.offset:
                break
            offset = max(offset, other.offset + other.size)
        buf.offset = offset
        placed.setdefault(key, []).append(buf)
        sizes[key] = max(sizes.get(key, 0), offset + buf.size)
    return ArenaPlan(storage, buffers, sizes)
