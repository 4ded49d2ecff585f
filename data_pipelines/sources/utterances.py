"""Real speech corpora: the utterance record, and reading items' audio.

A corpus layout (LibriSpeech, LibriHeavy, GigaSpeech, a manifest) only *lists* what it holds:
`Item`s naming an audio file (or a segment of one), its transcript and speaker. Reading the
audio (any rate, any channel count, segments of long recordings without decoding the rest)
and checking it is shared and lives here; `builder` writes the utterances as TFDS examples.

Bad input (a missing, unreadable or empty file, a transcript line without audio, audio
without a transcript, a malformed manifest entry, a segment past the end of its file) is a
`BadSample` whose message names the item and where it is listed. Items are never re-paired:
an utterance's audio comes from the file its own line names.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from data_pipelines import audio_io

# config.data.on_bad_sample: raise an error naming the bad item, or skip it and count it.
# Every reader of items, dialogues and records (here, fsdd, builder, generation, pipeline)
# implements both.
BAD_SAMPLE_POLICIES = ("raise", "skip")
_SPACES = re.compile(r"\s+")


class BadSample(ValueError):
    """An item that cannot become an utterance; the message names the item and the cause."""


@dataclasses.dataclass(frozen=True)
class Item:
    """One utterance as a layout lists it, before any audio is read."""

    id: str
    path: Path | None  # None: a transcript line whose audio file does not exist
    text: str | None  # None: an audio file with no transcript
    speaker: str
    where: str  # where the item is listed (file and line), for messages
    start_s: float = 0.0  # segment of a longer recording
    duration_s: float | None = None  # None: to the end of the file
    channel: int | None = None  # None: average the channels
    reply: str = ""
    problem: str = ""  # set by a layout for an entry it cannot read (bad JSON, no path)


@dataclasses.dataclass(frozen=True)
class CorpusUtterance:
    """One real utterance, mono float32 at `sample_rate`."""

    id: str
    text: str
    speaker: str
    audio: np.ndarray
    sample_rate: int
    reply: str = ""

    @property
    def duration_s(self) -> float:
        return self.audio.size / self.sample_rate


@dataclasses.dataclass
class SplitStats:
    """What building one split did."""

    written: int = 0
    skipped: int = 0  # bad items under on_bad_sample="skip"
    filtered: int = 0  # items a layout or max_seconds leaves out on purpose (not errors)
    audio_seconds: float = 0.0
    reasons: list[str] = dataclasses.field(default_factory=list)


def clean_text(text: str) -> str:
    """Single spaces, no leading/trailing space."""
    return _SPACES.sub(" ", text).strip()


def voiced_span(audio: np.ndarray, sample_rate: int, floor_db: float = -35.0,
                frame_ms: float = 10.0) -> tuple[int, int]:
    """[first, stop) samples of the frames within `floor_db` of the loudest frame: where the
    speech of a clip is, without its leading and trailing silence."""
    frame = max(1, int(sample_rate * frame_ms / 1000))
    count = max(1, audio.size // frame)
    frames = np.resize(audio[:count * frame], (count, frame)).astype(np.float64)
    level = np.sqrt(np.mean(frames ** 2, axis=1) + 1e-20)
    loud = np.flatnonzero(level >= level.max() * 10.0 ** (floor_db / 20.0))
    return int(loud[0] * frame), int(min(audio.size, (loud[-1] + 1) * frame))


def read_item_audio(item: Item, sample_rate: int) -> np.ndarray:
    """The item's audio, mono float32 at `sample_rate`; BadSample naming the item if unusable."""
    def bad(reason: str) -> BadSample:
        return BadSample(f"{item.where}: item {item.id!r}: {reason}")

    if item.problem:
        raise bad(item.problem)
    if item.path is None:
        raise bad("transcript line without an audio file")
    if item.text is None:
        raise bad(f"audio file {item.path} has no transcript")
    if not item.text.strip():
        raise bad("empty transcript")
    try:
        if item.start_s == 0.0 and item.duration_s is None:
            audio = audio_io.load_audio(item.path, sample_rate, channel=item.channel)
        else:
            audio = _read_segment(item, sample_rate)
    except audio_io.AudioError as e:
        raise bad(str(e)) from None
    if audio.size == 0:
        raise bad(f"{item.path}: no samples")
    return audio


def _read_segment(item: Item, sample_rate: int) -> np.ndarray:
    """[start, start + duration) of a long recording, seeking instead of decoding it all."""
    import soundfile as sf  # as in audio_io: only reading audio needs it

    path = item.path
    if not path.is_file():
        raise audio_io.AudioError(f"{path}: no such file")
    try:
        with sf.SoundFile(str(path)) as f:
            native, total = f.samplerate, f.frames
            first = int(round(item.start_s * native))
            count = (total - first if item.duration_s is None
                     else int(round(item.duration_s * native)))
            # A segment may overrun by a few samples of rounding, never by more.
            if first + count > total + native // 100:
                raise audio_io.AudioError(
                    f"{path}: segment {item.start_s:.2f}+{item.duration_s}s ends past the "
                    f"end of the file ({total / native:.2f}s)")
            f.seek(first)
            audio_TxCh = f.read(min(count, total - first), dtype="float32", always_2d=True)
    except audio_io.AudioError:
        raise
    except Exception as e:  # soundfile's errors are not one type
        raise audio_io.AudioError(f"{path}: unreadable audio ({e})") from None
    if audio_TxCh.shape[0] == 0:
        raise audio_io.AudioError(f"{path}: segment at {item.start_s:.2f}s has no samples")
    if item.channel is None:
        audio_T = audio_TxCh.mean(axis=1)
    elif 0 <= item.channel < audio_TxCh.shape[1]:
        audio_T = audio_TxCh[:, item.channel]
    else:
        raise audio_io.AudioError(f"{path}: channel {item.channel} asked for, file has "
                                  f"{audio_TxCh.shape[1]}")
    if not np.all(np.isfinite(audio_T)):
        raise audio_io.AudioError(f"{path}: NaN or Inf samples")
    return audio_io.resample(audio_T, native, sample_rate)


def read_jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any] | None, str]]:
    """(where, object, problem) per line of a JSONL file, gzipped or not; a line that is
    not a JSON object comes back as (where, None, why)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                yield where, None, f"not valid JSON ({e})"
                continue
            if isinstance(value, dict):
                yield where, value, ""
            else:
                yield where, None, f"expected a JSON object, got {type(value).__name__}"


def broken(where: str, problem: str) -> Item:
    """An entry a layout cannot read, reported as a bad item under the policy."""
    return Item(id=where.rsplit("/", 1)[-1], path=None, text=None, speaker="", where=where,
                problem=problem)
