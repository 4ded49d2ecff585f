"""Grouped-query attention with rotary positions, in parallel, cached and cross forms.

Every form takes the boolean mask over the keys it attends to, so one code path serves a
whole-sequence forward (causal or block-causal mask) and a streaming step. A step reads the
cached keys and values as they were (read only) plus its own, and returns its own new keys
and values: the caller writes them into the cache once, after the whole layer stack
(`omni_jax.models.kv_cache`), so a cache is never copied through a layer scan.

Shape letters are the package legend (`omni_jax.models`). Here T is the query positions
(the whole sequence in the parallel form, a chunk of L in a streaming step), C the key
positions a query reads (C = T in the parallel form, cached slots + T otherwise), U the
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


def attend(q_BxTxHxQ: jax.Array, k_BxCxGxQ, v_BxCxGxQ, mask_BxTxC: jax.Array,
           q_prompt_BxTxHxQ: jax.Array | None = None, num_prompt: int = 0) -> jax.Array:
    """Softmax attention of H query heads over G shared key/value heads, without repeating
    keys. `mask_BxTxC` may have batch size 1. Logits and softmax run in float32; a query
    that sees no key gets zeros (not the mean of all values).

    Keys and values may come in parts (tuples, concatenated along C by the mask's order):
    a step's cache and its own new entries are read where they lie, never concatenated
    (a copy of the whole cache per layer). The first `num_prompt` keys are read by
    `q_prompt_BxTxHxQ` instead (the queries rotated for the moved prompt,
    `omni_jax.models.kv_cache`)."""
    k_parts = k_BxCxGxQ if isinstance(k_BxCxGxQ, (tuple, list)) else (k_BxCxGxQ,)
    v_parts = v_BxCxGxQ if isinstance(v_BxCxGxQ, (tuple, list)) else (v_BxCxGxQ,)
    b, t, h, head_dim = q_BxTxHxQ.shape
    g = k_parts[0].shape[2]

    def logits(q, k_BxCxGxQ):
        q_BxTxGxRxQ = q.reshape(b, t, g, h // g, head_dim)
        return jnp.einsum("btgrq,bcgq->bgrtc", q_BxTxGxRxQ, k_BxCxGxQ,
                          preferred_element_type=jnp.float32)

    part_logits = [logits(q_BxTxHxQ, k) for k in k_parts]
    if num_prompt:  # the prompt's columns (in the first part) from the rotated queries
        part_logits[0] = jnp.concatenate(
            [logits(q_prompt_BxTxHxQ, k_parts[0][:, :num_prompt]),
             part_logits[0][..., num_prompt:]], axis=-1)
    logits_BxGxRxTxC = jnp.concatenate(part_logits, axis=-1) * head_dim ** -0.5
    mask_Bx1x1xTxC = mask_BxTxC[:, None, None]
    logits_BxGxRxTxC = jnp.where(mask_Bx1x1xTxC, logits_BxGxRxTxC,
                                 jnp.finfo(jnp.float32).min)
    probs_BxGxRxTxC = jnp.where(mask_Bx1x1xTxC, jax.nn.softmax(logits_BxGxRxTxC), 0.0)
    out_BxTxGxRxQ, start = 0.0, 0
    for v in v_parts:
        probs = probs_BxGxRxTxC[..., start:start + v.shape[1]].astype(v.dtype)
        out_BxTxGxRxQ = out_BxTxGxRxQ + jnp.einsum("bgrtc,bcgq->btgrq", probs, v)
        start += v.shape[1]
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
                 mask_BxTxC: jax.Array | None, cached: KVCache | None = None,
                 prompt_shift_BxT: jax.Array | None = None, num_prompt: int = 0
                 ) -> tuple[jax.Array, KVCache]:
        """Parallel form (no `cached`): attends within `x` under `mask_BxTxC` (C = T; None =
        causal, run by `implementation`).
        Cached form: `cached` holds S earlier keys/values (read only: the caller writes the
        new ones once, after every layer); the T new positions read [cached; themselves]
        under `mask_BxTxC` (C = S + T).
        With `num_prompt` > 0 the first `num_prompt` keys are read by the queries rotated
        at positions - `prompt_shift_BxT` (the moved prompt of a sliding window).
        Returns the output and this chunk's rotated keys and values {'k', 'v': BxTxGxQ}."""
        head_axes = ("embed", "heads", "kv")
        shape_q, shape_kv = (self.num_heads, self.head_dim), (self.num_kv_heads, self.head_dim)
        q_raw_BxTxHxQ = self._dense("q", shape_q, head_axes)(x_BxTxD)
        q_BxTxHxQ = rope(q_raw_BxTxHxQ, positions_BxT, self.rope_theta)
        k_BxTxGxQ = rope(self._dense("k", shape_kv, head_axes)(x_BxTxD), positions_BxT,
                         self.rope_theta)
        v_BxTxGxQ = self._dense("v", shape_kv, head_axes)(x_BxTxD)
        q_BxTxHxQ, k_BxTxGxQ, v_BxTxGxQ = map(_constrain_heads,
                                              (q_BxTxHxQ, k_BxTxGxQ, v_BxTxGxQ))
        new = {"k": k_BxTxGxQ, "v": v_BxTxGxQ}
        if mask_BxTxC is None and cached is None and not num_prompt:
            out_BxTxHxQ = attend_causal(q_BxTxHxQ, k_BxTxGxQ, v_BxTxGxQ, self.implementation)
        else:
            k_BxCxGxQ, v_BxCxGxQ = k_BxTxGxQ, v_BxTxGxQ
            if cached is not None:  # read in place: [cached; new] as two parts
                k_BxCxGxQ = (cached["k"], k_BxTxGxQ.astype(cached["k"].dtype))
                v_BxCxGxQ = (cached["v"], v_BxTxGxQ.astype(cached["v"].dtype))
            if mask_BxTxC is None:
                if cached is not None:
                    raise ValueError("the cached form of SelfAttention needs a mask")
                mask_BxTxC = causal_mask(x_BxTxD.shape[1])[None]
            q_prompt_BxTxHxQ = None
            if num_prompt:
                q_prompt_BxTxHxQ = _constrain_heads(rope(
                    q_raw_BxTxHxQ, positions_BxT - prompt_shift_BxT, self.rope_theta))
            out_BxTxHxQ = attend(q_BxTxHxQ, k_BxCxGxQ, v_BxCxGxQ, mask_BxTxC,
                                 q_prompt_BxTxHxQ, num_prompt)
        y_BxTxD = self._dense("o", (x_BxTxD.shape[-1],), ("heads", "kv", "embed"), 2)(out_BxTxHxQ)
        return y_BxTxD, new


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
                 mask_BxTxU: jax.Array, cached: KVCache | None = None
                 ) -> tuple[jax.Array, KVCache | None]:
        """Parallel form (no `cached`): `memory_BxUxE` is the whole memory. Cached form:
        `cached` holds earlier projected memory keys and values (BxUxGxQ, read only);
        `memory_BxUxE` holds only the new entries (or is None) and is projected once; the
        queries read [cached; new] under `mask_BxTxU`. Returns the output and the new
        entries' keys and values (None without new entries), for the caller to write."""
        head_axes = ("embed", "heads", "kv")
        shape_kv = (self.num_kv_heads, self.head_dim)
        q_BxTxHxQ = _constrain_heads(
            self._dense("q", (self.num_heads, self.head_dim), head_axes)(x_BxTxD))
        new = None
        if memory_BxUxE is not None:
            new = {name: _constrain_heads(self._dense(name, shape_kv, head_axes)(memory_BxUxE))
                   for name in ("k", "v")}
        if cached is None:
            k_BxUxGxQ, v_BxUxGxQ = new["k"], new["v"]
        elif new is None:
            k_BxUxGxQ, v_BxUxGxQ = cached["k"], cached["v"]
        else:
            k_BxUxGxQ, v_BxUxGxQ = ((cached[n], new[n].astype(cached[n].dtype))
                                    for n in ("k", "v"))
        out_BxTxHxQ = attend(q_BxTxHxQ, k_BxUxGxQ, v_BxUxGxQ, mask_BxTxU)
        y_BxTxD = self._dense("o", (x_BxTxD.shape[-1],), ("heads", "kv", "embed"), 2)(out_BxTxHxQ)
        return y_BxTxD, new
