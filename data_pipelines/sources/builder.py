"""The TFDS builder shared by the real-corpus layouts, and random access to what it wrote.

One array_record example per utterance (no TensorFlow needed to write or read):

  id       str          the corpus's utterance id
  audio    (T,) int16   mono at the builder's sample rate (16 kHz by default)
  text     str          the transcript (whitespace-normalized; casing as the layout leaves it)
  speaker  str          speaker id (GigaSpeech has none: the recording id stands in)
  reply    str          optional reply text for dialogue scenarios ("" when absent)
  origin   str          file and segment the audio came from (for messages)

A bad item raises `BadSample` under `on_bad_sample="raise"`, or is skipped and counted under
`"skip"`; the counts and the first reasons land in the metadata (`{split}_stats`). Examples
are written in listing order with integer keys, so `{split}_speaker_runs` (`[speaker,
first, stop)` index ranges) lets a reader draw one speaker's utterances without decoding
the others.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from data_pipelines import serialize
from data_pipelines.sources.utterances import (BAD_SAMPLE_POLICIES, BadSample,
                                              CorpusUtterance, Item, SplitStats, clean_text,
                                              read_item_audio)

_MAX_REASONS = 20  # reasons kept in the metadata for skipped items


@dataclasses.dataclass(eq=False)
class RealSpeechConfig(tfds.core.BuilderConfig):
    """Where a corpus lives and how to read it; `splits` maps a split to the layout's parts
    (LibriSpeech subset folders, LibriHeavy/manifest files, GigaSpeech subset tags)."""

    root: str = ""
    splits: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    sample_rate: int = 16000
    on_bad_sample: str = "raise"
    max_seconds: float = 0.0  # longer utterances are filtered out (0 = no limit)
    audio_root: str = ""  # where relative audio paths start ("" = root)


class RealSpeechBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Utterances of one real corpus; subclasses say how their layout lists items."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Utterances as int16 tensors (no TensorFlow needed)."}
    code_path = None  # nothing is downloaded: no checksums file (see sources/embedded.py)
    DEFAULT_SPLITS: Mapping[str, tuple[str, ...]] = {}

    @property
    def cfg(self) -> RealSpeechConfig:
        return self.builder_config

    @property
    def root(self) -> Path:
        return Path(self.cfg.root)

    @property
    def audio_root(self) -> Path:
        return Path(self.cfg.audio_root or self.cfg.root)

    @abc.abstractmethod
    def list_items(self, parts: Sequence[str], stats: SplitStats) -> Iterator[Item]:
        """Items of the given parts, in a fixed order; count deliberate omissions in stats."""

    def _info(self) -> tfds.core.DatasetInfo:
        text = tfds.features.Text
        features = tfds.features.FeaturesDict({
            "id": text(doc="utterance id in the corpus"),
            "audio": tfds.features.Tensor(shape=(None,), dtype=np.int16,
                                          doc=f"mono PCM at {self.cfg.sample_rate} Hz"),
            "text": text(doc="transcript"),
            "speaker": text(doc="speaker id"),
            "reply": text(doc="reply text for dialogue scenarios, '' if none"),
            "origin": text(doc="source file and segment"),
        })
        metadata = tfds.core.MetadataDict(sample_rate=self.cfg.sample_rate, root=self.cfg.root)
        return tfds.core.DatasetInfo(builder=self, description=self.__doc__,
                                     features=features, metadata=metadata,
                                     disable_shuffling=True)

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        if self.cfg.on_bad_sample not in BAD_SAMPLE_POLICIES:
            raise ValueError(f"on_bad_sample must be one of {BAD_SAMPLE_POLICIES}, got "
                             f"{self.cfg.on_bad_sample!r}")
        splits = self.cfg.splits or self.DEFAULT_SPLITS
        if not splits:
            raise ValueError(f"{self.name}: no splits given for {self.cfg.root}")
        return {split: self._generate_examples(split, tuple(parts))
                for split, parts in splits.items()}

    def _generate_examples(self, split: str, parts: tuple[str, ...]):
        stats, runs = SplitStats(), []
        rate, limit = self.cfg.sample_rate, self.cfg.max_seconds
        for item in self.list_items(parts, stats):
            try:
                audio = read_item_audio(item, rate)
            except BadSample as e:
                if self.cfg.on_bad_sample == "raise":
                    raise
                stats.skipped += 1
                if len(stats.reasons) < _MAX_REASONS:
                    stats.reasons.append(str(e))
                logging.warning("skipping %s", e)
                continue
            if limit and audio.size > limit * rate:
                stats.filtered += 1
                continue
            if runs and runs[-1][0] == item.speaker:
                runs[-1][2] += 1
            else:
                runs.append([item.speaker, stats.written, stats.written + 1])
            origin = f"{item.path}@{item.start_s:.3f}+{audio.size / rate:.3f}s"
            yield stats.written, dict(id=item.id, audio=serialize.to_int16(audio),
                                      text=clean_text(item.text), speaker=item.speaker,
                                      reply=item.reply, origin=origin)
            stats.written += 1
            stats.audio_seconds += audio.size / rate
        if stats.skipped:
            logging.warning("%s/%s: skipped %d bad item(s)", self.name, split, stats.skipped)
        self.info.metadata[f"{split}_stats"] = dataclasses.asdict(stats)
        self.info.metadata[f"{split}_speaker_runs"] = runs


def config_for(kind: str, root: str | os.PathLike, *, splits=None, sample_rate: int = 16000,
               on_bad_sample: str = "raise", max_seconds: float = 0.0,
               audio_root: str | os.PathLike = "") -> RealSpeechConfig:
    """A builder config named by a digest of everything that shapes the examples."""
    fields = dict(kind=kind, root=os.path.abspath(root),
                  splits={k: list(v) for k, v in (splits or {}).items()},
                  sample_rate=int(sample_rate), on_bad_sample=on_bad_sample,
                  max_seconds=float(max_seconds),
                  audio_root=os.path.abspath(audio_root) if audio_root else "")
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]
    return RealSpeechConfig(
        name=f"sr{sample_rate}_{digest}", description=f"{kind} at {fields['root']}",
        root=fields["root"], splits={k: tuple(v) for k, v in fields["splits"].items()},
        sample_rate=int(sample_rate), on_bad_sample=on_bad_sample,
        max_seconds=float(max_seconds), audio_root=fields["audio_root"])


def _text(value: Any) -> str:
    if isinstance(value, np.ndarray):
        value = value.item()
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class UtteranceSource:
    """Random access to the utterances of one prepared split (lazy, pickles cheaply)."""

    def __init__(self, records: Sequence[Mapping[str, Any]], sample_rate: int,
                 speaker_runs: Sequence[Sequence[Any]], name: str):
        self._records = records
        self.sample_rate = sample_rate
        self.name = name
        self._runs: dict[str, list[tuple[int, int]]] = {}
        for speaker, first, stop in speaker_runs:
            self._runs.setdefault(str(speaker), []).append((int(first), int(stop)))

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> CorpusUtterance:
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name}: index {index} outside [0, {len(self)})")
        r = self._records[index]
        return CorpusUtterance(id=_text(r["id"]), text=_text(r["text"]),
                               speaker=_text(r["speaker"]),
                               audio=serialize.from_int16(np.asarray(r["audio"])),
                               sample_rate=self.sample_rate, reply=_text(r["reply"]))

    def speakers(self) -> list[str]:
        return sorted(self._runs)

    def indices_of(self, speaker: str) -> np.ndarray:
        """Record indices of `speaker` (a KeyError names an unknown speaker)."""
        if speaker not in self._runs:
            raise KeyError(f"{self.name}: no speaker {speaker!r}")
        return np.concatenate([np.arange(a, b) for a, b in self._runs[speaker]])

    def __repr__(self) -> str:
        return f"UtteranceSource({self.name!r}, {len(self)} utterances)"


def open_utterances(builder: RealSpeechBuilder, split: str) -> UtteranceSource:
    """The utterances of a prepared split."""
    if not builder.is_prepared():
        raise FileNotFoundError(f"{builder.data_dir} is not built (run prepare(builder))")
    metadata = builder.info.metadata
    return UtteranceSource(builder.as_data_source(split=split),
                           int(metadata["sample_rate"]), metadata[f"{split}_speaker_runs"],
                           name=f"{builder.name}/{builder.builder_config.name}/{split}")
