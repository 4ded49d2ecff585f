"""The duplex model: frontend -> encoder -> connector -> LLM -> synthesizer, one block at a
time, and the same computation over a whole sequence.

`OmniModel` is a Flax Linen module; `DuplexModel` wraps it in the functional interface the
rest of the stack uses (docs/ARCHITECTURE.md, "the step function is the model"):

  carry = dm.init_state(params, prompt_tokens_BxP, K)     # streaming state, prompt cached
  carry, out = dm.step(params, carry, block)              # one 80 ms block
  out_BxK = dm.scan_forward(params, batch)                # lax.scan of `step` over K blocks
  out_BxK = dm.parallel_forward(params, batch)            # the fast training path

`block` holds `env_audio` BxS, `asst_audio` BxS and `tokens` BxN (the contract's fields at
one block); `batch` holds the same fields over K blocks plus `prompt_tokens` BxP (shape
letters: `omni_jax.models`). Outputs:
  logits     ..xNxV  next-token logits at the block's N token positions
  mel        ..xFxM  the synthesizer's log-mel frames for the block
  speak_logit ..     the implicit variant's speak/listen logit (0 for the other variants)
  heard_logits ..xV  with `model.encoder.ctc_head`: CTC logits over the tokens of the words
                     heard in the environment stream (the encoder's auxiliary ASR target)
All three forms agree to float tolerance (tests/test_omni.py).

Sequence layout. Prompt positions 0..P-1 come first (PAD positions included, in every
form, so that training and serving see the same sequence). Then per block k:
  interleave       [env_k, asst_k, tok_k1..tok_kN]   (2+N positions; v2)
  cross_attention  [tok_k1..tok_kN] with memory [env_k, asst_k] appended for block k (v1)
Both audio streams go through the same encoder (shared weights, separate states): they are
stacked on the batch axis (2B rows: environment, then assistant).

Every part is built by its own `from_config` (`_parts`). The config is not validated here:
entry points call `omni_jax.configuration.validate` first; a part raises ValueError on its
own impossible fields.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from data_pipelines import contract
from omni_jax.audio.frontend import LogMelFrontend
from omni_jax.models import layers
from omni_jax.models.encoder import StreamingEncoder
from omni_jax.models.llm import LLM
from omni_jax.models.synthesizer import Synthesizer

NUM_STREAMS = 2  # environment, assistant


class Connector(nn.Module):
    """Two-layer MLP from encoder width E to LLM width D = `width`."""

    width: int
    dtype: Any = jnp.float32

    @classmethod
    def from_config(cls, config) -> Connector:
        return cls(config.model.llm.width, layers.compute_dtype(config.model.dtype))

    @nn.compact
    def __call__(self, x_BxKxE: jax.Array) -> jax.Array:
        h_BxKxD = layers.Dense(self.width, ("embed", "mlp"), use_bias=True, dtype=self.dtype,
                               name="fc1")(x_BxKxE)
        h_BxKxD = nn.gelu(h_BxKxD)
        return layers.Dense(self.width, ("mlp", "embed"), use_bias=True, dtype=self.dtype,
                            name="fc2")(h_BxKxD)


class OmniModel(nn.Module):
    """All trainable parts. `config` is a FrozenConfigDict (hashable)."""

    config: Any

    def setup(self):
        parts = _parts(self.config)
        self.frontend = parts["frontend"]
        self.encoder, self.connector = parts["encoder"], parts["connector"]
        self.llm, self.synth = parts["llm"], parts["synth"]
        m = self.config.model
        if m.thinking == "implicit":
            self.speak_head = layers.Dense(1, ("embed", None), use_bias=True,
                                           dtype=layers.compute_dtype(m.dtype))
        if has_ctc_head(self.config):
            # On the encoder's own output (before the connector): it is the encoder that
            # must tell the heard words apart.
            self.ctc_head = layers.Dense(self.config.data.tokenizer.vocab_size,
                                         ("embed", "vocab"), use_bias=True,
                                         dtype=layers.compute_dtype(m.dtype))

    # ---- shapes ---------------------------------------------------------------------------

    @property
    def interleave(self) -> bool:
        return self.config.model.fusion == "interleave"

    @property
    def positions_per_block(self) -> int:
        return positions_per_block(self.config)

    def _speak_logit(self, hidden_BxKxNxD: jax.Array) -> jax.Array:
        """Implicit variant: a speak/listen logit from the block's last token position."""
        if self.config.model.thinking != "implicit":
            return jnp.zeros(hidden_BxKxNxD.shape[:2], jnp.float32)
        return self.speak_head(hidden_BxKxNxD[:, :, -1])[..., 0].astype(jnp.float32)

    def _heard(self, outputs: dict, emb_2BxKxE: jax.Array, batch: int) -> dict:
        """Adds `heard_logits` (environment rows only) when the model has a CTC head."""
        if has_ctc_head(self.config):
            logits_BxKxV = self.ctc_head(emb_2BxKxE[:batch]).astype(jnp.float32)
            outputs["heard_logits"] = layers.constrain(logits_BxKxV,
                                                       ("batch", "blocks", "vocab"))
        return outputs

    def _embed_audio(self, emb_2BxKxE: jax.Array, batch: int):
        """Encoder output for both streams (stacked on batch) -> env, asst at LLM width."""
        x_2BxKxD = self.connector(emb_2BxKxE)
        return x_2BxKxD[:batch], x_2BxKxD[batch:]

    # ---- parallel form --------------------------------------------------------------------

    def __call__(self, env_audio_BxKxS, asst_audio_BxKxS, tokens_BxKxN, prompt_tokens_BxP):
        b, k, s = env_audio_BxKxS.shape
        n, p = tokens_BxKxN.shape[2], prompt_tokens_BxP.shape[1]
        audio_2BxT = jnp.concatenate([env_audio_BxKxS, asst_audio_BxKxS]).reshape(-1, k * s)
        emb_2BxKxE = self.encoder(self.frontend(audio_2BxT))
        env_BxKxD, asst_BxKxD = self._embed_audio(emb_2BxKxE, b)
        tok_BxKxNxD = self.llm.embed(tokens_BxKxN.reshape(b, k * n)).reshape(b, k, n, -1)
        prompt_BxPxD = self.llm.embed(prompt_tokens_BxP)
        per_block = self.positions_per_block
        length = p + k * per_block
        positions_BxT = jnp.broadcast_to(jnp.arange(length), (b, length))
        # L = per_block positions per block (what one streaming step appends).
        if self.interleave:
            blocks_BxKxLxD = jnp.concatenate(
                [env_BxKxD[:, :, None], asst_BxKxD[:, :, None].astype(env_BxKxD.dtype),
                 tok_BxKxNxD.astype(env_BxKxD.dtype)], axis=2)
            memory_BxUxD, memory_mask_1xTxU = None, None
        else:
            blocks_BxKxLxD = tok_BxKxNxD
            # Memory entry u belongs to block u // 2; a block-k position sees blocks 0..k.
            memory_BxUxD = jnp.stack([env_BxKxD, asst_BxKxD], axis=2).reshape(
                b, k * NUM_STREAMS, -1)
            block_T = jnp.concatenate([jnp.full((p,), -1), jnp.repeat(jnp.arange(k), n)])
            memory_block_U = jnp.repeat(jnp.arange(k), NUM_STREAMS)
            memory_mask_1xTxU = (block_T[:, None] >= memory_block_U[None, :])[None]
        x_BxTxD = jnp.concatenate(
            [prompt_BxPxD.astype(blocks_BxKxLxD.dtype),
             blocks_BxKxLxD.reshape(b, k * per_block, -1)], axis=1)
        # Logits and the synthesizer's input only at the token positions (the last N of
        # each block): the head is never applied where no label is.
        token_index = p + (np.arange(k)[:, None] * per_block
                           + np.arange(per_block - n, per_block)[None]).reshape(-1)
        logits_BxTxV, hidden_BxTxD = self.llm(x_BxTxD, positions_BxT, None, memory_BxUxD,
                                              memory_mask_1xTxU, output_index=token_index)
        hidden_BxKxNxD = hidden_BxTxD.reshape(b, k, n, -1)
        outputs = dict(logits=logits_BxTxV.reshape(b, k, n, -1), mel=self.synth(hidden_BxKxNxD),
                       speak_logit=self._speak_logit(hidden_BxKxNxD))
        return self._heard(outputs, emb_2BxKxE, b)

    # ---- streaming form -------------------------------------------------------------------

    def prompt(self, carry: dict, prompt_tokens_BxP: jax.Array) -> dict:
        """Runs the text prompt through the LLM, filling its cache."""
        positions_BxP = carry["llm"]["index"][:, None] + jnp.arange(prompt_tokens_BxP.shape[1])
        _, _, llm_cache = self.llm.step(self.llm.embed(prompt_tokens_BxP), positions_BxP,
                                        carry["llm"])
        return dict(carry, llm=llm_cache)

    def step(self, carry: dict, env_audio_BxS, asst_audio_BxS, tokens_BxN,
             attend_slots: int | None = None):
        """One block through every part; returns (carry, outputs of the block).
        `attend_slots` (static): the LLM reads only that prefix of its cache (at least the
        largest row index; `kv_cache.attend_bucket`), None = all of it."""
        b, n = tokens_BxN.shape
        mel_2BxFxM, frontend_state = self.frontend.step(
            jnp.concatenate([env_audio_BxS, asst_audio_BxS]), carry["frontend"])
        emb_2Bx1xE, encoder_state = self.encoder.step(mel_2BxFxM, carry["encoder"])
        env_Bx1xD, asst_Bx1xD = self._embed_audio(emb_2Bx1xE, b)
        tok_BxNxD = self.llm.embed(tokens_BxN)
        per_block = self.positions_per_block
        positions_BxL = carry["llm"]["index"][:, None] + jnp.arange(per_block)
        if self.interleave:
            x_BxLxD = jnp.concatenate([env_Bx1xD, asst_Bx1xD.astype(env_Bx1xD.dtype),
                                       tok_BxNxD.astype(env_Bx1xD.dtype)], axis=1)
            new_memory_BxUxD = None
        else:
            x_BxLxD = tok_BxNxD
            new_memory_BxUxD = jnp.concatenate([env_Bx1xD, asst_Bx1xD], axis=1)  # U = 2
        logits_BxNxV, hidden_BxNxD, llm_cache = self.llm.step(
            x_BxLxD, positions_BxL, carry["llm"], new_memory_BxUxD,
            output_index=np.arange(per_block - n, per_block), attend_slots=attend_slots)
        synth_slots = None  # the synthesizer's blocks within the LLM's prefix
        if attend_slots is not None:
            synth_slots = max(1, -(-(attend_slots - self.config.data.prompt_len) // per_block))
        mel_BxFxM, synth_cache = self.synth.step(hidden_BxNxD, carry["synth"], synth_slots)
        outputs = dict(logits=logits_BxNxV, mel=mel_BxFxM,
                       speak_logit=self._speak_logit(hidden_BxNxD[:, None])[:, 0])
        outputs = self._heard(outputs, emb_2Bx1xE, b)
        if "heard_logits" in outputs:
            outputs["heard_logits"] = outputs["heard_logits"][:, 0]  # BxV: one per block
        carry = dict(frontend=frontend_state, encoder=encoder_state, llm=llm_cache,
                     synth=synth_cache)
        return carry, outputs


def has_ctc_head(config) -> bool:
    """Whether the model has the encoder's CTC head (`model.encoder.ctc_head`)."""
    return bool(config.model.encoder.get("ctc_head", False))


def window_blocks(config) -> int:
    """Blocks after the prompt a stream's LLM cache keeps (`model.llm.window` positions,
    0 = max_len - prompt_len, in whole blocks)."""
    window = (int(config.model.llm.get("window", 0))
              or config.model.llm.max_len - config.data.prompt_len)
    blocks = window // positions_per_block(config)
    if blocks < 1:
        raise ValueError(f"model.llm.window: {window} positions hold no block of "
                         f"{positions_per_block(config)} (prompt_len {config.data.prompt_len}, "
                         f"max_len {config.model.llm.max_len})")
    return blocks


def _batch_axis(one, two):
    """(axis, rows per stream) where shapes at batch 1 and 2 differ; None if none does."""
    for axis, (a, b) in enumerate(zip(one.shape, two.shape)):
        if a != b:
            return axis, a
    return None


def positions_per_block(config) -> int:
    """LLM positions per block: [env, asst, N tokens] (interleave) or N (cross_attention)."""
    n = config.data.tokens_per_block
    return NUM_STREAMS + n if config.model.fusion == "interleave" else n


def _parts(config) -> dict:
    """The sub-models, each from its own `from_config`, unbound; `setup` binds them,
    `init_carry` uses their shapes."""
    return dict(
        frontend=LogMelFrontend.from_config(config),
        encoder=StreamingEncoder.from_config(config),
        connector=Connector.from_config(config),
        llm=LLM.from_config(config),
        synth=Synthesizer.from_config(config),
    )


@dataclasses.dataclass(frozen=True)
class DuplexModel:
    """The functional interface: pure functions of (params, ...), jit- and scan-friendly."""

    config: ml_collections.FrozenConfigDict

    @classmethod
    def from_config(cls, config) -> DuplexModel:
        """The model of `config`, frozen. Validating the config is the entry point's job
        (`omni_jax.configuration.validate`); the parts check only their own fields."""
        return cls(ml_collections.FrozenConfigDict(config))

    @property
    def module(self) -> OmniModel:
        return OmniModel(self.config)

    def dummy_batch(self, batch: int = 1, num_blocks: int = 2) -> dict:
        """Zero inputs of the contract's shapes (for `init` and shape checks)."""
        c = self.config
        s = contract.samples_per_block(c.audio.sample_rate, c.audio.block_ms)
        return dict(env_audio=jnp.zeros((batch, num_blocks, s)),
                    asst_audio=jnp.zeros((batch, num_blocks, s)),
                    tokens=jnp.zeros((batch, num_blocks, c.data.tokens_per_block), jnp.int32),
                    prompt_tokens=jnp.zeros((batch, c.data.prompt_len), jnp.int32))

    def init(self, rng: jax.Array, num_blocks: int = 2) -> dict:
        """Parameters (a `{'params': ...}` collection with logical-axis boxes). Jitted:
        eager initialisation dispatches thousands of small ops (20 s against 6 s on CPU)."""
        inputs = _inputs(self.dummy_batch(1, num_blocks))
        return jax.jit(lambda key: self.module.init(key, **inputs))(rng)

    def init_carry(self, batch: int, num_blocks: int | None = None) -> dict:
        """Zero streaming state (no parameters, plain modules built outside any Flax
        context): caches for `num_blocks` blocks after the prompt, at most the window's
        (`window_blocks`; None = the window). A longer stream slides: the LLM keeps the
        prompt and the last window_blocks blocks, the synthesizer the same blocks."""
        c = self.config
        parts = _parts(c)
        both = NUM_STREAMS * batch
        kept = window_blocks(c) if num_blocks is None else min(num_blocks, window_blocks(c))
        return dict(
            frontend=parts["frontend"].init_state(both),
            encoder=parts["encoder"].init_state(both),
            llm=parts["llm"].init_cache(
                batch, max_len=c.data.prompt_len + kept * positions_per_block(c),
                max_memory=NUM_STREAMS * (kept + (num_blocks is None or num_blocks > kept))),
            synth=parts["synth"].init_cache(batch, kept),
        )

    def batch_axes(self) -> dict:
        """The carry's batch axis per leaf, as (axis, rows per stream) or None for a leaf
        without one: found by comparing the carry's shapes at batch 1 and 2, so that it
        follows the parts' own layouts (the encoder's 2B rows, the layer-major caches)."""
        one, two = (jax.eval_shape(lambda b=b: self.init_carry(b, 1)) for b in (1, 2))
        return jax.tree.map(_batch_axis, one, two)

    def parallel_forward(self, params, batch: dict) -> dict:
        return self.module.apply(params, **_inputs(batch))

    def init_state(self, params, prompt_tokens_BxP: jax.Array, num_blocks: int) -> dict:
        carry = self.init_carry(prompt_tokens_BxP.shape[0], num_blocks)
        return self.module.apply(params, carry, prompt_tokens_BxP, method=OmniModel.prompt)

    def step(self, params, carry: dict, block: dict, attend_slots: int | None = None
             ) -> tuple[dict, dict]:
        return self.module.apply(params, carry, block["env_audio"], block["asst_audio"],
                                 block["tokens"], attend_slots, method=OmniModel.step)

    def scan_forward(self, params, batch: dict) -> dict:
        """`step` scanned over the K blocks with teacher forcing; outputs batch-major."""
        num_blocks = batch["tokens"].shape[1]
        carry = self.init_state(params, batch["prompt_tokens"], num_blocks)
        blocks = {name: jnp.moveaxis(batch[name], 1, 0)  # KxB...: the scanned axis first
                  for name in ("env_audio", "asst_audio", "tokens")}
        _, outputs = jax.lax.scan(lambda c, blk: self.step(params, c, blk), carry, blocks)
        return jax.tree.map(lambda x: jnp.moveaxis(x, 0, 1), outputs)


def _inputs(batch: dict) -> dict:
    return dict(env_audio_BxKxS=batch["env_audio"], asst_audio_BxKxS=batch["asst_audio"],
                tokens_BxKxN=batch["tokens"], prompt_tokens_BxP=batch["prompt_tokens"])
