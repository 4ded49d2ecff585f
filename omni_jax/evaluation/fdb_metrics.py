"""Full-Duplex-Bench v1 scores of a folder of time-synchronous answers (numpy, soundfile).

`omni_jax.serving.fdb` answers every `input.wav` of a folder with an `output.wav` of exactly
the input's length (the model's speech, zeros where silent) and an `output.json`; this
module scores such folders the way Full-Duplex-Bench v1 does (G.-T. Lin et al.,
"Full-Duplex-Bench: A Benchmark to Evaluate Full-Duplex Spoken Dialogue Models on
Turn-taking Capabilities", arXiv 2503.04721; the scoring scripts of
github.com/DanielLin94144/Full-Duplex-Bench, v1_v1.5/evaluation/eval_*.py and
v1_v1.5/get_transcript/asr.py, read at commit d7336bd). Own implementation, no code taken.

Layout. A sample is a folder REL with INPUT_DIR/REL/input.wav and/or OUTPUT_DIR/REL/
{output.wav, output.json} (INPUT_DIR and OUTPUT_DIR may be the same folder, as in FDB,
whose scripts expect everything in one folder). The task's annotation is looked up in the
input folder, then in the output folder:
  pause.json        FDB pause handling:  [{"text": "[PAUSE]", "timestamp": [start, end]}, ...]
  turn_taking.json  FDB smooth turn-taking: [{"timestamp": [user_end, ...]}]; the user's turn
                    ends at timestamp[0] (FDB's `input_end_time`)
  interrupt.json    FDB user interruption:
                    [{"context", "interrupt", "timestamp": [start, end]}];
                    the interruption ends at timestamp[1]
  (none)            FDB backchannel (icc_backchannel/ID has only input.wav): recognised in
                    --task=auto by a path component containing "backchannel"
or our own `fdb_meta.json` (used where the FDB file is absent; its "task" decides auto):
  {"task": "pause" | "backchannel" | "turn_taking" | "interruption",
   "turn_end_s": 2.01,              turn_taking: the user's turn end (required)
   "interruption": [10.53, 13.14],  interruption: [start, end] in s (required; end is used)
   "pauses": [[3.32, 4.0], ...],    pause: informational (FDB's score does not use it)
   "context": "...", "interrupt": "...",   interruption: kept for a relevance judge
   "gt_distribution": [p0, p1, ...]}       backchannel: the human backchannel distribution
                                           over the sample's duration (JSD needs it)
All times are seconds on the input's axis.

What the model said. FDB transcribes output.wav with an ASR giving word timestamps
(output.json's {"text", "chunks": [{"text", "timestamp": [start, end]}]}; parakeet-tdt in
asr.py) and, for backchannels, segments it with Silero VAD. Here (`ScoreSettings`):
  segments  "vad": an energy VAD on output.wav (`energy_segments`: frame RMS above
            `threshold_dbfs` re full scale, gaps shorter than `min_gap_s` bridged, segments
            shorter than `min_speech_s` dropped, optional padding; the defaults mirror
            Silero's get_speech_timestamps defaults, 250 ms minimum speech, 100 ms minimum
            silence; its 30 ms padding is off by default so that onsets are not moved
            early). Deviation: Silero is a neural VAD; no weights or network here, and
            omni_jax's output.wav is exact zeros where silent, so energy is exact for it.
            "intervals": output.json's `speaking_intervals` (the engine's own state), with
            the same gap bridging and minimum length.
  words     "chunks": FDB's ASR transcript in output.json (its word timestamps), exactly FDB.
            "recognizer": a callable `transcribe(audio_T, sample_rate) -> str` run on each
            speaking segment of output.wav; a segment's words are spread evenly over it
            (approximate word times; an empty transcript = no speech there, as with ASR).
            "text": the text events of omni_jax's output.json (`events`, kind "text", with
            sentencepiece pieces; a word starts at a piece beginning with U+2581): counts
            only, no audio timing; a word counts in a segment when its emission time lies
            within `text_slack_s` of it. Deviation: what the LLM wrote, not what the
            vocoded speech says.
            "none": durations only. "auto" (default): chunks if output.json has them, else
            the recogniser if one is given, else text events if output.json has `events`,
            else none. (FDB's asr.py writes its transcript to output.json: run on an
            omni_jax output folder it replaces the runner's output.json, and "auto" then
            scores with its chunks.)

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

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import soundfile as sf

TASKS = ("pause", "backchannel", "turn_taking", "interruption")
TASK_ALIASES = {"pause_handling": "pause", "smooth_turn_taking": "turn_taking",
                "user_interruption": "interruption", "backchanneling": "backchannel"}
INPUT_WAV = "input.wav"
OUTPUT_WAV = "output.wav"
OUTPUT_JSON = "output.json"
OWN_META = "fdb_meta.json"
FDB_META = {"pause": "pause.json", "turn_taking": "turn_taking.json",
            "interruption": "interrupt.json"}
SEGMENT_SOURCES = ("vad", "intervals")
WORD_SOURCES = ("auto", "chunks", "recognizer", "text", "none")
Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
JSD_EPSILON = 1e-10
_EPS = 1e-9  # time comparisons: frame arithmetic must not flip a >= threshold
_WORD = re.compile(r"\w")
_WORDS = re.compile(r"[\w']+")
_WORD_START = "\u2581"  # sentencepiece's word-boundary marker

Transcribe = Callable[[np.ndarray, int], str]


class SampleError(ValueError):
    """One sample cannot be scored; the message names the file. The rest go on."""


# ---- settings ------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class VadSettings:
    threshold_dbfs: float = -40.0  # frame RMS re full scale (1.0) above this is speech
    frame_s: float = 0.02
    min_speech_s: float = 0.25  # Silero's min_speech_duration_ms default
    min_gap_s: float = 0.1  # Silero's min_silence_duration_ms default: shorter gaps bridged
    pad_s: float = 0.0  # Silero pads 30 ms; off so that onsets stay where speech starts


@dataclasses.dataclass(frozen=True)
class TurnRule:
    """FDB's takeover rule: a span of at least `min_turn_s` or more than `max_words` words."""
    min_turn_s: float = 1.0
    max_words: int = 3


@dataclasses.dataclass(frozen=True)
class BackchannelRule:
    max_s: float = 1.0  # a backchannel is shorter than this ...
    max_words: int = 2  # ... and has at most this many words
    long_s: float = 3.0  # fdb_code only: a longer segment ends the scan as a turn
    window_s: float = 0.2  # JSD histogram bins
    fdb_code: bool = False  # reproduce eval_backchannel.py's last-segment TOR (see module doc)


@dataclasses.dataclass(frozen=True)
class ScoreSettings:
    vad: VadSettings = VadSettings()
    turn: TurnRule = TurnRule()
    backchannel: BackchannelRule = BackchannelRule()
    segments: str = "vad"  # SEGMENT_SOURCES
    words: str = "auto"  # WORD_SOURCES
    text_slack_s: float = 0.2  # a text event this close to a segment counts in it
    bootstrap: int = 2000  # resamples for the bootstrap intervals
    seed: int = 0

    def __post_init__(self):
        if self.segments not in SEGMENT_SOURCES:
            raise ValueError(f"segments={self.segments!r}: expected one of {SEGMENT_SOURCES}")
        if self.words not in WORD_SOURCES:
            raise ValueError(f"words={self.words!r}: expected one of {WORD_SOURCES}")

    def describe(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def canonical_task(task: str) -> str:
    """A task name of TASKS (FDB's evaluate.py names are accepted too)."""
    name = TASK_ALIASES.get(task, task)
    if name not in TASKS:
        raise ValueError(f"unknown task {task!r}: expected one of {TASKS} (or "
                         f"{sorted(TASK_ALIASES)})")
    return name


# ---- statistics ----------------------------------------------------------------------------

def wilson_interval(successes: int, n: int, z: float = Z95) -> Optional[tuple[float, float]]:
    """Wilson score interval of a binomial proportion; None for n = 0."""
    if n <= 0:
        return None
    if not 0 <= successes <= n:
        raise ValueError(f"{successes} successes out of {n}")
    p, z2 = successes / n, z * z
    denominator = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def bootstrap_interval(values: Sequence[float], statistic: Callable = np.mean, *,
                       resamples: int = 2000, seed: int = 0,
                       level: float = 0.95) -> Optional[tuple[float, float]]:
    """Percentile bootstrap interval of `statistic` (seeded: the same values give the same
    interval); None without values."""
    x = np.asarray(values, np.float64)
    if x.size == 0:
        return None
    rng = np.random.default_rng(seed)
    stats = statistic(x[rng.integers(0, x.size, size=(resamples, x.size))], axis=1)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def rate_summary(flags: Sequence[bool], z: float = Z95) -> dict[str, Any]:
    n, k = len(flags), int(sum(bool(f) for f in flags))
    return dict(n=n, takeovers=k, rate=(k / n if n else None),
                ci95=_pair(wilson_interval(k, n, z)))


def value_summary(values: Sequence[float], *, resamples: int = 2000,
                  seed: int = 0) -> dict[str, Any]:
    x = np.asarray([v for v in values if v is not None], np.float64)
    if x.size == 0:
        return dict(n=0, mean=None, std=None, median=None, mean_ci95=None, median_ci95=None)
    return dict(n=int(x.size), mean=float(x.mean()), std=float(x.std()),
                median=float(np.median(x)),
                mean_ci95=_pair(bootstrap_interval(x, np.mean, resamples=resamples,
                                                   seed=seed)),
                median_ci95=_pair(bootstrap_interval(x, np.median, resamples=resamples,
                                                     seed=seed)))


def _pair(interval):
    return None if interval is None else [float(interval[0]), float(interval[1])]


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


# ---- speaking segments ---------------------------------------------------------------------

def clean_segments(segments: Sequence[Sequence[float]], *, min_gap_s: float,
                   min_speech_s: float, pad_s: float = 0.0,
                   duration_s: Optional[float] = None) -> list[tuple[float, float]]:
    """Sorted segments with gaps < min_gap_s bridged, then those < min_speech_s dropped,
    then padded by pad_s each side (clipped to [0, duration_s]) and overlaps merged."""
    spans = sorted((float(s), float(e)) for s, e in segments if float(e) > float(s))
    merged: list[list[float]] = []
    for start, end in spans:
        if merged and start - merged[-1][1] < min_gap_s - _EPS:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    kept = [(s, e) for s, e in merged if e - s >= min_speech_s - _EPS]
    if pad_s > 0:
        upper = math.inf if duration_s is None else float(duration_s)
        padded: list[list[float]] = []
        for s, e in kept:
            s, e = max(0.0, s - pad_s), min(upper, e + pad_s)
            if padded and s <= padded[-1][1]:
                padded[-1][1] = max(padded[-1][1], e)
            else:
                padded.append([s, e])
        kept = [(s, e) for s, e in padded]
    return kept


def energy_segments(audio_T: np.ndarray, sample_rate: int,
                    vad: VadSettings = VadSettings()) -> list[tuple[float, float]]:
    """Speaking segments (s) of mono audio: frames of `vad.frame_s` whose RMS is above
    `vad.threshold_dbfs` (re full scale 1.0), then `clean_segments`."""
    audio_T = np.asarray(audio_T, np.float64).reshape(-1)
    if audio_T.size == 0:
        return []
    hop = max(1, int(round(vad.frame_s * sample_rate)))
    num_frames = -(-audio_T.size // hop)
    frames = np.zeros(num_frames * hop)
    frames[:audio_T.size] = np.nan_to_num(audio_T)
    rms = np.sqrt(np.mean(frames.reshape(num_frames, hop) ** 2, axis=1))
    active = 20.0 * np.log10(np.maximum(rms, 1e-12)) > vad.threshold_dbfs
    edges = np.diff(np.concatenate([[0], active.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    runs = [(k0 * hop / sample_rate, min(k1 * hop, audio_T.size) / sample_rate)
            for k0, k1 in zip(starts.tolist(), ends.tolist())]
    return clean_segments(runs, min_gap_s=vad.min_gap_s, min_speech_s=vad.min_speech_s,
                          pad_s=vad.pad_s, duration_s=audio_T.size / sample_rate)


# ---- reading one sample --------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Word:
    start: float
    end: float
    text: str


@dataclasses.dataclass
class Speech:
    """What the model said in one output (after an optional crop)."""
    duration_s: Optional[float]
    segments: list[tuple[float, float]]
    segment_words: list[Optional[int]]  # words per segment (None: unknown)
    words: Optional[list[Word]]  # timed words (chunks/recognizer), text words, or None
    words_timed: bool  # the words carry audio timestamps
    segments_source: str
    words_source: str

    @property
    def num_words(self) -> Optional[int]:
        return None if self.words is None else len(self.words)


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """(mono float32 audio, sample rate); SampleError naming the file if unusable."""
    if not path.is_file():
        raise SampleError(f"{path}: missing")
    if path.stat().st_size == 0:
        raise SampleError(f"{path}: unreadable audio (empty file)")
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # noqa: BLE001 - libsndfile raises several kinds
        raise SampleError(f"{path}: unreadable audio ({type(e).__name__}: {e})") from None
    if audio.shape[0] == 0:
        raise SampleError(f"{path}: unreadable audio (no samples)")
    return audio.mean(axis=1).astype(np.float32), int(rate)


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise SampleError(f"{path}: missing")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SampleError(f"{path}: unreadable JSON ({e})") from None


def words_from_chunks(record: dict, path: Path) -> list[Word]:
    """FDB's ASR transcript (`chunks`), sorted by start; a missing end is the start (as FDB
    does), a chunk without a start is dropped."""
    chunks = record.get("chunks")
    if not isinstance(chunks, list):
        raise SampleError(f"{path}: no 'chunks' list (FDB's time-aligned transcript)")
    words = []
    for chunk in chunks:
        try:
            start, end = chunk["timestamp"][0], chunk["timestamp"][1]
        except (TypeError, KeyError, IndexError):
            raise SampleError(f"{path}: a chunk without timestamp [start, end]: {chunk!r}")
        if start is None:
            continue
        end = start if end is None else end
        words.append(Word(float(start), float(end), str(chunk.get("text", ""))))
    return sorted(words, key=lambda w: (w.start, w.end))


def words_from_events(record: dict, path: Path) -> list[Word]:
    """Words of omni_jax's text events: a word starts at a piece beginning with U+2581 (or a
    space); it has its first piece's time (end: its last piece's). Pieces of None (ids beyond
    the tokenizer) are skipped; a word without a letter or digit does not count."""
    events = record.get("events")
    if not isinstance(events, list):
        raise SampleError(f"{path}: no 'events' list (omni_jax's output.json)")
    words, current = [], None
    for event in events:
        if not isinstance(event, dict) or event.get("kind") != "text":
            continue
        piece = event.get("piece")
        if not isinstance(piece, str) or "time_s" not in event:
            continue
        time_s = float(event["time_s"])
        text = piece.replace(_WORD_START, " ")
        if current is None or text[:1].isspace():
            if current is not None:
                words.append(current)
            current = [time_s, time_s, text.strip()]
        else:
            current[1], current[2] = time_s, current[2] + text
    if current is not None:
        words.append(current)
    return [Word(s, e, t) for s, e, t in words if _WORD.search(t)]


def _crop(segments, after_s: float, min_speech_s: float):
    if after_s <= 0:
        return list(segments)
    cropped = [(max(s, after_s), e) for s, e in segments if e > after_s]
    return [(s, e) for s, e in cropped if e - s >= min_speech_s - _EPS]


def _count_overlapping(words: Sequence[Word], start: float, end: float) -> int:
    return sum(1 for w in words if w.start <= end and (w.end > start or w.start >= start))


def _spread(text: str, start: float, end: float) -> list[Word]:
    tokens = _WORDS.findall(text)
    step = (end - start) / max(len(tokens), 1)
    return [Word(start + i * step, start + (i + 1) * step, t) for i, t in enumerate(tokens)]


def read_speech(folder: Path, settings: ScoreSettings = ScoreSettings(),
                transcribe: Optional[Transcribe] = None, *,
                after_s: float = 0.0) -> Speech:
    """The model's speaking segments and words in `folder` (output.wav, output.json), only
    after `after_s` (the interruption crop). SampleError for a missing or unreadable file."""
    wav_path, json_path = folder / OUTPUT_WAV, folder / OUTPUT_JSON
    record = None
    needed = settings.segments == "intervals" or settings.words in ("chunks", "text")
    if needed or (settings.words == "auto" and json_path.is_file()):
        record = read_json(json_path)
        if not isinstance(record, dict):
            raise SampleError(f"{json_path}: expected a JSON object")

    words_source = settings.words
    if words_source == "auto":
        if record is not None and isinstance(record.get("chunks"), list):
            words_source = "chunks"
        elif transcribe is not None:
            words_source = "recognizer"
        elif record is not None and isinstance(record.get("events"), list):
            words_source = "text"
        else:
            words_source = "none"
    if words_source == "recognizer" and transcribe is None:
        raise ValueError("words='recognizer' needs a transcribe callable")

    audio, rate = None, None
    if settings.segments == "vad" or words_source == "recognizer" or (
            record is None or not isinstance(record.get("duration_s"), (int, float))):
        audio, rate = read_audio(wav_path)
    duration = audio.size / rate if audio is not None else float(record["duration_s"])

    if settings.segments == "vad":
        segments = energy_segments(audio, rate, settings.vad)
    else:
        intervals = record.get("speaking_intervals")
        if not isinstance(intervals, list):
            raise SampleError(f"{json_path}: no 'speaking_intervals' list")
        try:
            segments = clean_segments(intervals, min_gap_s=settings.vad.min_gap_s,
                                      min_speech_s=settings.vad.min_speech_s)
        except (TypeError, ValueError):
            raise SampleError(f"{json_path}: speaking_intervals must be [[start, end], ...]")
    segments = _crop(segments, after_s, settings.vad.min_speech_s)

    words: Optional[list[Word]] = None
    segment_words: list[Optional[int]] = [None] * len(segments)
    if words_source == "chunks":
        words = [Word(max(w.start, after_s), w.end, w.text)
                 for w in words_from_chunks(record, json_path)
                 if after_s <= 0 or w.end > after_s]
        segment_words = [_count_overlapping(words, s, e) for s, e in segments]
    elif words_source == "recognizer":
        words = []
        for i, (s, e) in enumerate(segments):
            clip = audio[int(round(s * rate)):int(round(e * rate))]
            try:
                text = transcribe(clip, rate)
            except Exception as error:  # noqa: BLE001 - a recogniser failure: this sample's
                raise SampleError(f"{wav_path}: the recogniser failed on {s:.2f}-{e:.2f} s "
                                  f"({type(error).__name__}: {error})") from None
            found = _spread(str(text or ""), s, e)
            segment_words[i] = len(found)
            words.extend(found)
    elif words_source == "text":
        words, segment_words = [], [0] * len(segments)
        slack = settings.text_slack_s
        for word in words_from_events(record, json_path):
            for i, (s, e) in enumerate(segments):
                if s - slack <= word.start <= e + slack:
                    segment_words[i] += 1
                    words.append(word)
                    break
    return Speech(duration_s=duration, segments=segments, segment_words=segment_words,
                  words=words, words_timed=words_source in ("chunks", "recognizer"),
                  segments_source=settings.segments, words_source=words_source)


# ---- per-task scores -----------------------------------------------------------------------

def takeover(speech: Speech, rule: TurnRule = TurnRule()) -> tuple[bool, Optional[float]]:
    """(the model took the turn, the onset of its response: None if it said nothing)."""
    if speech.words_timed:
        words = speech.words or []
        if not words:
            return False, None
        span = max(w.end for w in words) - words[0].start
        return (span >= rule.min_turn_s - _EPS or len(words) > rule.max_words), words[0].start
    if not speech.segments:
        return False, None
    span = speech.segments[-1][1] - speech.segments[0][0]
    n = speech.num_words
    turn = span >= rule.min_turn_s - _EPS or (n is not None and n > rule.max_words)
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
        short = e - s < rule.max_s - _EPS
        verdicts.append(((s, e), short and (n is None or n <= rule.max_words)))
    if rule.fdb_code:
        tor, backchannels = False, []
        for (s, e), is_backchannel in verdicts:
            if e - s > rule.long_s + _EPS:
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


# ---- metadata ------------------------------------------------------------------------------

def _first(paths: Sequence[Path], name: str) -> Optional[Path]:
    for folder in paths:
        if folder is not None and (folder / name).is_file():
            return folder / name
    return None


def _fdb_entry(path: Path) -> dict:
    data = read_json(path)
    entry = data[0] if isinstance(data, list) and data else data
    if not isinstance(entry, dict):
        raise SampleError(f"{path}: expected a list of objects with 'timestamp'")
    return entry


def _interval(value, path: Path, what: str) -> tuple[float, float]:
    try:
        start, end = float(value[0]), float(value[1])
    except (TypeError, ValueError, IndexError, KeyError):
        raise SampleError(f"{path}: {what} must be [start_s, end_s], got {value!r}") from None
    return start, end


def load_metadata(folders: Sequence[Optional[Path]], rel: str,
                  task: Optional[str] = None) -> tuple[str, dict[str, Any]]:
    """(task, metadata) of one sample from FDB's annotation files or fdb_meta.json in
    `folders` (first found wins). `task` None: detect it (fdb_meta.json's "task", else the
    one FDB annotation present, else "backchannel" in the path). SampleError if it cannot."""
    own_path = _first(folders, OWN_META)
    own = read_json(own_path) if own_path is not None else {}
    if not isinstance(own, dict):
        raise SampleError(f"{own_path}: expected a JSON object")
    if task is None:
        if "task" in own:
            try:
                task = canonical_task(str(own["task"]))
            except ValueError as e:
                raise SampleError(f"{own_path}: {e}") from None
        else:
            present = [t for t, name in FDB_META.items() if _first(folders, name)]
            if len(present) > 1:
                raise SampleError(f"{rel}: ambiguous task, both "
                                  + " and ".join(FDB_META[t] for t in present))
            if present:
                task = present[0]
            elif any("backchannel" in part.lower() for part in Path(rel).parts):
                task = "backchannel"
            else:
                raise SampleError(f"{rel}: no task (no {', '.join(FDB_META.values())} or "
                                  f"{OWN_META}, no 'backchannel' in the path; --task sets it)")
    meta: dict[str, Any] = {}
    fdb_path = _first(folders, FDB_META[task]) if task in FDB_META else None
    where = fdb_path or own_path or Path(rel)
    if task == "pause":
        if fdb_path is not None:
            data = read_json(fdb_path)
            items = data if isinstance(data, list) else [data]
            meta["pauses"] = [list(_interval(i.get("timestamp") if isinstance(i, dict) else
                                             None, fdb_path, "timestamp")) for i in items]
        elif "pauses" in own:
            meta["pauses"] = [list(_interval(p, own_path, "pauses[i]")) for p in own["pauses"]]
    elif task == "turn_taking":
        if fdb_path is not None:
            entry = _fdb_entry(fdb_path)
            stamp = entry.get("timestamp")
            if not isinstance(stamp, list) or not stamp:
                raise SampleError(f"{fdb_path}: no timestamp [user_end, ...]")
            try:
                meta["turn_end_s"] = float(stamp[0])
            except (TypeError, ValueError):
                raise SampleError(f"{fdb_path}: timestamp[0] is not a number") from None
        elif "turn_end_s" in own:
            try:
                meta["turn_end_s"] = float(own["turn_end_s"])
            except (TypeError, ValueError):
                raise SampleError(f"{own_path}: turn_end_s is not a number") from None
        else:
            raise SampleError(f"{rel}: no user turn end ({FDB_META[task]}, or {OWN_META} "
                              "with turn_end_s)")
    elif task == "interruption":
        if fdb_path is not None:
            entry = _fdb_entry(fdb_path)
            meta["interruption"] = _interval(entry.get("timestamp"), fdb_path, "timestamp")
            meta.update({k: entry[k] for k in ("context", "interrupt") if k in entry})
        elif "interruption" in own:
            meta["interruption"] = _interval(own["interruption"], own_path, "interruption")
            meta.update({k: own[k] for k in ("context", "interrupt") if k in own})
        else:
            raise SampleError(f"{rel}: no interruption time ({FDB_META[task]}, or {OWN_META} "
                              "with interruption [start_s, end_s])")
    elif task == "backchannel" and "gt_distribution" in own:
        meta["gt_distribution"] = own["gt_distribution"]
    meta["source"] = str(where)
    return task, meta


# ---- folders -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Sample:
    rel: str
    input_folder: Optional[Path]
    output_folder: Path


def find_samples(input_dir: Path, output_dir: Path) -> list[Sample]:
    """Every folder with input.wav under input_dir, and every folder with output.wav or
    output.json under output_dir, by relative path (sorted)."""
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    rels = {p.parent.relative_to(input_dir).as_posix()
            for p in input_dir.rglob(INPUT_WAV) if p.is_file()}
    for name in (OUTPUT_WAV, OUTPUT_JSON):
        rels |= {p.parent.relative_to(output_dir).as_posix()
                 for p in output_dir.rglob(name) if p.is_file()}
    samples = []
    for rel in sorted(rels):
        input_folder = input_dir / rel
        samples.append(Sample(rel, input_folder if input_folder.is_dir() else None,
                              output_dir / rel))
    return samples


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


def load_gt_distributions(path: Path) -> dict[str, list[float]]:
    """FDB's icc_gt_distribution.json: {sample folder name: [p, ...]}."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ValueError(f"{path}: expected {{sample name: [probabilities]}}")
    return {str(k): [float(x) for x in v] for k, v in data.items()}


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
