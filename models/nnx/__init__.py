"""Flax NNX liquid cells and quantized spiking neurons."""
