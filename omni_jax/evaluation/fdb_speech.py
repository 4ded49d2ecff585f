"""Full-Duplex-Bench v1 scoring: what the model said in one output folder (output.wav,
output.json) as speaking segments and words (numpy, soundfile; the folder layout and
`ScoreSettings` in fdb_samples, the scores in fdb_metrics).

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
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import soundfile as sf

from omni_jax.evaluation.fdb_samples import (OUTPUT_JSON, OUTPUT_WAV, SampleError,
                                              ScoreSettings, VadSettings, read_json)

TIME_EPS = 1e-9  # time comparisons: frame arithmetic must not flip a >= threshold
_WORD = re.compile(r"\w")
_WORDS = re.compile(r"[\w']+")
_WORD_START = "\u2581"  # sentencepiece's word-boundary marker

Transcribe = Callable[[np.ndarray, int], str]


# ---- speaking segments ---------------------------------------------------------------------

def clean_segments(segments: Sequence[Sequence[float]], *, min_gap_s: float,
                   min_speech_s: float, pad_s: float = 0.0,
                   duration_s: Optional[float] = None) -> list[tuple[float, float]]:
    """Sorted segments with gaps < min_gap_s bridged, then those < min_speech_s dropped,
    then padded by pad_s each side (clipped to [0, duration_s]) and overlaps merged."""
    spans = sorted((float(s), float(e)) for s, e in segments if float(e) > float(s))
    merged: list[list[float]] = []
    for start, end in spans:
        if merged and start - merged[-1][1] < min_gap_s - TIME_EPS:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    kept = [(s, e) for s, e in merged if e - s >= min_speech_s - TIME_EPS]
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
    return [(s, e) for s, e in cropped if e - s >= min_speech_s - TIME_EPS]


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

