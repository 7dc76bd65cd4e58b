"""Wirings: same adjacency as ncps.wirings for the same seed, exact config round trips."""

import json

import ncps.wirings as nw
import numpy as np
import pytest

from ncc.models import wirings as w

SPECS = [  # (ncc class, ncps class, args, input_dim)
    ("FullyConnected", (6,), {"erev_init_seed": 3}, 4),
    ("FullyConnected", (7, 2), {"erev_init_seed": 5, "self_connections": False}, 3),
    ("Random", (9, 3, 0.4, 11), {}, 5),
    ("Random", (6, None, 0.0, 2), {}, 2),
    ("NCP", (10, 2, 3, 4, 2, 3, 2), {"seed": 9}, 6),  # inter->command fan-in clipped quirk
    ("NCP", (4, 5, 3, 2, 3, 4, 2), {"seed": 1}, 3),
    ("AutoNCP", (20, 5, 0.5, 4), {}, 4),
    ("AutoNCP", (12, 3, 0.2, 6), {}, 9),
]


def _pair(name, args, kwargs, input_dim):
    ours, theirs = getattr(w, name)(*args, **kwargs), getattr(nw, name)(*args, **kwargs)
    ours.build(input_dim)
    theirs.build(input_dim)
    return ours, theirs


@pytest.mark.parametrize("name,args,kwargs,input_dim", SPECS)
def test_same_adjacency_as_ncps(name, args, kwargs, input_dim):
    ours, theirs = _pair(name, args, kwargs, input_dim)
    assert ours.adjacency_matrix.dtype == np.int32
    np.testing.assert_array_equal(ours.adjacency_matrix, theirs.adjacency_matrix)
    np.testing.assert_array_equal(ours.sensory_adjacency_matrix, theirs.sensory_adjacency_matrix)
    assert (ours.units, ours.input_dim, ours.output_dim) == \
        (theirs.units, theirs.input_dim, theirs.output_dim)
    assert ours.synapse_count == int(theirs.synapse_count)
    assert ours.sensory_synapse_count == int(theirs.sensory_synapse_count)
    for i in range(theirs.num_layers):
        assert ours.get_neurons_of_layer(i) == list(theirs.get_neurons_of_layer(i))
    np.testing.assert_array_equal(ours.erev_initializer(), theirs.erev_initializer())
    np.testing.assert_array_equal(ours.sensory_erev_initializer(),
                                  theirs.sensory_erev_initializer())


@pytest.mark.parametrize("name,args,kwargs,input_dim", SPECS)
def test_deterministic_and_idempotent_build(name, args, kwargs, input_dim):
    a, b = getattr(w, name)(*args, **kwargs), getattr(w, name)(*args, **kwargs)
    a.build(input_dim)
    first = a.sensory_adjacency_matrix.copy()
    a.build(input_dim)  # ncps redraws here (FullyConnected, Random); ncc does not
    b.build(input_dim)
    np.testing.assert_array_equal(a.sensory_adjacency_matrix, first)
    assert a == b
    with pytest.raises(ValueError, match="input_dim"):
        a.build(input_dim + 1)


@pytest.mark.parametrize("name,args,kwargs,input_dim", SPECS)
def test_config_round_trip_is_exact_and_json(name, args, kwargs, input_dim):
    ours, _ = _pair(name, args, kwargs, input_dim)
    ours.adjacency_matrix[0, 0] = -ours.adjacency_matrix[0, 0] or 1  # hand edit survives
    spec = json.loads(json.dumps(w.serialize(ours)))
    back = w.deserialize(spec)
    assert type(back) is type(ours)
    np.testing.assert_array_equal(back.adjacency_matrix, ours.adjacency_matrix)
    np.testing.assert_array_equal(back.sensory_adjacency_matrix, ours.sensory_adjacency_matrix)
    unbuilt = getattr(w, name)(*args, **kwargs)
    assert type(unbuilt).from_config(unbuilt.get_config()).input_dim is None


def test_keras_serialize_keras_object_round_trip():
    import keras

    import ncc.models.keras  # noqa: F401  (registers the wirings with Keras)

    wiring = w.AutoNCP(10, 3, seed=2)
    wiring.build(4)
    spec = keras.saving.serialize_keras_object(wiring)
    back = keras.saving.deserialize_keras_object(json.loads(json.dumps(spec)), safe_mode=True)
    assert back == wiring


def test_from_ncps_copies_matrices_and_as_wiring():
    theirs = nw.NCP(4, 3, 2, 2, 2, 2, 2, seed=5)
    theirs.build(3)
    ours = w.from_ncps(theirs)
    assert isinstance(ours, w.NCP)
    np.testing.assert_array_equal(ours.adjacency_matrix, theirs.adjacency_matrix)
    assert w.as_wiring(theirs) == ours
    fc = w.as_wiring(5)
    assert isinstance(fc, w.FullyConnected) and fc.units == fc.output_dim == 5


def test_handmade_wiring_and_types():
    wiring = w.Wiring(3, output_dim=1)
    wiring.add_synapse(0, 2, -1)
    wiring.build(2)
    wiring.add_sensory_synapse(1, 0, 1)
    assert (wiring.synapse_count, wiring.sensory_synapse_count) == (1, 1)
    assert [wiring.get_type_of_neuron(i) for i in range(3)] == ["motor", "inter", "inter"]
    assert w.Wiring.from_config(wiring.get_config()) == wiring
    ncp = w.AutoNCP(12, 3)
    kinds = {ncp.get_type_of_neuron(i) for i in ncp.get_neurons_of_layer(1)}
    assert kinds == {"command"}


def test_summary_and_plot(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    wiring = w.AutoNCP(10, 3, seed=1)
    wiring.build(4)
    text = wiring.summary()
    assert f"internal synapses: {wiring.synapse_count}" in text
    assert "layer 1 (command)" in text
    fig = wiring.plot()
    fig.savefig(tmp_path / "w.png")
    assert (tmp_path / "w.png").stat().st_size > 0
    with pytest.raises(ValueError, match="not built"):
        w.AutoNCP(10, 3).plot()


@pytest.mark.parametrize("make,arg", [
    (lambda: w.AutoNCP(10, 10), "output_size"),
    (lambda: w.AutoNCP(10, 9), "output_size"),
    (lambda: w.AutoNCP(10, 3, sparsity_level=1.0), "sparsity_level"),
    (lambda: w.AutoNCP(10, 3, sparsity_level=-0.1), "sparsity_level"),
    (lambda: w.Random(5, sparsity_level=1.0), "sparsity_level"),
    (lambda: w.NCP(-1, 3, 2, 1, 1, 1, 1), "inter_neurons"),
    (lambda: w.NCP(3, 0, 2, 1, 1, 1, 1), "command_neurons"),
    (lambda: w.NCP(3, 3, 2, 1, 1, -1, 1), "recurrent_command_synapses"),
    (lambda: w.NCP(3, 3, 2, 4, 1, 1, 1), "sensory_fanout"),
    (lambda: w.NCP(3, 3, 2, 1, 4, 1, 1), "inter_fanout"),
    (lambda: w.NCP(3, 3, 2, 1, 1, 1, 4), "motor_fanin"),
    (lambda: w.FullyConnected(0), "units"),
    (lambda: w.FullyConnected(4, output_dim=5), "output_dim"),
    (lambda: w.FullyConnected(4, erev_init_seed=-1), "erev_init_seed"),
    (lambda: w.Wiring(3).add_synapse(0, 1, 2), "polarity"),
    (lambda: w.Wiring(3).add_sensory_synapse(0, 1, 1), "build"),
    (lambda: w.deserialize({"class_name": "os.system", "config": {}}), "unknown wiring"),
])
def test_bad_arguments_raise_value_error_naming_them(make, arg):
    with pytest.raises(ValueError, match=arg):
        make()
