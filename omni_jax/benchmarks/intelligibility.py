"""what=intelligibility: how well the speech path can be understood, by an independent
recognizer (pocketsphinx, `omni_jax.evaluation.recognizer`). `num` replies of the world said
by the assistant voice, cut to whole hops; corpus WER of

  reference              the speech itself (the recognizer's ceiling)
  speech_path            its log-mel through the speech path's streaming vocoder (what the
                         model hears itself say, what a user hears: `omni_jax.audio.feedback`)
  griffin_lim            its log-mel through offline 32-iteration Griffin-Lim
  random_phase           its log-mel through the random-phase streaming inverse

under two language models: `world` (a 3-gram over the world's sentences, the suites'
recognizer) and `words` (a uniform unigram over the world's words: the acoustics decide).
Each WER comes with a 95% bootstrap interval over the sentences, and each path's difference
from the reference with its paired interval (the same resampled sentences).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from omni_jax.audio.feedback import Feedback
from omni_jax.audio.frontend import LogMelFrontend
from omni_jax.audio.vocoder import GriffinLimVocoder, StreamingMelInverse
from omni_jax.evaluation import metrics
from omni_jax.evaluation import recognizer as recognizer_lib


def _random_phase(frontend: LogMelFrontend, frames_per_block: int):
    inverse = StreamingMelInverse(frontend)

    @jax.jit
    def blocks(mel_1xKxFxM):
        def body(tail, inputs):
            mel_1xFxM, key = inputs
            audio_1xS, tail = inverse.step(mel_1xFxM, tail, key)
            return tail, audio_1xS
        keys = jax.random.split(jax.random.key(0), mel_1xKxFxM.shape[1])
        _, audio_Kx1xS = jax.lax.scan(body, inverse.init_state(1),
                                      (jnp.moveaxis(mel_1xKxFxM, 1, 0), keys))
        return jnp.moveaxis(audio_Kx1xS, 0, 1).reshape(-1)

    def vocode(mel_TxM):
        frames = len(mel_TxM)
        padded = -(-(frames + 2) // frames_per_block) * frames_per_block  # + the delay
        mel = np.full((padded, mel_TxM.shape[1]), np.log(1e-6), np.float32)
        mel[:frames] = mel_TxM
        audio_T = np.asarray(blocks(jnp.asarray(mel.reshape(1, -1, frames_per_block,
                                                            mel.shape[1]))))
        return audio_T[frontend.overlap:frontend.overlap + frames * frontend.hop]

    return vocode


def run(config, num: int) -> dict:
    speech_path = Feedback.from_config(config)
    frontend = speech_path.frontend
    paths = {"reference": None, "speech_path": speech_path.play_utterance,
             "griffin_lim": GriffinLimVocoder.from_config(config),
             "random_phase": _random_phase(frontend, speech_path.vocoder.frames_per_block)}
    clips = recognizer_lib.spoken_clips(recognizer_lib.assistant_replies(num),
                                        recognizer_lib.assistant_voice())
    audios = [c.audio_T[:len(c.audio_T) // frontend.hop * frontend.hop] for c in clips]
    texts = [c.text for c in clips]
    spoken = {}
    for name, vocode in paths.items():
        spoken[name] = audios if vocode is None else [
            vocode(np.asarray(frontend(jnp.asarray(a)[None]))[0]) for a in audios]
    recognizers = {
        "world": recognizer_lib.make_recognizer("pocketsphinx_world"),
        "words": recognizer_lib.make_recognizer("pocketsphinx",
                                                words=recognizer_lib.world_words())}
    wer, interval, minus_reference, seconds = {}, {}, {}, {}
    for lm, recognizer in recognizers.items():
        hypotheses = {}
        for name, audio in spoken.items():
            start = time.perf_counter()
            hypotheses[name] = recognizer_lib.transcribe_many(recognizer, audio,
                                                              frontend.sample_rate)
            seconds[f"{lm}/{name}"] = time.perf_counter() - start

            def subset_wer(indices, name=name):
                return metrics.wer([texts[i] for i in indices],
                                   [hypotheses[name][i] for i in indices])

            def paired(indices, name=name):
                return subset_wer(indices, name) - subset_wer(indices, "reference")

            key = f"{lm}/{name}"
            wer[key] = subset_wer(range(len(texts)))
            interval[key] = metrics.bootstrap_interval(subset_wer, len(texts))
            minus_reference[key] = (wer[key] - wer[f"{lm}/reference"],
                                    *metrics.bootstrap_interval(paired, len(texts)))
            print(f"{lm:6s} {name:22s} wer={wer[key]:.3f} [{interval[key][0]:.3f}, "
                  f"{interval[key][1]:.3f}]  minus reference {minus_reference[key][0]:+.3f} "
                  f"[{minus_reference[key][1]:+.3f}, {minus_reference[key][2]:+.3f}]",
                  flush=True)
    return dict(what="intelligibility", sentences=len(clips),
                words=sum(len(t.split()) for t in texts),
                voice=recognizer_lib.assistant_voice().voice_id,
                speech_path=config.model.synth.streaming.kind,
                speech_path_delay_ms=speech_path.delay_ms, wer=wer, wer_ci95=interval,
                minus_reference_ci95=minus_reference, decode_seconds=seconds)
