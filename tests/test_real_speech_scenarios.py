"""Every duplex scenario made from real utterances (the clips in tests/fixtures).

A small manifest corpus of three real speakers (LibriSpeech 251, LibriHeavy 3000, a
manifest clip) is the user bank: every scenario's user turns are those recordings, sample
for sample with their transcripts; scripted phrases (stop phrases, backchannels, follow-ups)
come in a stand-in espeak voice; the assistant speaks in its own voice, answering with the
corpus reply when there is one and a world reply otherwise; and every dialogue renders to a
record that keeps the timing rules. FSDD digit strings (the config path) cover every
scenario too.
"""

import dataclasses
import json

import numpy as np
import pytest
import soundfile as sf
from test_real_sources import CHAPTER, FIXTURES, LIBRISPEECH, _build

from configs import fsdd_asr, tiny
from data_pipelines import contract, render, scenarios, timeline, voices, world
from data_pipelines import tokenizer as tok
from data_pipelines.scenarios import real_speech, speakers

SEEDS = range(3)
SPLITS = ("train", "eval")
NUM_BLOCKS = 150  # 12 s: a real question and a long reply fit
HEAVY = ("He was not an ill disposed young man.", "He might even have been made amiable himself.")
# Phrases whose words a scenario needs: said by a stand-in espeak voice with a corpus.
SCRIPTED = set(world.INTERRUPTIONS + world.NON_STOP_WORDS + world.BACKCHANNELS
               + world.IRRELEVANT_QUESTIONS) | {
    qa.question for qa in world.fact_qas() + world.fact_qas(pronoun=True)}
RESPOKEN = ("enhancement", "target_speaker")  # the assistant re-speaks the user's clean audio


def _corpus_manifest(folder):
    heavy = next((FIXTURES / "libriheavy/librilight").rglob("*.flac"))
    entries = [{"path": str(CHAPTER / f"{utt_id}.flac"), "text": text, "speaker": "251"}
               for utt_id, text in LIBRISPEECH.items()]
    entries += [{"id": f"heavy_{i}", "path": str(heavy), "start": start, "duration": duration,
                 "text": HEAVY[i], "speaker": "3000"}
                for i, (start, duration) in enumerate(((0.0, 2.99), (2.99, 3.29)))]
    entries.append({"path": str(FIXTURES / "manifest/clips/one_two_three.mp3"),
                    "text": "one two three", "speaker": "uberi"})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The three-speaker corpus without replies: (bank, {transcript: CorpusUtterance})."""
    tmp = tmp_path_factory.mktemp("corpus")
    _, source = _build("manifest", _corpus_manifest(tmp / "root"), tmp / "tfds", "train",
                       ("train.jsonl",))
    clips = {source[i].text: source[i] for i in range(len(source))}
    return real_speech.CorpusBank(source), clips


@pytest.fixture(scope="module")
def reply_corpus(tmp_path_factory):
    """The fixture manifest: 'five five' (speaker cards) carries a reply, the other not."""
    tmp = tmp_path_factory.mktemp("replies")
    _, source = _build("manifest", FIXTURES / "manifest", tmp, "train", ("train.jsonl",))
    return real_speech.CorpusBank(source)


def _config(base=None):
    config = base or tiny.get_config()
    config.data.num_blocks = NUM_BLOCKS
    return config


@pytest.fixture(scope="module")
def synth():
    config = _config()
    return voices.Synthesizer(config.audio.sample_rate, max_words=config.data.max_text_words)


@pytest.fixture(scope="module")
def contexts(corpus, synth):
    bank, _ = corpus
    return {split: dataclasses.replace(scenarios.make_context(_config(), split, synth),
                                       user_speech=bank) for split in SPLITS}


@pytest.fixture(scope="module")
def generated(contexts):
    return {(name, split, seed): scenarios.generate(name, np.random.default_rng([seed, 11]),
                                                    contexts[split])
            for name in scenarios.SCENARIOS for split in SPLITS for seed in SEEDS}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    texts = world.all_texts() + list(LIBRISPEECH.values()) + list(HEAVY)
    texts += ["one two three", "five five", "that makes ten"]
    return tok.train_tokenizer(texts, 400, "unigram", tmp_path_factory.mktemp("tok") / "t.model")


def _render(tl, ctx, tokenizer):
    """The record of `tl`, checked against the contract and the timing rules."""
    dims = contract.Dims.from_config(_config())
    record = render.render_fixed(tl, dims=dims, timing=ctx.timing, thinking="explicit",
                                 tokenizer=tokenizer, rng=np.random.default_rng(1))
    contract.validate(record, dims, vocab_size=tokenizer.vocab_size, where=tl.scenario)
    rules = ctx.timing
    placed = [e for e in json.loads(record["events"])["events"]
              if e.get("role") == "assistant" and e.get("kind") == timeline.SPEAK]
    spoken = [t for t in tl.turns if t.mode == timeline.SPEAK]
    assert len(placed) == len(spoken)
    for turn, info in zip(spoken, placed):
        assert not info["cancelled"] and not info["truncated"], (tl.scenario, info)
        assert info["start_block"] == rules.heard(turn.start_s) + rules.response_delay_blocks
        if turn.stop_s is None:
            assert info["text_tokens_kept"] == info["text_tokens"]
            assert not info["cut"]
        else:  # the reply stops in time after the interruption is heard
            heard = rules.heard(turn.stop_s)
            assert info["cut"] and info["end_block"] == heard + rules.stop_delay_blocks
            assert info["end_block"] <= heard + rules.stop_window_blocks
            # Text tokens not yet emitted when it stops are not said (an early barge-in).
            emitted = (info["end_block"] - info["start_block"]) * _config().data.tokens_per_block
            assert info["text_tokens_kept"] == min(info["text_tokens"], emitted - 1)
    return record


def _is_clip(audio, clip):
    return audio.shape == clip.audio.shape and np.array_equal(audio, clip.audio)


def _without_pause(tl, event, clip):
    """A pause question's audio with its pause cut out (scenario pause puts silence in)."""
    if tl.scenario != "pause":
        return event.audio
    sr = tl.sample_rate
    cut = int(round((tl.meta["pause_start_s"] - event.start_s) * sr))
    gap = event.audio.size - clip.audio.size
    assert gap / sr == pytest.approx(tl.meta["pause_end_s"] - tl.meta["pause_start_s"], abs=1e-3)
    assert not event.audio[cut + 1:cut + gap - 1].any()
    return np.concatenate([event.audio[:cut], event.audio[cut + gap:]])


def test_user_turns_are_the_corpus_recordings(generated, contexts, corpus):
    bank, clips = corpus
    for (name, split, seed), tl in generated.items():
        ctx = contexts[split]
        stand_ins = {v.voice_id for v in ctx.user_voices}
        assert tl.meta["real_speech"] is True
        heard_real = 0
        for ev in tl.events:
            if ev.role == timeline.NOISE:
                continue
            if ev.text in clips:  # a free line: the speaker's own recording and transcript
                clip = clips[ev.text]
                assert ev.speaker == clip.speaker and ev.speaker in bank.speakers()
                reverberant = name == "enhancement" and tl.meta["rt60_s"] is not None
                assert reverberant or _is_clip(_without_pause(tl, ev, clip), clip), (name, ev.kind)
                assert [w.word for w in ev.words] == ev.text.split()
                heard_real += ev.role == timeline.USER
            elif ev.role == timeline.USER:  # a scripted phrase, in the stand-in voice
                assert ev.text in SCRIPTED and ev.speaker in stand_ins, (name, ev.text)
            else:  # a third speaker's scripted follow-up: an espeak third voice
                assert name == "barge_in_cd" and ev.text in SCRIPTED
                assert ev.speaker in {v.voice_id for v in ctx.third_voices}
        assert heard_real or name == "tts", (name, split, seed)


def test_third_speakers_are_other_corpus_speakers(generated, corpus):
    _, clips = corpus
    seen = set()
    for (name, _, _), tl in generated.items():
        users = {e.speaker for e in tl.events if e.role == timeline.USER and e.text in clips}
        for ev in tl.events:
            if ev.role == timeline.THIRD and ev.text in clips:
                assert ev.speaker not in users
                seen.add(name)
    assert seen == {"target_speaker", "third_speaker"}


def test_the_assistant_speaks_in_its_own_voice(generated, contexts, corpus, synth):
    _, clips = corpus
    known = set(world.all_texts())
    for (name, split, _), tl in generated.items():
        voice = contexts[split].assistant_voice
        for turn in (t for t in tl.turns if t.mode == timeline.SPEAK):
            if name in RESPOKEN:  # the clean source: the corpus recording itself
                assert _is_clip(turn.audio, clips[turn.text])
                assert turn.speaker == clips[turn.text].speaker
            else:  # no corpus replies here: a world reply stands in
                assert turn.speaker == voice.voice_id and turn.text in known
                np.testing.assert_array_equal(turn.audio, synth.say(turn.text, voice).audio)


def test_meta_names_the_corpus_question_and_the_answer(generated):
    stopped_kinds = set()
    for (name, _, _), tl in generated.items():
        if "question" not in tl.meta:
            continue
        question = next(e for e in tl.events if e.kind == "question")
        first = next(t for t in tl.turns if t.mode == timeline.SPEAK)
        assert (tl.meta["question"], tl.meta["answer"]) == (question.text, first.text)
        if name not in ("qa", "pause"):
            stopped = any(t.stop_s is not None for t in tl.turns)
            assert tl.meta["should_stop"] == stopped, name
            assert "interruption_kind" in tl.meta
            if stopped:
                stopped_kinds.add(tl.meta.get("interruption_kind"))
    assert {"trigger", "relevant"} <= stopped_kinds  # the stop timing is checked on these
    for seed in SEEDS:
        tl = generated["asr", "train", seed]
        assert tl.meta["transcripts"] == [t.text for t in tl.turns] == [e.text for e in tl.events]
        tl = generated["target_speaker", "train", seed]
        enrol, target = tl.events[:2]
        assert enrol.speaker == target.speaker and enrol.text != target.text
        assert tl.meta["text"] == target.text == tl.turns[0].text


def test_a_third_speaker_follow_up_is_an_espeak_third_voice(contexts, corpus):
    """barge_in_cd's third speaker says a scripted follow-up: a third voice, not the user."""
    _, clips = corpus
    ctx = contexts["train"]
    for seed in range(40):
        tl = scenarios.generate("barge_in_cd", np.random.default_rng(seed), ctx)
        if tl.meta["interruption_kind"] == "third_speaker":
            break
    question, follow_up = tl.events
    assert question.text in clips and follow_up.role == timeline.THIRD
    assert follow_up.text == tl.meta["interruption"] and not tl.meta["should_stop"]
    assert follow_up.speaker in {v.voice_id for v in ctx.third_voices}


def test_timing_contract_holds(generated, contexts, tokenizer):
    for (name, split, _), tl in generated.items():
        record = _render(tl, contexts[split], tokenizer)
        assert record["speaking"].any() == (name != "asr")


def test_recordings_are_the_files_samples(corpus):
    """The bank's audio is the fixture files' (16 kHz PCM: int16 storage rounding only)."""
    _, clips = corpus
    for utt_id, text in LIBRISPEECH.items():
        audio, rate = sf.read(CHAPTER / f"{utt_id}.flac", dtype="float32")
        assert rate == 16000
        np.testing.assert_allclose(clips[text].audio, audio, atol=1e-4)


def test_corpus_replies_are_said_where_they_fit(reply_corpus, synth, tokenizer):
    ctx = dataclasses.replace(scenarios.make_context(_config(), "train", synth),
                              user_speech=reply_corpus)
    assert reply_corpus.speakers(with_replies=True) == ["cards"]
    for seed in SEEDS:
        tl = scenarios.generate("qa", np.random.default_rng(seed), ctx)
        (question,), (turn,) = tl.events, tl.turns
        assert (question.text, question.speaker) == ("five five", "cards")
        assert turn.text == tl.meta["answer"] == "that makes ten"
        assert tl.meta["topic"] == speakers.CORPUS_TOPIC
        _render(tl, ctx, tokenizer)
        # Three words is too short a reply to barge in on: the world's long reply stands.
        tl = scenarios.generate("barge_in_ci", np.random.default_rng(seed), ctx)
        assert tl.events[0].text == "five five" and tl.meta["topic"] != speakers.CORPUS_TOPIC
        assert tl.turns[0].text in world.all_texts()
        # Every question of a multi-turn dialogue is the corpus's, with its reply.
        tl = scenarios.generate("multi_turn", np.random.default_rng(seed), ctx)
        assert [e.text for e in tl.events] == ["five five"] * len(tl.turns)
        assert {t.text for t in tl.turns} == {"that makes ten"}


def test_fsdd_users_in_every_scenario(tokenizer):
    """The config path: data.source='fsdd' puts FSDD speakers in every scenario."""
    config = _config(fsdd_asr.get_config())
    config.data.real_dir = str(FIXTURES / "fsdd")
    ctx = scenarios.make_context(config, "eval")
    assert ctx.user_speech.speakers() == ["theo"]
    digits = set(world.NUMBERS[:10])
    for name in scenarios.SCENARIOS:
        tl = scenarios.generate(name, np.random.default_rng(5), ctx)
        held_out = [e for e in tl.events if e.speaker == "theo"]
        assert held_out or name == "tts", name
        assert all(set(e.text.split()) <= digits for e in held_out)
        _render(tl, ctx, tokenizer)


def test_generation_is_deterministic(contexts, generated):
    for name in ("barge_in_cd", "multi_turn", "target_speaker"):
        again = scenarios.generate(name, np.random.default_rng([1, 11]), contexts["train"])
        first = generated[name, "train", 1]
        assert again.events_json() == first.events_json()
        for a, b in zip(again.events, first.events):
            np.testing.assert_array_equal(a.audio, b.audio)


def test_a_large_corpus_must_say_whether_it_has_replies(corpus):
    bank, _ = corpus

    class Large:  # only its length is looked at before the error
        name = "large"
        speakers = bank.source.speakers

        def __len__(self):
            return real_speech.CorpusBank.SCAN_LIMIT + 1

    with pytest.raises(ValueError, match="replies=True or False"):
        real_speech.CorpusBank(Large())
    assert real_speech.CorpusBank(Large(), replies=False).speakers(with_replies=True) == []
