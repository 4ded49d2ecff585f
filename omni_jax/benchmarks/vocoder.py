"""what=vocoder: the speech path's cost and latency. Per block of the streaming vocoder
(`StreamingGriffinLim.step`, jitted, at `batch` streams) p50/p99 in ms and `block_fraction`
= p50 / block duration; `delay_ms` and `lookahead_ms` (fixed by the framing and the
config); and the same for the whole feedback over a training batch (`Feedback.model_inputs`
on the reference speech of `batch` x data.num_blocks blocks, what each train step adds)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from omni_jax.audio.feedback import Feedback
from omni_jax.benchmarks import common


def run(config, batch: int, repeats: int) -> dict:
    feedback = Feedback.from_config(config)
    vocoder = feedback.vocoder
    rng = np.random.default_rng(0)
    frames, mels = vocoder.frames_per_block, feedback.frontend.n_mels
    mel_BxFxM = jnp.asarray(rng.normal(-2.0, 2.0, (batch, frames, mels)), jnp.float32)
    step = jax.jit(vocoder.step, donate_argnums=1)
    state = vocoder.init_state(batch)

    def call():
        nonlocal state
        audio_BxS, state = step(mel_BxFxM, state)
        return audio_BxS

    block_times = common.time_calls(call, repeats, warmup=2)
    block_s = config.audio.block_ms / 1000.0

    train_batch = common.synthetic_batch(config, int(config.data.pipeline.batch_size))
    inputs = jax.jit(feedback.model_inputs)
    device_batch = jax.device_put({k: train_batch[k] for k in (
        "env_audio", "speech_target", "speech_mask", "echo_gain", "echo_delay")})
    train_times = common.time_calls(lambda: inputs(device_batch)["asst_audio"],
                                    max(1, repeats // 20), warmup=1)
    p50 = common.percentile_ms(block_times, 50)
    return dict(
        what="vocoder", vocoder=config.model.synth.streaming.kind, batch=batch,
        iterations=getattr(vocoder, "iterations", None),
        delay_ms=feedback.delay_ms, lookahead_ms=getattr(vocoder, "lookahead_ms", None),
        block_ms=config.audio.block_ms, block_p50_ms=p50,
        block_p99_ms=common.percentile_ms(block_times, 99),
        block_fraction=p50 / 1000.0 / block_s,
        train_batch=int(config.data.pipeline.batch_size),
        train_blocks=int(config.data.num_blocks),
        train_feedback_p50_ms=common.percentile_ms(train_times, 50))
