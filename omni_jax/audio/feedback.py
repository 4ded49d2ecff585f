"""The one speech path: what the model says -> what it plays -> what it hears of itself.

Training (teacher-forced, on the reference speech's log-mel), the streaming engine
(free-running, on the model's own mel), the Full-Duplex-Bench runner and the exported step
all go through these functions, so that training and free-running differ only by the
model's own error (tests/test_feedback.py checks training's streams against the engine's).

Per block k (S samples; the contract's timing, `data_pipelines.contract.TimingRules`):
  speak   kept mel of block k (the synthesizer's mel while speaking, else the silence
          log-mel) -> the streaming vocoder (`config.model.synth.streaming.kind`, built in:
          `StreamingGriffinLim`) -> played_k, the speech made in block k
          (`vocoder.delay_ms` behind the mel: the window overlap and the look-ahead).
  stream  asst_audio[k + 1] = played_k; asst_audio[0] = zeros.
  echo    env heard in block k = env[k] + gain * (assistant stream delayed by `delay`
          samples), delay <= S (a history of one block). No clipping: no limiter runs.

State (fixed size, a block loop's carry): the vocoder's, the assistant stream of the
current block and the previous one (the echo's history).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import contract
from omni_jax.audio.frontend import SILENCE_LOG_MEL, LogMelFrontend
from omni_jax.audio.vocoder import StreamingVocoder, make_streaming_vocoder, play_utterance

@dataclasses.dataclass(frozen=True)
class Feedback:
    """`speak` (kept mel -> the block's played speech), `hear` (microphone + echo), and
    `teacher_forced` (both over a whole batch from the reference speech)."""

    vocoder: StreamingVocoder
    samples_per_block: int
    frontend: LogMelFrontend

    @classmethod
    def from_config(cls, config) -> Feedback:
        return cls(make_streaming_vocoder(config),
                   contract.samples_per_block(config.audio.sample_rate, config.audio.block_ms),
                   LogMelFrontend.from_config(config))

    def init_state(self, batch: int) -> dict:
        s = self.samples_per_block
        return dict(vocoder=self.vocoder.init_state(batch),
                    asst=jnp.zeros((batch, s), jnp.float32),
                    previous_asst=jnp.zeros((batch, s), jnp.float32))

    def hear(self, state: dict, env_BxS: jax.Array, echo_gain_B: jax.Array,
             echo_delay_B: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(the microphone as heard in this block BxS, the assistant stream BxS fed to the
        model): env plus the assistant stream `echo_delay_B` samples late, times the gain."""
        s = self.samples_per_block
        history_Bx2S = jnp.concatenate([state["previous_asst"], state["asst"]], axis=1)
        index_BxS = (s - echo_delay_B.astype(jnp.int32))[:, None] + jnp.arange(s)[None]
        echo_BxS = jnp.take_along_axis(history_Bx2S, index_BxS, axis=1)
        heard_BxS = env_BxS.astype(jnp.float32) + echo_gain_B[:, None] * echo_BxS
        return heard_BxS, state["asst"]

    def speak(self, state: dict, kept_mel_BxFxM: jax.Array) -> tuple[dict, jax.Array]:
        """(the next state, the speech played in this block BxS) from the block's kept mel."""
        played_BxS, vocoder_state = self.vocoder.step(kept_mel_BxFxM, state["vocoder"])
        return dict(vocoder=vocoder_state, asst=played_BxS,
                    previous_asst=state["asst"]), played_BxS

    def teacher_forced(self, kept_mel_BxKxFxM: jax.Array, env_BxKxS: jax.Array,
                       echo_gain_B: jax.Array, echo_delay_B: jax.Array
                       ) -> tuple[jax.Array, jax.Array]:
        """(env heard BxKxS, assistant stream BxKxS) for a whole sequence whose kept mel is
        known in advance: the same `hear` and `speak`, scanned over the K blocks."""
        def block(state, inputs):
            mel_BxFxM, env_BxS = inputs
            heard_BxS, asst_BxS = self.hear(state, env_BxS, echo_gain_B, echo_delay_B)
            state, _ = self.speak(state, mel_BxFxM)
            return state, (heard_BxS, asst_BxS)

        _, (heard_KxBxS, asst_KxBxS) = jax.lax.scan(
            block, self.init_state(env_BxKxS.shape[0]),
            (jnp.moveaxis(kept_mel_BxKxFxM, 1, 0), jnp.moveaxis(env_BxKxS, 1, 0)))
        return jnp.moveaxis(heard_KxBxS, 0, 1), jnp.moveaxis(asst_KxBxS, 0, 1)

    def reference_mel(self, speech_target_BxKxS: jax.Array, speech_mask_BxK: jax.Array
                      ) -> jax.Array:
        """The kept mel BxKxFxM of the reference speech: its log-mel where the assistant
        speaks, the silence log-mel elsewhere (what a perfect synthesizer would emit)."""
        b, k, s = speech_target_BxKxS.shape
        mel_BxTxM = self.frontend(speech_target_BxKxS.reshape(b, k * s).astype(jnp.float32))
        mel_BxKxFxM = mel_BxTxM.reshape(b, k, -1, mel_BxTxM.shape[-1])
        return jnp.where(speech_mask_BxK[..., None, None], mel_BxKxFxM, SILENCE_LOG_MEL)

    def model_inputs(self, batch: dict, kept_mel_BxKxFxM: jax.Array | None = None) -> dict:
        """The batch with `env_audio` (echo mixed in) and `asst_audio` as the model hears
        them: from the reference speech (teacher forcing), or from `kept_mel_BxKxFxM`
        (e.g. the model's own mel: scheduled feedback)."""
        if kept_mel_BxKxFxM is None:
            kept_mel_BxKxFxM = self.reference_mel(batch["speech_target"], batch["speech_mask"])
        heard, asst = self.teacher_forced(
            jax.lax.stop_gradient(kept_mel_BxKxFxM), batch["env_audio"],
            batch["echo_gain"].astype(jnp.float32), batch["echo_delay"])
        return dict(batch, env_audio=heard, asst_audio=asst)

    @property
    def delay_ms(self) -> float:
        return 1000.0 * self.vocoder.delay_samples / self.frontend.sample_rate

    def play_utterance(self, log_mel_TxM: np.ndarray) -> np.ndarray:
        """A whole utterance's log-mel through the speech path's vocoder: T * hop samples
        aligned with the frontend's (`vocoder.play_utterance`). What a perfect synthesizer
        would play."""
        return play_utterance(self.vocoder, self.frontend, log_mel_TxM)
