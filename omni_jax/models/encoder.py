"""Streaming speech encoder: 100 Hz log-mel -> one embedding per block (80 ms by default).

    mel (100 Hz) -> log2(subsample) causal stride-2 convs + GELU (25 Hz)
                 -> num_layers Mamba or block-causal transformer layers (25 Hz)
                 -> stack `stack` adjacent frames, project to width, RMSNorm (one per block)

Every stage is causal at block granularity, so the encoder streams: `step` takes the F mel
frames of one block (F = subsample * stack) plus the carried state and returns that
block's embedding, and scanning `step` over K blocks equals the parallel `__call__`.
The output width is D = `width`; the connector to the LLM width lives with the duplex model.

State pytree (all shapes fixed; `init_state(batch)` gives zeros; letters: `omni_jax.models`,
Y = num_layers, W = conv_kernel, I = inner, Z = state_size, C = max_blocks * stack):
    {"subsample": (Bx1xM, Bx1xD, ...)  last input frame of each subsampling conv,
     "layers": mamba:       {"conv": YxBx(W-1)xI,
                             "ssm":  YxBxIxZ float32}
               transformer: {"k", "v": YxBxCxHxQ},
     "pos": int32 B}        frames seen per row at the layers' rate (the next RoPE position)

`ENCODER_KINDS` owns the allowed values of `model.encoder.kind`.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from omni_jax.models import layers
from omni_jax.models import encoder_transformer
from omni_jax.models.encoder_transformer import TransformerLayer
from omni_jax.models.mamba import MambaLayer

ENCODER_KINDS = ("mamba", "transformer")  # the allowed values of model.encoder.kind
CONV_KERNEL = 3  # subsampling convs: kernel 3, stride 2 -> one frame of left context each
CONV_STRIDE = 2


class StreamingEncoder(nn.Module):
    """Causal speech encoder with a parallel (`__call__`) and a streaming (`step`) form."""

    kind: str = "mamba"
    num_layers: int = 4
    width: int = 128
    num_heads: int = 4
    state_size: int = 16
    conv_kernel: int = 4
    expand: int = 2
    subsample: int = 4
    stack: int = 2
    n_mels: int = 80
    dtype: str = "float32"
    remat: str = "none"
    max_blocks: int = 128  # transformer: attention window and KV-cache length, in blocks
    scan: str = "auto"  # mamba: the selective scan's in-chunk form (mamba.MAMBA_SCANS)
    scan_chunk: int = 32  # mamba: frames per chunk of the selective scan (0 = unchunked)

    @classmethod
    def from_config(cls, config, **overrides) -> StreamingEncoder:
        """Built from config.model.encoder, config.audio.n_mels and config.model.{dtype,remat}."""
        e = config.model.encoder
        fields = dict(kind=e.kind, num_layers=e.num_layers, width=e.width,
                      num_heads=e.num_heads, state_size=e.state_size,
                      conv_kernel=e.conv_kernel, expand=e.expand, subsample=e.subsample,
                      stack=e.stack, n_mels=config.audio.n_mels, dtype=config.model.dtype,
                      remat=layers.part_remat(config.model, "encoder"))
        for optional in ("max_blocks", "scan", "scan_chunk"):
            if optional in e:
                fields[optional] = e[optional]
        return cls(**{**fields, **overrides})

    @property
    def frames_per_block(self) -> int:
        """Mel frames per output embedding."""
        return self.subsample * self.stack

    @property
    def num_convs(self) -> int:
        n = int(math.log2(self.subsample))
        if self.subsample < 2 or 2 ** n != self.subsample:
            raise ValueError(f"subsample must be a power of two >= 2, got {self.subsample}")
        return n

    def _layer_spec(self) -> tuple[type[nn.Module], dict]:
        """The per-layer module class and its fields."""
        dtype = layers.compute_dtype(self.dtype)
        if self.kind == "mamba":
            return MambaLayer, dict(width=self.width, state_size=self.state_size,
                                    conv_kernel=self.conv_kernel, expand=self.expand,
                                    dtype=dtype, scan=self.scan, scan_chunk=self.scan_chunk)
        if self.kind == "transformer":
            return TransformerLayer, dict(width=self.width, num_heads=self.num_heads,
                                          frames_per_block=self.stack,
                                          window_blocks=self.max_blocks, dtype=dtype)
        raise ValueError(f"unknown encoder kind {self.kind!r}; known {ENCODER_KINDS}")

    def layer(self) -> nn.Module:
        """One layer of the stack, unbound (e.g. to time a layer alone)."""
        layer_cls, fields = self._layer_spec()
        return layer_cls(**fields, parent=None)

    def init_state(self, batch: int) -> dict:
        """Zero state before the first block; needs no parameters."""
        dtype = layers.compute_dtype(self.dtype)
        channels = [self.n_mels] + [self.width] * (self.num_convs - 1)
        context = CONV_KERNEL - CONV_STRIDE
        return {
            "subsample": tuple(jnp.zeros((batch, context, c), dtype) for c in channels),
            "layers": layers.stacked(self.layer().init_state(batch), self.num_layers),
            "pos": jnp.zeros((batch,), jnp.int32),
        }

    def setup(self):
        dtype = layers.compute_dtype(self.dtype)
        self.convs = [
            nn.Conv(self.width, (CONV_KERNEL,), (CONV_STRIDE,), padding="VALID", dtype=dtype,
                    param_dtype=jnp.float32,
                    kernel_init=nn.with_logical_partitioning(
                        nn.initializers.lecun_normal(),
                        ("conv", "mel" if i == 0 else None, "embed")),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros,
                                                           ("embed",)))
            for i in range(self.num_convs)]
        layer_cls, fields = self._layer_spec()
        stack_cls = layers.stack_layers(layer_cls, self.num_layers, self.remat,
                                        num_broadcast_args=int(self.kind == "transformer"))
        self.encoder_layers = stack_cls(**fields)
        self.stack_proj = layers.Dense(self.width, (None, "embed"), dtype=dtype)
        self.out_norm = layers.RMSNorm(dtype)

    def __call__(self, mel_BxFxM: jax.Array) -> jax.Array:
        """Parallel form: mel_BxFxM (F = K * frames_per_block) -> emb_BxKxD."""
        state = self.init_state(mel_BxFxM.shape[0])
        if self.kind == "transformer":
            state["layers"] = None  # whole-sequence attention; no cache needed
        emb_BxKxD, _ = self._encode(mel_BxFxM, state)
        return emb_BxKxD

    def step(self, mel_BxFxM: jax.Array, state: dict):
        """Streaming form: one block's F frames (or a few whole blocks) -> (emb_Bx1xD, state)."""
        return self._encode(mel_BxFxM, state)

    def _encode(self, mel_BxFxM: jax.Array, state: dict):
        batch, frames, _ = mel_BxFxM.shape
        if frames % self.frames_per_block:
            raise ValueError(f"{frames} mel frames are not whole blocks of "
                             f"{self.frames_per_block}")
        dtype = layers.compute_dtype(self.dtype)
        # h: BxFxM before the first conv; each conv halves the frames and outputs D channels.
        h = mel_BxFxM.astype(dtype)
        contexts = []
        for conv, context in zip(self.convs, state["subsample"]):
            # The carried frame (Bx1x channels) is this chunk's left context: a causal,
            # streamable conv.
            buf = jnp.concatenate([context, h], axis=1)
            contexts.append(buf[:, h.shape[1]:])
            h = nn.gelu(conv(buf))
        # L positions at the layers' rate: the whole sequence is one chunk in parallel form.
        h_BxLxD = layers.constrain(h, ("batch", "length", "embed"))

        pos_B = state["pos"]
        extra = (pos_B,) if self.kind == "transformer" else ()
        h_BxLxD, layer_state = self.encoder_layers(h_BxLxD, state["layers"], *extra)
        if self.kind == "transformer" and state["layers"] is not None:
            layer_state = encoder_transformer.write_chunk(state["layers"], layer_state, pos_B)

        # The `stack` adjacent frames of each block side by side: BxKx(stack*D).
        stacked = h_BxLxD.reshape(batch, -1, self.stack * self.width)
        emb_BxKxD = self.out_norm(self.stack_proj(stacked))
        emb_BxKxD = layers.constrain(emb_BxKxD, ("batch", "blocks", "embed"))
        new_state = {"subsample": tuple(contexts), "layers": layer_state,
                     "pos": pos_B + h_BxLxD.shape[1]}
        return emb_BxKxD, new_state
