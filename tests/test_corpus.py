"""Dialogue generation, the tokenizer, and the TFDS corpus of the embedded world."""

import numpy as np
import pytest

from configs import tiny
from data_pipelines import contract, corpus, generation, render, scenarios, tokenizer
from data_pipelines.sources import embedded, timelines
from data_pipelines.timeline import USER

TRAIN, EVAL = 16, 8


def small_config():
    config = tiny.get_config()
    config.data.train_dialogues = TRAIN
    config.data.eval_dialogues = EVAL
    config.data.pipeline.batch_size = 4  # read-only field: same corpus as test_pipeline
    return config


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The small corpus (shared with test_pipeline through the session's base temp dir)."""
    config = small_config()
    workdir = tmp_path_factory.getbasetemp() / "small_world"
    path = corpus.ensure_corpus(config, workdir)
    tok = corpus.build_tokenizer(config, corpus.tokenizer_path(config, workdir))
    return config, workdir, path, tok


def _content(timeline):
    """What the rng decides. (Audio lengths, and so times, vary by a few samples: espeak-ng
    output is not bit-reproducible between calls.)"""
    return (timeline.scenario, timeline.prompt,
            [(e.role, e.kind, e.speaker, e.text) for e in timeline.events],
            [(t.mode, t.text, t.speaker) for t in timeline.turns])


def test_generation_is_deterministic_per_dialogue():
    config = small_config()
    stream = list(generation.generate_dialogues(config, "train", 4, seed=0))
    assert [key for key, _ in stream] == [0, 1, 2, 3]
    (key, alone), = generation.generate_dialogues(config, "train", 1, seed=0, start=2)
    assert key == 2 and _content(alone) == _content(stream[2][1])
    other = [_content(t) for _, t in generation.generate_dialogues(config, "train", 4, seed=1)]
    assert other != [_content(t) for _, t in stream]
    held_out = [_content(t) for _, t in generation.generate_dialogues(config, "eval", 4, seed=0)]
    assert held_out != [_content(t) for _, t in stream]


@pytest.fixture
def qa_breaks(monkeypatch):
    def broken(rng, ctx):
        raise ValueError("no answer fits")

    monkeypatch.setitem(scenarios.SCENARIOS, "qa", broken)
    config = small_config()
    config.data.scenarios = dict(qa=1.0, asr=1.0)
    return config


def test_raise_policy_names_dialogue_and_scenario(qa_breaks):
    with pytest.raises(generation.CorpusError, match=r"train dialogue \d+ \(scenario qa\).*no "
                                                 "answer fits"):
        list(generation.generate_dialogues(qa_breaks, "train", 8, seed=0))


def test_skip_policy_drops_and_counts(qa_breaks):
    qa_breaks.data.on_bad_sample = "skip"
    stats = generation.GenerationStats()
    kept = list(generation.generate_dialogues(qa_breaks, "train", 8, seed=0, stats=stats))
    assert 0 < stats.skipped < 8
    assert stats.generated == len(kept) == 8 - stats.skipped
    assert set(stats.per_scenario) == {"asr"} and all(t.scenario == "asr" for _, t in kept)
    assert "scenario qa" in stats.errors[0]


def test_corpus_records_render_to_valid_block_sequences(built):
    config, workdir, path, tok = built
    dims = contract.Dims.from_config(config)
    timing = contract.TimingRules.from_config(config)
    assert path.name == "1.0.0" and path.parent.name == f"w{generation.corpus_fingerprint(config)}"
    for split, count in (("train", TRAIN), ("eval", EVAL)):
        source = timelines.open_source(config, workdir, split)
        assert len(source) == count
        assert [int(source.record(i)["key"]) for i in range(count)] == list(range(count))
        for i in range(count):
            timeline = source[i]
            record = render.render_fixed(
                timeline, dims=dims, timing=timing, thinking="explicit",
                tokenizer=tok, rng=np.random.default_rng(i))
            contract.validate(record, dims, vocab_size=tok.vocab_size, where=f"{split}[{i}]")


def test_eval_split_uses_held_out_user_voices(built):
    config, workdir, _, _ = built

    def user_speakers(split):
        source = timelines.open_source(config, workdir, split)
        return {e.speaker for i in range(len(source)) for e in source[i].events
                if e.role == USER}

    train, held_out = user_speakers("train"), user_speakers("eval")
    assert train and held_out and not train & held_out


def test_existing_corpus_is_reused(built, monkeypatch):
    config, workdir, path, _ = built

    def no_rebuild(builder):
        raise AssertionError(f"rebuilt {builder.data_dir}")

    monkeypatch.setattr(embedded, "prepare", no_rebuild)
    assert corpus.ensure_corpus(config, workdir) == path


def test_fingerprint_follows_generating_fields_only():
    base = generation.corpus_fingerprint(small_config())

    def changed(edit):
        config = small_config()
        edit(config)
        return generation.corpus_fingerprint(config)

    assert changed(lambda c: None) == base
    assert changed(lambda c: c.data.pipeline.update(batch_size=16)) == base
    assert changed(lambda c: c.data.tokenizer.update(vocab_size=512)) == base
    for edit in (lambda c: c.update(seed=1),
                 lambda c: c.data.update(train_dialogues=17),
                 lambda c: c.data.update(num_blocks=100),
                 lambda c: c.data.scenarios.update(qa=0.0),
                 lambda c: c.data.voices.update(num_user=11)):
        assert changed(edit) != base


def test_tokenizer_is_trained_once_then_loaded(tmp_path, monkeypatch):
    config = small_config()
    path = tmp_path / "tok.model"
    trained = corpus.build_tokenizer(config, path)
    assert path.is_file() and trained.vocab_size <= config.data.tokenizer.vocab_size

    def no_training(*args, **kwargs):
        raise AssertionError("retrained an existing tokenizer")

    monkeypatch.setattr(tokenizer, "train_tokenizer", no_training)
    loaded = corpus.build_tokenizer(config, path)
    assert loaded.encode("what is two plus two") == trained.encode("what is two plus two")
    config.data.tokenizer.vocab_size = trained.vocab_size - 1
    with pytest.raises(tokenizer.TokenizerError, match="stale"):
        corpus.build_tokenizer(config, path)


def test_a_prepared_dataset_opens_by_tfds_name(built):
    config, workdir, path, _ = built
    by_name = small_config()
    by_name.data.source = f"tfds:embedded_world/{path.parent.name}"
    named, embedded_source = (timelines.open_source(c, workdir, "eval") for c in (by_name, config))
    assert len(named) == EVAL
    assert named[3].events_json() == embedded_source[3].events_json()
    by_name.data.source = "webdataset:x"
    with pytest.raises(ValueError, match="config.data.source"):
        timelines.open_source(by_name, workdir, "eval")
