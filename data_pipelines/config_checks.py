"""Checking the config sections the data side reads: `audio` and `data`.

`validate_data(config)` raises ConfigError naming the first impossible field
(`config.data.pipeline.crop: 'middle' is not one of ['start', 'random']`). Data-only
commands (`python -m data_pipelines.inspect`) call it; `omni_jax.configuration.validate`
calls it and checks the model, loss and training sections with the same helpers (`fail`,
`check`, `get`, `choice`, `positive`, `value_range`, `probability`).

Every allowed value is read from the module that implements it, never restated here:
scenario names from the registry (`scenarios.SCENARIOS`), data sources and real corpus
kinds from `sources`, bad-sample policies from `sources.utterances`, crops from `render`,
tokenizer types from `tokenizer`, corpus reply values from `scenarios.real_speech`, the
reserved token ids and the timing rules from `contract`.
"""

from __future__ import annotations

import dataclasses

from data_pipelines import contract, render, scenarios, sources
from data_pipelines.scenarios.real_speech import CORPUS_REPLIES
from data_pipelines.sources.utterances import BAD_SAMPLE_POLICIES
from data_pipelines.tokenizer import TOKENIZER_TYPES

# A vocabulary holds the reserved ids and at least one piece per letter besides.
_ALPHABET = 26


class ConfigError(ValueError):
    """An impossible or unknown setting; the message names the field."""


def fail(field: str, msg: str):
    """Raises ConfigError `config.FIELD: MSG`."""
    raise ConfigError(f"config.{field}: {msg}")


def check(cond: bool, field: str, msg: str):
    if not cond:
        fail(field, msg)


def get(config, field: str):
    """The value at dotted `field` ('data.pipeline.crop'); ConfigError when missing."""
    node = config
    for part in field.split("."):
        if part not in node:
            fail(field, "missing")
        node = node[part]
    return node


def choice(config, field: str, choices):
    value = get(config, field)
    check(value in choices, field, f"{value!r} is not one of {list(choices)}")


def positive(config, *fields: str, allow_zero: bool = False):
    for field in fields:
        value = get(config, field)
        ok = value >= 0 if allow_zero else value > 0
        check(ok, field, f"must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def value_range(config, field: str, lo: float | None = None, hi: float | None = None):
    """A (low, high) pair with low <= high, inside [lo, hi] where those are given."""
    value = tuple(get(config, field))
    check(len(value) == 2 and value[0] <= value[1], field,
          f"must be a (low, high) pair with low <= high, got {value}")
    if lo is not None:
        check(value[0] >= lo, field, f"low end {value[0]} < {lo}")
    if hi is not None:
        check(value[1] <= hi, field, f"high end {value[1]} > {hi}")


def probability(config, *fields: str):
    for field in fields:
        value = get(config, field)
        check(0.0 <= value <= 1.0, field, f"must be a probability in [0, 1], got {value}")


def _validate_audio(config):
    positive(config, "audio.sample_rate", "audio.block_ms", "audio.win_ms", "audio.hop_ms",
             "audio.n_mels")
    a = config.audio
    try:
        contract.samples_per_block(a.sample_rate, a.block_ms)
    except contract.ContractError as e:
        fail("audio.block_ms", str(e))
    for field in ("win_ms", "hop_ms"):
        samples = a.sample_rate * a[field] / 1000.0
        check(samples == int(samples), f"audio.{field}",
              f"{a[field]} ms is not a whole number of samples at {a.sample_rate} Hz")
    check(a.block_ms % a.hop_ms == 0, "audio.block_ms",
          f"{a.block_ms} ms is not a multiple of the frame hop audio.hop_ms={a.hop_ms}")
    check(a.win_ms >= a.hop_ms, "audio.win_ms", f"window {a.win_ms} ms < hop {a.hop_ms} ms")


def _validate_fsdd(config):
    """data.real_dir and data.fsdd, read when data.source='fsdd' (see sources.fsdd)."""
    d = config.data
    check(bool(d.get("real_dir")), "data.real_dir",
          "data.source='fsdd' needs the FSDD folder (the one holding recordings/)")
    digits = get(config, "data.fsdd")
    check(1 <= digits.min_digits <= digits.max_digits, "data.fsdd.min_digits",
          f"need 1 <= min_digits <= max_digits, got {digits.min_digits}, "
          f"{digits.max_digits}")
    value_range(config, "data.fsdd.pause_s", lo=0.0)


def _validate_corpus(config):
    """data.corpus, read when data.source='corpus' (see data_pipelines.sources.real)."""
    choice(config, "data.corpus.kind", sources.REAL_CORPUS_KINDS)
    spec = config.data.corpus
    check(bool(get(config, "data.corpus.root")), "data.corpus.root",
          f"data.source='corpus' needs the {spec.kind} corpus folder")
    for field in ("train_parts", "eval_parts"):
        parts = get(config, f"data.corpus.{field}")
        check(isinstance(parts, (tuple, list)) and all(isinstance(p, str) and p
                                                       for p in parts),
              f"data.corpus.{field}", f"{parts!r} is not a tuple of part names")
    positive(config, "data.corpus.max_seconds", allow_zero=True)
    choice(config, "data.corpus.replies", CORPUS_REPLIES)
    positive(config, "data.corpus.tokenizer_texts", allow_zero=True)


def _validate_scenarios(config):
    weights = get(config, "data.scenarios")
    unknown = sorted(set(weights) - set(scenarios.SCENARIOS))
    check(not unknown, "data.scenarios",
          f"unknown scenarios {unknown}; known {list(scenarios.SCENARIOS)}")
    for name, weight in weights.items():
        check(weight >= 0, f"data.scenarios.{name}", f"weight must be >= 0, got {weight}")
    check(sum(weights.values()) > 0, "data.scenarios", "every weight is 0")


def _validate_timing(config):
    """data.timing: every field of contract.TimingRules, and the rules' own checks."""
    for field in dataclasses.fields(contract.TimingRules):
        if field.name != "block_ms":  # audio.block_ms
            get(config, f"data.timing.{field.name}")
    try:
        contract.TimingRules.from_config(config)
    except contract.ContractError as e:  # "timing.FIELD must ..."
        field, _, msg = str(e).partition(" ")
        if not field.startswith("timing."):
            field, msg = "timing", str(e)
        raise ConfigError(f"config.data.{field}: {msg}") from None


def validate_data(config):
    """Raises ConfigError naming the first impossible field of `audio` or `data`. Returns
    the config."""
    _validate_audio(config)
    d = config.data
    positive(config, "data.num_blocks", "data.tokens_per_block", "data.heard_tokens_per_block",
             "data.train_dialogues", "data.max_text_words")
    positive(config, "data.prompt_len", "data.eval_dialogues", allow_zero=True)
    choice(config, "data.on_bad_sample", BAD_SAMPLE_POLICIES)
    source = get(config, "data.source")
    check(sources.is_data_source(source), "data.source",
          f"{source!r} is not one of {list(sources.DATA_SOURCES)}")
    if source == "fsdd":
        _validate_fsdd(config)
    if source == "corpus":
        _validate_corpus(config)
    _validate_scenarios(config)
    positive(config, "data.voices.num_user", "data.voices.num_third",
             "data.voices.num_assistant")
    positive(config, "data.voices.num_eval_user", "data.voices.num_eval_third",
             allow_zero=d.eval_dialogues == 0)
    _validate_timing(config)
    probability(config, "data.augment.noise_prob", "data.augment.reverb_prob",
                "data.augment.echo_prob")
    value_range(config, "data.augment.snr_db")
    value_range(config, "data.augment.rt60_s", lo=0.0)
    value_range(config, "data.augment.echo_gain", lo=0.0)
    # The echo is mixed in on device from one block of history (omni_jax.audio.feedback).
    value_range(config, "data.augment.echo_delay_ms", lo=0.0, hi=float(config.audio.block_ms))
    value_range(config, "data.augment.gain_db")
    choice(config, "data.tokenizer.model_type", TOKENIZER_TYPES)
    vocab_size = get(config, "data.tokenizer.vocab_size")
    check(vocab_size > contract.FIRST_TEXT_ID + _ALPHABET, "data.tokenizer.vocab_size",
          f"{vocab_size} leaves no room beside {contract.FIRST_TEXT_ID} reserved tokens and "
          "the alphabet")
    positive(config, "data.pipeline.batch_size")
    positive(config, "data.pipeline.worker_count", "data.pipeline.prefetch_buffer",
             allow_zero=True)
    choice(config, "data.pipeline.crop", render.CROPS)
    num_epochs = get(config, "data.pipeline.num_epochs")
    check(num_epochs == -1 or num_epochs >= 1, "data.pipeline.num_epochs",
          f"must be -1 or >= 1, got {num_epochs}")
    return config
