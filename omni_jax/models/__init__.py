"""Models: shared layers, the streaming speech encoders (Mamba, block-causal transformer),
the LLM, the synthesizer and the full-duplex omni model.

Every module is pure Flax Linen with explicit parameter pytrees; streaming state (SSM
states, conv overlaps, KV caches) is passed in and returned as pytrees, so one `step` can be
`jax.lax.scan`ned over blocks and `jax.jit`ted.
"""
