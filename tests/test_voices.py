"""voices.py: disjoint voice sets, word timings, errors for unsayable text, caching."""

import itertools

import numpy as np
import pytest

from data_pipelines import voices


SETS = ("user", "eval_user", "third", "eval_third", "assistant")
HELD_OUT = ("eval_user", "eval_third")


@pytest.fixture(scope="module")
def sets():
    return voices.voice_sets(num_user=12, num_eval_user=4, num_third=4, num_assistant=1,
                             num_eval_third=4)


@pytest.fixture(scope="module")
def synth():
    return voices.Synthesizer(sample_rate=16000, max_words=8)


@pytest.mark.parametrize("seed", range(4))
def test_sets_are_disjoint_by_family(seed):
    sets = voices.voice_sets(24, 6, 8, seed=seed, num_eval_third=4)
    groups = {name: getattr(sets, name) for name in SETS}
    assert {name: len(g) for name, g in groups.items()} == dict(
        user=24, eval_user=6, third=8, eval_third=4, assistant=1)
    families = {name: {voices.family(v.variant) for v in g} for name, g in groups.items()}
    for a, b in itertools.combinations(SETS, 2):
        if "assistant" in (a, b) and "user" in (a, b):
            # Training users may have the assistant's family (not its variant), far apart.
            assert not {v.variant for v in groups[a]} & {v.variant for v in groups[b]}
            continue
        assert not families[a] & families[b], (a, b)
    ids = [v.voice_id for g in groups.values() for v in g]
    assert len(ids) == len(set(ids))


def test_held_out_voices_have_their_own_prosody_far_from_the_assistant():
    for seed in range(4):
        sets = voices.voice_sets(24, 6, 8, seed=seed, num_eval_third=4)
        training = sets.user + sets.third
        held_out = sets.eval_user + sets.eval_third
        assert {v.pitch for v in training} <= set(voices.TRAIN_PITCHES)
        assert {v.rate for v in training} <= set(voices.TRAIN_RATES)
        assert {v.pitch for v in held_out} <= set(voices.EVAL_PITCHES)
        assert {v.rate for v in held_out} <= set(voices.EVAL_RATES)
        assert not {v.pitch for v in held_out} & {v.pitch for v in training}
        assert not {v.rate for v in held_out} & {v.rate for v in training}
        assert len({v.pitch for v in held_out}) > 2 and len({v.rate for v in held_out}) > 1
        (assistant,) = sets.assistant
        for v in training:
            assert voices.voice_distance(v, assistant) >= voices.MIN_ASSISTANT_DISTANCE, v
        for v in held_out:
            assert voices.voice_distance(v, assistant) >= voices.EVAL_MIN_ASSISTANT_DISTANCE, v
            assert voices.family(v.variant) != voices.family(assistant.variant)
            # ... and no held-out voice is a near twin of a training voice.
            assert min(voices.voice_distance(v, t) for t in training) >= 3.0


def test_families_name_known_variants_once():
    members = [v for family in voices._FAMILIES for v in family]
    assert len(members) == len(set(members)) and set(members) <= set(voices._VARIANTS)
    assert voices.family("f3") == voices.family("f2") != voices.family("m1") == "m1"


def test_voice_distance():
    a = voices.Voice("m1", 50, 165)
    assert voices.voice_distance(a, a) == 0.0
    assert voices.voice_distance(a, voices.Voice("m1", 70, 165)) == pytest.approx(1.0)
    assert voices.voice_distance(a, voices.Voice("m1", 50, 195)) == pytest.approx(1.0)
    assert voices.voice_distance(voices.Voice("f2", 50, 165),
                                 voices.Voice("f3", 50, 165)) == voices.VARIANT_DISTANCE
    assert voices.voice_distance(a, voices.Voice("zac", 50, 165)) == voices.FAMILY_DISTANCE
    assert voices.voice_distance(a, voices.Voice("zac", 30, 135)) == pytest.approx(
        voices.voice_distance(voices.Voice("zac", 30, 135), a))


def test_assistant_variant_is_never_a_user(sets):
    assistant = sets.assistant[0].variant
    for seed in range(5):
        other = voices.voice_sets(20, 6, 8, seed=seed)
        assert other.assistant[0].variant == assistant
        assert all(v.variant != assistant for v in other.user + other.eval_user + other.third
                   + other.eval_third)


def test_voice_sets_are_deterministic_and_bounded(sets):
    assert voices.voice_sets(12, 4, 4, num_eval_third=4) == sets
    assert voices.voice_sets(12, 4, 4, seed=1, num_eval_third=4) != sets
    with pytest.raises(voices.VoiceError, match="eval_user"):
        voices.voice_sets(num_user=1, num_eval_user=10_000, num_third=1)
    with pytest.raises(voices.VoiceError, match="eval_third"):
        voices.voice_sets(num_user=1, num_eval_user=1, num_third=1, num_eval_third=10_000)
    assert voices.voice_sets(2, 0, 1, num_eval_third=0).eval_user == ()
    assert voices.voice_sets(2, 1, 1, num_eval_third=0).eval_third == ()


@pytest.mark.parametrize("text", ["what is three plus four", "hello, my name is anna",
                                  "uh-huh", "stop"])
def test_word_timings_are_monotonic_and_inside_the_audio(synth, sets, text):
    utt = synth.say(text, sets.user[0])
    assert utt.audio.dtype == np.float32 and utt.audio.ndim == 1
    assert np.max(np.abs(utt.audio)) <= 1.0 and np.max(np.abs(utt.audio)) > 0.05
    assert utt.sample_rate == 16000 and utt.voice_id == sets.user[0].voice_id
    assert [w.word for w in utt.words] == text.split()
    for w in utt.words:
        assert 0.0 <= w.start_s < w.end_s <= utt.duration_s + 1e-9
    for a, b in zip(utt.words, utt.words[1:]):
        assert a.start_s < b.start_s and a.end_s <= b.start_s + 1e-9


def test_voices_sound_different(synth, sets):
    a = synth.say("what color is the zorb", sets.user[0]).audio
    b = synth.say("what color is the zorb", sets.assistant[0]).audio
    n = min(a.size, b.size)
    assert a.size != b.size or not np.allclose(a[:n], b[:n])


@pytest.mark.parametrize("text, match", [
    ("", "empty"), ("   ", "empty"),
    ("one two three four five six seven eight nine", "over the limit"),
    ("café", "cannot say"), ("number #1", "cannot say"), ("a: b", "cannot say"),
])
def test_unsayable_text_raises(synth, sets, text, match):
    with pytest.raises(voices.VoiceError, match=match):
        synth.say(text, sets.user[0])


def test_check_sayable_returns_words():
    assert voices.check_sayable("hi, i am ben", max_words=5) == ["hi,", "i", "am", "ben"]


def test_cache_returns_the_same_object(synth, sets):
    first = synth.say("hold on", sets.user[1])
    assert synth.say("hold on", sets.user[1]) is first
    assert synth.say("hold on", sets.user[2]) is not first


def test_joined_and_split_word_events_give_one_timing_per_word():
    # espeak reads "in the" / "out of the" as one word event and "uh-huh" as two.
    synth = voices.Synthesizer()
    voice = voices.voice_sets(2, 1, 1).user[0]
    for text in ("i do not know what is in the box", "uh-huh, out of the house"):
        utterance = synth.say(text, voice)
        assert [w.word for w in utterance.words] == text.split()
        starts = [w.start_s for w in utterance.words]
        assert starts == sorted(starts) and len(set(starts)) == len(starts)
        assert all(w.start_s < w.end_s <= utterance.duration_s + 1e-9 for w in utterance.words)


def test_small_voice_sets_vary_prosody_across_variants():
    sets = voices.voice_sets(6, 2, 2)
    assert len({v.variant for v in sets.user}) == 6
    assert len({(v.pitch, v.rate) for v in sets.user}) > 1
