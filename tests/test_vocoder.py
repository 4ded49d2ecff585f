"""Vocoders: Griffin-Lim inverts the frontend's log-mel (level, spectrum and timing), the
registry builds what `config.model.synth.vocoder` names, and the streaming mel inverse of the
engine's loop keeps the level."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from omni_jax.audio import vocoder as vocoder_lib
from omni_jax.audio.frontend import SILENCE_LOG_MEL, LogMelFrontend
from omni_jax.audio.vocoder import (GriffinLimVocoder, StreamingGriffinLim, StreamingMelInverse,
                                    Vocoder, make_vocoder, register_vocoder,
                                    registered_vocoders)

CONFIG = default.get_config()
FRONTEND = LogMelFrontend.from_config(CONFIG)


@pytest.fixture(scope="module")
def speech():
    """(audio, its log-mel) of a deterministic speech-like signal, cut to whole hops: a
    gliding-pitch harmonic series through two moving formants, in syllable-shaped bursts,
    with a fricative hiss in the middle. (Not espeak: most of its voices add random breath
    and jitter, so a render differs run to run and so would the figures.)"""
    sample_rate, seconds = FRONTEND.sample_rate, 1.35
    t_S = np.arange(int(sample_rate * seconds)) / sample_rate
    f0_S = 140 + 40 * np.sin(2 * np.pi * 0.8 * t_S)
    phase_S = 2 * np.pi * np.cumsum(f0_S) / sample_rate
    f1_S = 600 + 150 * np.sin(2 * np.pi * 1.3 * t_S)
    f2_S = 1500 + 400 * np.sin(2 * np.pi * 0.9 * t_S + 1)
    voiced_S = np.zeros_like(t_S)
    for harmonic in range(1, 30):
        freq_S = harmonic * f0_S
        gain_S = (np.exp(-((freq_S - f1_S) / 150) ** 2)
                  + 0.6 * np.exp(-((freq_S - f2_S) / 200) ** 2) + 0.05)
        voiced_S += np.where(freq_S < sample_rate / 2 - 500, gain_S / harmonic ** 0.5, 0.0) \
            * np.sin(harmonic * phase_S)
    syllables_S = np.clip(np.sin(4 * np.pi * t_S / seconds), 0, None) ** 0.7
    noise_S = np.random.default_rng(0).normal(size=t_S.shape)
    hiss_S = np.diff(noise_S, prepend=0.0) * np.exp(-((t_S - seconds / 2) / 0.05) ** 2)
    audio = (0.15 * voiced_S * syllables_S + 0.1 * hiss_S).astype(np.float32)
    audio = audio[:len(audio) // FRONTEND.hop * FRONTEND.hop]
    return audio, np.asarray(FRONTEND(audio[None]))[0]


@pytest.fixture(scope="module")
def resynthesized(speech):
    return make_vocoder(CONFIG)(speech[1])


def log_mel(audio_T):
    return np.asarray(FRONTEND(audio_T[None]))[0]


def test_griffin_lim_round_trip(speech, resynthesized):
    """Measured: mean |log-mel difference| 0.10 (natural log), spectral convergence 0.06,
    with the default 32 iterations."""
    audio, mel_TxM = speech
    assert resynthesized.dtype == np.float32
    assert resynthesized.shape == (len(mel_TxM) * FRONTEND.hop,) == audio.shape
    assert np.abs(resynthesized).max() <= 1.0
    again_TxM = log_mel(resynthesized)
    assert np.abs(again_TxM - mel_TxM).mean() < 0.3
    magnitude, again = np.exp(mel_TxM / 2), np.exp(again_TxM / 2)
    assert np.linalg.norm(again - magnitude) / np.linalg.norm(magnitude) < 0.12
    # The level is kept: no normalisation beyond clipping protection.
    rms = np.sqrt(np.mean(audio ** 2))
    assert 0.8 < np.sqrt(np.mean(resynthesized ** 2)) / rms < 1.25  # measured 0.994


def test_griffin_lim_keeps_timing(speech, resynthesized):
    """Shifting the output by a quarter hop either way fits the input frames worse."""
    mel_TxM = speech[1]
    errors = {shift: np.abs(log_mel(np.roll(resynthesized, shift)) - mel_TxM).mean()
              for shift in (-FRONTEND.hop // 4, 0, FRONTEND.hop // 4)}
    assert min(errors, key=errors.get) == 0


def test_silence_gives_silence():
    floor_TxM = np.full((12, FRONTEND.n_mels), SILENCE_LOG_MEL, np.float32)
    audio = GriffinLimVocoder.from_config(CONFIG)(floor_TxM)
    assert audio.shape == (12 * FRONTEND.hop,)
    assert np.abs(audio).max() < 1e-3


def test_wrong_mel_count_is_an_error():
    with pytest.raises(ValueError, match="80"):
        GriffinLimVocoder.from_config(CONFIG)(np.zeros((4, 40)))


def test_unknown_vocoder_names_the_field():
    config = default.get_config()
    config.model.synth.vocoder = "no_such_vocoder"
    with pytest.raises(ValueError, match=r"config\.model\.synth\.vocoder.*griffin_lim"):
        make_vocoder(config)


def test_registered_vocoder_is_used(monkeypatch):
    monkeypatch.setattr(vocoder_lib, "_REGISTRY", dict(vocoder_lib._REGISTRY))  # undone after

    class Silent:
        def __init__(self, hop):
            self.hop = hop

        def __call__(self, log_mel_TxM):
            return np.zeros(len(log_mel_TxM) * self.hop, np.float32)

    register_vocoder("test_silent", lambda config: Silent(FRONTEND.hop))
    assert "test_silent" in registered_vocoders()
    config = default.get_config()
    config.model.synth.vocoder = "test_silent"
    vocoder = make_vocoder(config)
    assert isinstance(vocoder, Silent) and isinstance(vocoder, Vocoder)
    assert vocoder(np.zeros((3, 80))).shape == (3 * FRONTEND.hop,)
    with pytest.raises(ValueError, match="already registered"):
        register_vocoder("test_silent", lambda config: Silent(FRONTEND.hop))


BLOCK = 1280  # samples per 80 ms block at 16 kHz


def test_mel_inverse_keeps_the_level():
    """Frontend log-mel of the inverse's output matches the input log-mel on average (random
    phase: the per-frame spread stays, ~0.9 nats, the level and spectral shape do not)."""
    frontend = LogMelFrontend()  # 16 kHz: 8 frames of 10 ms per 80 ms block
    inverse = StreamingMelInverse(frontend)
    noise = np.random.default_rng(0).normal(size=(1, 12 * BLOCK)).astype(np.float32)
    audio = 0.1 * np.convolve(noise[0], [1.0, 0.6, 0.3], mode="same")[None]
    mel_1xKxFxM = frontend(jnp.asarray(audio, jnp.float32)).reshape(1, 12, 8, 80)
    tail, keys = inverse.init_state(1), jax.random.split(jax.random.key(0), 12)
    blocks = []
    for k in range(12):
        out, tail = inverse.step(mel_1xKxFxM[:, k], tail, keys[k])
        blocks.append(out)
    diff_TxM = np.asarray(frontend(jnp.concatenate(blocks, 1))[0] -
                          mel_1xKxFxM.reshape(-1, 80))[16:]  # past the start-up delay
    assert abs(diff_TxM.mean()) < 0.15
    assert np.abs(diff_TxM.mean(axis=0)).mean() < 0.3  # per mel bin: the spectral shape


# ---- the speech path's streaming Griffin-Lim ------------------------------------------------

STREAMING = StreamingGriffinLim.from_config(CONFIG)


@pytest.fixture(scope="module")
def streamed(speech):
    return STREAMING(speech[1])


def test_streaming_griffin_lim_round_trip(speech, streamed):
    """Measured on the speech-like signal: mean |log-mel difference| 0.075 (the offline
    32-iteration Griffin-Lim: 0.10), spectral convergence 0.071 (0.06), level kept; the
    random-phase inverse's log-mel is several times further off frame by frame."""
    audio, mel_TxM = speech
    assert streamed.dtype == np.float32 and streamed.shape == audio.shape
    again_TxM = log_mel(streamed)
    error = np.abs(again_TxM - mel_TxM).mean()
    assert error < 0.3
    magnitude, again = np.exp(mel_TxM / 2), np.exp(again_TxM / 2)
    assert np.linalg.norm(again - magnitude) / np.linalg.norm(magnitude) < 0.12
    assert 0.8 < np.sqrt(np.mean(streamed ** 2) / np.mean(audio ** 2)) < 1.25
    # Beside the random-phase inverse (no iterations) over the same blocks.
    frames = len(mel_TxM) // 8 * 8
    inverse = StreamingMelInverse(FRONTEND)
    mel_1xKxFxM = jnp.asarray(mel_TxM[:frames]).reshape(1, -1, 8, 80)
    tail, random_phase = inverse.init_state(1), []
    for k, key in enumerate(jax.random.split(jax.random.key(0), mel_1xKxFxM.shape[1])):
        out, tail = inverse.step(mel_1xKxFxM[:, k], tail, key)
        random_phase.append(np.asarray(out[0]))
    random_T = np.concatenate(random_phase)[FRONTEND.overlap:]
    random_error = np.abs(log_mel(np.pad(random_T, (0, FRONTEND.overlap)))[:frames - 2]
                          - mel_TxM[:frames - 2]).mean()
    assert random_error > 3 * error


def test_streaming_griffin_lim_keeps_timing(speech, streamed):
    mel_TxM = speech[1]
    errors = {shift: np.abs(log_mel(np.roll(streamed, shift)) - mel_TxM).mean()
              for shift in (-FRONTEND.hop // 4, 0, FRONTEND.hop // 4)}
    assert min(errors, key=errors.get) == 0


def test_streaming_griffin_lim_streams_with_a_fixed_delay(speech, streamed):
    """Block by block, 80 ms in and out: each block's output is the aligned utterance's
    samples `delay_samples` (35 ms: 15 ms window overlap + 20 ms look-ahead) earlier; the
    state never changes shape; silence in, exact zeros out."""
    assert STREAMING.delay_ms == 35.0 and STREAMING.lookahead_ms == 20.0
    mel_TxM = speech[1]
    blocks = len(mel_TxM) // 8
    state = STREAMING.init_state(1)
    shapes = jax.tree.map(lambda x: (x.shape, x.dtype), state)
    step = jax.jit(STREAMING.step)
    out = []
    for k in range(blocks):
        audio_1xS, state = step(jnp.asarray(mel_TxM[None, 8 * k:8 * (k + 1)]), state)
        assert jax.tree.map(lambda x: (x.shape, x.dtype), state) == shapes
        out.append(np.asarray(audio_1xS[0]))
    stream_T = np.concatenate(out)
    d = STREAMING.delay_samples
    assert d == 560 and stream_T.shape == (blocks * 1280,)
    assert not stream_T[:d - FRONTEND.overlap].any()  # before frame 0's window: nothing
    np.testing.assert_allclose(stream_T[d:], streamed[:blocks * 1280 - d], atol=2e-3)
    silence_1xFxM = jnp.full((1, 8, 80), SILENCE_LOG_MEL)
    quiet, state = STREAMING.step(silence_1xFxM, STREAMING.init_state(1))
    assert not np.asarray(quiet).any()


def test_streaming_griffin_lim_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="8 x 80"):
        STREAMING.step(jnp.zeros((1, 4, 80)), STREAMING.init_state(1))
    with pytest.raises(ValueError, match="iterations"):
        StreamingGriffinLim(FRONTEND, 8, iterations=0)


@pytest.mark.parametrize("win,hop,frames", [(400, 160, 10), (320, 160, 3), (100, 40, 7)])
def test_dense_overlap_add_and_framing_equal_index_arithmetic(win, hop, frames):
    """The streaming vocoder's dense overlap-add and framing == the scatter/gather they
    replace (frame a covers samples a*hop + [0, win))."""
    rng = np.random.default_rng(0)
    frames_BxAxW = rng.normal(size=(2, frames, win)).astype(np.float32)
    length = (frames - 1) * hop + win
    expected_BxT = np.zeros((2, length), np.float32)
    for a in range(frames):
        expected_BxT[:, a * hop:a * hop + win] += frames_BxAxW[:, a]
    added_BxT = vocoder_lib._overlap_add(jnp.asarray(frames_BxAxW), hop, length)
    np.testing.assert_allclose(added_BxT, expected_BxT, atol=1e-5)
    audio_BxT = rng.normal(size=(2, length)).astype(np.float32)
    expected_BxAxW = np.stack([audio_BxT[:, a * hop:a * hop + win] for a in range(frames)], 1)
    np.testing.assert_array_equal(
        vocoder_lib._frames_of(jnp.asarray(audio_BxT), frames, hop, win), expected_BxAxW)
