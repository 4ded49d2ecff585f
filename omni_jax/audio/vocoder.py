"""Vocoders: log-mel frames (the synthesizer's output) -> waveform, outside the model.

Every vocoder takes `log_mel_TxM` in the units of `omni_jax.audio.frontend` (log of Slaney
mel power + 1e-6, causal 25 ms / 10 ms framing) and returns T * hop float32 samples at the
sample rate with peak <= 1, sample i aligned with the frontend's sample i (frame j covers
samples [(j+1)*hop - win, (j+1)*hop)).

`config.model.synth.vocoder` names one in a registry:
  griffin_lim  built in: undo the log, non-negative least-squares inverse of the same mel
               filterbank, Griffin-Lim phase recovery. Needs no training; sounds phasey.
  <other>      a trained neural vocoder. Plug one in with
                   register_vocoder("neural", lambda config: MyVocoder.load(path, config))
               before `make_vocoder(config)`, where `MyVocoder()(log_mel_TxM)` follows the
               `Vocoder` protocol. Its weights come from a local path (no downloads at run
               time), and it must be trained on this frontend's log-mel definition.

`StreamingMelInverse` is the other kind: causal and jittable, block by block, for the
assistant stream that the streaming engine (`omni_jax.duplex.engine`) feeds back to the
model inside its jitted loop, where whole-utterance Griffin-Lim cannot run.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import librosa
import numpy as np

from omni_jax.audio.frontend import LOG_FLOOR, LogMelFrontend



@runtime_checkable
class Vocoder(Protocol):
    def __call__(self, log_mel_TxM: np.ndarray) -> np.ndarray:
        """log_mel_TxM -> float32 audio of T * hop samples, peak <= 1."""


@dataclasses.dataclass(frozen=True)
class GriffinLimVocoder:
    """Inverts `LogMelFrontend` exactly up to phase: the same filterbank, window and
    framing. `n_iter` Griffin-Lim iterations (fast variant, librosa's default momentum);
    a fixed seed makes the output deterministic."""

    sample_rate: int
    n_fft: int
    win_length: int
    hop_length: int
    n_mels: int
    n_iter: int = 32
    seed: int = 0

    @classmethod
    def from_config(cls, config) -> GriffinLimVocoder:
        frontend = LogMelFrontend.from_config(config)
        return cls(frontend.sample_rate, frontend.n_fft, frontend.win, frontend.hop,
                   frontend.n_mels)

    @property
    def offset(self) -> int:
        """Where the frontend's sample 0 sits in librosa's uncentred reconstruction.

        librosa centres the `win_length` window inside each `n_fft` frame (padding
        (n_fft - win) / 2 on the left), frame t starting at t * hop; the frontend's frame
        t windows samples [t*hop - (win - hop), (t+1)*hop). The power spectra agree
        (a shift inside a zero-padded frame changes only the phase), so the two sample
        axes differ by this constant."""
        return (self.n_fft - self.win_length) // 2 + self.win_length - self.hop_length

    def __call__(self, log_mel_TxM: np.ndarray) -> np.ndarray:
        log_mel_TxM = np.asarray(log_mel_TxM, np.float64)
        if log_mel_TxM.ndim != 2 or log_mel_TxM.shape[1] != self.n_mels:
            raise ValueError(f"expected log-mel T x {self.n_mels}, got {log_mel_TxM.shape}")
        num_frames = log_mel_TxM.shape[0]
        # The last win - hop samples are seen only through the tails of the last windows,
        # which Griffin-Lim's overlap-add would divide by ~0: hold the last frame steady
        # for as many frames as reach past the end, then crop them off.
        tail = -(-(self.win_length - self.hop_length) // self.hop_length)
        log_mel_TxM = np.pad(log_mel_TxM, ((0, tail), (0, 0)), mode="edge")
        mel_power_MxT = np.maximum(np.exp(log_mel_TxM.T) - LOG_FLOOR, 0.0)
        magnitude_NxT = librosa.feature.inverse.mel_to_stft(
            mel_power_MxT, sr=self.sample_rate, n_fft=self.n_fft, power=2.0)
        audio = librosa.griffinlim(
            magnitude_NxT, n_iter=self.n_iter, hop_length=self.hop_length,
            win_length=self.win_length, n_fft=self.n_fft, window="hann", center=False,
            random_state=self.seed)
        audio_T = audio[self.offset:self.offset + num_frames * self.hop_length]
        peak = np.abs(audio_T).max(initial=0.0)
        return (audio_T / max(peak, 1.0)).astype(np.float32)


VocoderFactory = Callable[[object], Vocoder]  # config -> vocoder
_REGISTRY: dict[str, VocoderFactory] = {"griffin_lim": GriffinLimVocoder.from_config}


def register_vocoder(name: str, factory: VocoderFactory) -> None:
    """Makes `config.model.synth.vocoder = name` build `factory(config)`."""
    if name in _REGISTRY:
        raise ValueError(f"vocoder {name!r} is already registered")
    _REGISTRY[name] = factory


def registered_vocoders() -> list[str]:
    return sorted(_REGISTRY)


def make_vocoder(config) -> Vocoder:
    """The vocoder that `config.model.synth.vocoder` names."""
    name = config.model.synth.vocoder
    if name not in _REGISTRY:
        raise ValueError(f"config.model.synth.vocoder: {name!r} is not registered; registered "
                         f"vocoders: {registered_vocoders()} (see omni_jax.audio.vocoder)")
    return _REGISTRY[name](config)


@dataclasses.dataclass(frozen=True)
class StreamingMelInverse:
    """Jittable, causal log-mel -> waveform, one block of frames at a time.

    Per frame: mel power -> linear power by a fixed non-negative linear map (each FFT bin
    takes the mean of its filters' per-bin power: exact for a flat spectrum within each
    filter), magnitude with uniform random phase, inverse FFT, the frontend's Hann window,
    overlap-add at the frontend's hop. Random-phase frames add incoherently, so the sum is
    normalised by sqrt(sum of squared windows); `gain` undoes the analysis window's energy
    so that the frontend's log-mel of the output matches the input log-mel.

    Frame j of a block ends at sample (j+1)*hop, so the last `win - hop` samples of a block
    are complete only after the next block's frames: `step` emits them one block later, a
    fixed 15 ms (at 25/10 ms framing) delay.
    """

    frontend: LogMelFrontend

    @functools.cached_property
    def _constants(self):
        f = self.frontend
        # The frontend's filterbank (the same call), a numpy constant.
        basis_XxM = librosa.filters.mel(sr=f.sample_rate, n_fft=f.n_fft, n_mels=f.n_mels).T
        per_bin_M = basis_XxM.sum(axis=0)  # a flat spectrum p gives mel power p * per_bin
        cover_X = basis_XxM.sum(axis=1)
        weights_XxM = basis_XxM / np.where(cover_X > 0, cover_X, 1.0)[:, None]
        to_linear_MxX = (weights_XxM / per_bin_M[None]).T
        window_W = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(f.win) / f.win)
        # Per offset within a hop: the squared windows that overlap there.
        energy = np.array([np.sum(window_W[r::f.hop] ** 2) for r in range(f.hop)])
        gain = math.sqrt(f.n_fft / np.sum(window_W ** 2))
        return (to_linear_MxX.astype(np.float32), window_W.astype(np.float32),
                (gain / np.sqrt(energy)).astype(np.float32))

    def init_state(self, batch: int) -> jax.Array:
        """The overlap-add tail: `win - hop` samples not yet complete."""
        return jnp.zeros((batch, self.frontend.overlap), jnp.float32)

    def step(self, log_mel_BxFxM: jax.Array, tail_BxO: jax.Array, key: jax.Array):
        """One block of F frames -> (F*hop samples delayed by win - hop, new tail)."""
        f = self.frontend
        to_linear_MxX, window_W, norm = self._constants
        b, num_frames, _ = log_mel_BxFxM.shape
        mel_power_BxFxM = jnp.maximum(jnp.exp(log_mel_BxFxM) - LOG_FLOOR, 0.0)
        power_BxFxX = jnp.einsum("bfm,mx->bfx", mel_power_BxFxM, to_linear_MxX,
                                 precision="highest")
        phase_BxFxX = jax.random.uniform(key, power_BxFxX.shape, maxval=2 * jnp.pi)
        spec_BxFxX = jnp.sqrt(power_BxFxX) * jnp.exp(1j * phase_BxFxX)
        frames_BxFxW = jnp.fft.irfft(spec_BxFxX, n=f.n_fft, axis=-1)[..., :f.win] * window_W
        # Buffer position 0 is the block's sample -overlap: frame j covers [j*hop, j*hop+win).
        index_FxW = np.arange(num_frames)[:, None] * f.hop + np.arange(f.win)[None]
        size = num_frames * f.hop
        buffer_BxT = jnp.zeros((b, size + f.overlap), jnp.float32)
        buffer_BxT = buffer_BxT.at[:, index_FxW].add(frames_BxFxW.astype(jnp.float32))
        buffer_BxT = buffer_BxT.at[:, :f.overlap].add(tail_BxO)
        audio_BxS = buffer_BxT[:, :size] * np.tile(norm, num_frames)
        return jnp.clip(audio_BxS, -1.0, 1.0), buffer_BxT[:, size:]
