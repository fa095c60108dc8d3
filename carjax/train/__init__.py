"""Training: the one set-up (`setup`), state, optimiser, jitted steps and the epoch loop."""
