"""Grouped-query attention with rotary positions, in parallel, cached and cross forms.

Every form takes the boolean mask over the keys it attends to, so one code path serves a
whole-sequence forward (causal or block-causal mask) and a streaming step (a fixed-size
key/value cache, a write index and `cached_mask`). Caches are plain arrays that the caller
threads through; their shapes never change, so a step can be `lax.scan`ned and jitted.

Shape letters: B batch, T query positions, S key positions (sequence or cache slots),
M memory entries, D model width, E memory width, H query heads, G key/value heads,
R = H / G query heads per key/value head, K head dim, J = K / 2 rotary frequencies.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from omni_jax.models.lora import LoraDense, LoraSpec

KVCache = dict[str, jax.Array]  # {'k': BxSxGxK, 'v': BxSxGxK}


def causal_mask(length: int) -> jax.Array:
    """TxT: position i sees positions 0..i."""
    return jnp.tril(jnp.ones((length, length), bool))


def block_causal_mask(num_blocks: int, positions_per_block: int) -> jax.Array:
    """TxT, T = num_blocks * positions_per_block: a position sees every position of its own
    block and of all earlier blocks."""
    block_T = jnp.arange(num_blocks * positions_per_block) // positions_per_block
    return block_T[:, None] >= block_T[None, :]


def cached_mask(index: jax.Array, length: int, num_slots: int) -> jax.Array:
    """1xLxS for L new positions written at cache slots index..index+L-1: they see every
    earlier slot and each other causally, i.e. slot s is visible to new position i iff
    s <= index + i. Unwritten slots are never visible."""
    slot_S = jnp.arange(num_slots)
    return (slot_S[None, :] <= index + jnp.arange(length)[:, None])[None]


def rope(x_BxTxHxK: jax.Array, positions_BxT: jax.Array, theta: float) -> jax.Array:
    """Rotary position embedding (rotate-half layout), computed in float32."""
    head_dim = x_BxTxHxK.shape[-1]
    inv_freq_J = theta ** (-jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
    angle_BxTx1xJ = positions_BxT.astype(jnp.float32)[:, :, None, None] * inv_freq_J
    sin, cos = jnp.sin(angle_BxTx1xJ), jnp.cos(angle_BxTx1xJ)
    x1, x2 = jnp.split(x_BxTxHxK.astype(jnp.float32), 2, axis=-1)
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return rotated.astype(x_BxTxHxK.dtype)


def attend(q_BxTxHxK: jax.Array, k_BxSxGxK: jax.Array, v_BxSxGxK: jax.Array,
           mask_BxTxS: jax.Array) -> jax.Array:
    """Softmax attention of H query heads over G shared key/value heads, without repeating
    keys. `mask_BxTxS` may have batch size 1. Logits and softmax run in float32; a query
    that sees no key gets zeros (not the mean of all values)."""
    b, t, h, head_dim = q_BxTxHxK.shape
    g = k_BxSxGxK.shape[2]
    q_BxTxGxRxK = q_BxTxHxK.reshape(b, t, g, h // g, head_dim)
    logits_BxGxRxTxS = jnp.einsum("btgrk,bsgk->bgrts", q_BxTxGxRxK, k_BxSxGxK,
                                  preferred_element_type=jnp.float32)
    logits_BxGxRxTxS = logits_BxGxRxTxS * head_dim ** -0.5
    mask_Bx1x1xTxS = mask_BxTxS[:, None, None]
    logits_BxGxRxTxS = jnp.where(mask_Bx1x1xTxS, logits_BxGxRxTxS,
                                 jnp.finfo(jnp.float32).min)
    probs_BxGxRxTxS = jnp.where(mask_Bx1x1xTxS, jax.nn.softmax(logits_BxGxRxTxS), 0.0)
    out_BxTxGxRxK = jnp.einsum("bgrts,bsgk->btgrk", probs_BxGxRxTxS.astype(v_BxSxGxK.dtype),
                               v_BxSxGxK)
    return out_BxTxGxRxK.reshape(b, t, h, head_dim)


def write(cache_BxSxGxK: jax.Array, new_BxLxGxK: jax.Array, index: jax.Array) -> jax.Array:
    """Writes L new entries at slots index..index+L-1 (the caller keeps index + L <= S:
    under jit an overflowing write is clamped, overwriting the last slots)."""
    return jax.lax.dynamic_update_slice(cache_BxSxGxK, new_BxLxGxK.astype(cache_BxSxGxK.dtype),
                                        (0, index, 0, 0))


def _constrain_heads(x_BxTxHxK: jax.Array) -> jax.Array:
    return nn.with_logical_constraint(x_BxTxHxK, ("batch", "length", "heads", "kv"))


class SelfAttention(nn.Module):
    """Grouped-query self-attention with RoPE; projections q, k, v, o may carry LoRA."""

    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float
    dtype: jnp.dtype = jnp.float32
    lora: LoraSpec = LoraSpec()
    qkv_bias: bool = False  # biases on q, k, v (Qwen2); o never has one

    def _dense(self, name: str, features, axes, in_dims: int = 1) -> LoraDense:
        return LoraDense(features, axes, in_dims, rank=self.lora.rank_for(name),
                         alpha=self.lora.alpha, dtype=self.dtype,
                         use_bias=self.qkv_bias and name in ("q", "k", "v"), name=name)

    @nn.compact
    def __call__(self, x_BxTxD: jax.Array, positions_BxT: jax.Array, mask_BxTxS: jax.Array,
                 cache: KVCache | None = None, index: jax.Array | None = None
                 ) -> tuple[jax.Array, KVCache | None]:
        """Parallel form (no `cache`): attends within `x` under `mask_BxTxS` (S = T).
        Cached form: writes this chunk's keys and values at slot `index` of `cache` and
        attends over all S cache slots under `mask_BxTxS` (usually `cached_mask`).
        Returns the output and the updated cache (None in the parallel form)."""
        head_axes = ("embed", "heads", "kv")
        shape_q, shape_kv = (self.num_heads, self.head_dim), (self.num_kv_heads, self.head_dim)
        q_BxTxHxK = rope(self._dense("q", shape_q, head_axes)(x_BxTxD), positions_BxT,
                         self.rope_theta)
        k_BxTxGxK = rope(self._dense("k", shape_kv, head_axes)(x_BxTxD), positions_BxT,
                         self.rope_theta)
        v_BxTxGxK = self._dense("v", shape_kv, head_axes)(x_BxTxD)
        q_BxTxHxK, k_BxSxGxK, v_BxSxGxK = map(_constrain_heads,
                                              (q_BxTxHxK, k_BxTxGxK, v_BxTxGxK))
        if cache is not None:
            k_BxSxGxK = write(cache["k"], k_BxSxGxK, index)
            v_BxSxGxK = write(cache["v"], v_BxSxGxK, index)
            cache = {"k": k_BxSxGxK, "v": v_BxSxGxK}
        out_BxTxHxK = attend(q_BxTxHxK, k_BxSxGxK, v_BxSxGxK, mask_BxTxS)
        y_BxTxD = self._dense("o", (x_BxTxD.shape[-1],), ("heads", "kv", "embed"), 2)(out_BxTxHxK)
        return y_BxTxD, cache


class CrossAttention(nn.Module):
    """Grouped-query attention from the LLM stream to an encoder memory. No positions: the
    memory mask alone says which memory entries (encoder blocks) a position may read."""

    num_heads: int
    num_kv_heads: int
    head_dim: int
    dtype: jnp.dtype = jnp.float32

    def _dense(self, name: str, features, axes, in_dims: int = 1) -> LoraDense:
        return LoraDense(features, axes, in_dims, dtype=self.dtype, name=name)

    @nn.compact
    def __call__(self, x_BxTxD: jax.Array, memory_BxMxE: jax.Array | None,
                 mask_BxTxM: jax.Array, cache: KVCache | None = None,
                 index: jax.Array | None = None) -> tuple[jax.Array, KVCache | None]:
        """Parallel form (no `cache`): `memory_BxMxE` is the whole memory. Cached form:
        `cache` holds the projected memory keys and values (BxMxGxK); `memory_BxMxE` holds
        only new entries (or is None) and is projected once, written at slot `index`."""
        head_axes = ("embed", "heads", "kv")
        shape_kv = (self.num_kv_heads, self.head_dim)
        q_BxTxHxK = _constrain_heads(
            self._dense("q", (self.num_heads, self.head_dim), head_axes)(x_BxTxD))
        if memory_BxMxE is not None:
            k_BxMxGxK = _constrain_heads(self._dense("k", shape_kv, head_axes)(memory_BxMxE))
            v_BxMxGxK = _constrain_heads(self._dense("v", shape_kv, head_axes)(memory_BxMxE))
        if cache is not None:
            if memory_BxMxE is not None:
                cache = {"k": write(cache["k"], k_BxMxGxK, index),
                         "v": write(cache["v"], v_BxMxGxK, index)}
            k_BxMxGxK, v_BxMxGxK = cache["k"], cache["v"]
        out_BxTxHxK = attend(q_BxTxHxK, k_BxMxGxK, v_BxMxGxK, mask_BxTxM)
        y_BxTxD = self._dense("o", (x_BxTxD.shape[-1],), ("heads", "kv", "embed"), 2)(out_BxTxHxK)
        return y_BxTxD, cache
