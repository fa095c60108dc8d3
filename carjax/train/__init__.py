"""Training: state, optimiser, jitted steps, checkpoints and the train-and-evaluate loop."""
