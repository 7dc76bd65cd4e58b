"""What a checkpoint spec (or a `.keras` file's config) may say, checked before anything
is imported or built: the registry of allowed classes and the limits.

A checkpoint cannot run code
----------------------------
A checkpoint is data from someone else, so loading one never pickles, never
evaluates, and never calls or imports anything that is not named below:

- NNX specs name classes only from `NNX_CLASSES`: exact "module:Class" keys,
  looked up as whole strings (no attribute paths, no dunders, nothing imported
  before the lookup succeeds). Each entry lists the constructor arguments a spec
  may pass and the JSON each may hold; they are checked, and the class's
  signature is checked for missing arguments, before the class is called.
- Keras specs name classes only from `KERAS_CLASSES` (ncc and ncps layers,
  wirings, by module, class and registered name), `KERAS_FUNCTIONS`
  (registered functions), or Keras's own built-ins in `KERAS_NAMESPACES` /
  `KERAS_BUILTINS` (resolved by Keras itself, in `safe_mode`), minus
  `KERAS_REFUSED` (the layers that wrap foreign code). The same check runs on
  the `config.json` of `.keras` files (`check_keras_config`).
- Every value is checked before anything is built: nesting depth, string
  lengths, finite numbers, and sizes (units, features, shapes: `MAX_DIM` each,
  and `MAX_DECLARED` for the sum of their squares, which bounds what the
  weights could take), so a spec declaring 10**9 units is refused in
  milliseconds instead of allocating memory.
- The zip holds exactly `spec.json` and `weights.npz`, checked against
  `MAX_SPEC_BYTES` / `MAX_WEIGHTS_BYTES` before any byte is decompressed;
  weights load with `allow_pickle=False`, real dtypes only, finite values only.

Every refusal is an `ArchiveError` (one line: the file, the field, what is wrong).

Adding a class (a developer's task)
-----------------------------------
NNX: add `"package.module:Class": {"argument": "kind", ...}` to `NNX_CLASSES`,
listing the arguments its `get_config()` returns (kinds: "int", "float",
"bool", "str", "shape", "list", "dict", joined with "|", "None" for optional;
size arguments also need their name in `SIZE_KEYS` if it is a new one), then
run tests/models/test_checkpoint_security.py (it checks every entry against the
class's signature). Keras: add `"package.module:Class": "registered>Name"` to
`KERAS_CLASSES` (the module and registered name the serialized config shows).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from ncc.models.archive import ArchiveError, one_line

FORMAT = "ncc-ckpt/1"
#: Where allowed classes live (for messages; the registries below are what is allowed).
ALLOWED_PACKAGES = ("spyx.", "flax.nnx", "ncc.models.")
# --- the registry of allowed classes ---------------------------------------------------------

#: NNX classes a spec may name: "module:Class" -> {constructor argument: JSON kind}.
#: None: built from the spec's "layers" (spyx.nn.Sequential), no arguments.
NNX_CLASSES: dict[str, dict[str, str] | None] = {
    "spyx.nn:Sequential": None,
    "flax.nnx:Linear": {"in_features": "int", "out_features": "int", "use_bias": "bool"},
    "spyx.nn:LIF": {"hidden_shape": "shape", "threshold": "float"},
    "spyx.nn:IF": {"hidden_shape": "shape", "threshold": "float"},
    "spyx.nn:LI": {"layer_shape": "shape"},
    "spyx.nn:CuBaLIF": {"hidden_shape": "shape", "threshold": "float"},
    "spyx.nn:ALIF": {"hidden_shape": "shape", "threshold": "float"},
    "spyx.nn:RLIF": {"hidden_shape": "shape", "threshold": "float"},
    "spyx.nn:RIF": {"hidden_shape": "shape", "threshold": "float"},
    "spyx.nn:RCuBaLIF": {"hidden_shape": "shape", "threshold": "float"},
    "ncc.models.nnx.fake_quant:FakeQuant": {
        "bits": "int", "symmetric": "bool", "observer": "str", "momentum": "float|None",
        "percentile": "float", "power_of_two": "bool", "enabled": "bool"},
    "ncc.models.nnx.fake_quant:QuantDense": {
        "in_features": "int", "out_features": "int", "bits": "int", "per_channel": "bool",
        "enabled": "bool", "mask": "list|None"},
    "ncc.models.nnx.spiking:QuantLIF": {
        "hidden_shape": "shape", "beta": "float|None", "threshold": "float",
        "quantized": "bool", "config": "dict|None", "threshold_q": "int|None", "reset": "str",
        "decay_shift": "int|None"},
    "ncc.models.nnx.spiking:QuantIF": {
        "hidden_shape": "shape", "threshold": "float", "quantized": "bool",
        "config": "dict|None", "threshold_q": "int|None", "reset": "str"},
    "ncc.models.nnx.spiking:QuantLI": {
        "layer_shape": "shape", "beta": "float|None", "quantized": "bool",
        "config": "dict|None", "scale": "float", "decay_shift": "int|None"},
    "ncc.models.nnx.spiking:QuantCuBaLIF": {
        "hidden_shape": "shape", "alpha": "float|None", "beta": "float|None",
        "threshold": "float", "quantized": "bool", "config": "dict|None",
        "threshold_q": "int|None", "reset": "str"},
    "ncc.models.nnx.liquid:CfCCell": {
        "input_dim": "int", "units": "int|dict", "mode": "str", "activation": "str",
        "backbone_units": "int|list", "backbone_layers": "int|None",
        "fully_recurrent": "bool", "quantization": "dict|None"},
    "ncc.models.nnx.liquid:LTCCell": {
        "input_dim": "int", "units": "int|dict", "activation": "str",
        "backbone_units": "int|list", "backbone_layers": "int",
        "input_mapping": "str|None", "output_mapping": "str|None", "ode_unfolds": "int",
        "epsilon": "float", "initialization_ranges": "dict|None",
        "quantization": "dict|None"},
    "ncc.models.nnx.ssm:LRU": {
        "d_model": "int", "d_state": "int", "r_min": "float", "r_max": "float",
        "use_skip": "bool", "quantization": "dict|None"},
    "ncc.models.nnx.phasor:PhasorMLP": {
        "in_features": "int", "hidden_features": "int", "out_features": "int",
        "depth": "int", "quantization": "dict|None"},
    "ncc.models.nnx.phasor:ResonateFire": {
        "hidden_shape": "shape", "lambda_init": "float|None", "omega_init": "float|None",
        "threshold": "float", "dt": "float", "surrogate_k": "float",
        "quantization": "dict|None"},
    "ncc.models.nnx.mamba:Mamba": {
        "d_inner": "int", "d_state": "int", "dt_rank": "int", "dt_min": "float",
        "dt_max": "float", "quantization": "dict|None"},
    "ncc.models.examples.mamba_digits:MambaClassifier": {
        "features": "int", "d_inner": "int", "d_state": "int", "dt_min": "float",
        "dt_max": "float", "quantization": "dict|None"},
    "ncc.models.nnx.hnet:HNetStep": {
        "d_model": "int", "d_out": "int", "d_state": "int", "d_main_state": "int",
        "d_router": "int", "r_min": "float", "r_max": "float", "eps": "float"},
    "ncc.models.examples.qat_cfc_digits:CfCClassifier": {
        "units": "int", "backbone": "int", "quantization": "dict|None"},
    "ncc.models.examples.lru_digits:LRUClassifier": {
        "d_model": "int", "d_state": "int", "r_min": "float", "r_max": "float",
        "quantization": "dict|None"},
}

#: Keras classes outside Keras a spec may name: "module:class_name" -> registered name.
KERAS_CLASSES: dict[str, str] = {
    "ncc.models.keras.cfc:CfC": "ncc>CfC",
    "ncc.models.keras.cfc:CfCCell": "ncc>CfCCell",
    "ncc.models.keras.ltc:LTC": "ncc>LTC",
    "ncc.models.keras.ltc:LTCCell": "ncc>LTCCell",
    "ncc.models.keras.base:LiquidRNN": "ncc>LiquidRNN",
    "ncc.models.keras.quant:QuantPoint": "ncc>QuantPoint",
    "ncc.models.keras.quant:WeightQuant": "ncc>WeightQuant",
    "ncc.models.keras.quant:QuantDense": "ncc>QuantDense",
    "ncc.models.wirings:Wiring": "ncc>Wiring",
    "ncc.models.wirings:FullyConnected": "ncc>FullyConnected",
    "ncc.models.wirings:Random": "ncc>Random",
    "ncc.models.wirings:NCP": "ncc>NCP",
    "ncc.models.wirings:AutoNCP": "ncc>AutoNCP",
    "ncps.keras.cfc:CfC": "ncps>CfC",
    "ncps.keras.cfc_cell:CfCCell": "ncps>CfCCell",
    "ncps.keras.wired_cfc_cell:WiredCfCCell": "ncps>WiredCfCCell",
    "ncps.keras.ltc:LTC": "ncps>LTC",
    "ncps.keras.ltc_cell:LTCCell": "ncps>LTCCell",
    "ncps.keras.mm_rnn:MixedMemoryRNN": "ncps>MixedMemoryRNN",
    # ncps wirings inside ncps layer configs (rebuilt by ncps from these exact names)
    "ncps.wirings.wirings:Wiring": "Wiring",
    "ncps.wirings.wirings:FullyConnected": "FullyConnected",
    "ncps.wirings.wirings:Random": "Random",
    "ncps.wirings.wirings:NCP": "NCP",
    "ncps.wirings.wirings:AutoNCP": "AutoNCP",
}

#: Registered (non-Keras) functions a Keras spec may name: registered name -> where it lives.
KERAS_FUNCTIONS: dict[str, str] = {
    "ncc>lecun_tanh": "ncc.models.keras.base:lecun_tanh",
    ">lecun_tanh": "ncps.keras.cfc_cell:lecun_tanh",
}

#: Keras's own modeling namespaces: any public class Keras finds there (itself, in
#: safe_mode) may be named, except KERAS_REFUSED; functions: activations, losses, ...
KERAS_NAMESPACES = ("keras.layers", "keras.initializers", "keras.regularizers",
                    "keras.constraints", "keras.activations", "keras.losses", "keras.metrics",
                    "keras.optimizers", "keras.optimizers.schedules", "keras.dtype_policies")
#: Keras model and dtype-policy classes, exactly as serialized configs name them.
KERAS_BUILTINS = frozenset({
    "keras:Sequential", "keras:Model", "keras:Functional", "keras:DTypePolicy",
    "keras:FloatDTypePolicy", "keras.models:Sequential", "keras.models:Model",
    "keras.src.models.functional:Functional", "keras.src.models.sequential:Sequential",
    "keras.src.models.model:Model"})
#: Keras layers that run or load foreign code (Python lambdas, SavedModels, JAX / Flax /
#: torch callables): never allowed, whatever safe_mode would do.
KERAS_REFUSED = frozenset({"Lambda", "TFSMLayer", "JaxLayer", "FlaxLayer",
                           "TorchModuleWrapper"})
_KERAS_FUNCTION_MODULES = ("activations", "losses", "metrics", "initializers",
                           "regularizers", "constraints")

# --- limits ----------------------------------------------------------------------------------

#: spec.json may expand to at most this (a 1024-unit NCP wiring takes ~3 MiB).
MAX_SPEC_BYTES = 16 << 20
#: weights.npz may expand to at most this: 16 M float32 parameters, far beyond any model
#: an edge target runs (a Cortex-M has a few MiB of flash).
MAX_WEIGHTS_BYTES = 64 << 20
#: Deepest nesting of a spec (Keras configs of the bundled models nest 9 levels).
MAX_DEPTH = 32
#: Most values (JSON nodes) in a spec.
MAX_NODES = 1 << 23
#: Longest string in a spec, and longest dict key.
MAX_STRING = 4096
#: Largest size (units, features, a shape's feature axis) a spec may declare.
MAX_DIM = 4096
#: Largest other axis of a declared shape (e.g. a fixed sequence length).
MAX_AXIS = 1 << 20
#: Largest sum of the squares of every declared size: a kernel is a product of two sizes,
#: so this bounds what building the model can allocate before its weights are compared.
MAX_DECLARED = 1 << 26
#: Largest repeat count (backbone layers, ODE unfolds: each one is a loop at trace time).
MAX_REPEAT = 64
#: Most modules in an NNX spec, and most layers of one Sequential.
MAX_MODULES = 1024
#: Widest integer grid any `bits` argument may ask for.
MAX_BITS = 32
#: Magnitude of any other integer (seeds included): int64.
MAX_INT = (1 << 63) - 1

#: Arguments that are sizes (each integer in them, lists included): <= MAX_DIM, counted
#: in MAX_DECLARED.
SIZE_KEYS = frozenset({
    "units", "backbone_units", "in_features", "out_features", "input_dim", "output_dim",
    "output_size", "hidden_shape", "layer_shape", "backbone", "hidden", "inter_neurons",
    "command_neurons", "motor_neurons", "sensory_fanout", "inter_fanout",
    "recurrent_command_synapses", "motor_fanin", "features", "filters", "num_heads",
    "key_dim", "value_dim", "d_model", "d_state", "hidden_features", "depth", "d_inner",
    "dt_rank", "d_out", "d_main_state", "d_router"})
#: Shapes: the last axis is a size, the others at most MAX_AXIS.
SHAPE_KEYS = frozenset({"input_shape", "batch_shape", "build_input_shape", "shape",
                        "output_shape"})
REPEAT_KEYS = frozenset({"backbone_layers", "ode_unfolds"})

_NNX_TOP = {"format", "framework", "module", "input_shape", "fake_quant"}
_KERAS_TOP = {"format", "framework", "config", "weights"}
_MODULE_KEYS = {"class", "kwargs", "layers"}
_FAKE_QUANT_KEYS = {"mode", "params", "quantized", "io_params"}
_FAKE_QUANT_MODES = ("float", "calibrate", "quant")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_REGISTERED = re.compile(r"[A-Za-z0-9_.]*>[A-Za-z_][A-Za-z0-9_]*\Z")



# --- checking a spec -------------------------------------------------------------------------


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list) or _is_tuple(value):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _is_tuple(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "__tuple__" in value


def _keras_ns(module: str) -> bool:
    return module == "keras" or module.startswith("keras.")


class _Checker:
    """Walks a parsed spec once, before anything is imported or built."""

    def __init__(self, where: str, member: str = "spec.json") -> None:
        self.where, self.member = where, member
        self.nodes = 0
        self.declared = 0

    def fail(self, field: str, problem: str) -> ArchiveError:
        return ArchiveError(f"{self.where}: {self.member} {field or '(top level)'}: {problem}")

    # -- any value --

    def value(self, v: Any, field: str, rule: str | None = None, depth: int = 0,
              keras: bool = False) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.fail(field, f"more than {MAX_NODES} values; refusing")
        if depth > MAX_DEPTH:
            raise self.fail(field, f"nested more than {MAX_DEPTH} levels deep; refusing")
        if v is None or isinstance(v, bool):
            return
        if isinstance(v, int | float):
            self.number(v, field, rule)
        elif isinstance(v, str):
            if len(v) > MAX_STRING:
                raise self.fail(field, f"a string of {len(v)} characters (limit {MAX_STRING})")
            if keras and _REGISTERED.match(v) and v not in _KERAS_REGISTERED:
                raise self.fail(field, f"names the registered Keras object {v!r}, which is "
                                       "not in the registry of allowed classes; refusing")
        elif isinstance(v, list):
            flat_shape = rule == "shape" and all(x is None or type(x) in (int, float)
                                                 for x in v)
            for i, x in enumerate(v):
                sub = ("size" if i == len(v) - 1 else "axis") if flat_shape else rule
                self.value(x, f"{field}[{i}]", sub, depth + 1, keras)
        elif isinstance(v, dict):
            if "__tuple__" in v:
                if len(v) != 1 or not isinstance(v["__tuple__"], list):
                    raise self.fail(field, "'__tuple__' must be the only key and hold a list")
                self.value(v["__tuple__"], field, rule, depth + 1, keras)
                return
            if keras and "class_name" in v:
                self.keras_ref(v, field)
            for k, x in v.items():
                if len(k) > MAX_STRING:
                    raise self.fail(field, f"a key of {len(k)} characters")
                if k.startswith("__"):
                    raise self.fail(sub_field(field, k), "dunder keys are not allowed; refusing")
                self.value(x, sub_field(field, k), _rule(k), depth + 1, keras)
            layers, width = v.get("backbone_layers"), v.get("backbone_units")
            if type(layers) is int and type(width) in (int, float) and layers > 1:
                # one width repeated over `layers` layers: each layer is a kernel of its own
                self.number(width, sub_field(field, "backbone_units"), "size", layers - 1)
        else:  # cannot come out of json.loads
            raise self.fail(field, f"unsupported value of type {type(v).__name__}")

    def number(self, v: int | float, field: str, rule: str | None, repeat: int = 1) -> None:
        if isinstance(v, float) and not math.isfinite(v):
            raise self.fail(field, f"{v} is not a finite number")
        if abs(v) > MAX_INT:
            raise self.fail(field, f"{v:.3g} is out of range (limit {MAX_INT})")
        limit = {"size": MAX_DIM, "axis": MAX_AXIS, "shape": MAX_AXIS, "repeat": MAX_REPEAT,
                 "bits": MAX_BITS}.get(rule or "")
        if limit is None:
            return
        if not 0 <= v <= limit:
            what = {"size": "a size", "axis": "a shape axis", "shape": "a shape axis",
                    "repeat": "a repeat count", "bits": "a bit width"}[rule or ""]
            raise self.fail(field, f"{v:.6g} is out of range for {what} (0 to {limit}); "
                                   "refusing")
        if rule == "size":
            self.declared += repeat * int(v) ** 2
            if self.declared > MAX_DECLARED:
                raise self.fail(field, f"the declared sizes (sum of squares {self.declared}) "
                                       f"exceed the limit {MAX_DECLARED}; the model would be "
                                       "too large to load; refusing")

    # -- Keras object references --

    def keras_ref(self, v: dict[str, Any], field: str) -> None:
        cn, module, reg = v.get("class_name"), v.get("module"), v.get("registered_name")
        if not isinstance(cn, str):
            raise self.fail(f"{field}.class_name", f"must be a string, got {_kind_of(cn)}")
        for name, x in (("module", module), ("registered_name", reg)):
            if x is not None and not isinstance(x, str):
                raise self.fail(f"{field}.{name}", f"must be a string, got {_kind_of(x)}")
        where = f"{module}:{cn}"
        if cn == "__keras_tensor__":
            if module is not None:
                raise self.fail(field, f"a Keras tensor with module {shorten(module)}; refusing")
            return
        if cn == "function":
            fn = v.get("config")
            if not isinstance(fn, str):
                raise self.fail(f"{field}.config", "a function reference needs a name string")
            if fn in KERAS_FUNCTIONS:
                return
            modules = [f"keras.{m}" for m in _KERAS_FUNCTION_MODULES]
            if module in ("builtins", *modules) and _IDENT.match(fn) and not fn.startswith("_") \
                    and fn not in ("get", "serialize", "deserialize") \
                    and _keras_builtin_function(fn, module):
                return
            raise self.fail(field, f"function {shorten(fn)} (module {shorten(module)}) is not a "
                                   "Keras built-in nor in the registry of allowed functions; "
                                   "refusing")
        if cn.startswith("_"):
            raise self.fail(field, f"Keras special object {shorten(cn)} is not allowed; refusing")
        if module is not None and _keras_ns(module):
            if not _IDENT.match(cn) or any(not _IDENT.match(p) or p.startswith("__")
                                           for p in module.split(".")):
                raise self.fail(field, f"malformed Keras class {shorten(where)}; refusing")
            if cn in KERAS_REFUSED:
                raise self.fail(field, f"Keras class {shorten(where)} runs or loads arbitrary "
                                       "code; refusing (safe mode)")
            if module in KERAS_NAMESPACES or where in KERAS_BUILTINS:
                if reg is not None and reg != cn:
                    raise self.fail(f"{field}.registered_name", f"{shorten(reg)} does not "
                                    f"match the Keras built-in {shorten(cn)}")
                return
            raise self.fail(field, f"Keras class {shorten(where)} is outside the allowed Keras "
                                   f"namespaces ({', '.join(KERAS_NAMESPACES)}); refusing")
        if where not in KERAS_CLASSES:
            raise self.fail(field, f"class {shorten(where)} is outside the allowed packages: "
                                   "not in the registry of allowed classes "
                                   "(ncc.models.checkpoint_spec.KERAS_CLASSES); refusing")
        if reg is not None and reg != KERAS_CLASSES[where]:
            raise self.fail(f"{field}.registered_name",
                            f"{shorten(reg)} is not the registered name of {shorten(where)} "
                            f"({KERAS_CLASSES[where]!r}); refusing")

    # -- NNX module trees --

    def module(self, spec: Any, field: str, count: list[int]) -> None:
        if not isinstance(spec, dict):
            raise self.fail(field, f"a module must be an object, got {_kind_of(spec)}")
        unknown = set(spec) - _MODULE_KEYS
        if unknown:
            raise self.fail(field, f"unexpected keys {sorted(unknown)} (allowed: class, "
                                   "kwargs, layers)")
        count[0] += 1
        if count[0] > MAX_MODULES:
            raise self.fail(field, f"more than {MAX_MODULES} modules; refusing")
        name = spec.get("class")
        if not isinstance(name, str):
            raise self.fail(f"{field}.class", f"must be a string, got {_kind_of(name)}")
        if name not in NNX_CLASSES:
            raise self.fail(f"{field}.class", unknown_class_message(name))
        args = NNX_CLASSES[name]
        if args is None:
            if "kwargs" in spec and spec["kwargs"] not in ({}, None):
                raise self.fail(f"{field}.kwargs", f"{name} takes no arguments, only 'layers'")
            layers = spec.get("layers")
            if not isinstance(layers, list):
                raise self.fail(f"{field}.layers", f"{name} needs a list of layers, got "
                                                   f"{_kind_of(layers)}")
            for i, sub in enumerate(layers):
                self.module(sub, f"{field}.layers[{i}]", count)
            return
        if "layers" in spec:
            raise self.fail(f"{field}.layers", f"{name} takes no layers")
        kwargs = spec.get("kwargs", {})
        if not isinstance(kwargs, dict) or _is_tuple(kwargs):
            raise self.fail(f"{field}.kwargs", f"must be an object, got {_kind_of(kwargs)}")
        for key, value in kwargs.items():
            if key not in args:
                raise self.fail(sub_field(f"{field}.kwargs", key), f"{name} takes no argument "
                                f"{key!r} (accepted: {', '.join(args)})")
            _check_kind(self, value, args[key], sub_field(f"{field}.kwargs", key))


_KERAS_REGISTERED = frozenset(KERAS_CLASSES.values()) | frozenset(KERAS_FUNCTIONS)


def shorten(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def sub_field(field: str, key: str) -> str:
    """The field path of `key` under `field`: dotted for plain names, quoted otherwise."""
    if re.fullmatch(r"[A-Za-z0-9_/-]{1,64}", key):
        return f"{field}.{key}" if field else key
    return f"{field}[{key[:64]!r}]"


def _rule(key: str) -> str | None:
    if key in SIZE_KEYS:
        return "size"
    if key in SHAPE_KEYS:
        return "shape"
    if key in REPEAT_KEYS:
        return "repeat"
    if key == "bits" or key.endswith("_bits"):
        return "bits"
    return None


def unknown_class_message(name: str) -> str:
    module = name.partition(":")[0]
    inside = any(module == p.rstrip(".") or module.startswith(p) for p in ALLOWED_PACKAGES)
    if not inside:
        return (f"class {shorten(name)} is outside the allowed packages "
                f"({', '.join(p.rstrip('.') for p in ALLOWED_PACKAGES)}); only the classes "
                "in ncc.models.checkpoint_spec.NNX_CLASSES may be named; refusing")
    return (f"class {shorten(name)} is not in the registry of allowed classes "
            "(ncc.models.checkpoint_spec.NNX_CLASSES); refusing")


KIND_TESTS = {
    "None": lambda v: v is None,
    "int": lambda v: type(v) is int,
    "float": lambda v: type(v) in (int, float),
    "bool": lambda v: type(v) is bool,
    "str": lambda v: type(v) is str,
    "list": lambda v: type(v) is list or _is_tuple(v),
    "dict": lambda v: type(v) is dict and not _is_tuple(v),
    "shape": lambda v: (type(v) is list or _is_tuple(v)) and all(
        type(d) is int for d in (v["__tuple__"] if _is_tuple(v) else v)),
}
_KIND_WORDS = {"None": "null", "int": "an integer", "float": "a number", "bool": "a boolean",
               "str": "a string", "list": "a list", "dict": "an object",
               "shape": "a list of integers"}


def _check_kind(checker: _Checker, value: Any, kind: str, field: str) -> None:
    parts = kind.split("|")
    if not any(KIND_TESTS[p](value) for p in parts):
        want = " or ".join(_KIND_WORDS[p] for p in parts)
        raise checker.fail(field, f"expected {want}, got {_kind_of(value)}")


def _keras_builtin_function(name: str, module: str | None) -> bool:
    """True if Keras itself resolves function `name` (an identifier) from its own modules."""
    import keras

    mods = _KERAS_FUNCTION_MODULES if module in (None, "builtins") else \
        (module.removeprefix("keras."),)
    return any(callable(getattr(getattr(keras, m, None), name, None)) for m in mods)


def check_spec(spec: Any, where: str) -> dict[str, Any]:
    """`spec` (parsed spec.json) checked against the registries and limits; ArchiveError
    naming `where` and the field on any problem. Imports and builds nothing."""
    checker = _Checker(where)
    if not isinstance(spec, dict):
        raise checker.fail("", f"must be a JSON object, got {_kind_of(spec)}")
    if spec.get("format") != FORMAT:
        raise ArchiveError(f"{where}: unknown checkpoint format {shorten(spec.get('format'))} "
                           f"(expected {FORMAT!r})")
    framework = spec.get("framework")
    if framework not in ("keras", "nnx"):
        raise ArchiveError(f"{where}: unknown framework {shorten(framework)} (expected 'keras' or "
                           "'nnx')")
    top = _KERAS_TOP if framework == "keras" else _NNX_TOP
    unknown = set(spec) - top
    if unknown:
        raise checker.fail(sub_field("", sorted(unknown)[0]), f"unexpected field for a {framework} "
                                               f"checkpoint (allowed: {', '.join(sorted(top))})")
    for key, value in spec.items():
        checker.value(value, key, _rule(key), 1, keras=framework == "keras" and key == "config")
    if framework == "keras":
        if not isinstance(spec.get("config"), dict):
            raise checker.fail("config", f"must be an object, got {_kind_of(spec.get('config'))}")
        weights = spec.get("weights", [])
        if not isinstance(weights, list) or not all(isinstance(w, str) for w in weights):
            raise checker.fail("weights", "must be a list of variable paths")
    else:
        checker.module(spec.get("module"), "module", [0])
        shape = spec.get("input_shape")
        if shape is not None and not KIND_TESTS["shape"](shape):
            raise checker.fail("input_shape", f"expected a list of integers, got "
                                              f"{_kind_of(shape)}")
        _check_fake_quant(checker, spec.get("fake_quant", {}))
    return spec


def check_keras_config(config: Any, where: str, member: str = "config.json") -> None:
    """A serialized Keras model (a `.keras` file's config.json, a checkpoint's "config")
    checked against the registries and limits, before Keras sees it."""
    checker = _Checker(where, member)
    if not isinstance(config, dict):
        raise checker.fail("", f"must be a JSON object, got {_kind_of(config)}")
    checker.value(config, "", None, 0, keras=True)


def _check_fake_quant(checker: _Checker, status: Any) -> None:
    if not isinstance(status, dict):
        raise checker.fail("fake_quant", f"must be an object, got {_kind_of(status)}")
    for path, entry in status.items():
        field = sub_field("fake_quant", path)
        if not isinstance(entry, dict) or _is_tuple(entry):
            raise checker.fail(field, f"must be an object, got {_kind_of(entry)}")
        unknown = set(entry) - _FAKE_QUANT_KEYS
        if unknown:
            raise checker.fail(field, f"unexpected keys {sorted(unknown)}")
        if "mode" in entry:
            if entry["mode"] not in _FAKE_QUANT_MODES:
                raise checker.fail(f"{field}.mode", f"must be one of {_FAKE_QUANT_MODES}, got "
                                                    f"{entry['mode']!r}")
            if "params" not in entry or not (entry["params"] is None
                                             or KIND_TESTS["dict"](entry["params"])):
                raise checker.fail(f"{field}.params", "must be an object or null")
        if "quantized" in entry and type(entry["quantized"]) is not bool:
            raise checker.fail(f"{field}.quantized", f"expected a boolean, got "
                                                     f"{_kind_of(entry['quantized'])}")
        if "io_params" in entry:
            io_params = entry["io_params"]
            if not isinstance(io_params, list) or len(io_params) != 2 or \
                    not all(KIND_TESTS["dict"](p) for p in io_params):
                raise checker.fail(f"{field}.io_params", "must be a list of two objects")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def parse_json(data: bytes, where: str, member: str) -> Any:
    """Strict JSON: UTF-8, no NaN / Infinity, no duplicate keys; ArchiveError otherwise."""
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_refuse_constant,
                          object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError:
        raise ArchiveError(f"{where}: {member} is not UTF-8 text") from None
    except RecursionError:
        raise ArchiveError(f"{where}: {member} is nested too deeply; refusing") from None
    except ValueError as e:  # JSONDecodeError, NaN, duplicate keys, oversized integers
        raise ArchiveError(f"{where}: {member} is not valid JSON ({one_line(e)})") from None
