"""Per-case readings of the engine's output: pure functions with known answers.

The speaking state `speaking_K` is `EngineResult.speaking[b]` (the state after block k);
an event at block k has time k * block (`omni_jax.duplex.engine`). The audio helpers cut,
pad and align signals for the scores (`omni_jax.evaluation.scoring`) and the serving
runner (`omni_jax.serving.fdb`).
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from data_pipelines import contract
from omni_jax.audio.frontend import SILENCE_LOG_MEL
from omni_jax.evaluation import metrics

SI_SDR_FLOOR_DB = -50.0  # a silent or hopeless estimate scores this (keeps means finite)


# ---- the speaking state --------------------------------------------------------------------

def first_start_block(speaking_K: np.ndarray, from_block: int = 0) -> Optional[int]:
    """The first block >= from_block where speaking turned True (None: never)."""
    previous = bool(speaking_K[from_block - 1]) if from_block > 0 else False
    for k in range(from_block, speaking_K.size):
        if speaking_K[k] and not previous:
            return k
        previous = bool(speaking_K[k])
    return None


def first_stop_block(speaking_K: np.ndarray, after_block: int) -> Optional[int]:
    """The first block > after_block where speaking turned False (None: never)."""
    for k in range(after_block + 1, speaking_K.size):
        if speaking_K[k - 1] and not speaking_K[k]:
            return k
    return None


def speaking_runs(speaking_K: np.ndarray) -> list[tuple[int, int]]:
    """[k0, k1) block ranges where `speaking_K` is True."""
    edges = np.diff(np.concatenate([[0], speaking_K.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def early_stop_s(speaking_K: np.ndarray, block_s: float, natural_end_s: float,
                 tolerance_s: float) -> Optional[float]:
    """The time of the model's first stop after its first start, when that stop comes more
    than `tolerance_s` before the reply's natural end; else None (it did not stop)."""
    start = first_start_block(speaking_K)
    if start is None:
        return None
    stop = first_stop_block(speaking_K, start)
    if stop is None or stop * block_s >= natural_end_s - tolerance_s - 1e-9:
        return None
    return stop * block_s


def barge_in_stop_s(speaking_K: np.ndarray, block_s: float, natural_end_s: float,
                    tolerance_s: float, timing: contract.TimingRules,
                    trigger_end_s: Optional[float] = None) -> Optional[float]:
    """The stop that barge-in scoring sees: an early stop (`early_stop_s`), or, after an
    interruption that ended at `trigger_end_s`, the first stop when it comes within the
    stop window (a trigger may end shortly before the reply would have: that stop is a
    reaction, not the reply's end)."""
    stop = early_stop_s(speaking_K, block_s, natural_end_s, tolerance_s)
    start = first_start_block(speaking_K)
    if stop is not None or trigger_end_s is None or start is None:
        return stop
    first = first_stop_block(speaking_K, start)
    if first is None:
        return None
    lag = first - timing.heard(trigger_end_s)
    return first * block_s if 0 <= lag <= timing.stop_window_blocks else None


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
