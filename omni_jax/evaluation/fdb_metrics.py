"""Full-Duplex-Bench v1 scores of a folder of time-synchronous answers.

`omni_jax.serving.fdb` answers every `input.wav` of a folder with an `output.wav` of exactly
the input's length (the model's speech, zeros where silent) and an `output.json`; this
module scores such folders the way Full-Duplex-Bench v1 does (G.-T. Lin et al.,
"Full-Duplex-Bench: A Benchmark to Evaluate Full-Duplex Spoken Dialogue Models on
Turn-taking Capabilities", arXiv 2503.04721; the scoring scripts of
github.com/DanielLin94144/Full-Duplex-Bench, v1_v1.5/evaluation/eval_*.py and
v1_v1.5/get_transcript/asr.py, read at commit d7336bd). Own implementation, no code taken.

This module: the per-task scores, the takeover rule, the backchannel JSD, the aggregation
and `score_folder`. The folder layout, annotations and settings are in fdb_samples, the
reading of what the model said (segments, words) in fdb_speech; the names fdb_score uses
are re-exported here (`__all__`); intervals are omni_jax.evaluation.metrics'.

Definitions (FDB v1; the paper's task descriptions, the thresholds from eval_*.py):
  Takeover (TOR, per sample, 0/1), pause handling, smooth turn-taking, user interruption:
    with timed words (chunks, recogniser): no words -> 0; otherwise 1 iff the span from the
    first word's start to the last word's end is >= `TurnRule.min_turn_s` (1 s) OR there
    are more than `TurnRule.max_words` (3) words. Without timed words the same rule runs on
    the speaking segments (span first start -> last end, words counted in them when known;
    with no words at all a reply shorter than 1 s never counts, however many words it has).
    The onset of the response is the first word's start (else the first segment's start).
  Pause handling (lower is better): TOR over the WHOLE output (eval_pause_handling.py scores
    the whole file and never reads pause.json; in FDB's example the input ends 0.2 s after
    the user resumes). Speaking during the pause is a takeover; so is taking a turn
    anywhere else in the file.
  Smooth turn-taking (TOR higher is better): TOR over the whole output; latency = onset -
    the user's turn end, clipped at 0 (a reply that starts early counts 0 s), only for
    samples with TOR = 1 (None otherwise, never 0).
  User interruption: FDB's asr.py crops output.wav at the interruption's end before the ASR,
    so only the output after it counts (segments and words clipped there, segments then
    shorter than `min_speech_s` dropped): TOR, and latency = onset - interruption end
    (>= 0 by the crop; note that a model that talks straight through the interruption gets
    TOR 1 and latency 0, as in FDB). NOT computed: FDB's relevance score of the reply (an
    LLM judge, gpt-4-turbo in eval_user_interruption.py).
  Backchannel (ICC; the model should backchannel, not take the turn): each speaking segment
    is a backchannel iff it is shorter than `BackchannelRule.max_s` (1 s) and has at most
    `BackchannelRule.max_words` (2) words (unknown words: duration only), else a turn.
    TOR = 1 iff any segment is a turn. Frequency = backchannels / output duration (per s).
    JSD: the backchannels' histogram over `window_s` (0.2 s) bins of the file (a segment
    adds 1 to every bin from floor(start/w) to floor(end/w); int(duration/w)+1 bins), +1e-10,
    normalised, against the sample's ground-truth distribution linearly resampled to the same
    number of bins; the value is scipy's `jensenshannon` as FDB uses it: the Jensen-Shannon
    DISTANCE (square root of the divergence, natural log; at most sqrt(ln 2) ~ 0.833), and
    1.0 for a sample with no backchannel (FDB's convention). Needs the ground truth (FDB's
    evaluation/icc_gt_distribution.json, {folder name: [p, ...]}, not shipped here) or the
    sample's `gt_distribution`; otherwise JSD is None. Deviation: FDB's script keeps the
    verdict of the LAST segment as the sample's TOR (unless a segment is longer than 3 s)
    and counts every segment up to 3 s as a backchannel candidate, turn-like ones included;
    `BackchannelRule(fdb_code=True)` reproduces that, the default is the consistent rule.
Aggregates per task (`aggregate`): rates with Wilson 95% score intervals; latencies,
frequency and JSD with mean, std, median and seeded percentile-bootstrap 95% intervals of
the mean and the median. FDB itself reports plain means (mean +- std for backchannel).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from omni_jax.evaluation import metrics
from omni_jax.evaluation.fdb_samples import (OUTPUT_JSON, OUTPUT_WAV, SEGMENT_SOURCES,
                                              TASK_ALIASES, TASKS, WORD_SOURCES,
                                              BackchannelRule, Sample, SampleError,
                                              ScoreSettings, TurnRule, VadSettings,
                                              canonical_task, find_samples,
                                              load_gt_distributions, load_metadata)
from omni_jax.evaluation.fdb_speech import TIME_EPS, Speech, Transcribe, read_speech

__all__ = ["TASKS", "TASK_ALIASES", "SEGMENT_SOURCES", "WORD_SOURCES", "BackchannelRule",
           "ScoreSettings", "TurnRule", "VadSettings", "load_gt_distributions", "aggregate",
           "score_folder", "score_sample"]

JSD_EPSILON = 1e-10


# ---- statistics ----------------------------------------------------------------------------

def rate_summary(flags: Sequence[bool], z: float = metrics.Z_95) -> dict[str, Any]:
    n, k = len(flags), int(sum(bool(f) for f in flags))
    return dict(n=n, takeovers=k, rate=(k / n if n else None),
                ci95=(list(metrics.wilson_interval(k, n, z)) if n else None))


def value_summary(values: Sequence[float], *, resamples: int = 2000,
                  seed: int = 0) -> dict[str, Any]:
    x = np.asarray([v for v in values if v is not None], np.float64)
    if x.size == 0:
        return dict(n=0, mean=None, std=None, median=None, mean_ci95=None, median_ci95=None)
    return dict(n=int(x.size), mean=float(x.mean()), std=float(x.std()),
                median=float(np.median(x)),
                mean_ci95=_bootstrap(x, np.mean, resamples, seed),
                median_ci95=_bootstrap(x, np.median, resamples, seed))


def _bootstrap(x: np.ndarray, statistic, resamples: int, seed: int) -> list[float]:
    """Seeded percentile bootstrap interval of statistic(x), [lo, hi]."""
    return list(metrics.bootstrap_interval(lambda i: statistic(x[i]), x.size,
                                           resamples=resamples, seed=seed))


def js_distance(p: Sequence[float], q: Sequence[float]) -> float:
    """sqrt of the Jensen-Shannon divergence (natural log) of p and q, each normalised to
    sum 1 (what scipy.spatial.distance.jensenshannon returns with its default base)."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    if p.shape != q.shape or p.ndim != 1 or p.size == 0:
        raise ValueError(f"distributions of shapes {p.shape} and {q.shape}")
    if (p < 0).any() or (q < 0).any() or p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("distributions must be non-negative with a positive sum")
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a, b):
        mask = a > 0
        return float(np.sum(a[mask] * np.log(a[mask] / b[mask])))

    return math.sqrt(max(0.0, (kl(p, m) + kl(q, m)) / 2))


def backchannel_histogram(intervals: Sequence[tuple[float, float]], duration_s: float,
                          window_s: float = 0.2) -> np.ndarray:
    """FDB's backchannel time distribution: int(duration / w) + 1 bins of w seconds; each
    interval adds 1 to the bins floor(start / w) .. floor(end / w); + epsilon, normalised."""
    bins = np.zeros(int(duration_s / window_s) + 1, np.float64)
    for start, end in intervals:
        first, last = int(start / window_s), int(end / window_s)
        bins[max(first, 0):min(last, bins.size - 1) + 1] += 1.0
    bins += JSD_EPSILON
    return bins / bins.sum()


def backchannel_jsd(intervals: Sequence[tuple[float, float]], duration_s: float,
                    gt_distribution: Sequence[float], window_s: float = 0.2) -> float:
    """FDB's per-sample JSD: 1.0 without backchannels, else `js_distance` between the
    histogram and the ground truth linearly resampled to its length."""
    if not intervals:
        return 1.0
    predicted = backchannel_histogram(intervals, duration_s, window_s)
    gt = np.asarray(gt_distribution, np.float64)
    if gt.ndim != 1 or gt.size == 0:
        raise ValueError("empty ground-truth distribution")
    resized = np.interp(np.linspace(0.0, 1.0, predicted.size),
                        np.linspace(0.0, 1.0, gt.size), gt)
    return js_distance(predicted, resized)


# ---- per-task scores -----------------------------------------------------------------------

def takeover(speech: Speech, rule: TurnRule = TurnRule()) -> tuple[bool, Optional[float]]:
    """(the model took the turn, the onset of its response: None if it said nothing)."""
    if speech.words_timed:
        words = speech.words or []
        if not words:
            return False, None
        span = max(w.end for w in words) - words[0].start
        turn = span >= rule.min_turn_s - TIME_EPS or len(words) > rule.max_words
        return turn, words[0].start
    if not speech.segments:
        return False, None
    span = speech.segments[-1][1] - speech.segments[0][0]
    n = speech.num_words
    turn = span >= rule.min_turn_s - TIME_EPS or (n is not None and n > rule.max_words)
    return turn, speech.segments[0][0]


def score_pause(speech: Speech, meta: dict, settings: ScoreSettings) -> dict[str, Any]:
    tor, onset = takeover(speech, settings.turn)
    return dict(takeover=tor, onset_s=onset, pauses=meta.get("pauses"))


def score_turn_taking(speech: Speech, meta: dict, settings: ScoreSettings) -> dict[str, Any]:
    end = meta["turn_end_s"]
    tor, onset = takeover(speech, settings.turn)
    raw = None if onset is None else onset - end
    return dict(takeover=tor, onset_s=onset, reference_s=end, latency_raw_s=raw,
                latency_s=(max(0.0, raw) if tor else None))


def score_interruption(speech: Speech, meta: dict, settings: ScoreSettings) -> dict[str, Any]:
    end = meta["interruption"][1]
    tor, onset = takeover(speech, settings.turn)
    raw = None if onset is None else onset - end
    return dict(takeover=tor, onset_s=onset, reference_s=end, latency_raw_s=raw,
                latency_s=(max(0.0, raw) if tor else None))


def score_backchannel(speech: Speech, meta: dict, settings: ScoreSettings,
                      gt_distribution: Optional[Sequence[float]] = None) -> dict[str, Any]:
    rule = settings.backchannel
    verdicts = []  # (segment, is a backchannel)
    for (s, e), n in zip(speech.segments, speech.segment_words):
        short = e - s < rule.max_s - TIME_EPS
        verdicts.append(((s, e), short and (n is None or n <= rule.max_words)))
    if rule.fdb_code:
        tor, backchannels = False, []
        for (s, e), is_backchannel in verdicts:
            if e - s > rule.long_s + TIME_EPS:
                tor = True
                break
            tor = not is_backchannel
            backchannels.append((s, e))
    else:
        tor = any(not b for _, b in verdicts)
        backchannels = [seg for seg, b in verdicts if b]
    duration = speech.duration_s
    frequency = len(backchannels) / duration if duration else None
    jsd = None
    if gt_distribution is not None and duration:
        try:
            jsd = backchannel_jsd(backchannels, duration, gt_distribution, rule.window_s)
        except ValueError as e:
            raise SampleError(f"ground-truth distribution: {e}") from None
    return dict(takeover=tor, backchannels=[list(b) for b in backchannels],
                num_backchannels=len(backchannels), frequency=frequency, jsd=jsd)


# ---- samples, folders -----------------------------------------------------------------------

def score_sample(sample: Sample, task: Optional[str] = None,
                 settings: ScoreSettings = ScoreSettings(),
                 transcribe: Optional[Transcribe] = None,
                 gt_distributions: Optional[dict[str, Sequence[float]]] = None
                 ) -> dict[str, Any]:
    """One sample's record {sample, task, ...task scores, segments, words}; SampleError if it
    cannot be scored."""
    folders = [sample.input_folder, sample.output_folder]
    task, meta = load_metadata(folders, sample.rel, task)
    if not (sample.output_folder / OUTPUT_WAV).is_file() and not (
            sample.output_folder / OUTPUT_JSON).is_file():
        raise SampleError(f"{sample.output_folder / OUTPUT_WAV}: missing (no output for "
                          "this input)")
    after = meta["interruption"][1] if task == "interruption" else 0.0
    speech = read_speech(sample.output_folder, settings, transcribe, after_s=after)
    if task == "pause":
        scores = score_pause(speech, meta, settings)
    elif task == "turn_taking":
        scores = score_turn_taking(speech, meta, settings)
    elif task == "interruption":
        scores = score_interruption(speech, meta, settings)
    else:
        gt = meta.get("gt_distribution")
        if gt is None and gt_distributions is not None:
            gt = gt_distributions.get(Path(sample.rel).name)
        scores = score_backchannel(speech, meta, settings, gt)
    return dict(sample=sample.rel, task=task, **scores, metadata=meta["source"],
                segments=[list(s) for s in speech.segments],
                num_words=speech.num_words, segments_source=speech.segments_source,
                words_source=speech.words_source, duration_s=speech.duration_s)


def _subset(rel: str) -> str:
    parts = Path(rel).parts
    return parts[0] if len(parts) > 1 else "."


def _task_summary(task: str, records: list[dict], settings: ScoreSettings) -> dict[str, Any]:
    boot = dict(resamples=settings.bootstrap, seed=settings.seed)
    rate = rate_summary([r["takeover"] for r in records])
    summary: dict[str, Any] = dict(n=len(records), takeover_rate=rate)
    if task in ("turn_taking", "interruption"):
        summary["latency_s"] = value_summary([r["latency_s"] for r in records
                                              if r["latency_s"] is not None], **boot)
    if task == "backchannel":
        summary["frequency"] = value_summary([r["frequency"] for r in records], **boot)
        summary["jsd"] = value_summary([r["jsd"] for r in records], **boot)
        summary["jsd_missing_ground_truth"] = sum(r["jsd"] is None for r in records)
    if task == "interruption":
        summary["not_computed"] = ["relevance: FDB rates the reply after the interruption "
                                   "(0-5) with an LLM judge (gpt-4-turbo); no judge here"]
    return summary


def aggregate(records: Sequence[dict], settings: ScoreSettings = ScoreSettings()
              ) -> dict[str, Any]:
    """Per task: the summary over all its samples, and per subset (the first path component,
    e.g. candor_pause_handling vs synthetic_pause_handling) when there are several."""
    out: dict[str, Any] = {}
    for task in TASKS:
        mine = [r for r in records if r["task"] == task]
        if not mine:
            continue
        summary = _task_summary(task, mine, settings)
        subsets = sorted({_subset(r["sample"]) for r in mine})
        if len(subsets) > 1:
            summary["subsets"] = {s: _task_summary(task, [r for r in mine
                                                          if _subset(r["sample"]) == s],
                                                   settings) for s in subsets}
        out[task] = summary
    return out


def score_folder(input_dir: Path, output_dir: Path, task: str = "auto",
                 settings: ScoreSettings = ScoreSettings(),
                 transcribe: Optional[Transcribe] = None,
                 gt_distributions: Optional[dict[str, Sequence[float]]] = None,
                 per_sample: bool = False) -> dict[str, Any]:
    """Scores every sample (see `find_samples`); a sample's problem is listed under
    `skipped` with its reason and never stops the others. Raises ValueError for a missing
    folder or an unknown task."""
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    for folder in (input_dir, output_dir):
        if not folder.is_dir():
            raise ValueError(f"{folder}: no such folder")
    wanted = None if task == "auto" else canonical_task(task)
    if settings.words == "recognizer" and transcribe is None:
        raise ValueError("words='recognizer' needs a recogniser")
    records, skipped = [], []
    samples = find_samples(input_dir, output_dir)
    for sample in samples:
        try:
            records.append(score_sample(sample, wanted, settings, transcribe,
                                        gt_distributions))
        except SampleError as e:
            skipped.append(dict(sample=sample.rel, reason=str(e)))
    report: dict[str, Any] = dict(
        format="omni_jax.fdb_score/1", input_dir=str(input_dir), output_dir=str(output_dir),
        task=task, settings=settings.describe(), recognizer=transcribe is not None,
        counts=dict(found=len(samples), scored=len(records), skipped=len(skipped)),
        tasks=aggregate(records, settings), skipped=skipped)
    if per_sample:
        report["samples"] = records
    return report
