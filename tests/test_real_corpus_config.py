"""A real corpus from the config: data.source='corpus' and data.corpus on the fixtures.

configs/librispeech_duplex.py pointed at the LibriSpeech fixture (one speaker, two
utterances; both splits read dev-clean) validates, gives a CorpusBank of exactly the
fixture's utterances built under the workdir, a tokenizer that spells its transcripts
without unknown pieces, and a generated corpus whose user turns are those recordings. A
bad data.corpus is a ConfigError naming the field.
"""

import numpy as np
import pytest
import soundfile as sf
from test_real_sources import CHAPTER, FIXTURES, LAYOUTS, LIBRISPEECH

from configs import librispeech_duplex
from data_pipelines import config_checks, contract, corpus, generation, sources, timeline
from data_pipelines import tokenizer as tok
from data_pipelines.scenarios import real_speech
from data_pipelines.sources import real, timelines

LIBRISPEECH_ROOT, _, LIBRISPEECH_PARTS = LAYOUTS["librispeech"]
TRAIN, EVAL = 6, 3


def corpus_config():
    """The LibriSpeech config on the fixture: a few dialogues, errors raised, not skipped."""
    config = librispeech_duplex.get_config()
    config.data.corpus.root = str(FIXTURES / LIBRISPEECH_ROOT)
    config.data.corpus.train_parts = LIBRISPEECH_PARTS  # the fixture holds only dev-clean
    config.data.corpus.eval_parts = LIBRISPEECH_PARTS
    config.data.train_dialogues, config.data.eval_dialogues = TRAIN, EVAL
    config.data.on_bad_sample = "raise"
    # The fixture holds two clips of one speaker: a target-speaker dialogue needs a second
    # sentence of the enrolled speaker that fits beside the enrolment, which it cannot
    # always give once the dialogue's start is drawn over a wide range.
    config.data.scenarios.target_speaker = 0.0
    return config


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(config, workdir, tokenizer): the tokenizer and generated corpus under a workdir,
    as the main job makes them."""
    config = corpus_config()
    workdir = tmp_path_factory.mktemp("librispeech_run")
    tokenizer = corpus.build_tokenizer(config, corpus.tokenizer_path(config, workdir))
    corpus.ensure_corpus(config, workdir)
    return config, workdir, tokenizer


def test_config_validates_and_needs_a_root():
    config_checks.validate_data(corpus_config())
    with pytest.raises(config_checks.ConfigError, match=r"config\.data\.corpus\.root"):
        config_checks.validate_data(librispeech_duplex.get_config())


@pytest.mark.parametrize("field,value", [("kind", "timit"), ("replies", "maybe"),
                                         ("max_seconds", -1.0), ("train_parts", ("",))])
def test_bad_corpus_field_is_named(field, value):
    config = corpus_config()
    config.data.corpus[field] = value
    with pytest.raises(config_checks.ConfigError, match=rf"config\.data\.corpus\.{field}"):
        config_checks.validate_data(config)


def test_kinds_match_the_builders_and_other_sources_ignore_the_section():
    assert list(sources.REAL_CORPUS_KINDS) == list(real.BUILDERS)
    assert set(sources.REPLY_KINDS) <= set(real.BUILDERS)
    config = corpus_config()
    config.data.source = "embedded"
    config.data.corpus.kind = "timit"  # unread: not validated
    config_checks.validate_data(config)
    config.data.source = "corpora"
    with pytest.raises(config_checks.ConfigError, match=r"config\.data\.source"):
        config_checks.validate_data(config)


def test_bank_holds_the_fixture_utterances_built_under_the_workdir(built, monkeypatch):
    config, workdir, _ = built
    monkeypatch.setattr(real, "prepare", lambda b: pytest.fail(f"rebuilt {b.data_dir}"))
    for split in ("train", "eval"):
        bank = real_speech.bank_from_config(config, split, workdir=workdir)
        assert isinstance(bank, real_speech.CorpusBank)
        assert bank.speakers() == ["251"] and bank.speakers(with_replies=True) == []
        utts = [bank.source[i] for i in range(len(bank.source))]
        assert {u.id: u.text for u in utts} == LIBRISPEECH
        for utt in utts:
            audio, _ = sf.read(CHAPTER / f"{utt.id}.flac", dtype="float32")
            np.testing.assert_allclose(utt.audio, audio, atol=1e-4)
    assert (workdir / "corpus" / "local_librispeech").is_dir()


def test_without_a_workdir_the_build_place_must_be_said(tmp_path):
    config = corpus_config()
    with pytest.raises(ValueError, match=r"config\.data\.corpus\.data_dir"):
        real_speech.bank_from_config(config, "eval")
    config.data.corpus.data_dir = str(tmp_path / "real")
    assert len(real_speech.bank_from_config(config, "eval").source) == len(LIBRISPEECH)
    config.data.corpus.root = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"config\.data\.corpus\.root.*nowhere"):
        real_speech.bank_from_config(config, "eval")


def test_manifest_replies_follow_the_config(tmp_path):
    config = corpus_config()
    config.data.corpus.update(kind="manifest", root=str(FIXTURES / LAYOUTS["manifest"][0]),
                              train_parts=LAYOUTS["manifest"][2],
                              eval_parts=LAYOUTS["manifest"][2])
    config_checks.validate_data(config)
    expected = {"auto": ["cards"], "yes": ["cards", "uberi"], "no": []}
    for replies, speakers in expected.items():
        config.data.corpus.replies = replies
        bank = real_speech.bank_from_config(config, "train", workdir=tmp_path)
        assert sorted(bank.speakers(with_replies=True)) == speakers, replies


def test_tokenizer_spells_the_corpus_transcripts(built):
    config, workdir, tokenizer = built
    assert sorted(corpus.real_corpus_texts(config, workdir)) == sorted(LIBRISPEECH.values())
    for text in LIBRISPEECH.values():
        ids = tokenizer.encode(tok.normalize(text))
        assert contract.UNK_ID not in ids, text
        assert tokenizer.decode(ids) == tok.normalize(text)


def test_generated_corpus_hears_the_corpus_recordings(built):
    config, workdir, _ = built
    clips = {u.text: u for u in (real_speech.bank_from_config(config, "eval", workdir)
                                 .source[i] for i in range(len(LIBRISPEECH)))}
    for split, count in (("train", TRAIN), ("eval", EVAL)):
        source = timelines.open_source(config, workdir, split)
        assert len(source) == count
        for i in range(count):
            tl = source[i]
            assert tl.meta["real_speech"] is True
            heard = [e for e in tl.events if e.role == timeline.USER and e.text in clips]
            assert heard or tl.scenario == "tts", (split, i, tl.scenario)
            for event in heard:
                clip = clips[event.text]
                assert event.speaker == clip.speaker == "251"
                if tl.scenario == "pause":  # the clip with a mid-turn silence inserted
                    pause_s = tl.meta["pause_end_s"] - tl.meta["pause_start_s"]
                    assert event.audio.size == pytest.approx(
                        clip.audio.size + pause_s * config.audio.sample_rate, abs=2)
                elif tl.meta.get("rt60_s") is None:  # enhancement may reverberate its input
                    np.testing.assert_allclose(event.audio, clip.audio, atol=1e-4)


def test_fingerprint_follows_the_real_corpus():
    base = generation.corpus_fingerprint(corpus_config())

    def changed(edit, config=None):
        config = corpus_config() if config is None else config
        edit(config.data.corpus)
        return generation.corpus_fingerprint(config)

    assert changed(lambda c: c.update(data_dir="/elsewhere", tokenizer_texts=7)) == base
    for edit in (lambda c: c.update(root="/another/LibriSpeech"),
                 lambda c: c.update(train_parts=("train-clean-100",)),
                 lambda c: c.update(max_seconds=5.0),
                 lambda c: c.update(kind="manifest")):
        assert changed(edit) != base
    embedded = corpus_config()
    embedded.data.source = "embedded"
    unread = generation.corpus_fingerprint(embedded)
    assert changed(lambda c: c.update(root="/another"), embedded) == unread


def test_eval_suites_context_uses_the_workdir(built):
    from omni_jax.evaluation import suites

    config, workdir, _ = built
    ctx = suites.split_context(config, "eval", workdir=workdir)
    assert isinstance(ctx.user_speech, real_speech.CorpusBank)
    assert ctx.user_speech.speakers() == ["251"]
