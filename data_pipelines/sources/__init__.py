"""Where the data comes from: the values of `config.data.source` and the real corpora.

  timelines   random-access Timelines for the Grain pipeline: `open_source(config, workdir,
              split)` opens the source `config.data.source` names (`DATA_SOURCES`):
                embedded    the generated world (built on first use, see corpus.ensure_corpus)
                fsdd        the same, with FSDD digit strings as user turns (data.real_dir)
                corpus      the same, with a real corpus's utterances as user turns
                            (data.corpus)
                tfds:NAME   a prepared TFDS dataset with the same features, under the corpus
                            directory
  embedded    the generated world as a TFDS dataset
  fsdd        the Free Spoken Digit Dataset layout, digit strings
  real        real speech corpora (`REAL_CORPUS_KINDS`) as TFDS datasets of utterances:
              builder, librispeech, libriheavy, gigaspeech, manifest; utterances (reading)

This module holds only the names, so that checking a config needs no tensorflow_datasets
import (`real.BUILDERS` must list exactly `REAL_CORPUS_KINDS`; a test checks it).
"""

from __future__ import annotations

# config.data.source: the generated world, with its user turns from espeak voices, FSDD or
# a real corpus; or a prepared TFDS dataset named after the prefix.
GENERATED_SOURCES = ("embedded", "fsdd", "corpus")
TFDS_PREFIX = "tfds:"
DATA_SOURCES = GENERATED_SOURCES + (f"{TFDS_PREFIX}NAME",)

# config.data.corpus.kind (data.source='corpus'): the layouts of `real.BUILDERS`.
REAL_CORPUS_KINDS = ("librispeech", "libriheavy", "gigaspeech", "manifest")
# The kinds whose records may carry a reply text (a manifest's `reply` field).
REPLY_KINDS = ("manifest",)


def is_data_source(source: str) -> bool:
    """Whether `source` is one of `DATA_SOURCES` ('tfds:' followed by a dataset name)."""
    return source in GENERATED_SOURCES or (source.startswith(TFDS_PREFIX)
                                           and len(source) > len(TFDS_PREFIX))
