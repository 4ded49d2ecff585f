"""The codec-free streaming synthesizer: LLM hidden states -> log-mel frames, block by block.

Per 80 ms block k the input is the LLM's hidden states at that block's N token positions
(`h_BxNxD`, D the LLM width, from LLM layer `synth.llm_layer`, picked by the caller):
embeddings, never text and never codec tokens. The block's N states are RMS-normalised
(hidden-state scale varies wildly between LLMs and layers), concatenated and projected to
the synthesizer width, so that one block is one position. A decoder of `synth.num_layers` pre-norm layers (the LLM's
own `DecoderLayer`: grouped-query self-attention with RoPE over block indices, SwiGLU MLP)
attends causally over blocks 0..k, and a final RMSNorm + projection gives the block's
F = block_ms / hop_ms frames of M mel bins, in the frontend's log-mel units
(`omni_jax.audio.frontend`).

Silence at init: the output projection starts near zero (small-variance init) and its
float32 bias starts at the frontend's log floor, log(1e-6), i.e. the log-mel of digital
silence. An untrained synthesizer therefore says (almost) nothing, instead of noise.

The start delay is not modelled here: the data's timing rules keep `speech_target` silent
until the `synth_delay_tokens`-th text token of a turn, and the synthesizer learns the delay
(and every pause) from those targets.

Layers are stacked with `layers.stack_layers` (parameters carry a leading `layers` axis)
and rematerialised with the named policy `remat`. `step` appends one block to a fixed-size
cache (`init_cache`), read by every layer and written once after them:
  index   int32 B           blocks written so far per row (the next block's RoPE position)
  k, v    YxBxCxGxQ         keys/values of the Y layers over C = max_blocks slots (compute
                            dtype), a ring (`omni_jax.models.kv_cache`): past C blocks the
                            synthesizer reads the last C blocks and its own.

Shape letters: `omni_jax.models`. The input `h` is at the LLM width (D of the caller, the
LLM); after `in_proj` the decoder runs at `synth.width`, the D of this module.

Optional `synth_cfg` fields (defaults in brackets): mlp_dim [3 * width], num_kv_heads
[num_heads], rope_theta [10000].
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from omni_jax.audio.frontend import SILENCE_LOG_MEL
from omni_jax.models import layers
from omni_jax.models.attention import causal_mask
from omni_jax.models.kv_cache import RingLayout, write_rows
from omni_jax.models.layers import DTYPES, REMAT_POLICIES
from omni_jax.models.llm import DecoderLayer, LlmSpec
from omni_jax.models.lora import LoraSpec

Cache = dict[str, jax.Array]
OUT_INIT_SCALE = 1e-4  # output-kernel variance scale: init outputs within ~0.01 of silence


class _BlockLayer(nn.Module):
    """One scanned decoder layer over blocks: (x, cache slice read) -> (x, the block's new
    keys/values)."""

    spec: LlmSpec
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x_BxKxD, cached, positions_BxK, mask_BxKxC):
        x_BxKxD, new, _ = DecoderLayer(self.spec, False, self.dtype, name="layer")(
            x_BxKxD, positions_BxK, mask_BxKxC, None, None, cached, None, None)
        return x_BxKxD, None if cached is None else new  # no stacked k/v in training


class Synthesizer(nn.Module):
    """Block-causal decoder from LLM hidden states to log-mel. `synth_cfg` is
    `config.model.synth`; `llm_width` is D of the hidden states; each block gives
    `frames_per_block` frames of `n_mels` bins."""

    synth_cfg: Any
    llm_width: int
    n_mels: int
    frames_per_block: int
    dtype: str = "float32"
    remat: str = "none"

    def __post_init__(self):
        super().__post_init__()
        layers.check_choices(dtype=(self.dtype, DTYPES), remat=(self.remat, REMAT_POLICIES))
        spec = self.spec
        layers.check_heads("synth", spec.width, spec.num_heads, spec.num_kv_heads)

    @classmethod
    def from_config(cls, config) -> Synthesizer:
        m, a = config.model, config.audio
        return cls(m.synth, m.llm.width, a.n_mels, a.block_ms // a.hop_ms, m.dtype,
                   layers.part_remat(m, "synth"))

    @property
    def spec(self) -> LlmSpec:
        """The decoder's shape, in the LLM's terms (no LoRA, no cross-attention)."""
        c = self.synth_cfg
        width, num_heads = int(c.width), int(c.num_heads)
        return LlmSpec(int(c.num_layers), width, num_heads,
                       int(c.get("num_kv_heads", num_heads)), int(c.get("mlp_dim", 3 * width)),
                       float(c.get("rope_theta", 1e4)), max_len=0, cross_attention_every=1,
                       lora=LoraSpec())

    def setup(self):
        spec, dtype = self.spec, DTYPES[self.dtype]
        self.in_norm = layers.RMSNorm(dtype)
        # Kernel N x D(LLM) x D(synth): the LLM width is left unsharded, the output follows
        # `embed`.
        self.in_proj = layers.Dense(spec.width, (None, None, "embed"), axis=(-2, -1),
                                    dtype=dtype)
        self.layers = layers.stack_layers(_BlockLayer, spec.num_layers, self.remat,
                                          num_broadcast_args=2)(spec, dtype)
        self.final_norm = layers.RMSNorm(dtype)
        self.out_proj = layers.Dense(
            (self.frames_per_block, self.n_mels), ("embed", None, "mel"), dtype=dtype,
            kernel_init=nn.initializers.variance_scaling(OUT_INIT_SCALE, "fan_in", "normal"))
        # Added in float32: bfloat16 resolves only ~0.06 at the -13.8 floor.
        self.out_bias = self.param(
            "out_bias", nn.with_logical_partitioning(nn.initializers.constant(SILENCE_LOG_MEL),
                                                     (None, "mel")),
            (self.frames_per_block, self.n_mels), jnp.float32)

    def _decode(self, h_BxKxNxD, positions_BxK, mask_BxKxC, cached=None):
        """`cached`: the Y layers' keys/values a step reads (None in the parallel form).
        Returns the mel and the chunk's new keys/values (YxBxKxGxQ, None in parallel)."""
        x_BxKxD = self.in_proj(self.in_norm(h_BxKxNxD.astype(DTYPES[self.dtype])))
        x_BxKxD = layers.constrain(x_BxKxD, ("batch", "blocks", "embed"))
        x_BxKxD, new = self.layers(x_BxKxD, cached, positions_BxK, mask_BxKxC)
        mel_BxKxFxM = self.out_proj(self.final_norm(x_BxKxD)).astype(jnp.float32) + self.out_bias
        return (layers.constrain(mel_BxKxFxM, ("batch", "blocks", None, "mel")),
                None if cached is None else new)

    def __call__(self, h_BxKxNxD: jax.Array) -> jax.Array:
        """Parallel form over K blocks, causal over blocks (C = K keys): float32
        mel_BxKxFxM."""
        b, k = h_BxKxNxD.shape[:2]
        positions_BxK = jnp.broadcast_to(jnp.arange(k), (b, k))
        mel_BxKxFxM, _ = self._decode(h_BxKxNxD, positions_BxK, causal_mask(k)[None])
        return mel_BxKxFxM

    def step(self, h_BxNxD: jax.Array, cache: Cache, attend_slots: int | None = None
             ) -> tuple[jax.Array, Cache]:
        """Streaming form: one block -> (float32 mel_BxFxM, cache); equals `__call__` while
        the stream fits the C slots, and slides after (block k reads blocks k - C .. k).
        `attend_slots` (static): read only that prefix (at least the largest row index)."""
        b = h_BxNxD.shape[0]
        index_B = cache["index"]
        layout = RingLayout(0, cache["k"].shape[2])
        read = layout.capacity if attend_slots is None else min(layout.capacity,
                                                                 int(attend_slots))
        key_pos_BxS = layout.slot_positions(index_B, read)
        mask_Bx1xC = jnp.concatenate([layout.visible(key_pos_BxS, index_B),
                                      jnp.ones((b, 1, 1), bool)], axis=-1)
        positions_Bx1 = index_B[:, None]
        mel_Bx1xFxM, new = self._decode(h_BxNxD[:, None], positions_Bx1, mask_Bx1xC,
                                        {n: cache[n][:, :, :read] for n in ("k", "v")})
        slots_Bx1 = layout.slots(positions_Bx1)
        return mel_Bx1xFxM[:, 0], {"index": index_B + 1,
                                   **{n: write_rows(cache[n], new[n], slots_Bx1)
                                      for n in ("k", "v")}}

    def init_cache(self, batch: int, max_blocks: int) -> Cache:
        """An empty cache for C = `max_blocks` blocks (needs no parameters)."""
        spec = self.spec
        kv_shape = (spec.num_layers, batch, max_blocks, spec.num_kv_heads, spec.head_dim)
        dtype = DTYPES[self.dtype]
        # Separate buffers for k and v: a donated carry must not hold one buffer twice.
        return {"index": jnp.zeros((batch,), jnp.int32), "k": jnp.zeros(kv_shape, dtype),
                "v": jnp.zeros(kv_shape, dtype)}

    @staticmethod
    def cache_axes() -> dict[str, P]:
        """Logical partition specs of the `init_cache` entries."""
        kv = P("layers", "batch", "blocks", "heads", "kv")
        return {"index": P("batch"), "k": kv, "v": kv}

    def dummy_inputs(self, batch: int = 1, blocks: int = 1,
                     tokens_per_block: int = 1) -> jax.Array:
        """Zero hidden states of the right shape for `init`."""
        return jnp.zeros((batch, blocks, tokens_per_block, self.llm_width))
