"""Training: losses, optimizer (freezing, stages, non-finite guard), sharding,
checkpoints, metrics and the train loop."""
