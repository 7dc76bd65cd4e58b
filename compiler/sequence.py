"""Sequence layers -> steps: a module mapping `(T, B, d)` through a recurrence compiles
as its timestep.

spyx 1.0's SSMs (`spyx.ssm.LRU`, `S5Diag`, `Mamba`) have no step API: their `__call__`
takes a whole time-major sequence and runs the recurrence with
`jax.lax.associative_scan` (or a layer may use `jax.lax.scan`). ncc runs the layer on a
one-step sequence (T = 1) while these functions are replaced by their step:

- `associative_scan(fn, elems)` over the time axis whose combine `fn` is the diagonal
  linear recurrence `(a, x) . (b, y) = (a b, b x + y)` (checked numerically on random
  values): its prefix is the carried state, `prefix_t = fn(prefix_{t-1}, elems_t)` from
  the identity `(1, 0)`, i.e. `h_t = a_t h_{t-1} + x_t` with `h_0 = 0`. The running
  product of the `a`s is state too; when nothing reads it (spyx discards it) the
  compiler's dead-state pass drops it.
- `scan(f, init, xs)` over time: the carry is the state, its initial value `init`.
- `conv_general_dilated` whose output runs over time (an `nnx.Conv` over `(B, T, C)`, as
  in `spyx.ssm.MambaBlock`): a causal one is a window state of its last inputs and a
  dense layer (`compiler/causal_conv.py`); one that looks ahead is refused.

A complex carry is two real state tensors (real and imaginary parts). A scan over an axis
that is not time runs as it is. The extracted step is then checked against the layer's
own sequence form on a random sequence: a layer whose steps are linked by anything else
(attention over time, chunk pooling, a scan ncc did not see) is refused, as is one
whose carried state grows with T.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ncc.compiler import causal_conv
from ncc.compiler.trace import StepFunction, TraceError

#: Steps of the check of the extracted step against the sequence form.
CHECK_STEPS = 6
#: Largest error of that check, relative to the output's magnitude (float32 rounding
#: of a reassociated recurrence stays orders of magnitude below it).
CHECK_TOLERANCE = 1e-4


@dataclass
class _Scan:
    """One scan over time met in the layer: where, its carry's structure and t = 0 value."""

    kind: str  # "associative_scan", "scan" or "conv" (a causal convolution's window)
    where: str
    treedef: Any
    init: list[np.ndarray]


def _caller() -> str:
    """The first frame above the stand-in outside JAX and Flax (nnx.Conv calls its
    convolution itself: the line that matters is the one calling the Conv)."""
    import flax

    skip = tuple(os.path.dirname(m.__file__) + os.sep for m in (jax, flax))
    frame = sys._getframe(2)
    while frame.f_back is not None and frame.f_code.co_filename.startswith(skip):
        frame = frame.f_back
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


def _is_linear_recurrence(fn: Callable[..., Any], elems: Any) -> bool:
    """Whether `fn` combines (a, x), (b, y) into (a b, b x + y) on random values shaped
    like one time slice of `elems`."""
    if not isinstance(elems, (tuple, list)) or len(elems) != 2:
        return False
    rng = np.random.default_rng(0)

    def sample(leaf: Any) -> np.ndarray:
        shape, dtype = np.shape(leaf), np.dtype(leaf.dtype)
        value = rng.uniform(-1, 1, shape)
        if np.issubdtype(dtype, np.complexfloating):
            value = value + 1j * rng.uniform(-1, 1, shape)
        return value.astype(dtype)

    (a, x), (b, y) = [(sample(elems[0]), sample(elems[1])) for _ in range(2)]
    with jax.ensure_compile_time_eval():
        try:
            got = fn((a, x), (b, y))
        except Exception:  # noqa: BLE001 - any failure means "not the recurrence"
            return False
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            return False
        want = (b * a, b * x + y)
        return all(np.shape(g) == np.shape(w) and np.allclose(np.asarray(g), w, atol=1e-5)
                   for g, w in zip(got, want, strict=True))


class _Recorder:
    """Stand-ins for `jax.lax.associative_scan` / `scan` while the layer runs once.

    mode "find": run the originals, record each scan over time (its axis has length
    `steps`). mode "step": T = 1; scan i reads its carry from `carries[i]`, applies one
    step and leaves the new carry in `next[i]`."""

    def __init__(self, steps: int, mode: str, carries: list[Any] | None = None):
        self.steps, self.mode = steps, mode
        self.found: list[_Scan] = []
        self.carries = carries or []
        self.next: list[Any] = []
        self.original_assoc = jax.lax.associative_scan
        self.original_scan = jax.lax.scan
        self.original_conv = jax.lax.conv_general_dilated

    def associative_scan(self, fn: Callable[..., Any], elems: Any, reverse: bool = False,
                         axis: int = 0) -> Any:
        where = _caller()
        leaves = jax.tree_util.tree_leaves(elems)
        if not leaves or any(np.ndim(x) == 0 or np.shape(x)[axis] != self.steps
                             for x in leaves):
            return self.original_assoc(fn, elems, reverse=reverse, axis=axis)
        if reverse:
            raise TraceError(f"associative_scan at {where} runs backwards in time; ncc "
                             "compiles causal (forward) recurrences only")
        if self.mode == "find":
            first = jax.tree_util.tree_map(lambda x: jnp.take(x, 0, axis=axis), elems)
            if not _is_linear_recurrence(fn, first):
                raise TraceError(f"associative_scan at {where}: its combine function is not "
                                 "the linear recurrence (a, x).(b, y) = (ab, bx + y), so ncc "
                                 "knows no state at t = 0 for it; write the recurrence "
                                 "with jax.lax.scan or give the layer a step API")
            init = [np.ones(np.shape(first[0]), np.dtype(first[0].dtype)),
                    np.zeros(np.shape(first[1]), np.dtype(first[1].dtype))]
            self.found.append(_Scan("associative_scan", where,
                                    jax.tree_util.tree_structure(list(first)), init))
            return self.original_assoc(fn, elems, reverse=reverse, axis=axis)
        prefix = self.carries[len(self.next)]
        now = jax.tree_util.tree_map(lambda x: jnp.squeeze(x, axis), elems)
        new = fn(type(elems)(prefix), now)
        self.next.append(list(new))
        return jax.tree_util.tree_map(lambda x: jnp.expand_dims(x, axis), new)

    def scan(self, f: Callable[..., Any], init: Any, xs: Any = None, length: int | None = None,
             reverse: bool = False, **kwargs: Any) -> Any:
        where = _caller()
        leaves = jax.tree_util.tree_leaves(xs)
        n = length if length is not None else (np.shape(leaves[0])[0] if leaves else None)
        if n != self.steps:
            return self.original_scan(f, init, xs, length, reverse, **kwargs)
        if reverse:
            raise TraceError(f"scan at {where} runs backwards in time; ncc compiles causal "
                             "(forward) recurrences only")
        if self.mode == "find":  # init may be traced here: `_find` returns its value
            self.found.append(_Scan("scan", where, jax.tree_util.tree_structure(init),
                                    jax.tree_util.tree_leaves(init)))
            return self.original_scan(f, init, xs, length, reverse, **kwargs)
        spec = self.found[len(self.next)] if self.found else None
        carry = jax.tree_util.tree_unflatten(
            spec.treedef if spec else jax.tree_util.tree_structure(init),
            self.carries[len(self.next)])
        carry, y = f(carry, jax.tree_util.tree_map(lambda x: x[0], xs))
        self.next.append(jax.tree_util.tree_leaves(carry))
        return carry, jax.tree_util.tree_map(lambda v: jnp.expand_dims(v, 0), y)

    def conv(self, lhs: Any, rhs: Any, window_strides: Any, padding: Any,
             lhs_dilation: Any = None, rhs_dilation: Any = None, dimension_numbers: Any = None,
             feature_group_count: int = 1, batch_group_count: int = 1,
             **kwargs: Any) -> Any:
        def original() -> Any:
            return self.original_conv(lhs, rhs, window_strides, padding, lhs_dilation,
                                      rhs_dilation, dimension_numbers, feature_group_count,
                                      batch_group_count, **kwargs)

        call = causal_conv.describe(lhs, rhs, window_strides, padding, lhs_dilation,
                                    rhs_dilation, dimension_numbers, feature_group_count)
        shape = tuple(np.shape(lhs))
        expected = (self.mode == "find" or (len(self.next) < len(self.found)
                                            and self.found[len(self.next)].kind == "conv"))
        if not expected or not causal_conv.over_time(call, shape, self.steps):
            return original()
        where = _caller()
        causal_conv.check_causal(call, shape, self.steps, window_strides, lhs_dilation,
                                 batch_group_count, where)
        if call.span == 1:  # a kernel of one tap reads only the step's own input
            return original()
        if self.mode == "find":
            self.found.append(_Scan("conv", where, None,
                                    [causal_conv.initial_window(call, shape)]))
            return original()
        y, window = causal_conv.window_step(call, lhs, rhs, self.carries[len(self.next)][0])
        self.next.append([window])
        return y


def _convs(module: Any) -> list[Any]:
    """The `nnx.Conv` sub-modules of `module` that call lax's own convolution."""
    from flax import nnx

    subs = [module, *(sub for _, sub in nnx.iter_graph(module))]
    return [sub for sub in subs if isinstance(sub, nnx.Conv)
            and getattr(sub, "conv_general_dilated", None) is jax.lax.conv_general_dilated]


@contextlib.contextmanager
def _patched(rec: _Recorder, convs: list[Any]) -> Iterator[_Recorder]:
    """The stand-ins in place of lax's scans and convolution, also inside `convs` (an
    `nnx.Conv` keeps the convolution it was built with as an attribute)."""
    saved = jax.lax.associative_scan, jax.lax.scan, jax.lax.conv_general_dilated
    jax.lax.associative_scan, jax.lax.scan = rec.associative_scan, rec.scan
    jax.lax.conv_general_dilated = rec.conv
    for conv in convs:  # plain attribute writes: nnx would refuse them inside a trace
        object.__setattr__(conv, "conv_general_dilated", rec.conv)
    try:
        yield rec
    finally:
        jax.lax.associative_scan, jax.lax.scan, jax.lax.conv_general_dilated = saved
        for conv in convs:
            object.__setattr__(conv, "conv_general_dilated", saved[2])


def _find(module: Any, features: int, steps: int, name: str,
          values: bool = True) -> list[_Scan]:
    """The scans over time met when `module` runs on `steps` steps, under `jax.jit` (one
    compilation, not one per eager op). `values`: compute lax.scan inits (a zero input;
    an init that depends on the input fails `_check_step`), else shapes only."""
    rec = _Recorder(steps, "find")
    convs = _convs(module)

    def run(u: Any) -> list[Any]:
        with _patched(rec, convs):
            module(u)
        return [leaf for s in rec.found if s.kind == "scan" for leaf in s.init]

    zeros = jnp.zeros((steps, 1, features), jnp.float32)
    try:
        inits = jax.jit(run)(zeros) if values else jax.eval_shape(run, zeros)
    except TraceError:
        raise
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise TraceError(f"{name} cannot run on a sequence of {steps} steps "
                         f"({type(e).__name__}: {first}); ncc compiles a sequence layer "
                         "one step at a time, so it must accept any T") from e
    inits = list(inits)
    for scan in rec.found:
        if scan.kind == "scan":
            scan.init = [np.asarray(inits.pop(0)) if values else
                         np.zeros(v.shape, v.dtype) for v in scan.init]
    return rec.found


def _feature_candidates(module: Any) -> list[int]:
    """The input sizes sub-modules state (`d_model`, `d_inner`, `in_features`, or the rows
    of a `kernel_re` / `kernel` parameter), the module itself first, without repeats."""
    from flax import nnx

    found: list[int] = []
    for _, sub in [((), module), *nnx.iter_graph(module)]:
        if not isinstance(sub, nnx.Module):
            continue
        sizes = [getattr(sub, a) for a in ("d_model", "d_inner", "in_features")
                 if isinstance(getattr(sub, a, None), int)]
        for attr in ("kernel_re", "kernel"):
            value = getattr(sub, attr, None)
            if isinstance(value, nnx.Param) and np.ndim(value[...]) == 2:
                sizes.append(int(np.shape(value[...])[0]))
        found += [int(v) for v in sizes[:1] if int(v) not in found]
    return found


def _features(module: Any) -> int | None:
    """The per-step input size of `module`: the first size a sub-module states on which
    the module runs. A container (encoder, SSM, decoder) lists its sub-modules in name
    order, not call order, so each stated size is tried on a 2-step sequence (shapes only)."""
    candidates = _feature_candidates(module)
    for features in candidates:
        try:
            jax.eval_shape(module, jax.ShapeDtypeStruct((2, 1, features), jnp.float32))
        except Exception:  # noqa: BLE001 - a size the module does not take: try the next
            continue
        return features
    return candidates[0] if candidates else None  # _find then says why it cannot run


def _split_complex(leaves: list[Any]) -> list[Any]:
    out = []
    for leaf in leaves:
        if jnp.iscomplexobj(leaf):
            out += [jnp.real(leaf), jnp.imag(leaf)]
        else:
            out.append(leaf)
    return out


def from_sequence(module: Any, x_shape: tuple[int, ...] | None = None,
                  name: str | None = None) -> StepFunction:
    """A layer `module(u: (T, B, d)) -> (T, B, d')` (spyx.ssm style) as its step
    `(x (1, d), state) -> (y (1, d'), state)`; see the module docstring. A layer without
    scans whose steps are independent (spyx.phasor.PhasorMLP) is a step without state."""
    name = name or type(module).__name__
    features = int(x_shape[-1]) if x_shape else _features(module)
    if features is None:
        raise TraceError(f"{name}: the per-step input size is unknown; pass --input-shape F")
    scans = _find(module, features, 2, name)
    longer = _find(module, features, 3, name, values=False)
    grown = [s.where for s, t in zip(scans, longer, strict=False)
             if [v.shape for v in s.init] != [v.shape for v in t.init]]
    if len(scans) != len(longer) or grown:
        raise TraceError(f"{name}: its carried state changes with the sequence length "
                         f"({', '.join(grown) or 'the number of scans varies'}), like an "
                         "attention cache; ncc compiles recurrences with a fixed-size state")
    convs = _convs(module)
    init, names = [], []
    for i, s in enumerate(scans):
        if s.kind == "conv":
            init.append(s.init[0])
            names.append(f"window{i}")
            continue
        for j, v in enumerate(s.init):
            is_c = np.iscomplexobj(v)
            parts = [("re", v.real), ("im", v.imag)] if is_c else [("", v)]
            for tag, part in parts:
                init.append(np.asarray(part, np.float32 if part.dtype.kind in "fc"
                                       else part.dtype))
                names.append(f"scan{i}_{j}" + (f"_{tag}" if tag else ""))

    def step(x: Any, *state: Any) -> list[Any]:
        carries, k = [], 0
        for s in scans:  # real state tensors -> each scan's carry (complex from two parts)
            leaves = []
            for v in s.init:
                if np.iscomplexobj(v):
                    leaves.append(jax.lax.complex(state[k], state[k + 1]))
                    k += 2
                else:
                    leaves.append(state[k])
                    k += 1
            carries.append(leaves)
        rec = _Recorder(1, "step", carries)
        rec.found = scans
        with _patched(rec, convs):
            y = module(x[None])
        if len(rec.next) != len(scans):
            raise TraceError(f"{name}: a one-step run met {len(rec.next)} scans, a longer "
                             f"one {len(scans)}")
        if not hasattr(y, "shape") or y.ndim != 3 or y.shape[0] != 1:
            raise TraceError(f"{name}: expected one (T, B, d) array out, got "
                             f"{getattr(y, 'shape', type(y).__name__)}")
        if jnp.iscomplexobj(y):
            raise TraceError(f"{name} returns complex values; ncc compiles real outputs "
                             "(take .real or abs of them in the layer)")
        next_state = [v.astype(s.dtype) for v, s in zip(
            _split_complex([leaf for c in rec.next for leaf in c]), init, strict=True)]
        return [y[0], *next_state]

    sf = StepFunction(name, step, (1, features), init, names,
                      metadata={"sequence_layer": name,
                                "recurrences": [f"{s.kind} at {s.where}" for s in scans]})
    _check_step(module, sf, features, name)
    from flax import nnx

    if isinstance(module, nnx.Module):
        leaves = jax.tree_util.tree_leaves_with_path(nnx.state(module))
        sf.const_names = {id(leaf): jax.tree_util.keystr(path, simple=True, separator="_")
                          for path, leaf in leaves}
    return sf


def _check_step(module: Any, sf: StepFunction, features: int, name: str) -> None:
    """Refuse unless stepping `sf` reproduces `module` on a random sequence."""
    u = np.random.default_rng(7).standard_normal((CHECK_STEPS, 1, features)).astype(np.float32)
    want = np.asarray(jax.jit(module)(jnp.asarray(u)))
    step = jax.jit(sf.fn)
    state = [jnp.asarray(s) for s in sf.initial_state]
    got = []
    for t in range(CHECK_STEPS):
        y, *state = step(jnp.asarray(u[t]), *state)
        got.append(np.asarray(y))
    error = float(np.max(np.abs(np.stack(got) - want)))
    if not error <= CHECK_TOLERANCE * max(1.0, float(np.max(np.abs(want)))):
        raise TraceError(f"{name}: the step ncc took from its scans does not reproduce its "
                         f"sequence form (max error {error:.3g} over {CHECK_STEPS} steps): "
                         "something else links its timesteps (a convolution or attention "
                         "over time, pooling over chunks, or a scan ncc does not see); ncc "
                         "compiles layers whose only link across time is a scan")
