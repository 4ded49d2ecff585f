"""The Llama-style decoder LLM of the duplex model, in parallel and streaming form.

Inputs are embeddings, not token ids: the caller interleaves audio embeddings with
`embed(tokens)`. Layers are pre-RMSNorm blocks of grouped-query self-attention with RoPE and
a SwiGLU MLP, followed by a final RMSNorm and an untied output projection. Besides the
logits, a call returns the residual stream after layer `hidden_layer` (the synthesizer's
input), selected inside the layer scan so that no stack of all layers is kept.

Fusions (`model.fusion`):
  interleave       a plain decoder; the caller builds [env emb, asst emb, tokens] per block.
  cross_attention  layers e-1, 2e-1, ... (e = `cross_attention_every`) add a gated
                   cross-attention sublayer (Flamingo: tanh gate initialised at 0) reading an
                   encoder memory with one entry per block.
Layers are `nn.scan`ned in groups of e layers (e = 1 for interleave), so parameters carry a
leading `layers` axis of length num_layers / e; each group is rematerialised with the
named policy `remat`.

`step` appends a chunk of positions (and optionally new memory entries) to a fixed-size
cache and equals `__call__` with a causal mask. The cache is a plain dict (`init_cache`):
  index         int32 []         positions written so far
  k, v          [L,B,S,G,K]      self-attention keys/values of the L layers (compute dtype)
  memory_index  int32 []         memory entries written so far      (cross_attention only)
  memory_k, _v  [C,B,M,G,K]      projected memory of the C = L / e cross-attention layers
`cache_axes` gives its logical partition specs for sharding.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from omni_jax.models.attention import CrossAttention, SelfAttention, cached_mask
from omni_jax.models.layers import DTYPES, REMAT_POLICIES, part_remat
from omni_jax.models.lora import LoraDense, LoraSpec

Cache = dict[str, jax.Array]
FUSIONS = ("interleave", "cross_attention")
NORM_EPS = 1e-5


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

    @classmethod
    def from_config(cls, llm_cfg) -> LlmSpec:
        return cls(int(llm_cfg.num_layers), int(llm_cfg.width), int(llm_cfg.num_heads),
                   int(llm_cfg.num_kv_heads), int(llm_cfg.mlp_dim), float(llm_cfg.rope_theta),
                   int(llm_cfg.max_len), int(llm_cfg.cross_attention_every),
                   LoraSpec.from_config(llm_cfg), bool(llm_cfg.get("qkv_bias", False)))

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads


def _rms_norm(dtype, name: str) -> nn.RMSNorm:
    return nn.RMSNorm(NORM_EPS, dtype=dtype, name=name, scale_init=nn.with_logical_partitioning(
        nn.initializers.ones, ("embed",)))


def _constrain(x_BxTxD: jax.Array) -> jax.Array:
    return nn.with_logical_constraint(x_BxTxD, ("batch", "length", "embed"))


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
        gate_BxTxF = self._dense("gate", self.mlp_dim, ("embed", "mlp"))(x_BxTxD)
        up_BxTxF = self._dense("up", self.mlp_dim, ("embed", "mlp"))(x_BxTxD)
        h_BxTxF = nn.with_logical_constraint(nn.silu(gate_BxTxF) * up_BxTxF,
                                             ("batch", "length", "mlp"))
        return self._dense("down", x_BxTxD.shape[-1], ("mlp", "embed"))(h_BxTxF)


class DecoderLayer(nn.Module):
    """x + attn(norm x) [+ tanh(gate) * cross_attn(norm x)] + mlp(norm x), residual in turn."""

    spec: LlmSpec
    cross: bool
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x_BxTxD, positions_BxT, mask_BxTxS, memory_BxMxE, memory_mask_BxTxM,
                 cache, index, memory_cache, memory_index):
        s = self.spec
        y_BxTxD, cache = SelfAttention(s.num_heads, s.num_kv_heads, s.head_dim, s.rope_theta,
                                       self.dtype, s.lora, s.qkv_bias, name="attn")(
            _rms_norm(self.dtype, "attn_norm")(x_BxTxD), positions_BxT, mask_BxTxS, cache, index)
        x_BxTxD = x_BxTxD + y_BxTxD
        if self.cross:
            y_BxTxD, memory_cache = CrossAttention(s.num_heads, s.num_kv_heads, s.head_dim,
                                                   self.dtype, name="cross_attn")(
                _rms_norm(self.dtype, "cross_norm")(x_BxTxD), memory_BxMxE, memory_mask_BxTxM,
                memory_cache, memory_index)
            gate = self.param("cross_gate", nn.with_logical_partitioning(nn.initializers.zeros,
                                                                          ()), (), jnp.float32)
            x_BxTxD = x_BxTxD + jnp.tanh(gate).astype(self.dtype) * y_BxTxD
        mlp = Mlp(s.mlp_dim, self.dtype, s.lora, name="mlp")
        x_BxTxD = x_BxTxD + mlp(_rms_norm(self.dtype, "mlp_norm")(x_BxTxD))
        return _constrain(x_BxTxD), cache, memory_cache


class DecoderGroup(nn.Module):
    """One scan iteration: `size` consecutive layers, the last one cross-attending if
    `cross`. Carries (x, hidden): hidden takes x after global layer `hidden_layer`."""

    spec: LlmSpec
    size: int
    cross: bool
    hidden_layer: int
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, carry, scanned, positions_BxT, mask_BxTxS, memory_BxMxE,
                 memory_mask_BxTxM, index, memory_index):
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
                x_BxTxD, positions_BxT, mask_BxTxS, memory_BxMxE, memory_mask_BxTxM,
                layer_cache, index, memory_cache, memory_index)
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
    encoder width (cross_attention only); `hidden_layer` (may be negative) picks the
    returned hidden state, usually `config.model.synth.llm_layer`."""

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
        for name, value, known in (("fusion", self.fusion, FUSIONS),
                                   ("dtype", self.dtype, DTYPES),
                                   ("remat", self.remat, REMAT_POLICIES)):
            if value not in known:
                raise ValueError(f"model.{name}: {value!r} is not one of {list(known)}")
        if not -spec.num_layers <= self.hidden_layer < spec.num_layers:
            raise ValueError(f"hidden_layer {self.hidden_layer} is past {spec.num_layers} layers")
        if self.cross and spec.num_layers % spec.cross_attention_every:
            raise ValueError(f"model.llm.cross_attention_every: {spec.cross_attention_every} "
                             f"does not divide num_layers {spec.num_layers}")
        if self.cross and self.memory_dim is None:
            raise ValueError("the cross_attention fusion needs memory_dim")

    @classmethod
    def from_config(cls, config) -> LLM:
        m = config.model
        return cls(m.llm, config.data.tokenizer.vocab_size, m.dtype, part_remat(m, "llm"),
                   m.fusion, memory_dim=m.encoder.width, hidden_layer=m.synth.llm_layer)

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
        group = DecoderGroup
        if self.remat != "none":
            group = nn.remat(group, policy=REMAT_POLICIES[self.remat], prevent_cse=False)
        self.layers = nn.scan(
            group, variable_axes={"params": 0}, split_rngs={"params": True},
            in_axes=(0,) + (nn.broadcast,) * 6, length=self.num_groups,
            metadata_params={nn.PARTITION_NAME: "layers"})(
            spec, self.group_size, self.cross, self.hidden_layer % spec.num_layers, dtype)
        self.final_norm = _rms_norm(dtype, "final_norm")
        self.head = nn.Dense(self.vocab_size, use_bias=False, dtype=dtype,
                             kernel_init=nn.with_logical_partitioning(
                                 nn.initializers.lecun_normal(), ("embed", "vocab")))

    def embed(self, tokens_BxT: jax.Array) -> jax.Array:
        return _constrain(self.embedding(tokens_BxT))

    def _decode(self, x_BxTxD, positions_BxT, mask_BxTxS, memory_BxMxE, memory_mask_BxTxM,
                cache=None):
        x_BxTxD = _constrain(x_BxTxD.astype(DTYPES[self.dtype]))
        scanned_cache, index, memory_index = None, None, None
        if cache is not None:
            # Layer-major [L, ...] -> [groups, group_size, ...] for the scan.
            scanned_cache = {name: cache[name].reshape(self.num_groups, self.group_size,
                                                       *cache[name].shape[1:])
                             for name in ("k", "v")}
            index = cache["index"]
            if self.cross:
                scanned_cache.update(memory_k=cache["memory_k"], memory_v=cache["memory_v"])
                memory_index = cache["memory_index"]
        (x_BxTxD, hidden_BxTxD), layer_cache = self.layers(
            (x_BxTxD, jnp.zeros_like(x_BxTxD)), (jnp.arange(self.num_groups), scanned_cache),
            positions_BxT, mask_BxTxS, memory_BxMxE, memory_mask_BxTxM, index, memory_index)
        logits_BxTxV = self.head(self.final_norm(x_BxTxD)).astype(jnp.float32)
        logits_BxTxV = nn.with_logical_constraint(logits_BxTxV, ("batch", "length", "vocab"))
        return logits_BxTxV, hidden_BxTxD, layer_cache

    def __call__(self, x_BxTxD: jax.Array, positions_BxT: jax.Array, mask_BxTxT: jax.Array,
                 memory_BxMxE: jax.Array | None = None,
                 memory_mask_BxTxM: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """Parallel form. Masks are boolean, batch size B or 1. Returns float32 logits and
        the hidden state after layer `hidden_layer` (compute dtype)."""
        if (memory_BxMxE is not None, memory_mask_BxTxM is not None) != (self.cross,) * 2:
            raise ValueError(f"fusion {self.fusion!r}: memory and memory_mask must be "
                             f"{'given' if self.cross else 'None'}")
        if self.is_initializing():  # `embed` is a separate method: create its table too
            self.embed(jnp.zeros((1, 1), jnp.int32))
        logits_BxTxV, hidden_BxTxD, _ = self._decode(x_BxTxD, positions_BxT, mask_BxTxT,
                                                     memory_BxMxE, memory_mask_BxTxM)
        return logits_BxTxV, hidden_BxTxD

    def step(self, x_BxLxD: jax.Array, positions_BxL: jax.Array, cache: Cache,
             new_memory_BxNxE: jax.Array | None = None) -> tuple[jax.Array, jax.Array, Cache]:
        """Streaming form: appends L positions (after N new memory entries, if given) and
        attends causally to everything cached. Equals `__call__` with a causal self mask
        and a memory mask that shows each position the memory appended up to its chunk."""
        length, num_slots = x_BxLxD.shape[1], cache["k"].shape[2]
        mask_1xLxS = cached_mask(cache["index"], length, num_slots)
        memory_mask_1x1xM, memory_count = None, None
        if self.cross:
            num_new = 0 if new_memory_BxNxE is None else new_memory_BxNxE.shape[1]
            memory_count = cache["memory_index"] + num_new
            slot_M = jnp.arange(cache["memory_k"].shape[2])
            memory_mask_1x1xM = (slot_M < memory_count)[None, None]
        elif new_memory_BxNxE is not None:
            raise ValueError("the interleave fusion takes no memory")
        logits_BxLxV, hidden_BxLxD, layer_cache = self._decode(
            x_BxLxD, positions_BxL, mask_1xLxS, new_memory_BxNxE, memory_mask_1x1xM, cache)
        k, v = (layer_cache[n].reshape(cache[n].shape) for n in ("k", "v"))
        new_cache = dict(cache, index=cache["index"] + length, k=k, v=v)
        if self.cross:
            new_cache.update(memory_index=memory_count, memory_k=layer_cache["memory_k"],
                             memory_v=layer_cache["memory_v"])
        return logits_BxLxV, hidden_BxLxD, new_cache

    def init_cache(self, batch: int, max_len: int | None = None,
                   max_memory: int | None = None) -> Cache:
        """An empty cache (needs no parameters): `max_len` positions (default
        `llm_cfg.max_len`) and, for cross_attention, `max_memory` memory entries (default
        `max_len`)."""
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
            inputs.update(memory_BxMxE=jnp.zeros((batch, length, self.memory_dim)),
                          memory_mask_BxTxM=jnp.ones((1, length, length), bool))
        return inputs
