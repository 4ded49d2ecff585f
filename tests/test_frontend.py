"""Streaming log-mel frontend: causal framing, streaming == whole, scaling vs librosa."""

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from omni_jax.audio.frontend import LOG_FLOOR, LogMelFrontend

SR = 16000


def _test_audio(batch=2, seconds=0.8, seed=0):
    """A chirp and band-limited-ish noise: broadband, realistic levels."""
    t = np.arange(int(SR * seconds)) / SR
    chirp = 0.5 * librosa.chirp(fmin=100, fmax=7000, sr=SR, length=t.size)
    noise = 0.1 * np.random.default_rng(seed).standard_normal(t.size)
    return np.stack([chirp, noise + 0.3 * np.sin(2 * np.pi * 440 * t)])[:batch].astype(
        np.float32)


@pytest.fixture(scope="module")
def frontend():
    return LogMelFrontend(SR, 25, 10, 80)


def test_sizes(frontend):
    assert (frontend.win, frontend.hop, frontend.overlap, frontend.n_fft) == (400, 160, 240,
                                                                               512)
    mel, state = frontend.step(jnp.zeros((3, 1280)), frontend.init_state(3))
    assert mel.shape == (3, 8, 80) and state.shape == (3, 240)
    assert frontend(jnp.zeros((3, 12800))).shape == (3, 80, 80)


@pytest.mark.parametrize("block", [1280, 160, 640])
def test_streaming_equals_whole(frontend, block):
    audio_BxT = jnp.asarray(_test_audio())
    whole_BxFxM = frontend(audio_BxT)
    blocks_KxBxS = audio_BxT.reshape(2, -1, block).swapaxes(0, 1)

    def step(state, audio_BxS):
        mel_BxFxM, state = frontend.step(audio_BxS, state)
        return state, mel_BxFxM

    _, mel_KxBxFxM = jax.jit(lambda a: jax.lax.scan(step, frontend.init_state(2), a))(
        blocks_KxBxS)
    streamed_BxFxM = mel_KxBxFxM.swapaxes(0, 1).reshape(whole_BxFxM.shape)
    np.testing.assert_allclose(streamed_BxFxM, whole_BxFxM, atol=1e-4, rtol=0)


def test_causal_framing(frontend):
    audio = _test_audio()
    mel = frontend(jnp.asarray(audio))
    changed = audio.copy()
    changed[:, 1600:] += 0.5  # from frame 10's hop on
    mel_changed = frontend(jnp.asarray(changed))
    np.testing.assert_array_equal(mel[:, :10], mel_changed[:, :10])
    assert np.abs(mel[:, 10] - mel_changed[:, 10]).max() > 1e-2


def test_matches_librosa(frontend):
    """Same frames as librosa's uncentered STFT once the causal left padding is applied."""
    audio = _test_audio()
    ours = np.asarray(frontend(jnp.asarray(audio)))
    # librosa centers the 400-sample window inside each 512-sample frame: shift by 56.
    lead = (frontend.n_fft - frontend.win) // 2
    padded = np.pad(audio, ((0, 0), (frontend.overlap + lead, frontend.n_fft)))
    ref = librosa.feature.melspectrogram(
        y=padded, sr=SR, n_fft=512, hop_length=160, win_length=400, window="hann",
        center=False, power=2.0, n_mels=80)[..., :ours.shape[1]]
    np.testing.assert_allclose(ours, np.log(ref.swapaxes(1, 2) + LOG_FLOOR), atol=1e-3)
