"""The Llama-style decoder LLM of the duplex model, in parallel and streaming form.

Inputs are embeddings, not token ids: the caller interleaves audio embeddings with
`embed(tokens)`. Layers are pre-RMSNorm blocks of grouped-query self-attention with RoPE and
a SwiGLU MLP, followed by a final RMSNorm and an untied output projection. Besides the
logits, a call returns the residual stream after layer `hidden_layer` (the synthesizer's
input), selected inside the layer scan so that no stack of all layers is kept (and no
second carry at all when it is the last layer's output). Both are returned only at the
positions `output_index` names (the duplex model's token positions: the head's V-wide
matmul and its float32 logits are never built where no label is).

Fusions (`model.fusion`; `FUSIONS` owns the allowed values):
  interleave       a plain decoder; the caller builds [env emb, asst emb, tokens] per block.
  cross_attention  layers e-1, 2e-1, ... (e = `cross_attention_every`) add a gated
                   cross-attention sublayer (Flamingo: tanh gate initialised at 0) reading a
                   memory of U entries of width E = `memory_dim` (in the duplex model: two
                   connector outputs per block, at the LLM width).
Layers are stacked with `layers.stack_layers` in groups of e layers (e = 1 for interleave),
so parameters carry a leading `layers` axis of length num_layers / e; each group is
rematerialised with the named policy `remat`.

`step` appends a chunk of L positions (and optionally new memory entries) to a fixed-size
cache and equals `__call__` with a causal mask. The cache is a plain dict (`init_cache`);
Y = num_layers, C = cache slots (`max_len`), U = memory slots (`max_memory`):
  index         int32 []         positions written so far
  k, v          YxBxCxGxQ        self-attention keys/values of every layer (compute dtype)
  memory_index  int32 []         memory entries written so far      (cross_attention only)
  memory_k, _v  (Y/e)xBxUxGxQ    projected memory of the Y / e cross-attention layers
`cache_axes` gives its logical partition specs for sharding. Shape letters: `omni_jax.models`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from omni_jax.models import layers
from omni_jax.models.attention import (CrossAttention, SelfAttention, cached_mask,
                                       resolve_implementation)
from omni_jax.models.layers import DTYPES, REMAT_POLICIES
from omni_jax.models.lora import LoraDense, LoraSpec

Cache = dict[str, jax.Array]
FUSIONS = ("interleave", "cross_attention")  # the allowed values of model.fusion
NORM_EPS = 1e-5
_RESIDUAL_AXES = ("batch", "length", "embed")


@dataclasses.dataclass(frozen=True)
class LlmSpec:
    """The hashable shape of the decoder, read from `config.model.llm`."""

    num_layers: int
    width: int
    num_heads: int
    num_kv_heads: int
    mlp_dim: int
    rope_theta: float
    max_len: int
    cross_attention_every: int
    lora: LoraSpec
    qkv_bias: bool = False
    attention: str = "auto"  # the parallel self-attention (attention.ATTENTION_IMPLEMENTATIONS)

    @classmethod
    def from_config(cls, llm_cfg) -> LlmSpec:
        return cls(int(llm_cfg.num_layers), int(llm_cfg.width), int(llm_cfg.num_heads),
                   int(llm_cfg.num_kv_heads), int(llm_cfg.mlp_dim), float(llm_cfg.rope_theta),
                   int(llm_cfg.max_len), int(llm_cfg.cross_attention_every),
                   LoraSpec.from_config(llm_cfg), bool(llm_cfg.get("qkv_bias", False)),
                   str(llm_cfg.get("attention", "auto")))

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads


def _rms_norm(dtype, name: str) -> layers.RMSNorm:
    return layers.RMSNorm(dtype, eps=NORM_EPS, name=name)


class Mlp(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)); each projection may carry LoRA."""

    mlp_dim: int
    dtype: jnp.dtype
    lora: LoraSpec

    def _dense(self, name: str, features: int, axes) -> LoraDense:
        return LoraDense((features,), axes, rank=self.lora.rank_for(name),
                         alpha=self.lora.alpha, dtype=self.dtype, name=name)

    @nn.compact
    def __call__(self, x_BxTxD: jax.Array) -> jax.Array:
        gate_BxTxI = self._dense("gate", self.mlp_dim, ("embed", "mlp"))(x_BxTxD)
        up_BxTxI = self._dense("up", self.mlp_dim, ("embed", "mlp"))(x_BxTxD)
        h_BxTxI = layers.constrain(nn.silu(gate_BxTxI) * up_BxTxI, ("batch", "length", "mlp"))
        return self._dense("down", x_BxTxD.shape[-1], ("mlp", "embed"))(h_BxTxI)


class DecoderLayer(nn.Module):
    """x + attn(norm x) [+ tanh(gate) * cross_attn(norm x)] + mlp(norm x), residual in turn.

    T positions (a chunk of L in the streaming form) read C keys (C = T in the parallel
    form, the cache slots otherwise) and U memory entries."""

    spec: LlmSpec
    cross: bool
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x_BxTxD, positions_BxT, mask_BxTxC, memory_BxUxE, memory_mask_BxTxU,
                 cache, index, memory_cache, memory_index):
        s = self.spec
        y_BxTxD, cache = SelfAttention(s.num_heads, s.num_kv_heads, s.head_dim, s.rope_theta,
                                       self.dtype, s.lora, s.qkv_bias,
                                       resolve_implementation(s.attention, self.dtype),
                                       name="attn")(
            _rms_norm(self.dtype, "attn_norm")(x_BxTxD), positions_BxT, mask_BxTxC, cache, index)
        x_BxTxD = x_BxTxD + y_BxTxD
        if self.cross:
            y_BxTxD, memory_cache = CrossAttention(s.num_heads, s.num_kv_heads, s.head_dim,
                                                   self.dtype, name="cross_attn")(
                _rms_norm(self.dtype, "cross_norm")(x_BxTxD), memory_BxUxE, memory_mask_BxTxU,
                memory_cache, memory_index)
            gate = layers.param(self, "cross_gate", nn.initializers.zeros, (), ())
            x_BxTxD = x_BxTxD + jnp.tanh(gate).astype(self.dtype) * y_BxTxD
        mlp = Mlp(s.mlp_dim, self.dtype, s.lora, name="mlp")
        x_BxTxD = x_BxTxD + mlp(_rms_norm(self.dtype, "mlp_norm")(x_BxTxD))
        return layers.constrain(x_BxTxD, _RESIDUAL_AXES), cache, memory_cache


class DecoderGroup(nn.Module):
    """One scan iteration: `size` consecutive layers, the last one cross-attending if
    `cross`. Carries (x, hidden): hidden takes x after global layer `hidden_layer`; hidden
    is None (no carry) when that layer is the last one (its output is x itself)."""

    spec: LlmSpec
    size: int
    cross: bool
    hidden_layer: int
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, carry, scanned, positions_BxT, mask_BxTxC, memory_BxUxE,
                 memory_mask_BxTxU, index, memory_index):
        x_BxTxD, hidden_BxTxD = carry
        group, cache = scanned  # cache: None, or this group's slices of the LLM cache
        keys, values, memory_cache = [], [], None
        for j in range(self.size):
            has_cross = self.cross and j == self.size - 1
            layer_cache = None if cache is None else {"k": cache["k"][j], "v": cache["v"][j]}
            if has_cross and cache is not None:
                memory_cache = {"k": cache["memory_k"], "v": cache["memory_v"]}
            x_BxTxD, layer_cache, memory_cache = DecoderLayer(
                self.spec, has_cross, self.dtype, name=f"layer_{j}")(
                x_BxTxD, positions_BxT, mask_BxTxC, memory_BxUxE, memory_mask_BxTxU,
                layer_cache, index, memory_cache, memory_index)
            if hidden_BxTxD is not None:
                hidden_BxTxD = jnp.where(group * self.size + j == self.hidden_layer, x_BxTxD,
                                         hidden_BxTxD)
            if cache is not None:
                keys.append(layer_cache["k"])
                values.append(layer_cache["v"])
        new_cache = None
        if cache is not None:
            new_cache = {"k": jnp.stack(keys), "v": jnp.stack(values)}
            if self.cross:
                new_cache.update(memory_k=memory_cache["k"], memory_v=memory_cache["v"])
        return (x_BxTxD, hidden_BxTxD), new_cache


class LLM(nn.Module):
    """Decoder LLM over embeddings. `llm_cfg` is `config.model.llm`; `memory_dim` is the
    width E of the memory entries (cross_attention only); `hidden_layer` (may be negative)
    picks the returned hidden state, usually `config.model.synth.llm_layer`."""

    llm_cfg: Any
    vocab_size: int
    dtype: str = "float32"
    remat: str = "none"
    fusion: str = "interleave"
    memory_dim: int | None = None
    hidden_layer: int = -1

    def __post_init__(self):
        super().__post_init__()
        spec = self.spec
        layers.check_choices(fusion=(self.fusion, FUSIONS), dtype=(self.dtype, DTYPES),
                             remat=(self.remat, REMAT_POLICIES))
        layers.check_heads("llm", spec.width, spec.num_heads, spec.num_kv_heads)
        resolve_implementation(spec.attention, DTYPES[self.dtype])  # names a bad value
        if not -spec.num_layers <= self.hidden_layer < spec.num_layers:
            raise ValueError(f"hidden_layer {self.hidden_layer} is past {spec.num_layers} layers")
        if self.cross and spec.num_layers % spec.cross_attention_every:
            raise ValueError(f"model.llm.cross_attention_every: {spec.cross_attention_every} "
                             f"does not divide num_layers {spec.num_layers}")
        if self.cross and self.memory_dim is None:
            raise ValueError("the cross_attention fusion needs memory_dim")

    @classmethod
    def from_config(cls, config) -> LLM:
        """The duplex model's LLM. Its memory entries (cross_attention) are connector
        outputs, so the memory width is the LLM width."""
        m = config.model
        return cls(m.llm, config.data.tokenizer.vocab_size, m.dtype,
                   layers.part_remat(m, "llm"), m.fusion, memory_dim=m.llm.width,
                   hidden_layer=m.synth.llm_layer)

    @property
    def spec(self) -> LlmSpec:
        return LlmSpec.from_config(self.llm_cfg)

    @property
    def cross(self) -> bool:
        return self.fusion == "cross_attention"

    @property
    def group_size(self) -> int:
        return self.spec.cross_attention_every if self.cross else 1

    @property
    def num_groups(self) -> int:
        return self.spec.num_layers // self.group_size

    def setup(self):
        spec, dtype = self.spec, DTYPES[self.dtype]
        self.embedding = nn.Embed(self.vocab_size, spec.width, dtype=dtype,
                                  embedding_init=nn.with_logical_partitioning(
                                      nn.linear.default_embed_init, ("vocab", "embed")))
        # Broadcast to every group: positions, mask, memory, memory mask, index, memory index.
        self.layers = layers.stack_layers(DecoderGroup, self.num_groups, self.remat,
                                          num_broadcast_args=6)(
            spec, self.group_size, self.cross, self.hidden_layer % spec.num_layers, dtype)
        self.final_norm = _rms_norm(dtype, "final_norm")
        self.head = layers.Dense(self.vocab_size, ("embed", "vocab"), dtype=dtype)

    def embed(self, tokens_BxT: jax.Array) -> jax.Array:
        return layers.constrain(self.embedding(tokens_BxT), _RESIDUAL_AXES)

    @property
    def _taps_last_layer(self) -> bool:
        return self.hidden_layer % self.spec.num_layers == self.spec.num_layers - 1

    def logits(self, x_BxTxD: jax.Array) -> jax.Array:
        """Float32 next-token logits of residual-stream states."""
        logits_BxTxV = self.head(self.final_norm(x_BxTxD)).astype(jnp.float32)
        return layers.constrain(logits_BxTxV, ("batch", "length", "vocab"))

    def _decode(self, x_BxTxD, positions_BxT, mask_BxTxC, memory_BxUxE, memory_mask_BxTxU,
                cache=None, output_index=None):
        x_BxTxD = layers.constrain(x_BxTxD.astype(DTYPES[self.dtype]), _RESIDUAL_AXES)
        scanned_cache, index, memory_index = None, None, None
        if cache is not None:
            # Layer-major YxBx... -> (Y/e)xexBx... for the scan over groups.
            scanned_cache = {name: cache[name].reshape(self.num_groups, self.group_size,
                                                       *cache[name].shape[1:])
                             for name in ("k", "v")}
            index = cache["index"]
            if self.cross:
                scanned_cache.update(memory_k=cache["memory_k"], memory_v=cache["memory_v"])
                memory_index = cache["memory_index"]
        tap_BxTxD = None if self._taps_last_layer else jnp.zeros_like(x_BxTxD)
        (x_BxTxD, tap_BxTxD), layer_cache = self.layers(
            (x_BxTxD, tap_BxTxD), (jnp.arange(self.num_groups), scanned_cache),
            positions_BxT, mask_BxTxC, memory_BxUxE, memory_mask_BxTxU, index, memory_index)
        hidden_BxTxD = x_BxTxD if tap_BxTxD is None else tap_BxTxD
        if output_index is not None:  # T -> T' = len(output_index) positions
            x_BxTxD, hidden_BxTxD = x_BxTxD[:, output_index], hidden_BxTxD[:, output_index]
        return self.logits(x_BxTxD), hidden_BxTxD, layer_cache

    def __call__(self, x_BxTxD: jax.Array, positions_BxT: jax.Array,
                 mask_BxTxT: jax.Array | None = None,
                 memory_BxUxE: jax.Array | None = None,
                 memory_mask_BxTxU: jax.Array | None = None,
                 output_index=None) -> tuple[jax.Array, jax.Array]:
        """Parallel form. Masks are boolean, batch size B or 1; no self mask = causal (run by
        `model.llm.attention`, fused where the platform has it). Returns float32 logits and
        the hidden state after layer `hidden_layer` (compute dtype), at every position or
        at the T' positions of `output_index` (a static integer array)."""
        if (memory_BxUxE is not None, memory_mask_BxTxU is not None) != (self.cross,) * 2:
            raise ValueError(f"fusion {self.fusion!r}: memory and memory_mask must be "
                             f"{'given' if self.cross else 'None'}")
        if self.is_initializing():  # `embed` is a separate method: create its table too
            self.embed(jnp.zeros((1, 1), jnp.int32))
        logits_BxTxV, hidden_BxTxD, _ = self._decode(x_BxTxD, positions_BxT, mask_BxTxT,
                                                     memory_BxUxE, memory_mask_BxTxU,
                                                     output_index=output_index)
        return logits_BxTxV, hidden_BxTxD

    def step(self, x_BxLxD: jax.Array, positions_BxL: jax.Array, cache: Cache,
             new_memory_BxUxE: jax.Array | None = None, output_index=None
             ) -> tuple[jax.Array, jax.Array, Cache]:
        """Streaming form: appends L positions (after U new memory entries, if given) and
        attends causally to everything cached. Equals `__call__` with a causal self mask
        and a memory mask that shows each position the memory appended up to its chunk;
        `output_index` (static) keeps the outputs of some of the L positions."""
        length, num_slots = x_BxLxD.shape[1], cache["k"].shape[2]
        mask_1xLxC = cached_mask(cache["index"], length, num_slots)
        memory_mask_1x1xU, memory_count = None, None
        if self.cross:
            num_new = 0 if new_memory_BxUxE is None else new_memory_BxUxE.shape[1]
            memory_count = cache["memory_index"] + num_new
            slot_U = jnp.arange(cache["memory_k"].shape[2])
            memory_mask_1x1xU = (slot_U < memory_count)[None, None]
        elif new_memory_BxUxE is not None:
            raise ValueError("the interleave fusion takes no memory")
        logits_BxLxV, hidden_BxLxD, layer_cache = self._decode(
            x_BxLxD, positions_BxL, mask_1xLxC, new_memory_BxUxE, memory_mask_1x1xU, cache,
            output_index)
        k_YxBxCxGxQ, v_YxBxCxGxQ = (layer_cache[n].reshape(cache[n].shape) for n in ("k", "v"))
        new_cache = dict(cache, index=cache["index"] + length, k=k_YxBxCxGxQ, v=v_YxBxCxGxQ)
        if self.cross:
            new_cache.update(memory_index=memory_count, memory_k=layer_cache["memory_k"],
                             memory_v=layer_cache["memory_v"])
        return logits_BxLxV, hidden_BxLxD, new_cache

    def init_cache(self, batch: int, max_len: int | None = None,
                   max_memory: int | None = None) -> Cache:
        """An empty cache (needs no parameters): C = `max_len` positions (default
        `llm_cfg.max_len`) and, for cross_attention, U = `max_memory` memory entries
        (default `max_len`)."""
        spec, dtype = self.spec, DTYPES[self.dtype]
        max_len = max_len or spec.max_len
        kv_shape = (spec.num_layers, batch, max_len, spec.num_kv_heads, spec.head_dim)
        cache = {"index": jnp.zeros((), jnp.int32), "k": jnp.zeros(kv_shape, dtype),
                 "v": jnp.zeros(kv_shape, dtype)}
        if self.cross:
            memory_shape = (self.num_groups, batch, max_memory or max_len,
                            spec.num_kv_heads, spec.head_dim)
            cache.update(memory_index=jnp.zeros((), jnp.int32),
                         memory_k=jnp.zeros(memory_shape, dtype),
                         memory_v=jnp.zeros(memory_shape, dtype))
        return cache

    def cache_axes(self) -> dict[str, P]:
        """Logical partition specs of the `init_cache` entries (as `nn.get_partition_spec`
        gives for parameters), for `nn.logical_to_mesh_sharding`."""
        kv = P("layers", "batch", "length", "heads", "kv")
        memory = P("layers", "batch", "blocks", "heads", "kv")
        axes = {"index": P(), "k": kv, "v": kv}
        if self.cross:
            axes.update(memory_index=P(), memory_k=memory, memory_v=memory)
        return axes

    def dummy_inputs(self, batch: int = 1, length: int = 1) -> dict[str, jax.Array]:
        """Zero inputs of the right shapes for `init` (memory of `length` entries)."""
        inputs = {"x_BxTxD": jnp.zeros((batch, length, self.spec.width)),
                  "positions_BxT": jnp.zeros((batch, length), jnp.int32),
                  "mask_BxTxT": jnp.ones((1, length, length), bool)}
        if self.cross:
            inputs.update(memory_BxUxE=jnp.zeros((batch, length, self.memory_dim)),
                          memory_mask_BxTxU=jnp.ones((1, length, length), bool))
        return inputs
