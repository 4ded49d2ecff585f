"""The streaming engine: the model's own `step`, free-running, many independent streams.

`DuplexEngine.run` feeds the environment audio block by block through ONE jitted function
per block (model step + sampling + speak/listen state machine + feedback), so that what is
evaluated is exactly what is trained (docs/ARCHITECTURE.md, "The step function is the
model").

Feedback, following the render layout (`data_pipelines.render`, `contract.TimingRules`):
  tokens     the input of block k+1 is the token emitted in block k (BOS first). Emissions
             are canonicalised first: a text token stays, a transition token of the variant
             stays where it is a transition, anything else is idle and becomes <think>
             (render's idle slot). The raw sampled ids are kept as well.
  speech     `omni_jax.audio.feedback.Feedback`, the function training applies to the
             reference speech: the block's kept mel (the synthesizer's while speaking, else
             the silence log-mel) -> streaming Griffin-Lim -> the speech played in block k
             (`speech`, 35 ms behind the mel by default), fed back as asst_audio[k+1] and
             heard in the microphone from block k+1 plus `echo_delay_s` times `echo_gain`.
             No clipping: no peak limiter runs.
`EngineResult.speech_audio()` is that played speech; `speech_audio(vocoder)` re-synthesises
the kept mel offline with another vocoder (e.g. whole-utterance Griffin-Lim).

State machines (per emitted token, in slot order; `speaking[k]` = state after block k):
  explicit     <shift> toggles listen <-> speak.
  negative_ce  <start_speak> while listening -> speak; <end_speak> while speaking ->
               listen. A redundant transition (start while speaking, end while listening)
               and every other non-text emission is idle (<think>). Note: v1 leaves idle
               outputs unconstrained, so a text id emitted in an idle slot counts as text.
  implicit     speaking = sigmoid(speak_logit) > 0.5; every non-text emission is idle.
Only while speaking is the synthesizer's mel kept (else the silence log-mel) and its
speech output (else exact zeros).

Event times are block start times on the input axis: block k covers [k*B, (k+1)*B) and
a transition or token "at" block k has time k*B (B = block_ms), the contract's indexing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import contract
from data_pipelines.contract import (END_SPEAK_ID, FIRST_TEXT_ID, SHIFT_ID, START_SPEAK_ID,
                                     THINK_ID)
from omni_jax.audio.feedback import Feedback
from omni_jax.audio.frontend import SILENCE_LOG_MEL


def advance_state(thinking: str, raw_BxN: jax.Array, speaking_B: jax.Array,
                  speak_logit_B: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(canonical emitted tokens BxN, speaking after the block B) for one block's emissions."""
    emitted_BxN = jnp.where(raw_BxN >= FIRST_TEXT_ID, raw_BxN, THINK_ID)
    for n in range(raw_BxN.shape[1]):  # slots in order: a later slot sees the new state
        token_B = raw_BxN[:, n]
        if thinking == "explicit":
            shift_B = token_B == SHIFT_ID
            emitted_BxN = emitted_BxN.at[:, n].set(jnp.where(shift_B, SHIFT_ID,
                                                             emitted_BxN[:, n]))
            speaking_B = speaking_B ^ shift_B
        elif thinking == "negative_ce":
            start_B = (token_B == START_SPEAK_ID) & ~speaking_B
            end_B = (token_B == END_SPEAK_ID) & speaking_B
            emitted_BxN = emitted_BxN.at[:, n].set(jnp.where(
                start_B, START_SPEAK_ID, jnp.where(end_B, END_SPEAK_ID, emitted_BxN[:, n])))
            speaking_B = (speaking_B | start_B) & ~end_B
        elif thinking != "implicit":
            raise ValueError(f"thinking {thinking!r} is not one of {contract.THINKING_VARIANTS}")
    if thinking == "implicit":
        speaking_B = speak_logit_B > 0  # sigmoid(logit) > 0.5
    return emitted_BxN, speaking_B


@dataclasses.dataclass
class EngineResult:
    """Per-block outputs of `DuplexEngine.run` (numpy, batch-major: B streams, K blocks)."""

    input_tokens: np.ndarray  # BxKxN int32, what the LLM read (fed back or forced)
    tokens: np.ndarray  # BxKxN int32, canonical emissions (what is fed back)
    raw_tokens: np.ndarray  # BxKxN int32, the sampled ids
    speaking: np.ndarray  # BxK bool, state after the block's output
    speak_prob: np.ndarray  # BxK float32, sigmoid(speak_logit) (implicit variant)
    mel: np.ndarray  # BxKxFxM float32, the synthesizer's raw log-mel
    speech: np.ndarray  # BxKxS float32, the speech played in the block (the feedback's)
    env_audio: np.ndarray  # BxKxS float32, the microphone as heard (echo mixed in)
    asst_audio: np.ndarray  # BxKxS float32, the assistant stream fed to the model
    logits: np.ndarray | None  # BxKxNxV float32 when run(keep_logits=True)
    block_ms: int
    sample_rate: int
    thinking: str

    @property
    def num_streams(self) -> int:
        return self.speaking.shape[0]

    def block_time_s(self, block: int) -> float:
        return block * self.block_ms / 1000.0

    def text_ids(self) -> list[list[int]]:
        """Each stream's emitted text token ids, in order."""
        flat_BxT = self.tokens.reshape(self.num_streams, -1)
        return [[int(t) for t in row if t >= FIRST_TEXT_ID] for row in flat_BxT]

    def text(self, tokenizer) -> list[str]:
        """Each stream's decoded text."""
        return [tokenizer.decode(ids) for ids in self.text_ids()]

    def events(self, tokenizer=None) -> list[list[dict[str, Any]]]:
        """Per stream, in time order: {'kind': 'start' | 'stop' | 'text', 'block', 'time_s'}
        (+ 'token' and, with a tokenizer, 'piece' for text). A start/stop is the block where
        `speaking` turned True/False."""
        return [self.stream_events(b, tokenizer) for b in range(self.num_streams)]

    def stream_events(self, stream: int, tokenizer=None) -> list[dict[str, Any]]:
        """`events()` of one stream."""
        items, previous = [], False
        for k, now in enumerate(self.speaking[stream].tolist()):
            time_s = self.block_time_s(k)
            if now != previous:  # a transition stands in the block's first slot
                items.append(dict(kind="start" if now else "stop", block=k, time_s=time_s))
            previous = now
            for token in self.tokens[stream, k].tolist():
                if token >= FIRST_TEXT_ID:
                    item = dict(kind="text", block=k, time_s=time_s, token=token)
                    if tokenizer is not None:
                        item["piece"] = tokenizer.piece_of(token)
                    items.append(item)
        return items

    def event_times(self, stream: int, kind: str, after_s: float = 0.0) -> list[float]:
        """Times of one stream's events of `kind` at or after `after_s`."""
        return [e["time_s"] for e in self.stream_events(stream)
                if e["kind"] == kind and e["time_s"] >= after_s - 1e-9]

    def speech_audio(self, vocoder=None) -> np.ndarray:
        """B x T speech: the played speech (the feedback's; block k's at samples
        [k*S, (k+1)*S), the vocoder's delay behind the mel), or `vocoder` (e.g.
        GriffinLimVocoder) over the kept mel, in block time."""
        if vocoder is None:
            return self.speech.reshape(self.num_streams, -1)
        kept_BxKxFxM = np.where(self.speaking[..., None, None], self.mel, SILENCE_LOG_MEL)
        b, k, f, m = kept_BxKxFxM.shape
        return np.stack([vocoder(x.reshape(k * f, m)) for x in kept_BxKxFxM])


class DuplexEngine:
    """Runs a `DuplexModel` (or anything with its `init_state`/`step`) free-running.

    temperature 0 is greedy; otherwise tokens are sampled from softmax(logits / T).
    `vocab_size` (e.g. the tokenizer's) restricts emissions to ids below it: the model's
    output layer is sized by the config and may exceed the pieces the trained tokenizer
    has, and an id without a piece is never a training target.
    Free-running needs tokens_per_block == 1 (a block's N inputs would depend on its own
    outputs); teacher-forced runs (`forced_tokens_BxKxN`) work for any N.
    """

    def __init__(self, model, params, config, *, temperature: float = 0.0, seed: int = 0,
                 vocab_size: int | None = None):
        self.model, self.params, self.config = model, params, config
        self.temperature, self.seed = float(temperature), seed
        if vocab_size is not None and vocab_size <= FIRST_TEXT_ID:
            raise ValueError(f"vocab_size {vocab_size} leaves no text ids (the first is "
                             f"{FIRST_TEXT_ID})")
        self.vocab_size = vocab_size
        self.thinking = config.model.thinking
        if self.thinking not in contract.THINKING_VARIANTS:
            raise ValueError(f"config.model.thinking: {self.thinking!r} is not one of "
                             f"{contract.THINKING_VARIANTS}")
        self.feedback = Feedback.from_config(config)
        self.samples_per_block = contract.samples_per_block(config.audio.sample_rate,
                                                            config.audio.block_ms)
        self.tokens_per_block = config.data.tokens_per_block
        self._init = jax.jit(self.initial_state, static_argnums=(2,))
        self._block = jax.jit(self.block_step, donate_argnums=(1,))

    def _sample(self, logits_BxNxV: jax.Array, key: jax.Array) -> jax.Array:
        if self.vocab_size is not None and self.vocab_size < logits_BxNxV.shape[-1]:
            in_vocab_V = jnp.arange(logits_BxNxV.shape[-1]) < self.vocab_size
            logits_BxNxV = jnp.where(in_vocab_V, logits_BxNxV, -jnp.inf)
        if self.temperature == 0.0:
            return jnp.argmax(logits_BxNxV, axis=-1).astype(jnp.int32)
        scaled = logits_BxNxV.astype(jnp.float32) / self.temperature
        return jax.random.categorical(key, scaled, axis=-1).astype(jnp.int32)

    def initial_state(self, params, prompt_tokens_BxP: jax.Array, num_blocks: int) -> dict:
        """The loop's state before block 0: the model's prompt-filled carry (sized for
        `num_blocks`), BOS as the next input, listening, the feedback's silence, the key."""
        b = prompt_tokens_BxP.shape[0]
        return dict(model=self.model.init_state(params, prompt_tokens_BxP, num_blocks),
                    tokens=jnp.full((b, 1), contract.BOS_ID, jnp.int32),
                    speaking=jnp.zeros((b,), bool), feedback=self.feedback.init_state(b),
                    key=jax.random.key(self.seed))

    def block_step(self, params, state, env_BxS, echo, forced_tokens_BxN=None,
                   forced_asst_BxS=None):
        """One block: echo mix, model step, sampling, state machine, speech feedback ->
        (state, the block's record). `echo`: {'gain': B float32, 'delay': B int32 samples}.
        The one function `run` jits and the serving export serializes."""
        tokens_BxN = state["tokens"] if forced_tokens_BxN is None else forced_tokens_BxN
        feedback = state["feedback"]
        if forced_asst_BxS is not None:
            feedback = dict(feedback, asst=forced_asst_BxS)
        heard_BxS, asst_BxS = self.feedback.hear(feedback, env_BxS, echo["gain"],
                                                 echo["delay"])
        carry, out = self.model.step(params, state["model"], dict(
            env_audio=heard_BxS, asst_audio=asst_BxS, tokens=tokens_BxN))

        key, sample_key = jax.random.split(state["key"])
        raw_BxN = self._sample(out["logits"], sample_key)
        emitted_BxN, speaking_B = advance_state(self.thinking, raw_BxN, state["speaking"],
                                                out["speak_logit"])
        mel_BxFxM = out["mel"].astype(jnp.float32)
        kept_BxFxM = jnp.where(speaking_B[:, None, None], mel_BxFxM, SILENCE_LOG_MEL)
        feedback, speech_BxS = self.feedback.speak(feedback, kept_BxFxM)

        state = dict(model=carry, tokens=emitted_BxN[:, -1:], speaking=speaking_B,
                     feedback=feedback, key=key)
        record = dict(input_tokens=tokens_BxN, tokens=emitted_BxN, raw_tokens=raw_BxN,
                      speaking=speaking_B, speak_prob=jax.nn.sigmoid(out["speak_logit"]),
                      mel=mel_BxFxM, speech=speech_BxS, env_audio=heard_BxS,
                      asst_audio=asst_BxS, logits=out["logits"].astype(jnp.float32))
        return state, record

    def _blocks(self, audio, batch: int, num_blocks: int, name: str) -> jax.Array:
        """B x T (zero-padded to whole blocks) or B x K x S -> K x B x S."""
        audio = jnp.asarray(audio, jnp.float32)
        s = self.samples_per_block
        if audio.ndim == 2:
            audio = jnp.pad(audio, ((0, 0), (0, num_blocks * s - audio.shape[1])))
        audio = audio.reshape(batch, -1, s)
        if audio.shape[1] != num_blocks:
            raise ValueError(f"{name}: {audio.shape[1]} blocks, expected {num_blocks}")
        return jnp.moveaxis(audio, 1, 0)

    def run(self, env_audio_BxT, prompt_tokens_BxP, *, echo_gain=0.0, echo_delay_s=0.0,
            forced_tokens_BxKxN=None, forced_asst_audio=None,
            keep_logits: bool = False) -> EngineResult:
        """Runs every stream through ceil(T / S) blocks.

        echo_gain, echo_delay_s: scalars or one value per stream. forced_tokens_BxKxN
        replaces the fed-back input tokens and forced_asst_audio (B x T or B x K x S) the
        fed-back assistant stream (teacher forcing: then this equals `scan_forward`). The
        state machine and the recorded speech always follow the model's own emissions.
        """
        env_BxT = jnp.asarray(env_audio_BxT, jnp.float32)
        b, s, n = env_BxT.shape[0], self.samples_per_block, self.tokens_per_block
        num_blocks = -(-env_BxT.shape[1] // s)
        if forced_tokens_BxKxN is None and n != 1:
            raise ValueError(f"free-running needs data.tokens_per_block == 1, got {n}: "
                             "pass forced_tokens_BxKxN to teacher-force")
        env_KxBxS = self._blocks(env_BxT, b, num_blocks, "env_audio")
        forced_tok_KxBxN = forced_asst_KxBxS = None
        if forced_tokens_BxKxN is not None:
            forced_tok = jnp.asarray(forced_tokens_BxKxN, jnp.int32)
            if forced_tok.shape != (b, num_blocks, n):
                raise ValueError(f"forced_tokens_BxKxN: shape {forced_tok.shape}, expected "
                                 f"{(b, num_blocks, n)}")
            forced_tok_KxBxN = jnp.moveaxis(forced_tok, 1, 0)
        if forced_asst_audio is not None:
            forced_asst_KxBxS = self._blocks(forced_asst_audio, b, num_blocks,
                                             "forced_asst_audio")
        sample_rate = self.config.audio.sample_rate
        delay_B = np.round(np.broadcast_to(np.asarray(echo_delay_s, np.float64), (b,))
                           * sample_rate).astype(np.int32)
        if delay_B.min() < 0 or delay_B.max() > s:
            raise ValueError(f"echo_delay_s must be 0..{self.config.audio.block_ms / 1000} s "
                             f"(one block), got {echo_delay_s}")
        echo = dict(gain=jnp.broadcast_to(jnp.asarray(echo_gain, jnp.float32), (b,)),
                    delay=jnp.asarray(delay_B))
        prompt_BxP = jnp.asarray(prompt_tokens_BxP, jnp.int32)
        state = self._init(self.params, prompt_BxP, num_blocks)
        records = []
        for k in range(num_blocks):
            state, record = self._block(
                self.params, state, env_KxBxS[k], echo,
                None if forced_tok_KxBxN is None else forced_tok_KxBxN[k],
                None if forced_asst_KxBxS is None else forced_asst_KxBxS[k])
            if not keep_logits:
                record.pop("logits")
            records.append(record)
        # Stack on the host: one device concatenate over K arrays compiles in time that
        # grows faster than K (18 s per field at 4000 blocks).
        host = jax.device_get(records)
        stacked = {name: np.stack([r[name] for r in host], axis=1) for name in host[0]}
        logits = stacked.pop("logits", None)
        return EngineResult(**stacked, logits=logits, block_ms=self.config.audio.block_ms,
                            sample_rate=sample_rate, thinking=self.thinking)
