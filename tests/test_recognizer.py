"""recognizer.py: pocketsphinx, offline, as the independent recognizer of scored speech.

Thresholds are measured (see each test) with margin: espeak-ng's f2 voice adds random
breath noise, so the same text never gives quite the same audio twice.
"""

from pathlib import Path

import numpy as np
import pytest

from data_pipelines import audio_io, voices, world
from omni_jax.evaluation import metrics, recognizer

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "recognizer"
# LibriVox, Sense and Sensibility ch. 1 line 0930 (tests/fixtures/LICENSE.md), 3.3 s.
CLIP = FIXTURES / "sense_and_sensibility_01_austen_64kb-0930.wav"
CLIP_TEXT = "he might even have been made amiable himself"


@pytest.fixture(scope="module")
def default():
    return recognizer.make_recognizer("pocketsphinx")


@pytest.fixture(scope="module")
def world_lm():
    return recognizer.make_recognizer("pocketsphinx_world")


@pytest.fixture(scope="module")
def world_words():
    return recognizer.make_recognizer("pocketsphinx", words=recognizer.world_words())


@pytest.fixture(scope="module")
def clip():
    return audio_io.load_audio(CLIP, recognizer.SAMPLE_RATE)


@pytest.fixture(scope="module")
def clip_transcript(default, clip):
    return default.transcribe(clip, recognizer.SAMPLE_RATE)


@pytest.fixture(scope="module")
def say():
    synth = voices.Synthesizer(recognizer.SAMPLE_RATE)
    voice = recognizer.assistant_voice()
    return lambda text: synth.say(text, voice).audio


def test_real_read_speech(clip_transcript):
    # Measured: "he might even have been made the amiable himself" (WER 0.125, 1 insertion).
    assert clip_transcript == " ".join(clip_transcript.split()).lower()
    assert metrics.wer([CLIP_TEXT], [clip_transcript]) <= 0.375  # <= 3 errors of 8 words


def test_restricted_vocabulary_on_the_assistant_voice(world_words, say):
    # Measured over 10 syntheses: WER 0.25 each time ("tove eats bread").
    text = "the tove eats bread"
    hypothesis = world_words.transcribe(say(text), recognizer.SAMPLE_RATE)
    assert set(hypothesis.split()) <= set(world_words.vocabulary)
    assert metrics.wer([text], [hypothesis]) <= 0.5


def test_world_lm_on_the_assistant_voice(world_lm, say):
    # Measured over 10 syntheses: WER 0 each time.
    text = "the dax likes to climb and it eats berries every day"
    hypothesis = world_lm.transcribe(say(text), recognizer.SAMPLE_RATE)
    assert metrics.wer([text], [hypothesis]) <= 0.2


def test_world_lm_keeps_a_wrong_reply_wrong(world_lm, say):
    # The dax is orange; a reply saying yellow must not be heard as the world's answer
    # (measured: "the dax is yellow" in 10 of 10 syntheses).
    assert next(c for c in world.CREATURES if c.name == "dax").color == "orange"
    words = world_lm.transcribe(say("the dax is yellow"), recognizer.SAMPLE_RATE).split()
    assert "yellow" in words and "orange" not in words


def test_silence_and_empty_give_nothing(default):
    assert default.transcribe(np.zeros(16000, np.float32), 16000) == ""
    assert default.transcribe(np.full(8000, 1e-5, np.float32), 16000) == ""
    assert default.transcribe(np.zeros(0, np.float32), 16000) == ""


@pytest.mark.parametrize("kind", ["default", "world_lm"])
def test_white_noise_gives_few_words(kind, request):
    # Measured: "" for both at amplitudes 0.01, 0.1 and 0.3.
    rec = request.getfixturevalue(kind)
    noise = 0.1 * np.random.default_rng(0).standard_normal(32000).astype(np.float32)
    assert len(rec.transcribe(noise, 16000).split()) <= 2


def test_bad_audio_is_an_error_naming_the_problem(world_words):
    audio = np.zeros(16000, np.float32)
    audio[100] = np.nan
    with pytest.raises(ValueError, match="NaN/Inf"):
        world_words.transcribe(audio, 16000)
    with pytest.raises(ValueError, match=r"1-D .*\(2, 16000\)"):
        world_words.transcribe(np.zeros((2, 16000), np.float32), 16000)
    with pytest.raises(ValueError, match="float samples"):
        world_words.transcribe(np.zeros(16000, np.int16), 16000)
    with pytest.raises(ValueError, match="sample_rate"):
        world_words.transcribe(np.zeros(16000, np.float32), 0)


def test_8khz_input_is_resampled(default, clip, clip_transcript):
    # Measured: "he might even have been made in the rubble himself", 2 edits from the
    # 16 kHz transcript (what is above 4 kHz is lost); a 16 kHz model fed 8 kHz samples
    # as if they were 16 kHz would return nothing like it.
    low = audio_io.resample(clip, 16000, 8000)
    hypothesis = default.transcribe(low, 8000)
    assert metrics.wer([clip_transcript], [hypothesis]) <= 0.5
    assert metrics.wer([CLIP_TEXT], [hypothesis]) <= 0.6


def test_transcripts_do_not_depend_on_earlier_calls(world_words, say):
    a, b = say("the florp is tiny"), say("count from two to nine")
    first = world_words.transcribe(a, 16000)
    world_words.transcribe_many([b, np.zeros(8000, np.float32), b], 16000)
    assert world_words.transcribe(a, 16000) == first


def test_unknown_words_are_reported():
    with pytest.raises(recognizer.UnknownWordsError, match="qwzx, zorbix") as info:
        recognizer.PocketsphinxRecognizer(["hello", "zorbix", "qwzx", "world"])
    assert info.value.words == ("qwzx", "zorbix")
    # A pronunciation makes a word known.
    rec = recognizer.PocketsphinxRecognizer(["hello", "zorbix"],
                                            pronunciations={"zorbix": "Z AO R B IH K S"})
    assert rec.vocabulary == ("hello", "zorbix")


def test_the_world_vocabulary_is_fully_pronounceable():
    # Every word any voice of the world says has a pronunciation (the wheel's dictionary or
    # WORLD_PRONUNCIATIONS): adding a creature without one fails here.
    words = recognizer.world_words()
    assert "zorb" in words and "uhhuh" in words
    recognizer.PocketsphinxRecognizer(words)  # no UnknownWordsError


def test_registry():
    assert {"pocketsphinx", "pocketsphinx_world"} <= set(recognizer.RECOGNIZERS)
    with pytest.raises(ValueError, match="unknown kind 'whisper'"):
        recognizer.make_recognizer("whisper")
    with pytest.raises(ValueError, match="list of strings"):
        recognizer.make_recognizer("pocketsphinx", words="hello")
