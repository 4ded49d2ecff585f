"""Block-causal transformer layer for the streaming encoder, with a fixed-size KV cache.

A frame may attend to every frame of its own block and of the `window_blocks - 1` blocks
before it. The same layer runs both forms:
- parallel (`cache=None`): the whole sequence at once, positions from 0, a block-causal
  sliding-window mask;
- streaming (`cache` given): a chunk of whole blocks starting at each row's absolute frame
  `pos`; it reads the ring buffer of `window_blocks * frames_per_block` slots as it was
  and its own frames, and the stack writes its keys/values once after every layer
  (`write_chunk`), so the state never grows and a stream can run forever. Slot s holds the
  latest frame p < pos with p % slots == s; frames out of the window are overwritten.

Positions enter through RoPE (absolute positions, so only relative offsets matter).
Cache per layer: {"k", "v": BxCxHxQ, compute dtype} over C = window_blocks * frames_per_block
slots (letters: `omni_jax.models`; L is the frames of the chunk a call appends).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from omni_jax.models import layers
from omni_jax.models.kv_cache import RingLayout, write_rows


def rope(x_BxLxHxQ: jax.Array, pos_BxL: jax.Array, theta: float = 10000.0) -> jax.Array:
    """Rotary position embedding (rotate-half form) at integer positions `pos_BxL`."""
    half = x_BxLxHxQ.shape[-1] // 2
    freq_J = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angle_BxLxJ = pos_BxL.astype(jnp.float32)[:, :, None] * freq_J
    sin_BxLx1xJ, cos_BxLx1xJ = jnp.sin(angle_BxLxJ)[:, :, None], jnp.cos(angle_BxLxJ)[:, :, None]
    x1_BxLxHxJ, x2_BxLxHxJ = jnp.split(x_BxLxHxQ.astype(jnp.float32), 2, axis=-1)
    rotated_BxLxHxQ = jnp.concatenate([x1_BxLxHxJ * cos_BxLx1xJ - x2_BxLxHxJ * sin_BxLx1xJ,
                                       x2_BxLxHxJ * cos_BxLx1xJ + x1_BxLxHxJ * sin_BxLx1xJ],
                                      axis=-1)
    return rotated_BxLxHxQ.astype(x_BxLxHxQ.dtype)


class TransformerLayer(nn.Module):
    """Pre-norm residual self-attention + GELU MLP over 25 Hz frames."""

    width: int
    num_heads: int
    frames_per_block: int
    window_blocks: int
    mlp_ratio: int = 4
    dtype: jnp.dtype = jnp.float32

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads

    @property
    def slots(self) -> int:
        return self.window_blocks * self.frames_per_block

    def init_state(self, batch: int) -> dict[str, jax.Array]:
        shape = (batch, self.slots, self.num_heads, self.head_dim)
        return {"k": jnp.zeros(shape, self.dtype), "v": jnp.zeros(shape, self.dtype)}

    @nn.compact
    def __call__(self, h_BxLxD: jax.Array, cached: dict[str, jax.Array] | None,
                 pos_B: jax.Array):
        """A chunk of L frames starting at each row's frame `pos_B`. `cached` (None in the
        parallel form) is read only; returns (h, the chunk's keys/values to write, or
        None in the parallel form)."""
        length = h_BxLxD.shape[1]
        qkv_axes = ("embed", "heads", "kv")
        x_BxLxD = layers.RMSNorm(self.dtype, name="attn_norm")(h_BxLxD)
        pos_BxL = pos_B[:, None] + jnp.arange(length)
        q_BxLxHxQ, k_BxLxHxQ, v_BxLxHxQ = (
            layers.Dense((self.num_heads, self.head_dim), qkv_axes, dtype=self.dtype,
                         name=name)(x_BxLxD) for name in ("query", "key", "value"))
        q_BxLxHxQ, k_BxLxHxQ = rope(q_BxLxHxQ, pos_BxL), rope(k_BxLxHxQ, pos_BxL)

        new = None
        if cached is None:  # the parallel form: the keys are the chunk itself, C = L
            keys_BxCxHxQ, values_BxCxHxQ, key_pos_BxC = k_BxLxHxQ, v_BxLxHxQ, pos_BxL
        else:
            if length > self.slots:
                raise ValueError(f"a chunk of {length} frames exceeds the {self.slots}-slot "
                                 "cache; stream fewer blocks per call")
            new = {"k": k_BxLxHxQ, "v": v_BxLxHxQ}
            keys_BxCxHxQ = jnp.concatenate([cached["k"], k_BxLxHxQ], axis=1)
            values_BxCxHxQ = jnp.concatenate([cached["v"], v_BxLxHxQ], axis=1)
            key_pos_BxC = jnp.concatenate(
                [RingLayout(0, self.slots).slot_positions(pos_B), pos_BxL], axis=1)

        q_block_BxL = pos_BxL // self.frames_per_block
        k_block_BxC = key_pos_BxC // self.frames_per_block
        mask_BxLxC = ((key_pos_BxC >= 0)[:, None, :]
                      & (k_block_BxC[:, None, :] <= q_block_BxL[:, :, None])
                      & (k_block_BxC[:, None, :] > q_block_BxL[:, :, None] - self.window_blocks))
        mask_BxHxLxC = mask_BxLxC[:, None]
        logits_BxHxLxC = jnp.einsum("blhq,bchq->bhlc", q_BxLxHxQ, keys_BxCxHxQ,
                                    preferred_element_type=jnp.float32)
        logits_BxHxLxC = jnp.where(mask_BxHxLxC, logits_BxHxLxC * self.head_dim ** -0.5,
                                   jnp.finfo(jnp.float32).min)
        probs_BxHxLxC = jax.nn.softmax(logits_BxHxLxC, axis=-1).astype(self.dtype)
        att_BxLxHxQ = jnp.einsum("bhlc,bchq->blhq", probs_BxHxLxC, values_BxCxHxQ)
        h_BxLxD = h_BxLxD + layers.Dense(self.width, ("heads", "kv", "embed"), axis=(-2, -1),
                                         dtype=self.dtype, name="out")(att_BxLxHxQ)
        h_BxLxD = layers.constrain(h_BxLxD, ("batch", "length", "embed"))

        x_BxLxD = layers.RMSNorm(self.dtype, name="mlp_norm")(h_BxLxD)
        x_BxLxI = nn.gelu(layers.Dense(self.mlp_ratio * self.width, ("embed", "mlp"),
                                       dtype=self.dtype, name="mlp_in")(x_BxLxD))
        h_BxLxD = h_BxLxD + layers.Dense(self.width, ("mlp", "embed"), dtype=self.dtype,
                                         name="mlp_out")(x_BxLxI)
        return layers.constrain(h_BxLxD, ("batch", "length", "embed")), new


def write_chunk(cache: dict[str, jax.Array], new: dict[str, jax.Array],
                pos_B: jax.Array) -> dict[str, jax.Array]:
    """Writes the stack's new keys/values (YxBxLxHxQ) at each row's ring slots."""
    layout = RingLayout(0, cache["k"].shape[2])
    slots_BxL = layout.slots(pos_B[:, None] + jnp.arange(new["k"].shape[2]))
    return {n: write_rows(cache[n], new[n], slots_BxL) for n in ("k", "v")}
