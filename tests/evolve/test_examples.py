"""The evolution examples on a shortened setting: (a) recovering a PTQ CfC AutoNCP on
digits, written back to c, its runtime accuracy equal to the fitness; (b) a spiking
cart-pole controller evolved from scratch, compiled to c, the Cortex-M4 under QEMU
reproducing its return."""

from __future__ import annotations

import pytest


def test_recover_digits_shortened(tmp_path):
    from ncc.evolve.examples.recover_digits import main

    r = main(units=16, epochs=0, population=4, generations=2, target="c", out=tmp_path,
             fit_sequences=32, progress=False)
    assert r["runtime_equals_fitness"] and r["verified_bit_exact"], r
    assert r["fitness"]["final"] >= r["fitness"]["initial"]


def test_cartpole_snn_shortened_reproduces_on_cortex_m4(tmp_path):
    from ncc.evolve.examples.cartpole_snn import main
    from ncc.runtime import cortex_m

    r = main(hidden=8, population=4, generations=2, episodes=2, steps=30, out=tmp_path,
             progress=False)
    assert r["final_fitness"] == r["mean_return"] > 0
    if missing := cortex_m.missing_tools():
        pytest.skip(f"no {', '.join(missing)} on PATH: the Cortex-M4 replay is not run")
    (m4,) = r["cortex_m4"]
    assert m4["actions_identical"] and m4["m4_return"] == m4["golden_return"] == r["returns"][0]
