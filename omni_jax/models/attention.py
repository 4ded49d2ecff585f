"""Grouped-query attention with rotary positions, in parallel, cached and cross forms.

Every form takes the boolean mask over the keys it attends to, so one code path serves a
whole-sequence forward (causal or block-causal mask) and a streaming step (a fixed-size
key/value cache, a write index and `cached_mask`). Caches are plain arrays that the caller
threads through; their shapes never change, so a step can be `lax.scan`ned and jitted.

Shape letters are the package legend (`omni_jax.models`). Here T is the query positions
(the whole sequence in the parallel form, a chunk of L in a streaming step), C the key
positions a query reads (C = T in the parallel form, the cache slots otherwise), U the
memory entries and E the memory width (`memory_dim`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from omni_jax.models import layers
from omni_jax.models.lora import LoraDense, LoraSpec

KVCache = dict[str, jax.Array]  # {'k': BxCxGxQ, 'v': BxCxGxQ}

# The allowed values of `model.llm.attention`: how a parallel causal self-attention runs.
#   reference  `attend` below (einsums, float32 T x T logits); runs everywhere
#   xla        jax.nn.dot_product_attention's XLA implementation
#   cudnn      jax.nn.dot_product_attention on cuDNN's fused (flash) kernel: GPU, half dtypes
#   auto       cudnn on a GPU in bfloat16/float16, reference otherwise
ATTENTION_IMPLEMENTATIONS = ("auto", "reference", "xla", "cudnn")


def causal_mask(length: int) -> jax.Array:
    """TxT: position i sees positions 0..i."""
    return jnp.tril(jnp.ones((length, length), bool))


def block_causal_mask(num_blocks: int, positions_per_block: int) -> jax.Array:
    """TxT, T = num_blocks * positions_per_block: a position sees every position of its own
    block and of all earlier blocks."""
    block_T = jnp.arange(num_blocks * positions_per_block) // positions_per_block
    return block_T[:, None] >= block_T[None, :]


def cached_mask(index: jax.Array, length: int, num_slots: int) -> jax.Array:
    """1xLxC for L new positions written at cache slots index..index+L-1: they see every
    earlier slot and each other causally, i.e. slot c is visible to new position i iff
    c <= index + i. Unwritten slots are never visible."""
    slot_C = jnp.arange(num_slots)
    return (slot_C[None, :] <= index + jnp.arange(length)[:, None])[None]


def rope(x_BxTxHxQ: jax.Array, positions_BxT: jax.Array, theta: float) -> jax.Array:
    """Rotary position embedding (rotate-half layout), computed in float32. The heads axis
    may be G (keys) as well as H (queries)."""
    head_dim = x_BxTxHxQ.shape[-1]
    inv_freq_J = theta ** (-jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
    angle_BxTx1xJ = positions_BxT.astype(jnp.float32)[:, :, None, None] * inv_freq_J
    sin_BxTx1xJ, cos_BxTx1xJ = jnp.sin(angle_BxTx1xJ), jnp.cos(angle_BxTx1xJ)
    x1_BxTxHxJ, x2_BxTxHxJ = jnp.split(x_BxTxHxQ.astype(jnp.float32), 2, axis=-1)
    rotated_BxTxHxQ = jnp.concatenate([x1_BxTxHxJ * cos_BxTx1xJ - x2_BxTxHxJ * sin_BxTx1xJ,
                                       x2_BxTxHxJ * cos_BxTx1xJ + x1_BxTxHxJ * sin_BxTx1xJ],
                                      axis=-1)
    return rotated_BxTxHxQ.astype(x_BxTxHxQ.dtype)


def attend(q_BxTxHxQ: jax.Array, k_BxCxGxQ: jax.Array, v_BxCxGxQ: jax.Array,
           mask_BxTxC: jax.Array) -> jax.Array:
    """Softmax attention of H query heads over G shared key/value heads, without repeating
    keys. `mask_BxTxC` may have batch size 1. Logits and softmax run in float32; a query
    that sees no key gets zeros (not the mean of all values)."""
    b, t, h, head_dim = q_BxTxHxQ.shape
    g = k_BxCxGxQ.shape[2]
    q_BxTxGxRxQ = q_BxTxHxQ.reshape(b, t, g, h // g, head_dim)
    logits_BxGxRxTxC = jnp.einsum("btgrq,bcgq->bgrtc", q_BxTxGxRxQ, k_BxCxGxQ,
                                  preferred_element_type=jnp.float32)
    logits_BxGxRxTxC = logits_BxGxRxTxC * head_dim ** -0.5
    mask_Bx1x1xTxC = mask_BxTxC[:, None, None]
    logits_BxGxRxTxC = jnp.where(mask_Bx1x1xTxC, logits_BxGxRxTxC,
                                 jnp.finfo(jnp.float32).min)
    probs_BxGxRxTxC = jnp.where(mask_Bx1x1xTxC, jax.nn.softmax(logits_BxGxRxTxC), 0.0)
    out_BxTxGxRxQ = jnp.einsum("bgrtc,bcgq->btgrq", probs_BxGxRxTxC.astype(v_BxCxGxQ.dtype),
                               v_BxCxGxQ)
    return out_BxTxGxRxQ.reshape(b, t, h, head_dim)


def resolve_implementation(name: str, dtype) -> str:
    """`model.llm.attention` for this platform and compute dtype ("auto" resolved)."""
    if name not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"model.llm.attention: {name!r} is not one of "
                         f"{list(ATTENTION_IMPLEMENTATIONS)}")
    if name != "auto":
        return name
    half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    return "cudnn" if jax.default_backend() == "gpu" and half else "reference"


def attend_causal(q_BxTxHxQ: jax.Array, k_BxTxGxQ: jax.Array, v_BxTxGxQ: jax.Array,
                  implementation: str = "reference") -> jax.Array:
    """Causal self-attention (position i sees 0..i) by the named implementation; the fused
    ones never build the T x T logits in memory (cuDNN) and agree with `attend`."""
    if implementation == "reference":
        return attend(q_BxTxHxQ, k_BxTxGxQ, v_BxTxGxQ, causal_mask(q_BxTxHxQ.shape[1])[None])
    if implementation not in ("xla", "cudnn"):
        raise ValueError(f"unknown attention implementation {implementation!r}")
    out_BxTxHxQ = jax.nn.dot_product_attention(
        q_BxTxHxQ, k_BxTxGxQ.astype(q_BxTxHxQ.dtype), v_BxTxGxQ.astype(q_BxTxHxQ.dtype),
        is_causal=True, implementation=None if implementation == "xla" else "cudnn")
    return out_BxTxHxQ.astype(v_BxTxGxQ.dtype)


def write(cache_BxCxGxQ: jax.Array, new_BxLxGxQ: jax.Array, index: jax.Array) -> jax.Array:
    """Writes L new entries at slots index..index+L-1 (the caller keeps index + L <= C:
    under jit an overflowing write is clamped, overwriting the last slots)."""
    return jax.lax.dynamic_update_slice(cache_BxCxGxQ, new_BxLxGxQ.astype(cache_BxCxGxQ.dtype),
                                        (0, index, 0, 0))


def _constrain_heads(x_BxTxHxQ: jax.Array) -> jax.Array:
    return layers.constrain(x_BxTxHxQ, ("batch", "length", "heads", "kv"))


class SelfAttention(nn.Module):
    """Grouped-query self-attention with RoPE; projections q, k, v, o may carry LoRA."""

    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float
    dtype: jnp.dtype = jnp.float32
    lora: LoraSpec = LoraSpec()
    qkv_bias: bool = False  # biases on q, k, v (Qwen2); o never has one
    implementation: str = "reference"  # of the parallel causal form (resolved, not "auto")

    def _dense(self, name: str, features, axes, in_dims: int = 1) -> LoraDense:
        return LoraDense(features, axes, in_dims, rank=self.lora.rank_for(name),
                         alpha=self.lora.alpha, dtype=self.dtype,
                         use_bias=self.qkv_bias and name in ("q", "k", "v"), name=name)

    @nn.compact
    def __call__(self, x_BxTxD: jax.Array, positions_BxT: jax.Array,
                 mask_BxTxC: jax.Array | None, cache: KVCache | None = None,
                 index: jax.Array | None = None) -> tuple[jax.Array, KVCache | None]:
        """Parallel form (no `cache`): attends within `x` under `mask_BxTxC` (C = T; None =
        causal, run by `implementation`).
        Cached form: writes this chunk's keys and values at slot `index` of `cache` and
        attends over all C cache slots under `mask_BxTxC` (usually `cached_mask`).
        Returns the output and the updated cache (None in the parallel form)."""
        head_axes = ("embed", "heads", "kv")
        shape_q, shape_kv = (self.num_heads, self.head_dim), (self.num_kv_heads, self.head_dim)
        q_BxTxHxQ = rope(self._dense("q", shape_q, head_axes)(x_BxTxD), positions_BxT,
                         self.rope_theta)
        k_BxTxGxQ = rope(self._dense("k", shape_kv, head_axes)(x_BxTxD), positions_BxT,
                         self.rope_theta)
        v_BxTxGxQ = self._dense("v", shape_kv, head_axes)(x_BxTxD)
        q_BxTxHxQ, k_BxCxGxQ, v_BxCxGxQ = map(_constrain_heads,
                                              (q_BxTxHxQ, k_BxTxGxQ, v_BxTxGxQ))
        if cache is not None:
            k_BxCxGxQ = write(cache["k"], k_BxCxGxQ, index)
            v_BxCxGxQ = write(cache["v"], v_BxCxGxQ, index)
            cache = {"k": k_BxCxGxQ, "v": v_BxCxGxQ}
        if mask_BxTxC is None and cache is None:
            out_BxTxHxQ = attend_causal(q_BxTxHxQ, k_BxCxGxQ, v_BxCxGxQ, self.implementation)
        else:
            if mask_BxTxC is None:
                raise ValueError("the cached form of SelfAttention needs a mask")
            out_BxTxHxQ = attend(q_BxTxHxQ, k_BxCxGxQ, v_BxCxGxQ, mask_BxTxC)
        y_BxTxD = self._dense("o", (x_BxTxD.shape[-1],), ("heads", "kv", "embed"), 2)(out_BxTxHxQ)
        return y_BxTxD, cache


class CrossAttention(nn.Module):
    """Grouped-query attention from the LLM stream to a memory. No positions: the memory
    mask alone says which memory entries (encoder blocks) a position may read."""

    num_heads: int
    num_kv_heads: int
    head_dim: int
    dtype: jnp.dtype = jnp.float32

    def _dense(self, name: str, features, axes, in_dims: int = 1) -> LoraDense:
        return LoraDense(features, axes, in_dims, dtype=self.dtype, name=name)

    @nn.compact
    def __call__(self, x_BxTxD: jax.Array, memory_BxUxE: jax.Array | None,
                 mask_BxTxU: jax.Array, cache: KVCache | None = None,
                 index: jax.Array | None = None) -> tuple[jax.Array, KVCache | None]:
        """Parallel form (no `cache`): `memory_BxUxE` is the whole memory. Cached form:
        `cache` holds the projected memory keys and values (BxUxGxQ over U memory slots);
        `memory_BxUxE` holds only the new entries (or is None) and is projected once,
        written at slot `index`."""
        head_axes = ("embed", "heads", "kv")
        shape_kv = (self.num_kv_heads, self.head_dim)
        q_BxTxHxQ = _constrain_heads(
            self._dense("q", (self.num_heads, self.head_dim), head_axes)(x_BxTxD))
        if memory_BxUxE is not None:
            k_BxUxGxQ = _constrain_heads(self._dense("k", shape_kv, head_axes)(memory_BxUxE))
            v_BxUxGxQ = _constrain_heads(self._dense("v", shape_kv, head_axes)(memory_BxUxE))
        if cache is not None:
            if memory_BxUxE is not None:
                cache = {"k": write(cache["k"], k_BxUxGxQ, index),
                         "v": write(cache["v"], v_BxUxGxQ, index)}
            k_BxUxGxQ, v_BxUxGxQ = cache["k"], cache["v"]
        out_BxTxHxQ = attend(q_BxTxHxQ, k_BxUxGxQ, v_BxUxGxQ, mask_BxTxU)
        y_BxTxD = self._dense("o", (x_BxTxD.shape[-1],), ("heads", "kv", "embed"), 2)(out_BxTxHxQ)
        return y_BxTxD, cache
