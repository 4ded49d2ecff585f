"""The data side's config checks: the shipped configs pass, a bad value of each owner's table
is a ConfigError naming the field, and the tables are the owners' own."""

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from data_pipelines import config_checks, contract, render, scenarios, sources
from data_pipelines import tokenizer as tok
from data_pipelines.config_checks import ConfigError
from data_pipelines.scenarios import real_speech
from data_pipelines.sources import real, utterances

REPO = Path(__file__).resolve().parents[1]


def config_of(name="tiny", *args):
    return importlib.import_module(f"configs.{name}").get_config(*args)


def corpus_config():
    config = config_of("librispeech_duplex")
    config.data.corpus.root = "/data/LibriSpeech"  # only checked for being set
    return config


def rejected(config, field):
    with pytest.raises(ConfigError, match=rf"^config\.{re.escape(field)}: "):
        config_checks.validate_data(config)


def test_shipped_configs_validate():
    config = config_of("tiny")
    assert config_checks.validate_data(config) is config
    config_checks.validate_data(config_of("default"))
    config_checks.validate_data(corpus_config())
    fsdd = config_of("fsdd_asr")
    fsdd.data.real_dir = "/data/fsdd"
    config_checks.validate_data(fsdd)


@pytest.mark.parametrize("field,value", [
    ("data.pipeline.crop", "middle"),  # render.CROPS
    ("data.on_bad_sample", "ignore"),  # sources.utterances.BAD_SAMPLE_POLICIES
    ("data.tokenizer.model_type", "char"),  # tokenizer.TOKENIZER_TYPES
    ("data.source", "corpora"),  # sources.DATA_SOURCES
    ("data.source", "tfds:"),
    ("data.tokenizer.vocab_size", contract.FIRST_TEXT_ID + 26),  # reserved ids + alphabet
    ("data.num_blocks", 0),
    ("data.augment.noise_prob", 1.5),
    ("data.augment.rt60_s", (0.6, 0.2)),
    ("data.pipeline.num_epochs", 0),
    ("audio.block_ms", 85),  # not a whole number of samples
])
def test_a_bad_data_value_names_its_field(field, value):
    config = config_of("tiny")
    section, _, name = field.rpartition(".")
    config_checks.get(config, section)[name] = value
    rejected(config, field)


def test_scenario_names_come_from_the_registry():
    config = config_of("tiny")
    assert set(config.data.scenarios) <= set(scenarios.SCENARIOS)
    config.data.scenarios["karaoke"] = 1.0
    rejected(config, "data.scenarios")
    config = config_of("tiny")
    config.data.scenarios["qa"] = -1.0
    rejected(config, "data.scenarios.qa")
    config = config_of("tiny")
    for name in config.data.scenarios:
        config.data.scenarios[name] = 0.0
    rejected(config, "data.scenarios")


def test_timing_rules_name_the_timing_field():
    config = config_of("tiny")
    config.data.timing.stop_delay_blocks = config.data.timing.stop_window_blocks + 1
    rejected(config, "data.timing.stop_delay_blocks")
    config = config_of("tiny")
    del config.data.timing["asr_lag_blocks"]
    with pytest.raises(ConfigError, match=r"config\.data\.timing\.asr_lag_blocks: missing"):
        config_checks.validate_data(config)


@pytest.mark.parametrize("field,value", [("kind", "timit"), ("replies", "maybe"),
                                         ("root", ""), ("train_parts", ("",))])
def test_a_bad_corpus_value_names_its_field(field, value):
    config = corpus_config()
    config.data.corpus[field] = value
    rejected(config, f"data.corpus.{field}")
    config.data.source = "embedded"  # the section is read only for data.source='corpus'
    config_checks.validate_data(config)


def test_fsdd_needs_its_folder():
    config = config_of("fsdd_asr")
    rejected(config, "data.real_dir")
    config.data.real_dir = "/data/fsdd"
    config.data.fsdd.min_digits = 0
    rejected(config, "data.fsdd.min_digits")


def test_every_value_of_an_owners_table_is_accepted():
    for field, values in (("data.pipeline.crop", render.CROPS),
                          ("data.on_bad_sample", utterances.BAD_SAMPLE_POLICIES),
                          ("data.tokenizer.model_type", tok.TOKENIZER_TYPES),
                          ("data.source", sources.GENERATED_SOURCES[:1] + ("tfds:mine",))):
        for value in values:
            config = config_of("tiny")
            section, _, name = field.rpartition(".")
            config_checks.get(config, section)[name] = value
            config_checks.validate_data(config)
    for kind in sources.REAL_CORPUS_KINDS:
        for replies in real_speech.CORPUS_REPLIES:
            config = corpus_config()
            config.data.corpus.update(kind=kind, replies=replies)
            config_checks.validate_data(config)


def test_the_light_tables_agree_with_what_they_name():
    assert list(sources.REAL_CORPUS_KINDS) == list(real.BUILDERS)
    assert set(sources.REPLY_KINDS) <= set(sources.REAL_CORPUS_KINDS)
    assert all(sources.is_data_source(s) for s in sources.GENERATED_SOURCES)
    assert not sources.is_data_source("tfds:") and sources.is_data_source("tfds:x")


def test_helpers_name_the_field():
    config = config_of("tiny")
    with pytest.raises(ConfigError, match=r"config\.data\.nope\.x: missing"):
        config_checks.get(config, "data.nope.x")
    with pytest.raises(ConfigError, match=r"config\.data\.num_blocks: must be > 0"):
        config_checks.positive({"data": {"num_blocks": 0}}, "data.num_blocks")
    config_checks.positive({"a": 0}, "a", allow_zero=True)
    with pytest.raises(ConfigError, match=r"config\.a: low end -1 < 0"):
        config_checks.value_range({"a": (-1, 2)}, "a", lo=0)
    with pytest.raises(ConfigError, match=r"config\.a: high end 2 > 1"):
        config_checks.value_range({"a": (0, 2)}, "a", hi=1)
    with pytest.raises(ConfigError, match=r"config\.p: must be a probability"):
        config_checks.probability({"p": -0.1}, "p")
    with pytest.raises(ConfigError, match=r"config\.c: 'x' is not one of \['a'\]"):
        config_checks.choice({"c": "x"}, "c", ("a",))
    config_checks.check(True, "c", "never")
    with pytest.raises(ConfigError, match=r"^config\.c: boom$"):
        config_checks.fail("c", "boom")
    assert issubclass(ConfigError, ValueError)


def test_the_data_side_imports_without_omni_jax():
    code = ("import sys; import data_pipelines.inspect, data_pipelines.pipeline; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('omni_jax', 'configs'));"
            " assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
