"""Generating the embedded world's dialogues, and the name of the corpus a config makes.

  generate_dialogues(config, split, count, seed)  deterministic (key, Timeline) stream
  generating_config(config)                       the config fields that shape the dialogues
  corpus_fingerprint(config)                      hash of everything that shapes the corpus

Dialogue i of a split is generated from `seeds.rng(seed, split, i)` (a stream no other use
shares: see `scenarios.seeds`), so any dialogue can be regenerated alone and the corpus does
not depend on how generation is parallelised. A generation error (a ValueError: an unsayable text, an impossible Timeline)
is handled per `config.data.on_bad_sample`: `raise` names the split, dialogue index and
scenario; `skip` drops the dialogue and counts it in `GenerationStats`.

With `data.source='corpus'` the users of every scenario speak the turns of a real corpus
(`data.corpus`, see `scenarios.real_speech.corpus_bank`). `corpus` writes the dialogues as
a TFDS dataset (`sources.embedded`) and trains the tokenizer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Iterator

import numpy as np
from absl import logging

from data_pipelines import scenarios
from data_pipelines.scenarios import seeds
from data_pipelines.scenarios.base import SPLITS
from data_pipelines.timeline import Timeline

# Fields of `config.data` that only shape reading, never the generated Timelines. Every other
# data field (and any new one) is part of the corpus fingerprint: the world fits dialogues
# into num_blocks, so even the block count shapes them.
_READ_ONLY_DATA_FIELDS = ("corpus_dir", "tokenizer", "pipeline")
# Fields of `config.data.corpus` that say where the real corpus is built or what the tokenizer
# reads; the rest (kind, folder, parts, ...) shape the dialogues when data.source='corpus'.
_READ_ONLY_CORPUS_FIELDS = ("data_dir", "tokenizer_texts")
# Modules whose code decides what a generated dialogue holds.
_GENERATOR_MODULES = ("generation.py", "world.py", "scenarios", "voices.py", "timeline.py",
                      "serialize.py")


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
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {SPLITS}")
    return seeds.rng(seed, split, index)


def generate_dialogues(config, split: str, count: int, seed: int,
                       stats: GenerationStats | None = None, start: int = 0,
                       workdir: str | os.PathLike | None = None
                       ) -> Iterator[tuple[int, Timeline]]:
    """Yields (dialogue index, Timeline) for indices start..start+count-1 of `split`.

    Skipped dialogues (policy `skip`) leave a gap in the indices and are counted in `stats`.
    `workdir`: where a real corpus is built (see `paths.real_corpus_dir`).
    """
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
