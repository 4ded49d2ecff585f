"""The Free Spoken Digit Dataset folder layout, and digit strings made from its clips.

  ROOT/recordings/<digit>_<speaker>_<take>.wav     one spoken digit, 8 kHz mono

`load_digits` reads (eagerly: the whole set is ~20 minutes) the clips of some speakers,
resampled and trimmed to their voiced part, with bad files (unparseable names, unreadable
or empty audio) raising `BadSample` or skipped and counted. `digit_string` joins clips of
one speaker with short pauses into an utterance with exact word times (each clip is one
word). Splits (`split_selection`):

  train  every speaker but the held-out one, takes 5-49 (FSDD's own training takes)
  eval   the held-out speaker, every take: a speaker-independent figure
  test   FSDD's official test set: takes 0-4 of every speaker (never trained on)
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Callable

import numpy as np

from data_pipelines import audio_io
from data_pipelines.sources.utterances import BAD_SAMPLE_POLICIES, BadSample, voiced_span
from data_pipelines.timeline import WordTime

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_NAME = re.compile(r"^(?P<digit>\d)_(?P<speaker>[A-Za-z0-9]+)_(?P<take>\d+)$")
_MARGIN_S = 0.02  # kept around the voiced part of a clip


@dataclasses.dataclass(frozen=True)
class DigitClip:
    digit: int
    speaker: str
    take: int
    audio: np.ndarray  # float32 mono, trimmed to the voiced part (plus a small margin)


@dataclasses.dataclass
class DigitSet:
    """The usable clips of some speakers: speaker -> digit -> clips."""

    clips: dict[str, dict[int, list[DigitClip]]]
    skipped: int = 0
    reasons: list[str] = dataclasses.field(default_factory=list)

    @property
    def speakers(self) -> list[str]:
        return sorted(self.clips)


def recordings_dir(root: str | Path) -> Path:
    folder = Path(root) / "recordings"
    if not folder.is_dir():
        raise FileNotFoundError(f"FSDD folder {folder} does not exist (expected "
                                "ROOT/recordings/<digit>_<speaker>_<take>.wav)")
    return folder


def list_speakers(root: str | Path) -> list[str]:
    """Speakers named by well-formed file names (the files are not read)."""
    names = (_NAME.match(p.stem) for p in recordings_dir(root).glob("*.wav"))
    return sorted({m["speaker"] for m in names if m})


OFFICIAL_TEST_TAKES = range(0, 5)  # FSDD's README: takes 0-4 are the test set
SPLITS = ("train", "eval", "test")


def split_speakers(speakers: list[str], split: str, holdout: str) -> list[str]:
    """train: every speaker but `holdout`; eval: `holdout` alone; test: everyone."""
    if holdout not in speakers:
        raise ValueError(f"data.holdout_speaker {holdout!r} is not an FSDD speaker "
                         f"({speakers})")
    if split == "eval":
        return [holdout]
    if split == "train":
        return [s for s in speakers if s != holdout]
    if split == "test":
        return list(speakers)
    raise ValueError(f"unknown split {split!r} ({' | '.join(SPLITS)})")


def split_takes(split: str) -> Callable[[int], bool]:
    """Which takes a split reads: train never sees the official test takes."""
    if split == "train":
        return lambda take: take not in OFFICIAL_TEST_TAKES
    if split == "test":
        return lambda take: take in OFFICIAL_TEST_TAKES
    if split == "eval":
        return lambda take: True
    raise ValueError(f"unknown split {split!r} ({' | '.join(SPLITS)})")


def split_selection(root: str | Path, split: str, holdout: str
                    ) -> tuple[list[str], Callable[[int], bool]]:
    """(speakers, take filter) of a split."""
    return split_speakers(list_speakers(root), split, holdout), split_takes(split)


def load_digits(root: str | Path, speakers: list[str], sample_rate: int,
                on_bad_sample: str = "raise",
                keep_take: Callable[[int], bool] | None = None) -> DigitSet:
    """Reads every clip of `speakers` (whose take `keep_take` accepts, if given); bad files
    raise BadSample or are skipped and counted."""
    if on_bad_sample not in BAD_SAMPLE_POLICIES:
        raise ValueError(f"on_bad_sample must be one of {BAD_SAMPLE_POLICIES}, got "
                         f"{on_bad_sample!r}")
    result = DigitSet(clips={s: {} for s in speakers})
    wanted = set(speakers)
    for path in sorted(recordings_dir(root).iterdir()):
        try:
            match = _NAME.match(path.stem)
            if path.suffix.lower() != ".wav" or not match:
                raise BadSample(f"{path}: not an FSDD clip name "
                                "(<digit>_<speaker>_<take>.wav)")
            if match["speaker"] not in wanted or (keep_take is not None
                                                  and not keep_take(int(match["take"]))):
                continue
            try:
                audio = audio_io.load_audio(path, sample_rate)
            except audio_io.AudioError as e:
                raise BadSample(f"FSDD clip {path.name}: {e}") from None
        except BadSample as e:
            if on_bad_sample == "raise":
                raise
            result.skipped += 1
            result.reasons.append(str(e))
            continue
        first, stop = voiced_span(audio, sample_rate)
        margin = int(_MARGIN_S * sample_rate)
        clip = DigitClip(int(match["digit"]), match["speaker"], int(match["take"]),
                         audio[max(0, first - margin):stop + margin])
        result.clips[clip.speaker].setdefault(clip.digit, []).append(clip)
    empty = [s for s in speakers if not result.clips[s]]
    if empty:
        raise ValueError(f"FSDD folder {root}: no usable clip of speaker(s) {empty}")
    return result


def digit_string(rng: np.random.Generator, clips: dict[int, list[DigitClip]],
                 num_digits: int, pause_s: tuple[float, float], sample_rate: int
                 ) -> tuple[str, np.ndarray, tuple[WordTime, ...]]:
    """(text, audio, word times) of `num_digits` random digits of one speaker's clips."""
    digits = sorted(clips)
    pieces, words, t = [], [], 0
    for n in range(num_digits):
        if n:
            gap = int(rng.uniform(*pause_s) * sample_rate)
            pieces.append(np.zeros(gap, np.float32))
            t += gap
        digit = digits[int(rng.integers(len(digits)))]
        options = clips[digit]
        clip = options[int(rng.integers(len(options)))]
        pieces.append(clip.audio)
        words.append(WordTime(DIGIT_WORDS[digit], t / sample_rate,
                              (t + clip.audio.size) / sample_rate))
        t += clip.audio.size
    text = " ".join(w.word for w in words)
    return text, np.concatenate(pieces).astype(np.float32), tuple(words)
