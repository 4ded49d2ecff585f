"""Duplex evaluation metrics: pure functions with known answers.

Following the SALMONN-omni papers and Full-Duplex-Bench:
  wer                  corpus word error rate on `tokenizer.normalize`d text (jiwer)
  exact_match, word_f1 a reply against its answer: normalised exact match, word F1
  wilson_interval, bootstrap_interval, slope   intervals and the listening checks' slope
  (turn-taking and barge-in outcomes per case: omni_jax.evaluation.outcomes)
  si_sdr, si_sdr_improvement, log_spectral_distance   speech enhancement
  mel_distance         speech-quality proxy: mean |log-mel difference| (the frontend's)
"""

from __future__ import annotations

from typing import Sequence

import jiwer
import numpy as np

from data_pipelines.tokenizer import normalize
from omni_jax.audio.frontend import LogMelFrontend

_EPS = 1e-12


def wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER: (S + D + I) / reference words, after `normalize`. A pair whose reference
    is empty adds its hypothesis words as insertions; all-empty references give 0 or inf."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    refs = [normalize(r) for r in references]
    hyps = [normalize(h) for h in hypotheses]
    errors = sum(len(h.split()) for r, h in zip(refs, hyps) if not r)
    pairs = [(r, h) for r, h in zip(refs, hyps) if r]
    words = sum(len(r.split()) for r, _ in pairs)
    if pairs:
        out = jiwer.process_words([r for r, _ in pairs], [h for _, h in pairs])
        errors += out.substitutions + out.deletions + out.insertions
    if words == 0:
        return 0.0 if errors == 0 else float("inf")
    return errors / words


def exact_match(answer: str | Sequence[str], hypothesis: str) -> bool:
    """The reply is the answer (one of the accepted ones), after `normalize`: extra words
    make it wrong ("the answer is seven" is not "seven")."""
    accepted = [answer] if isinstance(answer, str) else list(answer)
    hyp = normalize(hypothesis)
    return any(normalize(a) and normalize(a) == hyp for a in accepted)


def word_f1(answer: str, hypothesis: str) -> float:
    """SQuAD-style word F1 between the answer and the reply after `normalize` (bag of
    words): extra or missing words lower it; 0 for an empty reply."""
    ref, hyp = normalize(answer).split(), normalize(hypothesis).split()
    if not ref or not hyp:
        return float(ref == hyp)
    common = sum(min(ref.count(w), hyp.count(w)) for w in set(ref))
    if common == 0:
        return 0.0
    precision, recall = common / len(hyp), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def si_sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019), both signals made zero-mean."""
    est = np.asarray(estimate, np.float64).ravel()
    ref = np.asarray(reference, np.float64).ravel()
    if est.shape != ref.shape:
        raise ValueError(f"estimate {est.shape} and reference {ref.shape} differ in length")
    est, ref = est - est.mean(), ref - ref.mean()
    target = (est @ ref) / (ref @ ref + _EPS) * ref
    noise = est - target
    return float(10 * np.log10((target @ target + _EPS) / (noise @ noise + _EPS)))


def si_sdr_improvement(estimate: np.ndarray, reference: np.ndarray, mixture: np.ndarray) -> float:
    """SI-SDRi: SI-SDR of the estimate minus that of the unprocessed (noisy) input."""
    return si_sdr(estimate, reference) - si_sdr(mixture, reference)


def _power_spectrogram(audio: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    audio = np.asarray(audio, np.float64).ravel()
    audio = np.pad(audio, (0, max(0, n_fft - audio.size)))
    num_frames = 1 + (audio.size - n_fft) // hop
    index_TxW = np.arange(num_frames)[:, None] * hop + np.arange(n_fft)[None]
    window_W = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    return np.abs(np.fft.rfft(audio[index_TxW] * window_W, axis=-1)) ** 2


def log_spectral_distance(estimate: np.ndarray, reference: np.ndarray, *, n_fft: int = 512,
                          hop: int = 160, floor: float = 1e-10) -> float:
    """LSD in dB: per frame the RMS over bins of 10*log10(P_ref / P_est), averaged over
    frames (the shorter signal sets the length)."""
    length = min(np.size(estimate), np.size(reference))
    p_est = _power_spectrogram(np.ravel(estimate)[:length], n_fft, hop)
    p_ref = _power_spectrogram(np.ravel(reference)[:length], n_fft, hop)
    diff = 10 * np.log10(np.maximum(p_ref, floor)) - 10 * np.log10(np.maximum(p_est, floor))
    return float(np.mean(np.sqrt(np.mean(diff ** 2, axis=-1))))


def mel_distance(generated: np.ndarray, reference: np.ndarray, frontend=None) -> float:
    """Mean |log-mel(generated) - log-mel(reference)| in the frontend's natural-log units,
    over the frames both cover (a speech-quality proxy; 0 for identical audio)."""
    frontend = frontend or LogMelFrontend()
    length = min(np.size(generated), np.size(reference)) // frontend.hop * frontend.hop
    if length == 0:
        raise ValueError("mel_distance needs at least one hop of audio in both signals")
    both = np.stack([np.ravel(generated)[:length], np.ravel(reference)[:length]])
    mel_2xTxM = np.asarray(frontend(both.astype(np.float32)))
    return float(np.mean(np.abs(mel_2xTxM[0] - mel_2xTxM[1])))


# ---- intervals ------------------------------------------------------------------------------

Z_95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a rate (95% by default); (0, 1) with no trials."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denom = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def bootstrap_interval(statistic, num_cases: int, *, resamples: int = 1000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic(indices)` over resampled case indices
    (seeded, so a report is reproducible). NaN resamples (e.g. a median of nothing) are
    dropped; (nan, nan) when every resample is NaN, there are no cases or no resamples."""
    if num_cases <= 0 or resamples <= 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, num_cases, num_cases))
                       for _ in range(resamples)], np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of y on x (nan with fewer than 2 distinct x)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.size < 2 or np.ptp(x) == 0:
        return float("nan")
    dx = x - x.mean()
    return float(np.sum(dx * (y - y.mean())) / np.sum(dx * dx))
