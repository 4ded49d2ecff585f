"""The on-disk corpus of the embedded world, and the tokenizer.

  build_tokenizer(config, path)     train on the world's text (and a real corpus's
                                    transcripts) or load
  real_corpus_texts(config, ...)    the real corpus's transcripts the tokenizer learns
  tokenizer_path(config, workdir)   where the tokenizer lives: data.tokenizer.path or
                                    WORKDIR/tokenizer.model
  ensure_corpus(config, workdir)    build the TFDS dataset if missing
  prepared_builder(config, workdir) the same, returning the TFDS builder

The dialogues come from `generation.generate_dialogues`; the dataset is named by
`generation.corpus_fingerprint` and lives under `paths.corpus_dir` (`sources.embedded`).
With `data.source='corpus'` the real corpus is prepared first, as its own TFDS dataset
under `paths.real_corpus_dir`; the tokenizer then also learns the corpus's transcripts.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import numpy as np
from absl import logging

from data_pipelines import paths, world
from data_pipelines import tokenizer as tokenizer_lib
from data_pipelines.scenarios import real_speech
from data_pipelines.sources import embedded


def build_tokenizer(config, path: str | os.PathLike,
                    workdir: str | os.PathLike | None = None):
    """Loads the tokenizer at `path`, or trains it when it is missing: on the world's text,
    plus with data.source='corpus' the real corpus's train transcripts (`real_corpus_texts`;
    FSDD's digit words are world words already). `workdir` says where the real corpus is
    built; None = the folder of `path` when that is the default WORKDIR/tokenizer.model."""
    path = Path(path)
    if path.is_file():
        tokenizer = tokenizer_lib.Tokenizer.load(path)
    else:
        texts = world.all_texts()
        if config.data.source == "corpus":
            if workdir is None and not config.data.tokenizer.path:
                workdir = path.parent  # tokenizer_path's default: WORKDIR/tokenizer.model
            texts += real_corpus_texts(config, workdir)
        logging.info("training a %d-piece tokenizer at %s on %d texts",
                     config.data.tokenizer.vocab_size, path, len(texts))
        tokenizer = tokenizer_lib.train_tokenizer(
            texts, config.data.tokenizer.vocab_size, config.data.tokenizer.model_type, path)
    if tokenizer.vocab_size > config.data.tokenizer.vocab_size:
        raise tokenizer_lib.TokenizerError(
            f"tokenizer {str(path)!r} has {tokenizer.vocab_size} pieces, more than "
            f"config.data.tokenizer.vocab_size={config.data.tokenizer.vocab_size} "
            "(a stale model? delete it to retrain)")
    return tokenizer


def real_corpus_texts(config, workdir: str | os.PathLike | None = None) -> list[str]:
    """Transcripts (and replies) of at most data.corpus.tokenizer_texts utterances of the
    real corpus's train split, evenly spread over it (deterministic; the whole split when it
    is smaller), so the tokenizer covers the corpus's words and characters without reading
    a corpus of millions of utterances."""
    source = real_speech.corpus_source(config, "train", workdir)
    cap = int(config.data.corpus.tokenizer_texts)
    if not cap or not len(source):
        return []
    picked = np.unique(np.linspace(0, len(source) - 1, num=min(cap, len(source)))
                       .round().astype(np.int64))
    texts = []
    for index in picked:
        utt = source[int(index)]
        texts += [utt.text, utt.reply] if utt.reply else [utt.text]
    return texts


TOKENIZER_FILE = "tokenizer.model"  # a run's tokenizer, in its workdir by default


def tokenizer_path(config, workdir: str | os.PathLike) -> Path:
    return Path(config.data.tokenizer.path or Path(workdir) / TOKENIZER_FILE)


def with_real_corpus_dir(config, workdir: str | os.PathLike):
    """`config` with data.corpus.data_dir set to `paths.real_corpus_dir(config, workdir)`,
    for code that gets only the config (the TFDS builder generating the dialogues); the data
    dir is not in the fingerprint, so the corpus keeps its name. Other sources: `config` as
    is."""
    if config.data.source != "corpus" or config.data.corpus.data_dir:
        return config
    resolved = copy.deepcopy(config)
    resolved.data.corpus.data_dir = os.fspath(paths.real_corpus_dir(config, workdir))
    return resolved


def prepared_builder(config, workdir: str | os.PathLike):
    """The TFDS builder of the corpus `config` generates, built first if missing (with
    data.source='corpus', the real corpus first of all, under `paths.real_corpus_dir`).

    Only one process should build (multi-host: process 0 first, then a barrier).
    """
    builder = embedded.make_builder(with_real_corpus_dir(config, workdir),
                                    paths.corpus_dir(config, workdir))
    if not builder.is_prepared():
        began = time.perf_counter()
        embedded.prepare(builder)
        logging.info("built corpus %s in %.1f s", builder.data_dir, time.perf_counter() - began)
    return builder


def ensure_corpus(config, workdir: str | os.PathLike) -> Path:
    """Builds the generated corpus's TFDS dataset unless it exists; returns its directory."""
    return Path(prepared_builder(config, workdir).data_dir)
