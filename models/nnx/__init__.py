"""Flax NNX liquid cells, quantized spiking neurons, LRU and Mamba state-space layers,
phasor layers (PhasorMLP, ResonateFire) and an H-Net step."""

from ncc.models.nnx.hnet import HNetStep, run_hnet
from ncc.models.nnx.mamba import Mamba, run_mamba
from ncc.models.nnx.phasor import PhasorMLP, ResonateFire, run_resonate_fire
from ncc.models.nnx.spiking import (
    QuantCuBaLIF,
    QuantIF,
    QuantLI,
    QuantLIF,
    cuba_lif_step_int,
    decay_int,
    if_step_int,
    li_step_int,
    lif_step_int,
    membrane_params,
    set_quantized,
)
from ncc.models.nnx.ssm import LRU, run_lru

__all__ = ["QuantLIF", "QuantIF", "QuantLI", "QuantCuBaLIF", "membrane_params", "decay_int",
           "lif_step_int", "if_step_int", "li_step_int", "cuba_lif_step_int", "set_quantized",
           "LRU", "run_lru", "PhasorMLP", "ResonateFire", "run_resonate_fire", "Mamba",
           "run_mamba", "HNetStep", "run_hnet"]
