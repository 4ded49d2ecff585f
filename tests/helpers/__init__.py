"""Helpers shared by the trainer tests and the subprocesses they start."""
