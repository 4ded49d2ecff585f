"""Small signal helpers for the enhancement scenario: colored noise and a synthetic room."""

from __future__ import annotations

import numpy as np

# Spectral slope of each noise color: power ~ 1 / f**exponent.
NOISE_COLORS = {"white": 0.0, "pink": 1.0, "brown": 2.0}
PEAK_LIMIT = 0.9  # keep mixed sources clear of clipping


def rms(audio_T: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio_T, dtype=np.float64))))


def colored_noise(rng: np.random.Generator, num_samples: int, color: str) -> np.ndarray:
    """Unit-RMS Gaussian noise whose power falls as 1/f**exponent (white, pink, brown)."""
    if color not in NOISE_COLORS:
        raise ValueError(f"noise color must be one of {sorted(NOISE_COLORS)}, got {color!r}")
    spectrum_F = np.fft.rfft(rng.standard_normal(num_samples))
    freqs_F = np.fft.rfftfreq(num_samples)
    freqs_F[0] = freqs_F[1] if num_samples > 1 else 1.0  # no infinite gain at DC
    spectrum_F *= freqs_F ** (-NOISE_COLORS[color] / 2.0)
    spectrum_F[0] = 0.0  # zero mean
    noise_T = np.fft.irfft(spectrum_F, n=num_samples)
    return (noise_T / max(rms(noise_T), 1e-12)).astype(np.float32)


def noise_at_snr(rng: np.random.Generator, num_samples: int, color: str,
                 speech_T: np.ndarray, snr_db: float) -> tuple[np.ndarray, float]:
    """Noise scaled to `snr_db` below the speech level; returns it and the SNR really used
    (higher than asked when the noise had to be turned down to stay clear of clipping)."""
    noise_T = colored_noise(rng, num_samples, color)
    scale = rms(speech_T) / 10.0 ** (snr_db / 20.0)
    peak = float(np.max(np.abs(noise_T))) * scale
    if peak > PEAK_LIMIT:
        scale *= PEAK_LIMIT / peak
    used_db = 20.0 * np.log10(rms(speech_T) / max(scale, 1e-12))
    return (noise_T * scale).astype(np.float32), float(used_db)


def room_impulse_response(rng: np.random.Generator, rt60_s: float,
                          sample_rate: int) -> np.ndarray:
    """A synthetic room: a direct path, then exponentially decaying noise (-60 dB at rt60)."""
    num_taps = max(2, int(rt60_s * sample_rate))
    t_T = np.arange(num_taps) / sample_rate
    decay_T = np.exp(-6.9078 * t_T / rt60_s)  # ln(1000): amplitude -60 dB at rt60
    rir_T = rng.standard_normal(num_taps) * decay_T * 0.3
    rir_T[0] = 1.0
    return (rir_T / np.linalg.norm(rir_T)).astype(np.float32)


def reverberate(audio_T: np.ndarray, rir_T: np.ndarray, tail_s: float,
                sample_rate: int) -> np.ndarray:
    """`audio_T` in the room, keeping `tail_s` of reverberant tail, at the dry peak level."""
    n = audio_T.size + rir_T.size - 1
    wet_T = np.fft.irfft(np.fft.rfft(audio_T, n) * np.fft.rfft(rir_T, n), n)
    wet_T = wet_T[:audio_T.size + int(tail_s * sample_rate)]
    wet_T *= float(np.max(np.abs(audio_T))) / max(float(np.max(np.abs(wet_T))), 1e-12)
    return wet_T.astype(np.float32)
