"""Training: losses, optimizer, metrics, sharding, checkpoints and the train loop."""
