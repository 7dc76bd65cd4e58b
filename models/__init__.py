"""Training side: liquid and spiking models, wirings, fake-quant, checkpoints."""
