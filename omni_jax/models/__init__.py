"""Models: shared layers, the streaming speech encoders (Mamba, block-causal transformer),
the LLM, the synthesizer and the full-duplex omni model.

Every module is pure Flax Linen with explicit parameter pytrees; streaming state (SSM
states, conv overlaps, KV caches) is passed in and returned as pytrees, so one `step` can be
`jax.lax.scan`ned over blocks and `jax.jit`ted.

Shape legend (one letter, one meaning, for the whole omni_jax package and data_pipelines).
An array's name ends with `_` and its dimensions joined by `x`: `mel_BxFxM`, `k_YxBxCxGxQ`.

  B   batch rows (or independent streams of the engine)
  2B  the two audio streams stacked on the batch axis: environment rows, then assistant rows
  K   blocks (the contract's K)
  S   samples per block (the contract's S)
  N   tokens per block (the contract's N)
  P   prompt tokens (the contract's P)
  T   positions of a whole sequence (samples of a stream; LLM, synthesizer or encoder
      positions in the parallel form; the K x N token slots of a dialogue)
  L   positions appended by one streaming step (a chunk)
  C   cache slots (the key/value positions a cached attention reads)
  U   memory entries (the cross-attention memory)
  F   mel frames (the frontend's hop), M mel bins, X FFT bins
  W   window taps (analysis window samples; causal-conv kernel taps)
  O   overlap samples carried between blocks
  D   width of the module at hand; E encoder width (where both appear)
  I   inner width (MLP hidden; Mamba expansion)
  Z   SSM state size
  A   a low rank (LoRA rank; Mamba's dt rank)
  H   query heads, G key/value heads, R = H / G query heads per key/value head
  Q   head dim, J = Q / 2 rotary frequencies
  V   vocabulary
  Ch  audio channels of a file
  Y   stacked layers (the leading axis of a scanned layer stack)
  1   a kept singleton axis
"""
