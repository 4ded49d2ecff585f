"""Streaming log-mel frontend: 16 kHz audio -> 80-bin log-mel at 100 Hz, block by block.

Framing is causal so that it can stream: frame j covers samples [(j+1)*hop - win, (j+1)*hop),
i.e. it ends at the last sample of its hop, and the first `win - hop` samples before the
start of the audio are zeros. A block of S samples (S a multiple of hop) then yields exactly
F = S / hop frames, and the only thing carried to the next block is the last O = `win - hop`
samples (the window overlap). Streaming block by block equals the whole-utterance
computation.

Per frame: periodic Hann window of W = `win` samples, zero-padded to `n_fft`, power spectrum
|rfft|^2 over X = n_fft / 2 + 1 FFT bins, Slaney mel filterbank (XxM) from
`librosa.filters.mel` (a numpy constant), then
log(mel + 1e-6). The additive floor (rather than log(max(mel, 1e-10))) keeps the log smooth
with a finite gradient everywhere and stops digital silence (-13.8 instead of -23) from
dominating the input scale; with float audio in [-1, 1] speech sits around -5..+8.

Everything runs in float32 whatever the model's compute dtype: the FFT and the log want it.
Shape letters: the legend of `omni_jax.models`.
"""

from __future__ import annotations

import math

import dataclasses
import functools

import jax.numpy as jnp
import numpy as np

LOG_FLOOR = 1e-6
SILENCE_LOG_MEL = math.log(LOG_FLOOR)  # the log-mel of digital silence, -13.8


def _samples(ms: float, sample_rate: int) -> int:
    n = sample_rate * ms / 1000.0
    if n != int(n):
        raise ValueError(f"{ms} ms is not a whole number of samples at {sample_rate} Hz")
    return int(n)


@dataclasses.dataclass(frozen=True)
class LogMelFrontend:
    """Causal log-mel analysis; holds only constants (no parameters)."""

    sample_rate: int = 16000
    win_ms: float = 25.0
    hop_ms: float = 10.0
    n_mels: int = 80

    @classmethod
    def from_config(cls, config) -> LogMelFrontend:
        a = config.audio
        return cls(a.sample_rate, a.win_ms, a.hop_ms, a.n_mels)

    @property
    def win(self) -> int:
        return _samples(self.win_ms, self.sample_rate)

    @property
    def hop(self) -> int:
        return _samples(self.hop_ms, self.sample_rate)

    @property
    def overlap(self) -> int:
        """Samples carried between blocks: the part of the next window already heard."""
        return self.win - self.hop

    @property
    def n_fft(self) -> int:
        return 1 << (self.win - 1).bit_length()  # next power of two: 400 -> 512

    @functools.cached_property
    def _window_W(self) -> np.ndarray:
        # Periodic Hann, as librosa/scipy use for spectral analysis.
        return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(self.win) / self.win)).astype(
            np.float32)

    @functools.cached_property
    def _mel_basis_XxM(self) -> np.ndarray:
        import librosa  # only needed once, for the constant filterbank

        mel_MxX = librosa.filters.mel(sr=self.sample_rate, n_fft=self.n_fft,
                                      n_mels=self.n_mels)
        return np.ascontiguousarray(mel_MxX.T, dtype=np.float32)

    def init_state(self, batch: int) -> jnp.ndarray:
        """The overlap before the first block: BxO, O = `win - hop` zeros per stream."""
        return jnp.zeros((batch, self.overlap), jnp.float32)

    def step(self, audio_BxS: jnp.ndarray, overlap_BxO: jnp.ndarray):
        """One block of S samples (a multiple of hop) -> (mel_BxFxM with F = S/hop, the
        next overlap_BxO)."""
        padded = jnp.concatenate([overlap_BxO, audio_BxS.astype(jnp.float32)], axis=1)
        mel_BxFxM = self._log_mel(padded, audio_BxS.shape[1])
        return mel_BxFxM, padded[:, padded.shape[1] - self.overlap:]

    def __call__(self, audio_BxT: jnp.ndarray) -> jnp.ndarray:
        """Whole utterance (T a multiple of hop) -> mel_BxFxM with F = T/hop; equals
        streaming."""
        mel_BxFxM, _ = self.step(audio_BxT, self.init_state(audio_BxT.shape[0]))
        return mel_BxFxM

    def _log_mel(self, padded: jnp.ndarray, num_samples: int) -> jnp.ndarray:
        """`padded` is Bx(O+S): the overlap, then `num_samples` = S new samples."""
        if num_samples % self.hop:
            raise ValueError(f"{num_samples} samples are not a multiple of hop {self.hop}")
        num_frames = num_samples // self.hop
        # Frame j of the padded buffer starts at j*hop; a static gather (win/hop need not be
        # an integer, 400/160 here, so a reshape-based framing does not apply).
        index_FxW = np.arange(num_frames)[:, None] * self.hop + np.arange(self.win)[None, :]
        frames_BxFxW = padded[:, index_FxW] * self._window_W
        spec_BxFxX = jnp.fft.rfft(frames_BxFxW, n=self.n_fft, axis=-1)
        power_BxFxX = jnp.real(spec_BxFxX) ** 2 + jnp.imag(spec_BxFxX) ** 2
        mel_BxFxM = jnp.einsum("bfx,xm->bfm", power_BxFxX, self._mel_basis_XxM,
                               precision="highest")
        return jnp.log(mel_BxFxM + LOG_FLOOR)
