"""Augmentation of the environment stream: background noise, room reverb, level.

Targets stay clean; only the microphone mix is augmented. Noise is generated (white, pink,
brown, babble-like, mains hum) or drawn from an optional folder of real recordings; room
impulse responses are synthetic (exponentially decaying noise with a given RT60) or drawn
from an optional folder. Everything is a pure function of its inputs and the numpy
Generator passed in, so a seed fixes the result.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from scipy import signal as sps

NOISE_KINDS = ("white", "pink", "brown", "babble", "hum")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
_DECAY_60DB = 3.0 * math.log(10.0)  # amplitude exp(-k t / rt60) falls 60 dB at t = rt60
_PEAK_AFTER_SCALING = 0.99


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """What `augment_environment` may do; mirrors `config.data.augment`."""

    noise_prob: float = 0.0
    snr_db: tuple[float, float] = (5.0, 30.0)
    reverb_prob: float = 0.0
    rt60_s: tuple[float, float] = (0.15, 0.6)
    echo_prob: float = 0.0
    echo_gain: tuple[float, float] = (0.05, 1.0)
    echo_delay_ms: tuple[float, float] = (10.0, 60.0)
    gain_db: tuple[float, float] = (0.0, 0.0)
    noise_dir: str = ""
    rir_dir: str = ""

    @classmethod
    def from_config(cls, config) -> "AugmentConfig":
        """From the full config (`config.data.augment`) or that section itself."""
        a = config.data.augment if "data" in config else config
        return cls(noise_prob=float(a.noise_prob), snr_db=_pair(a.snr_db),
                   reverb_prob=float(a.reverb_prob), rt60_s=_pair(a.rt60_s),
                   echo_prob=float(a.echo_prob), echo_gain=_pair(a.echo_gain),
                   echo_delay_ms=_pair(a.echo_delay_ms), gain_db=_pair(a.gain_db),
                   noise_dir=str(a.noise_dir), rir_dir=str(a.rir_dir))

    @classmethod
    def none(cls) -> "AugmentConfig":
        """Augmentation off: the environment is the clean mix; the echo keeps the scenario's
        gain and delay (mixed in on device, omni_jax.audio.feedback)."""
        return cls()

    @property
    def enabled(self) -> bool:
        return (self.noise_prob > 0 or self.reverb_prob > 0 or self.echo_prob > 0
                or self.gain_db != (0.0, 0.0))


def _pair(value) -> tuple[float, float]:
    low, high = value
    return float(low), float(high)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


# ---- noise ---------------------------------------------------------------------------------

def _shaped_noise(rng: np.random.Generator, num_samples: int, sample_rate: int,
                  exponent: float) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1/f**exponent (0 white, 1 pink, 2 brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(num_samples))
    freqs_hz = np.fft.rfftfreq(num_samples, 1.0 / sample_rate)
    # Flat below 20 Hz so that brown noise is not dominated by a DC drift.
    spectrum /= np.maximum(freqs_hz, 20.0) ** (exponent / 2.0)
    return np.fft.irfft(spectrum, n=num_samples)


def _babble(rng: np.random.Generator, num_samples: int, sample_rate: int) -> np.ndarray:
    """Several speech-shaped noise 'talkers', each gated by a syllable-rate envelope."""
    num_talkers = int(rng.integers(3, 8))
    spectrum = np.fft.rfft(rng.standard_normal((num_talkers, num_samples)), axis=-1)
    freqs_hz = np.fft.rfftfreq(num_samples, 1.0 / sample_rate)
    # Long-term speech spectrum: a band 100 Hz .. 4 kHz, rolling off above 500 Hz.
    shape = (freqs_hz > 100) * (freqs_hz < 4000) / np.maximum(freqs_hz / 500.0, 1.0)
    voices = np.fft.irfft(spectrum * shape, n=num_samples, axis=-1)
    # Envelopes: random levels at ~4-6 Hz, linearly interpolated, half-wave rectified.
    rate_hz = rng.uniform(4.0, 6.0, size=num_talkers)
    t_s = np.arange(num_samples) / sample_rate
    envelopes = np.empty_like(voices)
    for i in range(num_talkers):
        knots_s = np.arange(0.0, t_s[-1] + 2.0 / rate_hz[i], 1.0 / rate_hz[i])
        levels = np.maximum(rng.standard_normal(knots_s.size) + 0.3, 0.0)
        envelopes[i] = np.interp(t_s, knots_s, levels)
    return (voices * envelopes).sum(axis=0)


def _hum(rng: np.random.Generator, num_samples: int, sample_rate: int) -> np.ndarray:
    """Mains hum (50 or 60 Hz with decaying harmonics) over a faint white floor."""
    mains_hz = rng.choice([50.0, 60.0])
    t_s = np.arange(num_samples) / sample_rate
    harmonics = np.arange(1, 8)
    amplitudes = rng.uniform(0.3, 1.0, size=harmonics.size) / harmonics
    phases = rng.uniform(0, 2 * np.pi, size=harmonics.size)
    hum = (amplitudes[:, None] * np.sin(2 * np.pi * mains_hz * harmonics[:, None] * t_s
                                        + phases[:, None])).sum(axis=0)
    return hum + 0.05 * rng.standard_normal(num_samples)


def generate_noise(kind: str, num_samples: int, sample_rate: int,
                   rng: np.random.Generator) -> np.ndarray:
    """`num_samples` of unit-RMS float32 noise of the given kind (one of NOISE_KINDS)."""
    if kind == "white":
        noise = rng.standard_normal(num_samples)
    elif kind in ("pink", "brown"):
        noise = _shaped_noise(rng, num_samples, sample_rate, 1.0 if kind == "pink" else 2.0)
    elif kind == "babble":
        noise = _babble(rng, num_samples, sample_rate)
    elif kind == "hum":
        noise = _hum(rng, num_samples, sample_rate)
    else:
        raise ValueError(f"noise kind {kind!r} is not one of {NOISE_KINDS}")
    return (noise / max(rms(noise), 1e-12)).astype(np.float32)


def add_noise(signal: np.ndarray, noise: np.ndarray, snr_db: float,
              reference: np.ndarray | float | None = None) -> np.ndarray:
    """signal + noise scaled so that RMS(reference) / RMS(scaled noise) is `snr_db`.

    `reference` is the speech the SNR is measured against (an array, or its RMS);
    by default the signal itself. `noise` must be as long as `signal`.
    """
    if noise.shape != signal.shape:
        raise ValueError(f"noise shape {noise.shape} != signal shape {signal.shape}")
    ref = signal if reference is None else reference
    ref_rms = float(ref) if np.isscalar(ref) else rms(np.asarray(ref))
    noise_rms = rms(noise)
    if noise_rms == 0.0:
        return signal.copy()
    scale = ref_rms / noise_rms * 10.0 ** (-snr_db / 20.0)
    return (signal + scale * noise).astype(signal.dtype)


# ---- reverb --------------------------------------------------------------------------------

def synthetic_rir(rt60_s: float, sample_rate: int, rng: np.random.Generator,
                  predelay_ms: float = 3.0, tail_level: float = 0.1) -> np.ndarray:
    """A room impulse response: a direct path at sample 0, then a decaying noise tail.

    The tail's amplitude envelope falls 60 dB in `rt60_s`; the response is normalized to
    unit energy so that reverb keeps the level of the dry signal.
    """
    if rt60_s <= 0:
        raise ValueError(f"rt60_s must be > 0, got {rt60_s}")
    length = max(int(1.2 * rt60_s * sample_rate), 2)
    t_s = np.arange(length) / sample_rate
    tail = tail_level * rng.standard_normal(length) * np.exp(-_DECAY_60DB * t_s / rt60_s)
    tail[: int(predelay_ms * sample_rate / 1000) + 1] = 0.0
    rir = np.clip(tail, -0.9, 0.9)  # the direct path stays the strongest arrival
    rir[0] = 1.0
    return (rir / np.sqrt(np.sum(rir ** 2))).astype(np.float32)


def apply_reverb(signal: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolution with `rir` by FFT, cut to the signal's length (causal, no delay added)."""
    if signal.size == 0:
        return signal.copy()
    return sps.fftconvolve(signal, rir, mode="full")[: signal.size].astype(signal.dtype)


def _direct_path_first(rir: np.ndarray) -> np.ndarray:
    """A recorded RIR trimmed to start at its strongest arrival, unit energy."""
    rir = rir[int(np.argmax(np.abs(rir))):]
    return (rir / max(np.sqrt(np.sum(rir ** 2)), 1e-12)).astype(np.float32)


# ---- real recordings -----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class AudioFolder:
    """Every readable audio file of a folder, mono float32 at one sample rate."""

    path: str
    clips: tuple[np.ndarray, ...]
    names: tuple[str, ...]
    num_skipped: int  # files that could not be read


@functools.lru_cache(maxsize=8)
def load_audio_folder(path: str, sample_rate: int) -> AudioFolder:
    """Loads (once per process) the wav/flac/ogg files under `path`, resampled, first channel.

    Unreadable or empty files are skipped and counted (one warning); a folder with no
    usable file is an error.
    """
    # Only real noise/RIR folders need them (librosa is slow to import).
    import librosa
    import soundfile

    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"audio folder {path!r} does not exist")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    clips, names, skipped = [], [], []
    for file in files:
        try:
            audio, file_rate = soundfile.read(file, dtype="float32", always_2d=True)
        except Exception:  # soundfile raises several types for corrupt files
            skipped.append(file.name)
            continue
        audio = audio[:, 0]
        if audio.size == 0 or not np.all(np.isfinite(audio)):
            skipped.append(file.name)
            continue
        if file_rate != sample_rate:
            audio = librosa.resample(audio, orig_sr=file_rate, target_sr=sample_rate)
        clips.append(np.asarray(audio, np.float32))
        names.append(file.name)
    if skipped:
        warnings.warn(f"audio folder {path!r}: skipped {len(skipped)} unreadable file(s): "
                      f"{skipped[:5]}")
    if not clips:
        raise ValueError(f"audio folder {path!r} has no usable {'/'.join(AUDIO_SUFFIXES)} "
                         f"file ({len(files)} found, {len(skipped)} unreadable)")
    return AudioFolder(path, tuple(clips), tuple(names), len(skipped))


def _draw_segment(clip: np.ndarray, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """`num_samples` from a random offset of `clip`, tiled when the clip is shorter."""
    if clip.size < num_samples:
        clip = np.tile(clip, -(-num_samples // clip.size) + 1)
    start = int(rng.integers(0, clip.size - num_samples + 1))
    return clip[start:start + num_samples]


# ---- the environment stream ----------------------------------------------------------------

def augment_environment(env_T: np.ndarray, speech_rms: float, config: AugmentConfig,
                        sample_rate: int, rng: np.random.Generator
                        ) -> tuple[np.ndarray, dict[str, Any]]:
    """Reverb, background noise at an SNR against `speech_rms`, then an overall gain.

    Returns the augmented float32 stream and what was applied (for the record's events).
    The peak is not limited here; the renderer scales the final mix.
    """
    info: dict[str, Any] = dict(reverb=False, rt60_s=None, noise=None, snr_db=None,
                                gain_db=0.0)
    env_T = env_T.astype(np.float32, copy=True)
    num_samples = env_T.size
    if config.reverb_prob > 0 and rng.random() < config.reverb_prob:
        if config.rir_dir:
            folder = load_audio_folder(config.rir_dir, sample_rate)
            index = int(rng.integers(len(folder.clips)))
            rir = _direct_path_first(folder.clips[index])
            info.update(rir=folder.names[index])
        else:
            info.update(rt60_s=round(float(rng.uniform(*config.rt60_s)), 4))
            rir = synthetic_rir(info["rt60_s"], sample_rate, rng)
        env_T = apply_reverb(env_T, rir)
        info.update(reverb=True)
    if config.noise_prob > 0 and rng.random() < config.noise_prob:
        if config.noise_dir:
            folder = load_audio_folder(config.noise_dir, sample_rate)
            index = int(rng.integers(len(folder.clips)))
            noise = _draw_segment(folder.clips[index], num_samples, rng)
            info.update(noise=folder.names[index])
        else:
            kind = str(rng.choice(NOISE_KINDS))
            noise = generate_noise(kind, num_samples, sample_rate, rng)
            info.update(noise=kind)
        info.update(snr_db=round(float(rng.uniform(*config.snr_db)), 3))
        env_T = add_noise(env_T, noise, info["snr_db"], reference=speech_rms)
    if config.gain_db != (0.0, 0.0):
        info.update(gain_db=round(float(rng.uniform(*config.gain_db)), 3))
        env_T *= np.float32(10.0 ** (info["gain_db"] / 20.0))
    return env_T, info


def limit_peak(x: np.ndarray, peak: float = _PEAK_AFTER_SCALING) -> tuple[np.ndarray, float]:
    """Scales `x` down to `peak` when its peak exceeds 1 (never clips); returns the scale."""
    current = float(np.max(np.abs(x), initial=0.0))
    if current <= 1.0:
        return x, 1.0
    scale = peak / current
    return (x * np.float32(scale)).astype(x.dtype), scale
