"""Block-causal transformer layer for the streaming encoder, with a fixed-size KV cache.

A frame may attend to every frame of its own block and of the `window_blocks - 1` blocks
before it. The same layer runs both forms:
- parallel (`cache=None`): the whole sequence at once, positions from 0, a block-causal
  sliding-window mask;
- streaming (`cache` given): a chunk of whole blocks starting at absolute frame `pos`; its
  keys/values are written into a ring buffer of exactly `window_blocks * frames_per_block`
  slots, so the state never grows and a stream can run forever. Slot s holds the latest
  frame p < pos + L with p % slots == s; frames that fell out of the window are overwritten.

Positions enter through RoPE (absolute positions, so only relative offsets matter).
Cache per layer: {"k", "v": B x slots x heads x head_dim, compute dtype}.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from omni_jax.models import layers


def rope(x_BxLxHxK: jax.Array, pos_L: jax.Array, theta: float = 10000.0) -> jax.Array:
    """Rotary position embedding (rotate-half form) at integer positions `pos_L`."""
    half = x_BxLxHxK.shape[-1] // 2
    freq_K = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angle_LxK = pos_L.astype(jnp.float32)[:, None] * freq_K
    sin_Lx1xK, cos_Lx1xK = jnp.sin(angle_LxK)[:, None], jnp.cos(angle_LxK)[:, None]
    x1, x2 = jnp.split(x_BxLxHxK.astype(jnp.float32), 2, axis=-1)
    rotated = jnp.concatenate([x1 * cos_Lx1xK - x2 * sin_Lx1xK,
                               x2 * cos_Lx1xK + x1 * sin_Lx1xK], axis=-1)
    return rotated.astype(x_BxLxHxK.dtype)


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
    def __call__(self, h_BxLxD: jax.Array, cache: dict[str, jax.Array] | None,
                 pos: jax.Array):
        length = h_BxLxD.shape[1]
        qkv_axes = ("embed", "heads", "kv")
        x_BxLxD = layers.RMSNorm(self.dtype, name="attn_norm")(h_BxLxD)
        pos_L = pos + jnp.arange(length)
        q_BxLxHxK, k_BxLxHxK, v_BxLxHxK = (
            layers.Dense((self.num_heads, self.head_dim), qkv_axes, dtype=self.dtype,
                         name=name)(x_BxLxD) for name in ("query", "key", "value"))
        q_BxLxHxK, k_BxLxHxK = rope(q_BxLxHxK, pos_L), rope(k_BxLxHxK, pos_L)

        if cache is None:
            keys_BxSxHxK, values_BxSxHxK, key_pos_S = k_BxLxHxK, v_BxLxHxK, pos_L
        else:
            if length > self.slots:
                raise ValueError(f"a chunk of {length} frames exceeds the {self.slots}-slot "
                                 "cache; stream fewer blocks per call")
            slot_L = pos_L % self.slots
            keys_BxSxHxK = cache["k"].at[:, slot_L].set(k_BxLxHxK)
            values_BxSxHxK = cache["v"].at[:, slot_L].set(v_BxLxHxK)
            cache = {"k": keys_BxSxHxK, "v": values_BxSxHxK}
            slot_S = jnp.arange(self.slots)
            key_pos_S = slot_S + self.slots * ((pos + length - 1 - slot_S) // self.slots)

        q_block_L = pos_L // self.frames_per_block
        k_block_S = key_pos_S // self.frames_per_block
        mask_LxS = ((key_pos_S >= 0)[None, :]
                    & (k_block_S[None, :] <= q_block_L[:, None])
                    & (k_block_S[None, :] > q_block_L[:, None] - self.window_blocks))
        logits_BxHxLxS = jnp.einsum("blhk,bshk->bhls", q_BxLxHxK, keys_BxSxHxK,
                                    preferred_element_type=jnp.float32)
        logits_BxHxLxS = jnp.where(mask_LxS, logits_BxHxLxS * self.head_dim ** -0.5,
                                   jnp.finfo(jnp.float32).min)
        probs_BxHxLxS = jax.nn.softmax(logits_BxHxLxS, axis=-1).astype(self.dtype)
        att_BxLxHxK = jnp.einsum("bhls,bshk->blhk", probs_BxHxLxS, values_BxSxHxK)
        h_BxLxD = h_BxLxD + layers.Dense(self.width, ("heads", "kv", "embed"), axis=(-2, -1),
                                         dtype=self.dtype, name="out")(att_BxLxHxK)
        h_BxLxD = layers.constrain(h_BxLxD, ("batch", "length", "embed"))

        x_BxLxD = layers.RMSNorm(self.dtype, name="mlp_norm")(h_BxLxD)
        x_BxLxF = nn.gelu(layers.Dense(self.mlp_ratio * self.width, ("embed", "mlp"),
                                       dtype=self.dtype, name="mlp_in")(x_BxLxD))
        h_BxLxD = h_BxLxD + layers.Dense(self.width, ("mlp", "embed"), dtype=self.dtype,
                                         name="mlp_out")(x_BxLxF)
        return layers.constrain(h_BxLxD, ("batch", "length", "embed")), cache
