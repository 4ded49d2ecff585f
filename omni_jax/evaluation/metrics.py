"""Duplex evaluation metrics: pure functions with known answers.

Following the SALMONN-omni papers and Full-Duplex-Bench:
  wer                  corpus word error rate on `tokenizer.normalize`d text (jiwer)
  qa_accuracy          normalised exact match, or the answer contained as whole words
  turn_taking          success (speech starts within a window after the user's turn end,
                       never before it) and response latency (ms, median over successes)
  barge_in             precision / recall / F1 of "stopped", with stop latencies
  stop_latency_ms      interruption end -> the block where speaking went False, in blocks
  false_stop_rate      echo / backchannel / third-speaker cases where the reply was cut
  si_sdr, si_sdr_improvement, log_spectral_distance   speech enhancement
  mel_distance         speech-quality proxy: mean |log-mel difference| (the frontend's)

Times are seconds on the dialogue's input axis. Block arithmetic uses
`contract.TimingRules.heard`: a time t lies in block floor(t / block), and a stop or a
start reported by the engine has its block's start time (`duplex.engine`).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import jiwer
import numpy as np

from data_pipelines import contract
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


def _answer_matches(answer: str, hypothesis: str) -> bool:
    answer, hypothesis = normalize(answer), normalize(hypothesis)
    if not answer:
        return False
    return answer == hypothesis or f" {answer} " in f" {hypothesis} "


def qa_accuracy(answers: Sequence[str | Sequence[str]], hypotheses: Sequence[str]) -> float:
    """Fraction of hypotheses that match one of their accepted answers: after `normalize`,
    an exact match or the answer occurring as whole words inside the hypothesis
    ("seven" is in "the answer is seven", not in "seventeen")."""
    if len(answers) != len(hypotheses):
        raise ValueError(f"{len(answers)} answers but {len(hypotheses)} hypotheses")
    if not answers:
        return 0.0
    correct = 0
    for accepted, hyp in zip(answers, hypotheses):
        accepted = [accepted] if isinstance(accepted, str) else list(accepted)
        correct += any(_answer_matches(a, hyp) for a in accepted)
    return correct / len(answers)


def _median(values: Sequence[float]) -> float:
    return float(np.median(values)) if len(values) else float("nan")


@dataclasses.dataclass(frozen=True)
class TurnTaking:
    success: list[bool]  # per case
    latency_ms: list[Optional[float]]  # per case: turn end -> first speech (None: silent)
    success_rate: float
    median_latency_ms: float  # over successful cases (nan if none)
    mean_latency_ms: float


def turn_taking(user_turn_end_s: Sequence[float], first_speech_s: Sequence[Optional[float]],
                *, max_latency_s: float = 2.0) -> TurnTaking:
    """A case succeeds when the assistant's first speech (None: it never spoke) comes at or
    after the user's turn end and at most `max_latency_s` after it. Speaking before the end
    (cutting the user off) fails and has a negative latency."""
    if len(user_turn_end_s) != len(first_speech_s):
        raise ValueError(f"{len(user_turn_end_s)} turn ends but {len(first_speech_s)} onsets")
    success, latency = [], []
    for end, first in zip(user_turn_end_s, first_speech_s):
        lat = None if first is None else (first - end) * 1000.0
        latency.append(lat)
        success.append(lat is not None and -1e-6 <= lat <= max_latency_s * 1000.0 + 1e-6)
    kept = [lat for lat, ok in zip(latency, success) if ok]
    return TurnTaking(success, latency, float(np.mean(success)) if success else 0.0,
                      _median(kept), float(np.mean(kept)) if kept else float("nan"))


def stop_latency_ms(interruption_end_s: float, stop_s: float,
                    timing: contract.TimingRules = contract.TimingRules()) -> float:
    """Block-exact latency: (block of the stop - block of the interruption end) * block_ms."""
    return float((timing.heard(stop_s) - timing.heard(interruption_end_s)) * timing.block_ms)


@dataclasses.dataclass(frozen=True)
class BargeInCase:
    """One barge-in trial. `should_stop`: a real interruption (False for echo, backchannel,
    a third speaker, or no interruption). `trigger_end_s`: the end of the interruption or
    distractor. `stop_s`: start time of the block where speaking went False (None: the
    model did not stop). `trigger_start_s`: when given, a stop during the interruption
    (from its start) is in time too; otherwise only stops from the end block on are."""

    should_stop: bool
    trigger_end_s: Optional[float]
    stop_s: Optional[float]
    trigger_start_s: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class BargeIn:
    true_positives: int
    false_positives: int
    false_negatives: int
    true_negatives: int
    precision: float
    recall: float
    f1: float
    latency_ms: list[float]  # stop latencies of the true positives
    median_latency_ms: float


def barge_in(cases: Sequence[BargeInCase],
             timing: contract.TimingRules = contract.TimingRules()) -> BargeIn:
    """Precision / recall / F1 where a positive prediction is "stopped".

    should_stop and a stop in time (block of stop - block of trigger end in
    [0, timing.stop_window_blocks], or from the trigger start when given): TP. should_stop
    and no stop: FN. should_stop and a stop out of time: FP (a wrong stop) and FN (the
    interruption was missed). No should_stop and a stop: FP; no stop: TN. Empty
    denominators give 0.
    """
    tp = fp = fn = tn = 0
    latencies = []
    for case in cases:
        stopped = case.stop_s is not None
        if not case.should_stop:
            fp, tn = fp + stopped, tn + (not stopped)
            continue
        if case.trigger_end_s is None:
            raise ValueError(f"a should_stop case needs trigger_end_s: {case}")
        in_time = False
        if stopped:
            lag = timing.heard(case.stop_s) - timing.heard(case.trigger_end_s)
            earliest = 0 if case.trigger_start_s is None else min(
                0, timing.heard(case.trigger_start_s) - timing.heard(case.trigger_end_s))
            in_time = earliest <= lag <= timing.stop_window_blocks
        if in_time:
            tp += 1
            latencies.append(stop_latency_ms(case.trigger_end_s, case.stop_s, timing))
        else:
            fn += 1
            fp += stopped
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return BargeIn(tp, fp, fn, tn, precision, recall, f1, latencies, _median(latencies))


def false_stop_rate(reply_end_s: Sequence[float], stop_s: Sequence[Optional[float]],
                    *, tolerance_s: float = 0.0) -> float:
    """Echo / backchannel / third-speaker cases: the fraction where the model stopped
    (`stop_s`, None: never) more than `tolerance_s` before its reply's end."""
    if len(reply_end_s) != len(stop_s):
        raise ValueError(f"{len(reply_end_s)} reply ends but {len(stop_s)} stops")
    if not reply_end_s:
        return 0.0
    cut = [s is not None and s < end - tolerance_s - 1e-9 for end, s in zip(reply_end_s, stop_s)]
    return float(np.mean(cut))


# ---- enhancement and speech quality -------------------------------------------------------

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
