"""The embedded world as a TFDS dataset (array_record files, random access without TF).

The builder's config carries the whole experiment config; its name is
`generation.corpus_fingerprint(config)` (generating config fields + the world's code), so the
data lives in `DATA_DIR/embedded_world/w<fingerprint>/1.0.0` and a changed config or world
builds a new corpus instead of silently reusing a stale one.

Each example is `serialize.serialize(timeline)` plus `key`, the dialogue index (equal to the
record index unless `on_bad_sample=skip` dropped dialogues while generating). Shuffling is
disabled at write time: record i of a split is the i-th generated dialogue.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines import generation, serialize


@dataclasses.dataclass(eq=False)
class WorldConfig(tfds.core.BuilderConfig):
    """A BuilderConfig holding the experiment config that generates the corpus."""

    world: Any = dataclasses.field(default=None, repr=False)  # an ml_collections config


class EmbeddedWorld(tfds.core.GeneratorBasedBuilder):
    """Dialogues of the generated world, split into `train` and `eval` (held-out voices)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Timelines serialised by data_pipelines.serialize (format 1)."}
    # Nothing is downloaded, so there is no checksums file next to the code. (Looking for
    # one also makes TFDS import `importlib_resources`, which it does not depend on.)
    code_path = None

    @property
    def world(self):
        return self.builder_config.world

    def _info(self) -> tfds.core.DatasetInfo:
        features = tfds.features.FeaturesDict({
            "key": tfds.features.Scalar(dtype=np.int64, doc="dialogue index in its split"),
            "event_audio": tfds.features.Tensor(shape=(None,), dtype=np.int16),
            "event_offsets": tfds.features.Tensor(shape=(None,), dtype=np.int64),
            "turn_audio": tfds.features.Tensor(shape=(None,), dtype=np.int16),
            "turn_offsets": tfds.features.Tensor(shape=(None,), dtype=np.int64),
            "info": tfds.features.Text(doc="JSON: everything but the audio"),
        })
        metadata = tfds.core.MetadataDict(
            generating_config=generation.generating_config(self.world))
        return tfds.core.DatasetInfo(
            builder=self, description=__doc__, features=features, metadata=metadata,
            disable_shuffling=True)

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        data = self.world.data
        counts = {"train": data.train_dialogues, "eval": data.eval_dialogues}
        return {split: self._generate_examples(split, count)
                for split, count in counts.items() if count > 0}

    def _generate_examples(self, split: str, count: int):
        stats = generation.GenerationStats()
        for index, timeline in generation.generate_dialogues(self.world, split, count,
                                                             seed=self.world.seed,
                                                             stats=stats):
            yield index, dict(key=index, **serialize.serialize(timeline))
        self.info.metadata[f"{split}_generation"] = dict(
            generated=stats.generated, skipped=stats.skipped, seconds=round(stats.seconds, 2),
            audio_seconds=round(stats.audio_seconds, 2), per_scenario=stats.per_scenario,
            errors=stats.errors)


def make_builder(config, data_dir: str | os.PathLike) -> EmbeddedWorld:
    """The builder of the corpus `config` generates, under `data_dir`."""
    fingerprint = generation.corpus_fingerprint(config)
    description = (f"embedded world {config.name!r}, fingerprint {fingerprint} (the generating "
                   "config is in metadata.json)")
    return EmbeddedWorld(data_dir=os.fspath(data_dir), file_format="array_record",
                         config=WorldConfig(name=f"w{fingerprint}", description=description,
                                            world=config))


def prepare(builder: EmbeddedWorld) -> None:
    """Generates and writes every split (array_record)."""
    builder.download_and_prepare(file_format="array_record")


def record_source(builder: EmbeddedWorld, split: str):
    """Random access to the serialised records of a prepared split (`tfds.data_source`)."""
    if not builder.is_prepared():
        raise FileNotFoundError(f"corpus {builder.data_dir} is not built "
                                "(data_pipelines.corpus.ensure_corpus builds it)")
    return builder.as_data_source(split=split)
