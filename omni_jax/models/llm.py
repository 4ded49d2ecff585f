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
cache and equals `__call__` with a causal mask while the stream fits the cache; past it
the cache slides (the prompt pinned, `omni_jax.models.kv_cache`), so a stream has no
length limit. The layers read the cache and one scatter after the layer scan writes the
chunk (`model.llm.cache_update`). The cache is a plain dict (`init_cache`); Y = num_layers,
C = cache slots (prompt_len + `model.llm.window`), U = memory slots (`max_memory`):
  index         int32 B          positions written so far, per row (rows are independent)
  k, v          YxBxCxGxQ        self-attention keys/values of every layer (compute dtype)
  memory_index  int32 B          memory entries written so far      (cross_attention only)
  memory_k, _v  (Y/e)xBxUxGxQ    projected memory of the Y / e cross-attention layers,
                                 a ring of the last U entries
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
from omni_jax.models.attention import (CrossAttention, SelfAttention, causal_mask,
                                       resolve_implementation)
from omni_jax.models.kv_cache import RingLayout, write_rows
from omni_jax.models.layers import DTYPES, REMAT_POLICIES
from omni_jax.models.lora import LoraDense, LoraSpec

Cache = dict[str, jax.Array]
FUSIONS = ("interleave", "cross_attention")  # the allowed values of model.fusion
# The allowed values of `model.llm.cache_update`: how a streaming step writes its cache.
#   once       the layers read the cache (its written prefix) and return their new keys and
#              values; one scatter writes them after the layer scan (the default)
#   per_layer  the whole cache goes through the layer scan and each layer writes its own
#              slice (the earlier form: XLA copies the cache per step; kept to measure the
#              difference, `omni_jax.benchmark --what=step`)
CACHE_UPDATES = ("once", "per_layer")
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
    cache_update: str = "once"  # how a step writes its cache (CACHE_UPDATES)

    @classmethod
    def from_config(cls, llm_cfg) -> LlmSpec:
        return cls(int(llm_cfg.num_layers), int(llm_cfg.width), int(llm_cfg.num_heads),
                   int(llm_cfg.num_kv_heads), int(llm_cfg.mlp_dim), float(llm_cfg.rope_theta),
                   int(llm_cfg.max_len), int(llm_cfg.cross_attention_every),
                   LoraSpec.from_config(llm_cfg), bool(llm_cfg.get("qkv_bias", False)),
                   str(llm_cfg.get("attention", "auto")),
                   str(llm_cfg.get("cache_update", "once")))

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
    form, cached slots + L otherwise) and U memory entries. Returns the new residual and
    this chunk's keys/values (self, and memory where it cross-attends)."""

    spec: LlmSpec
    cross: bool
    dtype: jnp.dtype
    num_prompt: int = 0  # keys read by the prompt-shifted queries (a sliding cache)

    @nn.compact
    def __call__(self, x_BxTxD, positions_BxT, mask_BxTxC, memory_BxUxE, memory_mask_BxTxU,
                 cached, memory_cached, prompt_shift_BxT):
        s = self.spec
        y_BxTxD, new = SelfAttention(s.num_heads, s.num_kv_heads, s.head_dim, s.rope_theta,
                                     self.dtype, s.lora, s.qkv_bias,
                                     resolve_implementation(s.attention, self.dtype),
                                     name="attn")(
            _rms_norm(self.dtype, "attn_norm")(x_BxTxD), positions_BxT, mask_BxTxC, cached,
            prompt_shift_BxT, self.num_prompt if prompt_shift_BxT is not None else 0)
        x_BxTxD = x_BxTxD + y_BxTxD
        memory_new = None
        if self.cross:
            y_BxTxD, memory_new = CrossAttention(s.num_heads, s.num_kv_heads, s.head_dim,
                                                 self.dtype, name="cross_attn")(
                _rms_norm(self.dtype, "cross_norm")(x_BxTxD), memory_BxUxE, memory_mask_BxTxU,
                memory_cached)
            gate = layers.param(self, "cross_gate", nn.initializers.zeros, (), ())
            x_BxTxD = x_BxTxD + jnp.tanh(gate).astype(self.dtype) * y_BxTxD
        mlp = Mlp(s.mlp_dim, self.dtype, s.lora, name="mlp")
        x_BxTxD = x_BxTxD + mlp(_rms_norm(self.dtype, "mlp_norm")(x_BxTxD))
        return layers.constrain(x_BxTxD, _RESIDUAL_AXES), new, memory_new


class DecoderGroup(nn.Module):
    """One scan iteration: `size` consecutive layers, the last one cross-attending if
    `cross`. Carries (x, hidden): hidden takes x after global layer `hidden_layer`; hidden
    is None (no carry) when that layer is the last one (its output is x itself).

    `scanned` = (group index, this group's cache slices or None). The slices are read only
    and the group returns its chunk's new keys/values, unless `write_slots` is given (the
    per_layer cache update): then it writes them into its slices and returns the slices."""

    spec: LlmSpec
    size: int
    cross: bool
    hidden_layer: int
    dtype: jnp.dtype
    num_prompt: int = 0

    @nn.compact
    def __call__(self, carry, scanned, positions_BxT, mask_BxTxC, memory_BxUxE,
                 memory_mask_BxTxU, prompt_shift_BxT, write_slots):
        x_BxTxD, hidden_BxTxD = carry
        group, cache = scanned
        new = {"k": [], "v": []}
        memory_new = None
        for j in range(self.size):
            has_cross = self.cross and j == self.size - 1
            cached = None if cache is None else {"k": cache["k"][j], "v": cache["v"][j]}
            memory_cached = None
            if has_cross and cache is not None:
                memory_cached = {"k": cache["memory_k"], "v": cache["memory_v"]}
            x_BxTxD, layer_new, layer_memory_new = DecoderLayer(
                self.spec, has_cross, self.dtype, self.num_prompt, name=f"layer_{j}")(
                x_BxTxD, positions_BxT, mask_BxTxC, memory_BxUxE, memory_mask_BxTxU,
                cached, memory_cached, prompt_shift_BxT)
            if hidden_BxTxD is not None:
                hidden_BxTxD = jnp.where(group * self.size + j == self.hidden_layer, x_BxTxD,
                                         hidden_BxTxD)
            for name in ("k", "v"):
                new[name].append(layer_new[name])
            if has_cross:
                memory_new = layer_memory_new
        if cache is None:
            return (x_BxTxD, hidden_BxTxD), None
        out = {name: jnp.stack(new[name]) for name in ("k", "v")}  # e x B x L x G x Q
        if self.cross and memory_new is not None:
            out.update(memory_k=memory_new["k"], memory_v=memory_new["v"])
        if write_slots is not None:  # per_layer: this group's whole cache slices out
            slots_BxL, memory_slots_BxU = write_slots
            written = {name: write_rows(cache[name], out[name], slots_BxL)
                       for name in ("k", "v")}
            if self.cross:
                written.update(memory_k=cache["memory_k"], memory_v=cache["memory_v"])
                if memory_new is not None:
                    written.update({f"memory_{n}": write_rows(cache[f"memory_{n}"][None],
                                                              out[f"memory_{n}"][None],
                                                              memory_slots_BxU)[0]
                                    for n in ("k", "v")})
            out = written
        return (x_BxTxD, hidden_BxTxD), out


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
    prompt_len: int = 0  # positions a cache pins (the duplex model's text prompt)

    def __post_init__(self):
        super().__post_init__()
        spec = self.spec
        layers.check_choices(fusion=(self.fusion, FUSIONS), dtype=(self.dtype, DTYPES),
                             remat=(self.remat, REMAT_POLICIES))
        if spec.cache_update not in CACHE_UPDATES:
            raise ValueError(f"model.llm.cache_update: {spec.cache_update!r} is not one of "
                             f"{list(CACHE_UPDATES)}")
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
                   hidden_layer=m.synth.llm_layer, prompt_len=config.data.prompt_len)

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
        # Broadcast to every group: positions, mask, memory, memory mask, prompt shift and
        # the per_layer write slots.
        self.layers = layers.stack_layers(DecoderGroup, self.num_groups, self.remat,
                                          num_broadcast_args=6)(
            spec, self.group_size, self.cross, self.hidden_layer % spec.num_layers, dtype,
            self.prompt_len)
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
                cache=None, output_index=None, prompt_shift_BxT=None, write_slots=None):
        """The layer scan. `cache` (None in the parallel form) holds the Yx... slices the
        layers read: the written prefix (once) or the whole cache (per_layer, `write_slots`
        given). Returns logits, hidden, and the scan's per-group outputs."""
        x_BxTxD = layers.constrain(x_BxTxD.astype(DTYPES[self.dtype]), _RESIDUAL_AXES)
        scanned_cache = None
        if cache is not None:
            # Layer-major YxBx... -> (Y/e)xexBx... for the scan over groups.
            scanned_cache = {name: cache[name].reshape(self.num_groups, self.group_size,
                                                       *cache[name].shape[1:])
                             for name in ("k", "v")}
            if self.cross:
                scanned_cache.update(memory_k=cache["memory_k"], memory_v=cache["memory_v"])
        tap_BxTxD = None if self._taps_last_layer else jnp.zeros_like(x_BxTxD)
        (x_BxTxD, tap_BxTxD), group_out = self.layers(
            (x_BxTxD, tap_BxTxD), (jnp.arange(self.num_groups), scanned_cache),
            positions_BxT, mask_BxTxC, memory_BxUxE, memory_mask_BxTxU, prompt_shift_BxT,
            write_slots)
        hidden_BxTxD = x_BxTxD if tap_BxTxD is None else tap_BxTxD
        if output_index is not None:  # T -> T' = len(output_index) positions
            x_BxTxD, hidden_BxTxD = x_BxTxD[:, output_index], hidden_BxTxD[:, output_index]
        return self.logits(x_BxTxD), hidden_BxTxD, group_out

    def __call__(self, x_BxTxD: jax.Array, positions_BxT: jax.Array,
                 mask_BxTxT: jax.Array | None = None,
                 memory_BxUxE: jax.Array | None = None,
                 memory_mask_BxTxU: jax.Array | None = None,
                 output_index=None, prompt_shift_BxT: jax.Array | None = None
                 ) -> tuple[jax.Array, jax.Array]:
        """Parallel form. Masks are boolean, batch size B or 1; no self mask = causal (run by
        `model.llm.attention`, fused where the platform has it). Returns float32 logits and
        the hidden state after layer `hidden_layer` (compute dtype), at every position or
        at the T' positions of `output_index` (a static integer array).
        `prompt_shift_BxT` (with the mask of `RingLayout.parallel`) makes this the sliding
        window a stream runs: the first `prompt_len` keys are read as moved by it."""
        if (memory_BxUxE is not None, memory_mask_BxTxU is not None) != (self.cross,) * 2:
            raise ValueError(f"fusion {self.fusion!r}: memory and memory_mask must be "
                             f"{'given' if self.cross else 'None'}")
        if prompt_shift_BxT is not None and mask_BxTxT is None:
            raise ValueError("prompt_shift_BxT needs the windowed mask (RingLayout.parallel)")
        if self.is_initializing():  # `embed` is a separate method: create its table too
            self.embed(jnp.zeros((1, 1), jnp.int32))
        logits_BxTxV, hidden_BxTxD, _ = self._decode(x_BxTxD, positions_BxT, mask_BxTxT,
                                                     memory_BxUxE, memory_mask_BxTxU,
                                                     output_index=output_index,
                                                     prompt_shift_BxT=prompt_shift_BxT)
        return logits_BxTxV, hidden_BxTxD

    @property
    def window(self) -> int:
        """Positions after the prompt a full-size cache keeps (`model.llm.window`; 0 =
        max_len - prompt_len)."""
        window = int(self.llm_cfg.get("window", 0)) or self.spec.max_len - self.prompt_len
        if window < 1:
            raise ValueError(f"model.llm.window: {window} positions after a prompt of "
                             f"{self.prompt_len} (max_len {self.spec.max_len})")
        return window

    def layout(self, num_slots: int) -> RingLayout:
        """The layout of a cache of `num_slots` self-attention slots."""
        return RingLayout(min(self.prompt_len, num_slots - 1), num_slots
                          - min(self.prompt_len, num_slots - 1))

    def step(self, x_BxLxD: jax.Array, positions_BxL: jax.Array, cache: Cache,
             new_memory_BxUxE: jax.Array | None = None, output_index=None,
             attend_slots: int | None = None) -> tuple[jax.Array, jax.Array, Cache]:
        """Streaming form: appends L positions per row (after U new memory entries, if
        given) at the row's `index` and attends causally to the cache's window
        (`omni_jax.models.kv_cache`). Equals `__call__` with a causal self mask (and a
        memory mask that shows each position the memory appended up to its chunk) until
        the window first wraps, and `__call__` with `RingLayout.parallel`'s mask and shift
        after. `output_index` (static) keeps the outputs of some of the L positions;
        `attend_slots` (static) reads only the first slots: pass at least the largest
        index of any row (`kv_cache.attend_bucket`), or None for the whole cache."""
        b, length = x_BxLxD.shape[:2]
        num_slots = cache["k"].shape[2]
        layout = self.layout(num_slots)
        if length > layout.window and length > layout.prompt:
            raise ValueError(f"a chunk of {length} positions exceeds the cache's window of "
                             f"{layout.window}")
        per_layer = self.spec.cache_update == "per_layer"
        read = num_slots if per_layer or attend_slots is None else min(
            num_slots, max(int(attend_slots), layout.prompt))
        index_B = cache["index"]
        key_pos_BxS = layout.slot_positions(index_B, read)
        mask_BxLxC = jnp.concatenate(
            [jnp.broadcast_to(layout.visible(key_pos_BxS, index_B), (b, length, read)),
             jnp.broadcast_to(causal_mask(length)[None], (b, length, length))], axis=-1)
        shift_BxL = jnp.broadcast_to(layout.prompt_shift(index_B)[:, None], (b, length))
        slots_BxL = layout.slots(index_B[:, None] + jnp.arange(length))
        memory_mask_Bx1xU, memory_slots_BxU, memory_count_B = None, None, None
        if self.cross:
            num_new = 0 if new_memory_BxUxE is None else new_memory_BxUxE.shape[1]
            memory_layout = RingLayout(0, cache["memory_k"].shape[2])
            memory_pos_BxU = memory_layout.slot_positions(cache["memory_index"])
            memory_count_B = cache["memory_index"] + num_new
            memory_mask_Bx1xU = jnp.concatenate(  # the last U entries, the new ones too
                [memory_layout.visible(memory_pos_BxU, memory_count_B),
                 jnp.ones((b, 1, num_new), bool)], axis=-1)
            memory_slots_BxU = memory_layout.slots(cache["memory_index"][:, None]
                                                   + jnp.arange(num_new))
        elif new_memory_BxUxE is not None:
            raise ValueError("the interleave fusion takes no memory")
        read_cache = {name: cache[name][:, :, :read] for name in ("k", "v")}
        if self.cross:
            read_cache.update(memory_k=cache["memory_k"], memory_v=cache["memory_v"])
        logits_BxLxV, hidden_BxLxD, group_out = self._decode(
            x_BxLxD, positions_BxL, mask_BxLxC, new_memory_BxUxE, memory_mask_Bx1xU,
            read_cache, output_index, shift_BxL,
            (slots_BxL, memory_slots_BxU) if per_layer else None)
        new_cache = dict(cache, index=index_B + length)
        for name in ("k", "v"):
            out_YxBx = group_out[name].reshape(-1, *group_out[name].shape[2:])
            new_cache[name] = out_YxBx if per_layer else write_rows(cache[name], out_YxBx,
                                                                    slots_BxL)
        if self.cross:
            new_cache["memory_index"] = memory_count_B
            if per_layer:
                new_cache.update(memory_k=group_out["memory_k"],
                                 memory_v=group_out["memory_v"])
            elif new_memory_BxUxE is not None:
                new_cache.update({f"memory_{n}": write_rows(
                    cache[f"memory_{n}"], group_out[f"memory_{n}"], memory_slots_BxU)
                    for n in ("k", "v")})
        return logits_BxLxV, hidden_BxLxD, new_cache

    def init_cache(self, batch: int, max_len: int | None = None,
                   max_memory: int | None = None) -> Cache:
        """An empty cache (needs no parameters): C = `max_len` slots (default the prompt
        plus `window`) and, for cross_attention, U = `max_memory` memory entries (default
        `max_len`). A stream longer than C slides (`omni_jax.models.kv_cache`)."""
        spec, dtype = self.spec, DTYPES[self.dtype]
        max_len = max_len or self.prompt_len + self.window
        kv_shape = (spec.num_layers, batch, max_len, spec.num_kv_heads, spec.head_dim)
        # Separate buffers for k and v: a donated carry must not hold one buffer twice.
        cache = {"index": jnp.zeros((batch,), jnp.int32), "k": jnp.zeros(kv_shape, dtype),
                 "v": jnp.zeros(kv_shape, dtype)}
        if self.cross:
            memory_shape = (self.num_groups, batch, max_memory or max_len,
                            spec.num_kv_heads, spec.head_dim)
            cache.update(memory_index=jnp.zeros((batch,), jnp.int32),
                         memory_k=jnp.zeros(memory_shape, dtype),
                         memory_v=jnp.zeros(memory_shape, dtype))
        return cache

    def cache_axes(self) -> dict[str, P]:
        """Logical partition specs of the `init_cache` entries (as `nn.get_partition_spec`
        gives for parameters), for `nn.logical_to_mesh_sharding`."""
        kv = P("layers", "batch", "length", "heads", "kv")
        memory = P("layers", "batch", "blocks", "heads", "kv")
        axes = {"index": P("batch"), "k": kv, "v": kv}
        if self.cross:
            axes.update(memory_index=P("batch"), memory_k=memory, memory_v=memory)
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
