"""LibriSpeech in its standard folder layout, read from disk (nothing is downloaded).

  ROOT/<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt   "UTT-ID TRANSCRIPT" lines
  ROOT/<subset>/<speaker>/<chapter>/<UTT-ID>.flac                   16 kHz mono

`splits` maps a split to subset folders, e.g. {"train": ("train-clean-100",),
"eval": ("dev-clean",)} (the default). Transcripts are upper case in the corpus and stored
lower case. A transcript line whose flac is missing and a flac with no transcript line are
both bad items (see `utterances`), never silently dropped or re-paired.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

from data_pipelines.sources.builder import RealSpeechBuilder
from data_pipelines.sources.utterances import Item, SplitStats

AUDIO_SUFFIX = ".flac"


def chapter_items(chapter: Path, speaker: str) -> Iterator[Item]:
    """The items of one chapter folder: every transcript line, then any orphan audio."""
    listed = set()
    for trans in sorted(chapter.glob("*.trans.txt")):
        for number, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            utt_id, _, text = line.strip().partition(" ")
            audio = chapter / f"{utt_id}{AUDIO_SUFFIX}"
            listed.add(audio.name)
            yield Item(id=utt_id, path=audio if audio.is_file() else None,
                       text=text.lower(), speaker=speaker, where=f"{trans}:{number}")
    for audio in sorted(chapter.glob(f"*{AUDIO_SUFFIX}")):
        if audio.name not in listed:
            yield Item(id=audio.stem, path=audio, text=None, speaker=speaker,
                       where=str(chapter))


class LocalLibrispeech(RealSpeechBuilder):
    """LibriSpeech utterances from a local copy of the corpus."""

    name = "local_librispeech"
    DEFAULT_SPLITS = {"train": ("train-clean-100",), "eval": ("dev-clean",)}

    def list_items(self, parts: Sequence[str], stats: SplitStats) -> Iterator[Item]:
        del stats  # LibriSpeech leaves nothing out on purpose
        for subset in parts:
            folder = self.root / subset
            if not folder.is_dir():
                raise FileNotFoundError(f"LibriSpeech subset folder {folder} does not exist")
            for speaker in sorted(p for p in folder.iterdir() if p.is_dir()):
                for chapter in sorted(p for p in speaker.iterdir() if p.is_dir()):
                    yield from chapter_items(chapter, speaker.name)
