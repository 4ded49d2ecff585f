"""The embedded world: sayable, consistent, small, and deterministic."""

import re

import numpy as np
import pytest

from data_pipelines import voices, world

# A lowercase word, maybe hyphenated ("uh-huh"), maybe with punctuation attached at its end.
WORD = re.compile(r"^[a-z0-9']+(-[a-z0-9']+)*[,.?!]?$")
NUMBER = {word: value for value, word in enumerate(world.NUMBERS)}


def test_every_spoken_text_is_sayable_and_clean():
    texts = world.spoken_texts()
    assert len(texts) == len(set(texts)) > 500
    for text in texts:
        voices.check_sayable(text, max_words=24)
        assert text == " ".join(text.split()), f"irregular spacing in {text!r}"
        for word in text.split():
            assert WORD.match(word), f"{word!r} in {text!r}: lowercase, punctuation attached"


@pytest.fixture(scope="module")
def synth():
    return voices.Synthesizer()


def test_espeak_gives_one_word_event_per_word(synth):
    # espeak joins pairs such as "in the" into one word event (a rule of its English
    # dictionary, the same for every variant); the world must avoid them.
    voice = voices.voice_sets(2, 1, 1).assistant[0]
    for text in world.spoken_texts():
        assert len(synth.say(text, voice).words) == len(text.split())


def test_all_texts_holds_spoken_texts_and_prompts():
    texts = world.all_texts()
    assert set(world.spoken_texts()) <= set(texts)
    for prompt in (world.PROMPT_ASR, world.PROMPT_ENHANCE, world.PROMPT_TARGET,
                   world.PROMPT_DIALOGUE):
        assert prompt in texts
    reads = [t for t in texts if t.startswith(world.READ_ALOUD_PREFIX)]
    assert reads and all(len(t.split()) <= world.READ_ALOUD_MAX_WORDS + 2 for t in reads)


def test_vocabulary_is_small():
    words = {w.strip(",.?!") for text in world.all_texts() for w in text.split()}
    assert 150 < len(words) < 400


def test_arithmetic_is_right():
    qas = world.arithmetic_qas()
    assert {qa.attribute for qa in qas} == {"plus", "minus"}
    for qa in qas:
        _, _, a, op, b = qa.question.split()
        expected = NUMBER[a] + NUMBER[b] if op == "plus" else NUMBER[a] - NUMBER[b]
        assert qa.answer == world.NUMBERS[expected] and expected >= 0


def test_every_question_has_one_answer():
    # Pronoun follow-ups ("what does it eat") are answered from context, so they are left out.
    answers = {}
    for qa in world.arithmetic_qas() + world.fact_qas() + world.long_qas():
        assert answers.setdefault(qa.question, qa.answer) == qa.answer, qa.question


def test_facts_and_follow_ups_agree():
    by_name = {(qa.topic, qa.attribute): qa for qa in world.fact_qas()}
    by_pronoun = {(qa.topic, qa.attribute): qa for qa in world.fact_qas(pronoun=True)}
    assert by_name.keys() == by_pronoun.keys()
    for key, qa in by_name.items():
        assert qa.topic in qa.question and qa.answer.startswith(f"the {qa.topic} ")
        assert " it" in by_pronoun[key].question and qa.topic not in by_pronoun[key].question
        assert by_pronoun[key].answer == qa.answer
    zorb = next(c for c in world.CREATURES if c.name == "zorb")
    assert by_name["zorb", "color"].answer == f"the zorb is {zorb.color}"


def test_answer_lengths():
    assert all(1 <= qa.answer_words <= world.SHORT_MAX_WORDS for qa in world.short_qas())
    long = world.long_qas()
    assert all(world.LONG_MIN_WORDS <= qa.answer_words <= world.LONG_MAX_WORDS for qa in long)
    assert {qa.answer_words for qa in long} == set(range(6, 15))
    assert any(qa.topic in world.CREATURE_NAMES for qa in long)
    for qa in long:
        if qa.attribute == "count":
            first, last = qa.question.split()[2], qa.question.split()[4]
            assert qa.answer.split() == list(world.NUMBERS[NUMBER[first]:NUMBER[last] + 1])


def test_phrase_sets_have_the_papers_sizes_and_do_not_overlap():
    assert len(world.INTERRUPTIONS) == 10 and len(world.BACKCHANNELS) == 7
    stop, keep = set(world.INTERRUPTIONS), set(world.NON_STOP_WORDS) | set(world.BACKCHANNELS)
    assert not stop & keep
    questions = {qa.question for qa in world.fact_qas() + world.fact_qas(pronoun=True)}
    assert not questions & set(world.IRRELEVANT_QUESTIONS)
    for text in world.IRRELEVANT_QUESTIONS + world.CHATTER:
        assert not set(text.split()) & set(world.CREATURE_NAMES), text


def test_sampling_is_deterministic_and_typed():
    def draw(seed):
        rng = np.random.default_rng(seed)
        return [world.short_qa(rng), world.long_qa(rng, max_words=8),
                world.follow_up_qa(rng, "zorb", exclude="color"), world.interruption(rng),
                world.non_stop_word(rng), world.backchannel(rng), world.chatter(rng),
                world.irrelevant_question(rng), world.enrolment(rng),
                world.read_aloud_sentence(rng), world.utterance(rng, max_words=6)]

    first = draw(0)
    assert first == draw(0) and first != draw(1)
    assert all(type(x) in (str, world.QA) for x in first)


def test_samplers_respect_limits():
    rng = np.random.default_rng(0)
    for _ in range(200):
        assert world.long_qa(rng, max_words=8).answer_words <= 8
        assert len(world.utterance(rng, max_words=7).split()) <= 7
        assert len(world.read_aloud_sentence(rng, max_words=5).split()) <= 5
        follow = world.follow_up_qa(rng, "dax", exclude="food", max_words=8)
        assert follow.topic == "dax" and follow.attribute != "food"
        qa = world.short_qa(rng, max_words=9)
        assert len(qa.question.split()) + qa.answer_words <= 9
    # Under the shortest there is, the shortest is used rather than nothing.
    assert world.long_qa(rng, max_words=1, creatures_only=True).topic in world.CREATURE_NAMES
    with pytest.raises(ValueError, match="creatures"):
        world.follow_up_qa(rng, "counting")
