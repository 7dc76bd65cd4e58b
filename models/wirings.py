"""Wirings: which neuron of a liquid network talks to which, and with what sign.

A wiring of `units` neurons reading `input_dim` features is two signed
adjacency matrices (entries -1 inhibitory, 0 none, +1 excitatory), read
row = source, column = destination:

    sensory_adjacency_matrix  (input_dim, units)   feature -> neuron
    adjacency_matrix          (units, units)       neuron  -> neuron

The first `output_dim` neurons are the outputs (motor neurons). Internal
synapses exist from construction; sensory ones once `build(input_dim)` knows
the input width. Pure numpy, so Keras layers and Flax NNX cells share it.

Every class draws its synapses with the same random calls, in the same order,
as `ncps.wirings` (ncps 1.0.1), so one seed gives the same adjacency as ncps
and ncps models convert exactly (`from_ncps`). Unlike ncps, `build` is
idempotent: the matrices depend only on the seed and `input_dim`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["Wiring", "FullyConnected", "Random", "NCP", "AutoNCP", "as_wiring",
           "from_ncps", "wiring_from_config", "serialize", "deserialize"]


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_sparsity(name: str, value: Any) -> float:
    if not isinstance(value, (int, float, np.floating)) or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return float(value)


def _check_matrix(name: str, matrix: Any, shape: tuple[int, int]) -> np.ndarray:
    m = np.asarray(matrix)
    if m.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {m.shape}")
    if not np.isin(m, (-1, 0, 1)).all():
        raise ValueError(f"{name} entries must be -1, 0 or +1")
    return m.astype(np.int32)


class Wiring:
    """A hand-made wiring: `units` neurons, synapses added with `add_synapse`.

    Args:
        units: number of neurons (= recurrent state size), >= 1.
        output_dim: number of output (motor) neurons, the first ones; default all.
    """

    def __init__(self, units: int, output_dim: int | None = None) -> None:
        self.units = _check_int("units", units, 1)
        self.adjacency_matrix = np.zeros((self.units, self.units), dtype=np.int32)
        self.sensory_adjacency_matrix: np.ndarray | None = None
        self.input_dim: int | None = None
        self.output_dim: int | None = None
        self.set_output_dim(self.units if output_dim is None else output_dim)

    # --- structure ------------------------------------------------------------------------

    @property
    def num_layers(self) -> int:
        """Number of neuron layers (CfC builds one sub-cell per layer)."""
        return 1

    def get_neurons_of_layer(self, layer_id: int) -> list[int]:
        """Neuron ids of layer `layer_id`, feed-forward order (0 reads the inputs)."""
        if layer_id != 0:
            raise ValueError(f"layer_id must be 0 for {type(self).__name__}, got {layer_id}")
        return list(range(self.units))

    def get_type_of_neuron(self, neuron_id: int) -> str:
        """"motor" for output neurons, "inter" otherwise."""
        return "motor" if neuron_id < self.output_dim else "inter"

    def is_built(self) -> bool:
        return self.input_dim is not None

    def build(self, input_dim: int) -> None:
        """Fix the input width and draw the sensory synapses (no-op if already built)."""
        input_dim = _check_int("input_dim", input_dim, 1)
        if self.input_dim is not None:
            if self.input_dim != input_dim:
                raise ValueError(f"input_dim {input_dim} conflicts with this wiring, already "
                                 f"built for {self.input_dim} inputs")
            return
        self.set_input_dim(input_dim)
        self._build_sensory()

    def _build_sensory(self) -> None:
        """Subclasses draw their sensory synapses here."""

    def set_input_dim(self, input_dim: int) -> None:
        self.input_dim = _check_int("input_dim", input_dim, 1)
        self.sensory_adjacency_matrix = np.zeros((self.input_dim, self.units), dtype=np.int32)

    def set_output_dim(self, output_dim: int) -> None:
        output_dim = _check_int("output_dim", output_dim, 1)
        if output_dim > self.units:
            raise ValueError(f"output_dim must be <= units ({self.units}), got {output_dim}")
        self.output_dim = output_dim

    def add_synapse(self, src: int, dest: int, polarity: int) -> None:
        """Neuron `src` -> neuron `dest`, polarity -1 or +1."""
        if not 0 <= src < self.units:
            raise ValueError(f"src must be in [0, {self.units}), got {src}")
        if not 0 <= dest < self.units:
            raise ValueError(f"dest must be in [0, {self.units}), got {dest}")
        if polarity not in (-1, 1):
            raise ValueError(f"polarity must be -1 or +1, got {polarity}")
        self.adjacency_matrix[src, dest] = polarity

    def add_sensory_synapse(self, src: int, dest: int, polarity: int) -> None:
        """Input feature `src` -> neuron `dest`, polarity -1 or +1 (after `build`)."""
        if self.input_dim is None:
            raise ValueError("cannot add sensory synapses before build(input_dim)")
        if not 0 <= src < self.input_dim:
            raise ValueError(f"src must be in [0, {self.input_dim}), got {src}")
        if not 0 <= dest < self.units:
            raise ValueError(f"dest must be in [0, {self.units}), got {dest}")
        if polarity not in (-1, 1):
            raise ValueError(f"polarity must be -1 or +1, got {polarity}")
        self.sensory_adjacency_matrix[src, dest] = polarity

    # --- initializers and counts ----------------------------------------------------------

    def erev_initializer(self, shape: Any = None, dtype: Any = None) -> np.ndarray:
        """Reversal potentials for LTC: the signed adjacency, (units, units)."""
        return np.copy(self.adjacency_matrix).astype(dtype or np.float32)

    def sensory_erev_initializer(self, shape: Any = None, dtype: Any = None) -> np.ndarray:
        """Sensory reversal potentials: the signed sensory adjacency, (input_dim, units)."""
        self._require_built()
        return np.copy(self.sensory_adjacency_matrix).astype(dtype or np.float32)

    @property
    def synapse_count(self) -> int:
        """Number of neuron -> neuron synapses."""
        return int(np.abs(self.adjacency_matrix).sum())

    @property
    def sensory_synapse_count(self) -> int:
        """Number of input -> neuron synapses (0 before `build`)."""
        if self.sensory_adjacency_matrix is None:
            return 0
        return int(np.abs(self.sensory_adjacency_matrix).sum())

    def _require_built(self) -> None:
        if not self.is_built():
            raise ValueError(f"{type(self).__name__} is not built yet: call build(input_dim) "
                             "or run the layer on an input first")

    # --- serialization --------------------------------------------------------------------

    def _init_config(self) -> dict[str, Any]:
        return {"units": self.units, "output_dim": self.output_dim}

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments plus the exact matrices (JSON-friendly lists)."""
        sensory = self.sensory_adjacency_matrix
        return {**self._init_config(), "input_dim": self.input_dim,
                "adjacency_matrix": self.adjacency_matrix.tolist(),
                "sensory_adjacency_matrix": None if sensory is None else sensory.tolist()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Wiring:
        """Rebuild from `get_config()`; stored matrices win over regeneration."""
        config = dict(config)
        input_dim = config.pop("input_dim", None)
        adjacency = config.pop("adjacency_matrix", None)
        sensory = config.pop("sensory_adjacency_matrix", None)
        wiring = cls(**config)
        if adjacency is not None:
            wiring.adjacency_matrix = _check_matrix("adjacency_matrix", adjacency,
                                                    (wiring.units, wiring.units))
        if input_dim is not None:
            wiring.input_dim = _check_int("input_dim", input_dim, 1)
            if sensory is None:
                raise ValueError("sensory_adjacency_matrix is missing for a built wiring")
            wiring.sensory_adjacency_matrix = _check_matrix(
                "sensory_adjacency_matrix", sensory, (wiring.input_dim, wiring.units))
        return wiring

    def copy(self) -> Wiring:
        """An independent copy (same class, same matrices)."""
        return type(self).from_config(self.get_config())

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.get_config() == other.get_config()

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._init_config().items())
        return f"{type(self).__name__}({args})"

    # --- inspection -----------------------------------------------------------------------

    def summary(self) -> str:
        """A few lines of text: neurons per layer, synapse counts and polarities."""
        exc = int((self.adjacency_matrix > 0).sum())
        lines = [f"{self!r}: {self.units} neurons, {self.output_dim} outputs, "
                 f"{'unbuilt' if self.input_dim is None else f'{self.input_dim} inputs'}"]
        for i in range(self.num_layers):
            ids = self.get_neurons_of_layer(i)
            kind = self.get_type_of_neuron(ids[0])
            lines.append(f"  layer {i} ({kind}): {len(ids)} neurons, ids {ids[0]}..{ids[-1]}")
        lines.append(f"  internal synapses: {self.synapse_count} ({exc} excitatory, "
                     f"{self.synapse_count - exc} inhibitory)")
        if self.sensory_adjacency_matrix is not None:
            sexc = int((self.sensory_adjacency_matrix > 0).sum())
            lines.append(f"  sensory synapses: {self.sensory_synapse_count} ({sexc} excitatory, "
                         f"{self.sensory_synapse_count - sexc} inhibitory)")
        return "\n".join(lines)

    def plot(self, axes: Any = None) -> Any:
        """Draw both adjacency matrices (green +1, red -1) with matplotlib; returns the figure."""
        try:
            import matplotlib.pyplot as plt
            from matplotlib.colors import ListedColormap
        except ImportError as e:  # optional dependency
            raise ImportError("wiring.plot() needs matplotlib: pip install matplotlib") from e
        self._require_built()
        if axes is None:
            fig, axes = plt.subplots(1, 2, figsize=(8, 4),
                                     gridspec_kw={"width_ratios": [self.input_dim, self.units]})
        fig = axes[0].figure
        cmap = ListedColormap(["tab:red", "white", "tab:green"])
        for ax, m, title, xlabel in (
                (axes[0], self.sensory_adjacency_matrix.T, "sensory", "input"),
                (axes[1], self.adjacency_matrix.T, "internal", "source neuron")):
            ax.imshow(m, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
            ax.set_title(f"{title} synapses ({int(np.abs(m).sum())})")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("destination neuron")
        fig.suptitle(repr(self))
        return fig


class FullyConnected(Wiring):
    """Every input and every neuron connects to every neuron; polarity +1 with p = 2/3.

    Args:
        units: number of neurons, >= 1.
        output_dim: outputs (first neurons); default `units`.
        erev_init_seed: seed of the polarity draws (numpy default_rng, as ncps).
        self_connections: keep the neuron -> itself synapses.
    """

    def __init__(self, units: int, output_dim: int | None = None, erev_init_seed: int = 1111,
                 self_connections: bool = True) -> None:
        super().__init__(units, output_dim)
        self.erev_init_seed = _check_int("erev_init_seed", erev_init_seed, 0)
        self.self_connections = bool(self_connections)
        self._rng = self._draw_internal()

    def _draw_internal(self) -> np.random.Generator:
        rng = np.random.default_rng(self.erev_init_seed)
        for src in range(self.units):
            for dest in range(self.units):
                if src == dest and not self.self_connections:
                    continue
                self.add_synapse(src, dest, rng.choice([-1, 1, 1]))
        return rng

    def _build_sensory(self) -> None:
        rng = self._rng  # ncps continues the stream of the internal draws
        for src in range(self.input_dim):
            for dest in range(self.units):
                self.add_sensory_synapse(src, dest, rng.choice([-1, 1, 1]))

    def _init_config(self) -> dict[str, Any]:
        return {"units": self.units, "output_dim": self.output_dim,
                "erev_init_seed": self.erev_init_seed, "self_connections": self.self_connections}


class Random(Wiring):
    """A random fraction `1 - sparsity_level` of all possible synapses, random polarity.

    Args:
        units: number of neurons, >= 1.
        output_dim: outputs (first neurons); default `units`.
        sparsity_level: fraction of synapses removed, in [0, 1).
        random_seed: seed of the draws (numpy default_rng, as ncps).
    """

    def __init__(self, units: int, output_dim: int | None = None, sparsity_level: float = 0.0,
                 random_seed: int = 1111) -> None:
        super().__init__(units, output_dim)
        self.sparsity_level = _check_sparsity("sparsity_level", sparsity_level)
        self.random_seed = _check_int("random_seed", random_seed, 0)
        self._rng = np.random.default_rng(self.random_seed)
        self._draw(self.units, self.add_synapse, draws_per_synapse=1)

    def _draw(self, n_src: int, add: Any, draws_per_synapse: int) -> None:
        count = int(np.round(n_src * self.units * (1 - self.sparsity_level)))
        pairs = [(src, dest) for src in range(n_src) for dest in range(self.units)]
        for src, dest in self._rng.choice(pairs, size=count, replace=False):
            for _ in range(draws_per_synapse):
                add(src, dest, self._rng.choice([-1, 1, 1]))

    def _build_sensory(self) -> None:
        # ncps draws each sensory polarity twice and keeps the second: kept for equal adjacency
        self._draw(self.input_dim, self.add_sensory_synapse, draws_per_synapse=2)

    def _init_config(self) -> dict[str, Any]:
        return {"units": self.units, "output_dim": self.output_dim,
                "sparsity_level": self.sparsity_level, "random_seed": self.random_seed}


class NCP(Wiring):
    """Neural Circuit Policy: sensory -> inter -> command (recurrent) -> motor.

    Neuron ids: motor [0, m), command [m, m + c), inter [m + c, units).

    Args:
        inter_neurons, command_neurons, motor_neurons: layer sizes, each >= 1.
        sensory_fanout: synapses from each input to inter neurons (<= inter_neurons).
        inter_fanout: synapses from each inter to command neurons (<= command_neurons).
        recurrent_command_synapses: random command -> command synapses, >= 0.
        motor_fanin: synapses from command neurons into each motor (<= command_neurons).
        seed: seed of the draws (numpy RandomState, as ncps).
    """

    def __init__(self, inter_neurons: int, command_neurons: int, motor_neurons: int,
                 sensory_fanout: int, inter_fanout: int, recurrent_command_synapses: int,
                 motor_fanin: int, seed: int = 22222) -> None:
        n_inter = _check_int("inter_neurons", inter_neurons, 1)
        n_command = _check_int("command_neurons", command_neurons, 1)
        n_motor = _check_int("motor_neurons", motor_neurons, 1)
        super().__init__(n_inter + n_command + n_motor, n_motor)
        self.inter_neurons, self.command_neurons, self.motor_neurons = n_inter, n_command, n_motor
        self.sensory_fanout = _check_int("sensory_fanout", sensory_fanout, 1)
        self.inter_fanout = _check_int("inter_fanout", inter_fanout, 1)
        self.recurrent_command_synapses = _check_int(
            "recurrent_command_synapses", recurrent_command_synapses, 0)
        self.motor_fanin = _check_int("motor_fanin", motor_fanin, 1)
        self.seed = _check_int("seed", seed, 0)
        for name, value, limit, what in (
                ("sensory_fanout", self.sensory_fanout, n_inter, "inter_neurons"),
                ("inter_fanout", self.inter_fanout, n_command, "command_neurons"),
                ("motor_fanin", self.motor_fanin, n_command, "command_neurons")):
            if value > limit:
                raise ValueError(f"{name} must be <= {what} ({limit}), got {value}")
        self._motor_ids = list(range(n_motor))
        self._command_ids = list(range(n_motor, n_motor + n_command))
        self._inter_ids = list(range(n_motor + n_command, self.units))

    @property
    def num_layers(self) -> int:
        return 3

    def get_neurons_of_layer(self, layer_id: int) -> list[int]:
        layers = (self._inter_ids, self._command_ids, self._motor_ids)
        if not 0 <= layer_id < 3:
            raise ValueError(f"layer_id must be 0, 1 or 2, got {layer_id}")
        return list(layers[layer_id])

    def get_type_of_neuron(self, neuron_id: int) -> str:
        if neuron_id < self.motor_neurons:
            return "motor"
        return "command" if neuron_id < self.motor_neurons + self.command_neurons else "inter"

    def _build_sensory(self) -> None:
        # ncps draws every synapse of an NCP at build time, in this order
        rng = np.random.RandomState(self.seed)
        self.adjacency_matrix[:] = 0
        self._connect(rng, list(range(self.input_dim)), self._inter_ids, self.sensory_fanout,
                      self.add_sensory_synapse)
        # ncps clips the inter -> command mean fan-in to command_neurons, not inter_neurons
        self._connect(rng, self._inter_ids, self._command_ids, self.inter_fanout,
                      self.add_synapse, clip=self.command_neurons)
        for _ in range(self.recurrent_command_synapses):
            src = rng.choice(self._command_ids)
            dest = rng.choice(self._command_ids)
            self.add_synapse(src, dest, rng.choice([-1, 1]))
        self._connect_motor(rng)

    @staticmethod
    def _connect(rng: np.random.RandomState, sources: list[int], targets: list[int],
                 fanout: int, add: Any, clip: int | None = None) -> None:
        """Each source -> `fanout` random targets; unreached targets get a mean fan-in."""
        unreached = list(targets)
        for src in sources:
            for dest in rng.choice(targets, size=fanout, replace=False):
                if dest in unreached:
                    unreached.remove(dest)
                add(src, dest, rng.choice([-1, 1]))
        fanin = int(np.clip(int(len(sources) * fanout / len(targets)), 1,
                            len(sources) if clip is None else clip))
        for dest in unreached:
            for src in rng.choice(sources, size=fanin, replace=False):
                add(src, dest, rng.choice([-1, 1]))

    def _connect_motor(self, rng: np.random.RandomState) -> None:
        """Each motor <- `motor_fanin` commands; commands left out get a mean fan-out."""
        unreached = list(self._command_ids)
        for dest in self._motor_ids:
            for src in rng.choice(self._command_ids, size=self.motor_fanin, replace=False):
                if src in unreached:
                    unreached.remove(src)
                self.add_synapse(src, dest, rng.choice([-1, 1]))
        # ncps clips the mean fan-out to [1, motor_neurons]
        fanout = int(np.clip(int(self.motor_neurons * self.motor_fanin / self.command_neurons),
                             1, self.motor_neurons))
        for src in unreached:
            for dest in rng.choice(self._motor_ids, size=fanout, replace=False):
                self.add_synapse(src, dest, rng.choice([-1, 1]))

    def _init_config(self) -> dict[str, Any]:
        return {"inter_neurons": self.inter_neurons, "command_neurons": self.command_neurons,
                "motor_neurons": self.motor_neurons, "sensory_fanout": self.sensory_fanout,
                "inter_fanout": self.inter_fanout,
                "recurrent_command_synapses": self.recurrent_command_synapses,
                "motor_fanin": self.motor_fanin, "seed": self.seed}


class AutoNCP(NCP):
    """An NCP sized from `units` and `output_size` by the ncps rule.

    commands = max(int(0.4 (units - output_size)), 1), inter = the rest; fan-outs
    scale with density = 1 - sparsity_level.

    Args:
        units: total neurons; output_size <= units - 2 (one inter, one command at least).
        output_size: motor neurons (= output width), >= 1.
        sparsity_level: in [0, 1); ncps suggests 0.5 (it also rejects < 0.1, ncc does not).
        seed: seed of the draws.
    """

    def __init__(self, units: int, output_size: int, sparsity_level: float = 0.5,
                 seed: int = 22222) -> None:
        units = _check_int("units", units, 3)
        output_size = _check_int("output_size", output_size, 1)
        if output_size > units - 2:
            raise ValueError(f"output_size must be <= units - 2 ({units - 2}), got {output_size}")
        self.output_size = output_size
        self.sparsity_level = _check_sparsity("sparsity_level", sparsity_level)
        density = 1.0 - self.sparsity_level
        inter_and_command = units - output_size
        command = max(int(0.4 * inter_and_command), 1)
        inter = inter_and_command - command
        super().__init__(inter, command, output_size,
                         sensory_fanout=max(int(inter * density), 1),
                         inter_fanout=max(int(command * density), 1),
                         recurrent_command_synapses=max(int(command * density * 2), 1),
                         motor_fanin=max(int(command * density), 1), seed=seed)

    def _init_config(self) -> dict[str, Any]:
        return {"units": self.units, "output_size": self.output_size,
                "sparsity_level": self.sparsity_level, "seed": self.seed}


_CLASSES = {c.__name__: c for c in (Wiring, FullyConnected, Random, NCP, AutoNCP)}


def serialize(wiring: Wiring) -> dict[str, Any]:
    """{"class_name", "config"}: JSON-friendly, no code references."""
    return {"class_name": type(wiring).__name__, "config": wiring.get_config()}


def deserialize(spec: dict[str, Any]) -> Wiring:
    """Inverse of `serialize`; only the classes of this module are accepted."""
    name = spec.get("class_name") if isinstance(spec, dict) else None
    cls = _CLASSES.get(str(name).split(">")[-1]) if name else None
    if cls is None:
        raise ValueError(f"unknown wiring class {name!r}; expected one of {sorted(_CLASSES)}")
    return cls.from_config(spec["config"])


wiring_from_config = deserialize


def from_ncps(wiring: Any) -> Wiring:
    """The ncc twin of an `ncps.wirings` object, with its exact matrices."""
    name = type(wiring).__name__
    if name == "FullyConnected":
        ours: Wiring = FullyConnected(wiring.units, wiring.output_dim, wiring._erev_init_seed,
                                      wiring.self_connections)
    elif name == "Random":
        ours = Random(wiring.units, wiring.output_dim, wiring.sparsity_level,
                      wiring._random_seed)
    elif name == "AutoNCP":
        ours = AutoNCP(wiring.units, wiring._output_size, wiring._sparsity_level, wiring._seed)
    elif name == "NCP":
        ours = NCP(wiring._num_inter_neurons, wiring._num_command_neurons,
                   wiring._num_motor_neurons, wiring._sensory_fanout, wiring._inter_fanout,
                   wiring._recurrent_command_synapses, wiring._motor_fanin)
    else:
        ours = Wiring(wiring.units, wiring.output_dim)
    ours.adjacency_matrix = _check_matrix("adjacency_matrix", wiring.adjacency_matrix,
                                          (ours.units, ours.units))
    if wiring.input_dim is not None:
        ours.input_dim = int(wiring.input_dim)
        ours.sensory_adjacency_matrix = _check_matrix(
            "sensory_adjacency_matrix", wiring.sensory_adjacency_matrix,
            (ours.input_dim, ours.units))
    return ours


def as_wiring(units_or_wiring: Any) -> Wiring:
    """int -> FullyConnected(int); ncc wiring -> itself; ncps wiring -> `from_ncps` copy."""
    w = units_or_wiring
    if isinstance(w, Wiring):
        return w
    if type(w).__module__.startswith("ncps."):
        return from_ncps(w)
    if isinstance(w, dict):
        return deserialize(w)
    return FullyConnected(_check_int("units", w, 1))
