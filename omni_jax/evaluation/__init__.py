"""Evaluation: duplex metrics (`metrics`), built on the streaming engine
(`omni_jax.duplex.engine`)."""
