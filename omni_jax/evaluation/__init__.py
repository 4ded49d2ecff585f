"""Evaluation of a model free-running through the streaming engine (`omni_jax.duplex`):
the duplex metrics (`metrics`), the suites (`suites`, built from `catalog`, `cases`,
`readings` and `scoring`) and their case pictures (`pictures`)."""
