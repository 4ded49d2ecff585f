"""Random-access sources of Timelines for the Grain pipeline.

A source is anything with `__len__` and `__getitem__(index) -> Timeline`. `TimelineSource`
wraps a random-access sequence of serialised records (a TFDS `data_source`, a list) and
deserialises on access, so reading is lazy and the source pickles cheaply into Grain
workers. `open_source(config, workdir, split)` opens the source `config.data.source` names
(`sources.DATA_SOURCES`).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import tensorflow_datasets as tfds

from data_pipelines import corpus, paths, serialize
from data_pipelines.sources import DATA_SOURCES, GENERATED_SOURCES, TFDS_PREFIX, embedded
from data_pipelines.timeline import Timeline


class TimelineSource:
    """Timelines of one split, deserialised on `__getitem__`."""

    def __init__(self, records: Sequence[Mapping[str, Any]], name: str):
        self._records = records
        self.name = name

    def __len__(self) -> int:
        return len(self._records)

    def record(self, index: int) -> Mapping[str, Any]:
        """The raw serialised record at `index`."""
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name}: index {index} outside [0, {len(self)})")
        return self._records[index]

    def __getitem__(self, index: int) -> Timeline:
        record = self.record(index)
        key = record.get("key", index)
        where = (f"{self.name}[{index}] (dialogue {int(key)}, "
                 f"scenario {serialize.scenario_of(record)})")
        return serialize.deserialize(record, where=where)

    def __repr__(self) -> str:
        return f"TimelineSource({self.name!r}, {len(self)} records)"


def open_source(config, workdir: str | os.PathLike, split: str) -> TimelineSource:
    """The source `config.data.source` names, for `split` ('train' or 'eval')."""
    kind = config.data.source
    # Generated corpora; fsdd and corpus draw the user turns from real speech.
    if kind in GENERATED_SOURCES:
        builder = corpus.prepared_builder(config, workdir)
        return TimelineSource(embedded.record_source(builder, split),
                              name=f"{builder.builder_config.name}/{split}")
    if kind.startswith(TFDS_PREFIX):
        name = kind.removeprefix(TFDS_PREFIX)
        records = tfds.data_source(name, split=split,
                                   data_dir=os.fspath(paths.corpus_dir(config, workdir)))
        return TimelineSource(records, name=f"{name}/{split}")
    raise ValueError(f"config.data.source: unknown source {kind!r} (expected one of "
                     f"{list(DATA_SOURCES)})")
