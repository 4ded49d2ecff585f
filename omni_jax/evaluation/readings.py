"""Per-case readings of the engine's output: pure functions with known answers.

The speaking state `speaking_K` is `EngineResult.speaking[b]` (the state after block k);
an event at block k has time k * block (`omni_jax.duplex.engine`). The audio helpers cut,
pad and align signals for the scores (`omni_jax.evaluation.scoring`) and the serving
runner (`omni_jax.serving.fdb`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from omni_jax.audio.frontend import SILENCE_LOG_MEL
from omni_jax.evaluation import metrics

SI_SDR_FLOOR_DB = -50.0  # a silent or hopeless estimate scores this (keeps means finite)


# ---- the speaking state --------------------------------------------------------------------

def speaking_runs(speaking_K: np.ndarray) -> list[tuple[int, int]]:
    """[k0, k1) block ranges where `speaking_K` is True."""
    edges = np.diff(np.concatenate([[0], speaking_K.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


# ---- audio and mel: cutting, padding, aligning --------------------------------------------

def window(audio_T: np.ndarray, start: int, length: int) -> np.ndarray:
    """audio_T[start:start+length] as float32, zero outside the signal."""
    out = np.zeros(length, np.float32)
    lo, hi = max(start, 0), min(start + length, audio_T.size)
    if hi > lo:
        out[lo - start:hi - start] = audio_T[lo:hi]
    return out


def fit_length(audio_T: np.ndarray, length: int) -> np.ndarray:
    """Cut or zero-pad to exactly `length` samples (float32)."""
    return window(np.asarray(audio_T), 0, length)


def window_frames(mel_FxM: np.ndarray, start: int, frames: int) -> np.ndarray:
    """mel_FxM[start:start+frames], silence (the log floor) outside."""
    out = np.full((frames, mel_FxM.shape[1]), SILENCE_LOG_MEL, np.float32)
    lo, hi = max(start, 0), min(start + frames, mel_FxM.shape[0])
    if hi > lo:
        out[lo - start:hi - start] = mel_FxM[lo:hi]
    return out


def best_lag(score: Callable[[int], float], max_lag: int, step: int) -> tuple[int, float]:
    """(lag, score) maximising `score(lag)` over lags in [-max_lag, max_lag] by `step`."""
    lags = range(-(max_lag // step) * step, max_lag + 1, step)
    values = [(score(lag), lag) for lag in lags]
    value, lag = max(values, key=lambda v: (v[0], -abs(v[1])))
    return lag, value


def floored_si_sdr(estimate_T: np.ndarray, reference_T: np.ndarray) -> float:
    """SI-SDR in dB, at least SI_SDR_FLOOR_DB; a silent estimate scores the floor (plain
    SI-SDR is 0 dB for silence: 0 / 0 regularised, better than most real outputs)."""
    if not np.any(estimate_T):
        return SI_SDR_FLOOR_DB
    return max(metrics.si_sdr(estimate_T, reference_T), SI_SDR_FLOOR_DB)
