"""Neuroevolution in integer space: evolve the deployed integer parameters of a model
(int8 weights, int32 biases, spiking thresholds, tables) with evosax strategies, scored by
the JAX golden model (`ncc.compiler.golden_jax`), which every integer runtime reproduces
bit for bit; then write the evolved constants back into an artifact folder for any integer
target (`ncc.evolve.writeback`).

Layer 4.5 (ARCHITECTURE.md): imports runtime and below; bench and cli may import it.
Importing `ncc.evolve` imports JAX (on demand, from its submodules).
"""

from __future__ import annotations

__all__ = ["Evolution", "EvolveConfig", "Genome", "select_parameters"]


def __getattr__(name: str):
    if name in ("Evolution", "EvolveConfig"):
        from ncc.evolve import engine

        return getattr(engine, name)
    if name in ("Genome", "select_parameters"):
        from ncc.evolve import genome

        return getattr(genome, name)
    raise AttributeError(name)
