"""Real speech corpora on local disks, as TFDS array_record datasets of utterances.

  builder = real.make_builder("librispeech", "/data/LibriSpeech", data_dir,
                              splits={"train": ("train-clean-100",), "eval": ("dev-clean",)})
  real.prepare(builder)                       # reads the corpus once, writes array_record
  train = real.open_utterances(builder, "train")   # random access: CorpusUtterance

Kinds: librispeech (folder layout), libriheavy (cut manifests over LibriLight), gigaspeech
(GigaSpeech.json), manifest (JSONL of path/text/speaker). Audio is stored mono int16 at
`sample_rate` (16 kHz). The builder config (and so the dataset directory) is named by a
digest of the corpus path, splits, rate and bad-sample policy, so a different corpus never
reuses a stale build. See `builder` for the record and `utterances` for bad input.
"""

from __future__ import annotations

import os

from data_pipelines.sources.gigaspeech import LocalGigaspeech
from data_pipelines.sources.libriheavy import LocalLibriheavy
from data_pipelines.sources.librispeech import LocalLibrispeech
from data_pipelines.sources.manifest import LocalManifest
from data_pipelines.sources.builder import (RealSpeechBuilder, UtteranceSource,  # noqa: F401
                                           config_for, open_utterances)
from data_pipelines.sources.utterances import BadSample, CorpusUtterance  # noqa: F401

BUILDERS: dict[str, type[RealSpeechBuilder]] = {
    "librispeech": LocalLibrispeech,
    "libriheavy": LocalLibriheavy,
    "gigaspeech": LocalGigaspeech,
    "manifest": LocalManifest,
}


def make_builder(kind: str, root: str | os.PathLike, data_dir: str | os.PathLike, *,
                 splits=None, sample_rate: int = 16000, on_bad_sample: str = "raise",
                 max_seconds: float = 0.0,
                 audio_root: str | os.PathLike = "") -> RealSpeechBuilder:
    """The builder of corpus `kind` at `root`, writing under `data_dir`.

    splits: split -> parts (see each layout's module); None = the layout's default.
    """
    if kind not in BUILDERS:
        raise ValueError(f"unknown real corpus {kind!r}; known: {sorted(BUILDERS)}")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{kind} corpus folder {os.fspath(root)!r} does not exist")
    cls = BUILDERS[kind]
    config = config_for(kind, root, splits=splits or cls.DEFAULT_SPLITS,
                        sample_rate=sample_rate, on_bad_sample=on_bad_sample,
                        max_seconds=max_seconds, audio_root=audio_root)
    return cls(data_dir=os.fspath(data_dir), file_format="array_record", config=config)


def prepare(builder: RealSpeechBuilder) -> None:
    """Reads the corpus and writes every split (array_record)."""
    builder.download_and_prepare(file_format="array_record")


def build(kind: str, root, data_dir, split: str, **kwargs) -> UtteranceSource:
    """make_builder + prepare (when not yet built) + open_utterances of `split`."""
    builder = make_builder(kind, root, data_dir, **kwargs)
    if not builder.is_prepared():
        prepare(builder)
    return open_utterances(builder, split)
