"""Materialising the embedded world: dialogues, tokenizer and the on-disk corpus.

  generate_dialogues(config, split, count, seed)  deterministic (key, Timeline) stream
  build_tokenizer(config, path)                   train on the world's text (and a real
                                                  corpus's transcripts) or load
  corpus_fingerprint(config)                      hash of everything that shapes the corpus
  corpus_dir(config, workdir)                     where TFDS datasets live
  real_corpus_dir(config, workdir)                where a real corpus (source 'corpus') is
                                                  built: data.corpus.data_dir or corpus_dir
  ensure_corpus(config, workdir)                  build the TFDS dataset if missing
  prepared_builder(config, workdir)               the same, returning the TFDS builder

Dialogue i of a split is generated from `np.random.default_rng([seed, split_id, i])`, so
any dialogue can be regenerated alone and the corpus does not depend on how generation is
parallelised. A generation error (a ValueError: an unsayable text, an impossible Timeline)
is handled per `config.data.on_bad_sample`: `raise` names the split, dialogue index and
scenario; `skip` drops the dialogue and counts it in `GenerationStats`.

With `data.source='corpus'` the users of every scenario speak the turns of a real corpus
(`data.corpus`, see `scenarios.real_speech.corpus_bank`), prepared once as its own TFDS
dataset under `real_corpus_dir`; the tokenizer then also learns the corpus's transcripts.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Iterator

import numpy as np
from absl import logging

from data_pipelines.timeline import Timeline

SPLITS = ("train", "eval")
SPLIT_IDS = {"train": 0, "eval": 1}
# Fields of `config.data` that only shape reading, never the generated Timelines. Every other
# data field (and any new one) is part of the corpus fingerprint: the world fits dialogues
# into num_blocks, so even the block count shapes them.
_READ_ONLY_DATA_FIELDS = ("corpus_dir", "tokenizer", "pipeline")
# Fields of `config.data.corpus` that say where the real corpus is built or what the tokenizer
# reads; the rest (kind, folder, parts, ...) shape the dialogues when data.source='corpus'.
_READ_ONLY_CORPUS_FIELDS = ("data_dir", "tokenizer_texts")
# Modules whose code decides what a generated dialogue holds.
_GENERATOR_MODULES = ("world.py", "scenarios", "voices.py", "timeline.py", "serialize.py")


class CorpusError(ValueError):
    """A dialogue that cannot be generated; names the split, index and scenario."""


@dataclasses.dataclass
class GenerationStats:
    """What a `generate_dialogues` run did (filled in as the stream is consumed)."""

    generated: int = 0
    skipped: int = 0
    seconds: float = 0.0
    audio_seconds: float = 0.0
    per_scenario: dict[str, int] = dataclasses.field(default_factory=dict)
    errors: list[str] = dataclasses.field(default_factory=list)  # the first few skip reasons

    @property
    def dialogues_per_second(self) -> float:
        return self.generated / max(self.seconds, 1e-9)


def split_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of dialogue `index` of `split`."""
    if split not in SPLIT_IDS:
        raise ValueError(f"unknown split {split!r}; known: {SPLITS}")
    return np.random.default_rng([seed, SPLIT_IDS[split], index])


def generate_dialogues(config, split: str, count: int, seed: int,
                       stats: GenerationStats | None = None, start: int = 0,
                       workdir: str | os.PathLike | None = None
                       ) -> Iterator[tuple[int, Timeline]]:
    """Yields (dialogue index, Timeline) for indices start..start+count-1 of `split`.

    Skipped dialogues (policy `skip`) leave a gap in the indices and are counted in `stats`.
    `workdir`: where a real corpus is built (see `real_corpus_dir`).
    """
    from data_pipelines import scenarios  # deferred: the world loads voices and texts

    stats = stats if stats is not None else GenerationStats()
    weights = {name: float(w) for name, w in config.data.scenarios.items()}
    policy = config.data.on_bad_sample
    context = scenarios.make_context(config, split, workdir=workdir)
    for index in range(start, start + count):
        began = time.perf_counter()
        rng = split_rng(seed, split, index)
        name = scenarios.sample_scenario(rng, weights)
        try:
            timeline = scenarios.generate(name, rng, context)
        except ValueError as e:
            message = f"{split} dialogue {index} (scenario {name}): {type(e).__name__}: {e}"
            if policy == "raise":
                raise CorpusError(message) from e
            stats.skipped += 1
            if len(stats.errors) < 20:
                stats.errors.append(message)
            logging.warning("skipping %s", message)
            continue
        finally:
            stats.seconds += time.perf_counter() - began
        stats.generated += 1
        stats.audio_seconds += timeline.duration_s
        stats.per_scenario[name] = stats.per_scenario.get(name, 0) + 1
        yield index, timeline


def build_tokenizer(config, path: str | os.PathLike,
                    workdir: str | os.PathLike | None = None):
    """Loads the tokenizer at `path`, or trains it when it is missing: on the world's text,
    plus with data.source='corpus' the real corpus's train transcripts (`real_corpus_texts`;
    FSDD's digit words are world words already). `workdir` says where the real corpus is
    built; None = the folder of `path` when that is the default WORKDIR/tokenizer.model."""
    from data_pipelines import tokenizer as tokenizer_lib

    path = Path(path)
    if path.is_file():
        tokenizer = tokenizer_lib.Tokenizer.load(path)
    else:
        from data_pipelines import world

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
    from data_pipelines.scenarios import real_speech

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


def tokenizer_path(config, workdir: str | os.PathLike) -> Path:
    return Path(config.data.tokenizer.path or Path(workdir) / "tokenizer.model")


def _plain(value):
    """ConfigDict / tuples -> JSON-stable plain values."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def generating_config(config) -> dict:
    """The config fields that shape the generated Timelines, as plain JSON values. The real
    corpus section counts only when data.source='corpus', with its folders made absolute
    (a relative path names a different corpus from elsewhere)."""
    data = {k: v for k, v in _plain(config.data).items() if k not in _READ_ONLY_DATA_FIELDS}
    real = data.pop("corpus", None)
    if config.data.source == "corpus":
        real = {k: v for k, v in real.items() if k not in _READ_ONLY_CORPUS_FIELDS}
        for folder in ("root", "audio_root"):
            real[folder] = os.path.abspath(real[folder]) if real.get(folder) else ""
        data["corpus"] = real
    return dict(seed=config.seed, audio=_plain(config.audio), data=data)


def _code_digest() -> str:
    """Digest of the generator code, so that a changed world never reuses a stale corpus."""
    root = Path(__file__).parent
    digest = hashlib.sha256()
    for name in _GENERATOR_MODULES:
        path = root / name
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            if file.is_file():
                digest.update(str(file.relative_to(root)).encode())
                digest.update(file.read_bytes())
    return digest.hexdigest()


def corpus_fingerprint(config) -> str:
    """12 hex digits naming the corpus a config generates (its fields and the world's code)."""
    text = json.dumps(dict(config=generating_config(config), code=_code_digest()),
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def corpus_dir(config, workdir: str | os.PathLike) -> Path:
    """The TFDS data_dir of the corpus: config.data.corpus_dir, else WORKDIR/corpus."""
    return Path(config.data.corpus_dir or Path(workdir) / "corpus")


def real_corpus_dir(config, workdir: str | os.PathLike | None = None) -> Path:
    """The TFDS data_dir where the real corpus of data.source='corpus' is built:
    data.corpus.data_dir, else the corpus dir (data.corpus_dir, else WORKDIR/corpus)."""
    if config.data.corpus.data_dir:
        return Path(config.data.corpus.data_dir)
    if workdir is None and not config.data.corpus_dir:
        raise ValueError("config.data.corpus.data_dir: data.source='corpus' builds the real "
                         "corpus under the run's corpus dir, and no workdir was given here; "
                         "set data.corpus.data_dir (or data.corpus_dir)")
    return corpus_dir(config, workdir)


def with_real_corpus_dir(config, workdir: str | os.PathLike):
    """`config` with data.corpus.data_dir set to `real_corpus_dir(config, workdir)`, for code
    that gets only the config (the TFDS builder generating the dialogues); the data dir is
    not in the fingerprint, so the corpus keeps its name. Other sources: `config` as is."""
    if config.data.source != "corpus" or config.data.corpus.data_dir:
        return config
    resolved = copy.deepcopy(config)
    resolved.data.corpus.data_dir = os.fspath(real_corpus_dir(config, workdir))
    return resolved


def prepared_builder(config, workdir: str | os.PathLike):
    """The TFDS builder of the corpus `config` generates, built first if missing (with
    data.source='corpus', the real corpus first of all, under `real_corpus_dir`).

    Only one process should build (multi-host: process 0 first, then a barrier).
    """
    from data_pipelines.sources import embedded  # deferred: tensorflow_datasets is slow

    builder = embedded.make_builder(with_real_corpus_dir(config, workdir),
                                    corpus_dir(config, workdir))
    if not builder.is_prepared():
        began = time.perf_counter()
        embedded.prepare(builder)
        logging.info("built corpus %s in %.1f s", builder.data_dir, time.perf_counter() - began)
    return builder


def ensure_corpus(config, workdir: str | os.PathLike) -> Path:
    """Builds the generated corpus's TFDS dataset unless it exists; returns its directory."""
    return Path(prepared_builder(config, workdir).data_dir)
