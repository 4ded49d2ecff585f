"""Tests of the renderer Timeline -> BlockSequence, on hand-built timelines of sine tones.

The reference dialogue: a user question from 0.2 s to 1.2 s, then a 1.5 s reply. With
80 ms blocks and the default timing rules, the start transition is at block
heard(1.2) + 2 = 17, speech starts with the 4th text token, and the reply ends one block
after its 19 blocks of speech.
"""

import json

import numpy as np
import pytest

from data_pipelines import augment as augment_lib
from data_pipelines import contract
from data_pipelines import render
from data_pipelines import timeline as tl
from data_pipelines import tokenizer as tok

SR, S, P = 16000, 1280, 24
TIMING = contract.TimingRules()
REPLY = "the zorb is blue and green"
K_REAL = 63  # ceil(5.0 s / 80 ms)
THINK_ID, SHIFT_ID = contract.THINK_ID, contract.SHIFT_ID
START_ID, END_ID = contract.START_SPEAK_ID, contract.END_SPEAK_ID
Kind = contract.LabelKind


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    texts = [REPLY, "what is the zorb", "stop", "uh-huh", "i don't know", "please answer briefly",
             "what is three plus four", "seven"]
    return tok.train_tokenizer(texts * 3, 256, "unigram",
                               tmp_path_factory.mktemp("tok") / "t.model")


def tone(seconds, freq=300.0, amp=0.5):
    t = np.arange(int(round(seconds * SR))) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def qa_timeline(*, stop_s=None, duration_s=5.0, echo_gain=0.0, echo_delay_s=0.0, prompt="",
                question_gain=1.0, meta=None, extra_turns=()):
    question = tl.AudioEvent(tl.USER, "question", 0.2, tone(1.0, 200.0), speaker="u1",
                             text="what is the zorb", gain=question_gain)
    reply = tl.AssistantTurn(tl.SPEAK, REPLY, 1.2, audio=tone(1.5, 440.0), stop_s=stop_s)
    return tl.Timeline("qa_test", SR, duration_s, (question,), (reply, *extra_turns),
                       prompt=prompt, echo_gain=echo_gain, echo_delay_s=echo_delay_s,
                       meta=meta or {})


def run(timeline, tokenizer, thinking="explicit", n=1, augment=None, seed=0):
    return render.render(timeline, dims=contract.Dims(100, S, n, P), timing=TIMING,
                         thinking=thinking, tokenizer=tokenizer,
                         rng=np.random.default_rng(seed), augment=augment)


def check(record, tokenizer, n=1):
    k = record["block_mask"].shape[0]
    contract.validate(record, contract.Dims(k, S, n, P), vocab_size=tokenizer.vocab_size)


def events_mix(timeline, num_samples):
    mix = np.zeros(num_samples, np.float32)
    for e in timeline.events:
        start = int(round(e.start_s * SR))
        mix[start:start + e.audio.size] += e.gain * e.audio
    return mix


def reply_ids(tokenizer):
    return [i for w in tokenizer.encode_words(REPLY) for i in w]


def speech_blocks(record):
    return np.flatnonzero(np.abs(record["speech_target"]).max(axis=1) > 0)


@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("thinking", contract.THINKING_VARIANTS)
def test_every_variant_validates(tokenizer, thinking, n):
    for timeline in (qa_timeline(), qa_timeline(stop_s=2.5), qa_timeline(duration_s=3.0)):
        record = run(timeline, tokenizer, thinking, n)
        assert record["env_audio"].shape == (render.natural_num_blocks(timeline, TIMING), S)
        check(record, tokenizer, n)
        assert record["scenario"] == "qa_test"


@pytest.mark.parametrize("n, d, s0, e", [(1, 17, 21, 40), (2, 17, 19, 38)])
def test_explicit_labels_speech_and_state_at_rule_blocks(tokenizer, n, d, s0, e):
    record = run(qa_timeline(), tokenizer, "explicit", n)
    ids = reply_ids(tokenizer)
    assert 4 <= len(ids) < 2 * (e - d) - 1
    kinds, labels = record["label_kind"].ravel(), record["labels"].ravel()
    assert kinds[d * n] == Kind.SHIFT and labels[d * n] == SHIFT_ID
    text = slice(d * n + 1, d * n + 1 + len(ids))
    assert (kinds[text] == Kind.TEXT).all() and labels[text].tolist() == ids
    assert kinds[e * n] == Kind.SHIFT and labels[e * n] == SHIFT_ID
    idle = np.ones(kinds.size, bool)
    idle[[d * n, e * n]] = False
    idle[text] = False
    assert (kinds[idle] == Kind.THINK).all() and (labels[idle] == THINK_ID).all()
    np.testing.assert_array_equal(np.flatnonzero(record["speaking"]), np.arange(d, e))
    np.testing.assert_array_equal(record["speech_mask"], record["speaking"])
    # Speech: 1.5 s = 19 blocks from s0, the turn's audio unchanged; the end follows it.
    np.testing.assert_array_equal(speech_blocks(record), np.arange(s0, s0 + 19))
    assert record["speaking"][speech_blocks(record)].all()
    assert e == s0 + 19
    np.testing.assert_array_equal(record["speech_target"].ravel()[s0 * S:s0 * S + 24000],
                                  tone(1.5, 440.0))
    turn = json.loads(record["events"])["events"][1]
    assert (turn["start_block"], turn["speech_start_block"], turn["end_block"]) == (d, s0, e)
    assert not turn["cut"] and not turn["cancelled"]


@pytest.mark.parametrize("gain, delay_s", [(0.5, 0.03), (0.1, 0.0), (0.0, 0.02)])
def test_echo_travels_as_gain_and_delay_not_mixed_in(tokenizer, gain, delay_s):
    """The microphone holds the environment only; the model's own echo is mixed in on
    device from what it plays (omni_jax.audio.feedback, tests/test_feedback.py)."""
    timeline = qa_timeline(echo_gain=gain, echo_delay_s=delay_s)
    record = run(timeline, tokenizer)
    np.testing.assert_allclose(record["env_audio"].ravel(), events_mix(timeline, K_REAL * S),
                               atol=1e-6)
    assert record["echo_gain"] == np.float32(gain) and record["echo_gain"].shape == ()
    assert record["echo_delay"] == int(round(delay_s * SR))
    assert json.loads(record["events"])["render"]["echo_gain"] == gain


@pytest.mark.parametrize("thinking", contract.THINKING_VARIANTS)
def test_barge_in_stops_within_the_window(tokenizer, thinking):
    stop_s = 2.5
    record = run(qa_timeline(stop_s=stop_s), tokenizer, thinking)
    heard = TIMING.heard(stop_s)
    assert heard == 31
    speaking = record["speaking"]
    stop_block = int(np.flatnonzero(speaking)[-1]) + 1
    assert heard <= stop_block <= heard + TIMING.stop_window_blocks
    assert stop_block == heard + TIMING.stop_delay_blocks
    assert speech_blocks(record)[-1] == stop_block - 1
    assert not record["speech_target"][stop_block:].any()
    end_kind = {"explicit": Kind.SHIFT, "negative_ce": Kind.END, "implicit": Kind.THINK}
    assert record["label_kind"][stop_block, 0] == end_kind[thinking]
    turn = json.loads(record["events"])["events"][1]
    assert turn["cut"] and turn["end_block"] == stop_block == turn["stop_block"]


def test_stop_before_start_cancels_the_turn(tokenizer):
    record = run(qa_timeline(stop_s=1.25), tokenizer)  # stop at block 16, start at 17
    assert not record["speaking"].any() and not record["speech_target"].any()
    assert (record["label_kind"] == Kind.THINK).all()
    assert json.loads(record["events"])["events"][1]["cancelled"]


def test_turn_past_the_end_is_truncated(tokenizer):
    record = run(qa_timeline(duration_s=3.0), tokenizer)  # 38 blocks; the end would be 40
    assert record["speaking"].shape == (38,)
    np.testing.assert_array_equal(np.flatnonzero(record["speaking"]), np.arange(17, 38))
    assert (record["label_kind"][18:, 0] != Kind.SHIFT).all()
    assert speech_blocks(record)[-1] == 37
    assert json.loads(record["events"])["events"][1]["truncated"]


@pytest.mark.parametrize("n", [1, 2])
def test_negative_ce_inputs_and_labels(tokenizer, n):
    record = run(qa_timeline(), tokenizer, "negative_ce", n)
    d, e = 17, (40 if n == 1 else 38)
    kinds, labels = record["label_kind"].ravel(), record["labels"].ravel()
    tokens = record["tokens"].ravel()
    assert kinds[d * n] == Kind.START and labels[d * n] == START_ID
    assert kinds[e * n] == Kind.END and labels[e * n] == END_ID
    speaking_p = np.repeat(record["speaking"], n)
    idle = kinds == Kind.THINK
    assert (labels[idle & ~speaking_p] == START_ID).all()
    assert (labels[idle & speaking_p] == END_ID).all()
    assert (idle & speaking_p).any() and (idle & ~speaking_p).any()
    # Inputs: BOS first; <think> after an idle slot, the emitted token otherwise.
    assert tokens[0] == contract.BOS_ID
    expected = np.where(idle[:-1], THINK_ID, labels[:-1])
    np.testing.assert_array_equal(tokens[1:], expected)
    assert tokens[d * n + 1] == START_ID and tokens[d * n] == THINK_ID
    assert THINK_ID not in labels


def test_implicit_has_no_state_token_but_think(tokenizer):
    implicit = run(qa_timeline(stop_s=2.5), tokenizer, "implicit")
    explicit = run(qa_timeline(stop_s=2.5), tokenizer, "explicit")
    for name in ("labels", "tokens"):
        assert not np.isin(implicit[name], [SHIFT_ID, START_ID, END_ID]).any()
    assert set(np.unique(implicit["label_kind"])) == {Kind.TEXT, Kind.THINK}
    text = explicit["label_kind"] == Kind.TEXT
    np.testing.assert_array_equal(implicit["label_kind"] == Kind.TEXT, text)
    np.testing.assert_array_equal(implicit["labels"][text], explicit["labels"][text])
    np.testing.assert_array_equal(implicit["speaking"], explicit["speaking"])
    np.testing.assert_array_equal(implicit["tokens"].ravel()[1:], implicit["labels"].ravel()[:-1])


def asr_timeline(words, duration_s=5.0, turns=()):
    audio = tone(words[-1][2] - words[0][1] + 0.01, 250.0)
    event = tl.AudioEvent(tl.USER, "dictation", words[0][1], audio, speaker="u1",
                          text=" ".join(w for w, _, _ in words))
    transcript = tl.AssistantTurn(tl.TRANSCRIBE, event.text, words[0][1],
                                  words=tuple(tl.WordTime(*w) for w in words))
    return tl.Timeline("asr_test", SR, duration_s, (event,), (*turns, transcript))


@pytest.mark.parametrize("n", [1, 2])
def test_transcript_never_precedes_heard_word_end(tokenizer, n):
    words = [("what", 0.5, 0.7), ("is", 0.72, 0.8), ("the", 0.82, 0.95), ("zorb", 1.0, 1.6)]
    record = run(asr_timeline(words), tokenizer, "explicit", n)
    check(record, tokenizer, n)
    kinds, labels = record["label_kind"].ravel(), record["labels"].ravel()
    text_slots = np.flatnonzero(kinds == Kind.TEXT)
    word_ids = [tokenizer.encode_words(w)[0] for w, _, _ in words]
    assert labels[text_slots].tolist() == [i for ids in word_ids for i in ids]
    starts = np.cumsum([0] + [len(ids) for ids in word_ids])[:-1]
    for (word, _, end_s), first in zip(words, text_slots[starts]):
        assert first >= (TIMING.heard(end_s) + TIMING.asr_lag_blocks) * n, word
    assert text_slots[0] == 9 * n  # "what" ends at 0.7 s: heard in block 8, lag 1
    assert text_slots[starts[3]] == 21 * n  # "zorb" ends at 1.6 s: block 20 + 1
    assert not record["speaking"].any()


def test_heard_tokens_stand_where_each_word_ends(tokenizer):
    words = [("what", 0.0, 0.2), ("is", 0.22, 0.4), ("the", 0.42, 0.55), ("zorb", 0.6, 1.2)]
    question = tl.AudioEvent(tl.USER, "question", 0.4, tone(1.25), speaker="u1",
                             text="what is the zorb",
                             words=tuple(tl.WordTime(*w) for w in words))
    record = run(tl.Timeline("heard_test", SR, 3.0, (question,), ()), tokenizer)
    check(record, tokenizer)
    heard_KxH = record["heard_tokens"]
    for word, _, end_s in words:
        block = TIMING.heard(0.4 + end_s)
        ids = tokenizer.encode_words(word)[0][:4]  # H = 4 slots (a longer word spills over)
        assert heard_KxH[block, :len(ids)].tolist() == ids, word
    real = heard_KxH[heard_KxH != contract.PAD_ID]
    assert real.tolist() == [i for w, _, _ in words for i in tokenizer.encode_words(w)[0]]


def test_heard_tokens_overflow_keeps_the_order_and_skips_the_assistant(tokenizer):
    # Two speakers' words end in one block: what does not fit moves to the next slots.
    user = tl.AudioEvent(tl.USER, "question", 0.1, tone(0.6), speaker="u1",
                         text="what is the zorb",
                         words=(tl.WordTime("what", 0.0, 0.2), tl.WordTime("zorb", 0.2, 0.5)))
    third = tl.AudioEvent(tl.THIRD, "chatter", 0.2, tone(0.4), speaker="t1", text="seven",
                          words=(tl.WordTime("seven", 0.0, 0.4),))
    noise = tl.AudioEvent(tl.NOISE, "noise", 0.0, tone(1.0))
    reply = tl.AssistantTurn(tl.SPEAK, REPLY, 1.2, audio=tone(1.5, 440.0))
    timeline = tl.Timeline("heard_test", SR, 5.0, (user, third, noise), (reply,))
    record = render.render(timeline, dims=contract.Dims(100, S, 1, P, heard_tokens_per_block=1),
                           timing=TIMING, thinking="explicit", tokenizer=tokenizer,
                           rng=np.random.default_rng(0))
    contract.validate(record, contract.Dims(K_REAL, S, 1, P, heard_tokens_per_block=1),
                      vocab_size=tokenizer.vocab_size)
    expected = [i for w in ("what", "zorb", "seven") for i in tokenizer.encode_words(w)[0]]
    heard = record["heard_tokens"][:, 0]
    assert heard[heard != contract.PAD_ID].tolist() == expected  # no word of the reply
    assert np.flatnonzero(heard != contract.PAD_ID)[0] == TIMING.heard(0.3)
    assert np.all(np.flatnonzero(heard != contract.PAD_ID) >= TIMING.heard(0.3))


def test_heard_tokens_without_word_timings_spread_over_the_event(tokenizer):
    question = tl.AudioEvent(tl.USER, "question", 0.0, tone(0.8), speaker="u1",
                             text="what is the zorb")
    timeline = tl.Timeline("heard_test", SR, 2.0, (question,), ())
    record = run(timeline, tokenizer)
    heard_T = record["heard_tokens"].ravel()  # slot = block * H + h
    ids = [tokenizer.encode_words(w)[0] for w in "what is the zorb".split()]
    # Four words over 0.8 s end at 0.2, 0.4, 0.6 and 0.8 s: blocks 2, 5, 7 and 10.
    for block, word_ids in zip((2, 5, 7, 10), ids):
        first = block * 4
        assert heard_T[first:first + len(word_ids)].tolist() == word_ids


def test_transcript_skips_slots_of_a_reply(tokenizer):
    reply = tl.AssistantTurn(tl.SPEAK, REPLY, 1.2, audio=tone(1.5, 440.0))
    record = run(asr_timeline([("seven", 1.0, 1.3)], turns=(reply,)), tokenizer)
    check(record, tokenizer)
    first_free = 17 + 1 + len(reply_ids(tokenizer))  # after the start shift and the reply
    assert record["labels"][first_free, 0] == tokenizer.encode_words("seven")[0][0]


def test_transcript_word_past_the_end_is_an_error(tokenizer):
    with pytest.raises(render.RenderError, match="asr_test.*'zorb'.*cannot be placed"):
        run(asr_timeline([("zorb", 4.5, 4.99)]), tokenizer)


def test_fit_blocks_pads_and_crops(tokenizer):
    record = run(qa_timeline(stop_s=2.5), tokenizer, "negative_ce")
    padded = render.fit_blocks(record, 80)
    contract.validate(padded, contract.Dims(80, S, 1, P), vocab_size=tokenizer.vocab_size)
    assert padded["block_mask"].sum() == K_REAL and not padded["block_mask"][K_REAL:].any()
    for name in ("env_audio", "tokens", "labels", "label_kind", "speaking", "speech_target"):
        np.testing.assert_array_equal(padded[name][:K_REAL], record[name])
        assert not padded[name][K_REAL:].any()  # zeros = PAD, IGNORE, False, silence
    cropped = render.fit_blocks(record, 30, start_block=10)
    contract.validate(cropped, contract.Dims(30, S, 1, P), vocab_size=tokenizer.vocab_size)
    for name in ("env_audio", "speech_target", "labels", "speaking", "speech_mask"):
        np.testing.assert_array_equal(cropped[name], record[name][10:40])
    for name in ("echo_gain", "echo_delay"):
        assert cropped[name] == record[name]
    np.testing.assert_array_equal(cropped["prompt_mask"], record["prompt_mask"])
    assert json.loads(cropped["events"])["render"]["crop_start_block"] == 10
    with pytest.raises(ValueError, match="start_block"):
        render.fit_blocks(record, 30, start_block=K_REAL)


def test_render_fixed_random_crop(tokenizer):
    dims = contract.Dims(40, S, 1, P)
    natural = run(qa_timeline(), tokenizer)
    starts = set()
    for seed in range(6):
        fixed = render.render_fixed(qa_timeline(), dims=dims, timing=TIMING,
                                    thinking="explicit", tokenizer=tokenizer,
                                    rng=np.random.default_rng(seed), crop="random")
        contract.validate(fixed, dims, vocab_size=tokenizer.vocab_size)
        start = json.loads(fixed["events"])["render"]["crop_start_block"]
        assert 0 <= start <= K_REAL - 40
        np.testing.assert_array_equal(fixed["env_audio"], natural["env_audio"][start:start + 40])
        starts.add(start)
    assert len(starts) > 1


def test_prompt(tokenizer):
    record = run(qa_timeline(prompt="please answer briefly"), tokenizer)
    ids = tokenizer.encode("please answer briefly")
    assert record["prompt_tokens"][:len(ids)].tolist() == ids
    assert record["prompt_mask"].sum() == len(ids)
    empty = run(qa_timeline(), tokenizer)
    assert not empty["prompt_mask"].any() and (empty["prompt_tokens"] == contract.PAD_ID).all()
    with pytest.raises(render.RenderError, match="qa_test.*prompt has .* tokens"):
        run(qa_timeline(prompt="please answer briefly " * 20), tokenizer)


def test_encode_prompt_is_the_records_prompt_layout(tokenizer):
    text = "please answer briefly"
    record = run(qa_timeline(prompt=text), tokenizer)
    tokens_P, mask_P = render.encode_prompt(tokenizer, text, record["prompt_tokens"].size)
    np.testing.assert_array_equal(tokens_P, record["prompt_tokens"])
    np.testing.assert_array_equal(mask_P, record["prompt_mask"])
    assert tokens_P.dtype == np.int32 and mask_P.dtype == np.bool_
    blank_P, blank_mask_P = render.encode_prompt(tokenizer, "  ", 4)
    assert (blank_P == contract.PAD_ID).all() and not blank_mask_P.any()
    exact = len(tokenizer.encode(text))
    assert render.encode_prompt(tokenizer, text, exact)[1].all()
    with pytest.raises(render.PromptError, match=r"--prompt: prompt has \d+ tokens, more than "
                                                 rf"prompt_len={exact - 1}"):
        render.encode_prompt(tokenizer, text, exact - 1, where="--prompt")
    assert issubclass(render.PromptError, render.RenderError)
    assert issubclass(render.PromptError, ValueError)


def test_unrenderable_timelines(tokenizer):
    overlapping = tl.AssistantTurn(tl.SPEAK, "seven", 2.0, audio=tone(0.5))
    with pytest.raises(render.RenderError, match="qa_test.*overlaps"):
        run(qa_timeline(extra_turns=(overlapping,)), tokenizer)
    silent = tl.AssistantTurn(tl.SPEAK, "?!", 3.5, audio=tone(0.5))
    with pytest.raises(render.RenderError, match="qa_test.*no text tokens"):
        run(qa_timeline(extra_turns=(silent,)), tokenizer)
    wrong_rate = tl.Timeline("rate_test", 8000, 1.0, (), ())
    with pytest.raises(render.RenderError, match="rate_test"):
        run(wrong_rate, tokenizer)


def test_loud_environment_is_scaled_not_clipped(tokenizer):
    timeline = qa_timeline(question_gain=4.0, echo_gain=0.5, echo_delay_s=0.02)  # peak 2.0
    record = run(timeline, tokenizer)
    check(record, tokenizer)
    env = record["env_audio"].ravel()
    assert np.abs(env).max() == pytest.approx(0.99, abs=1e-6)
    scale = json.loads(record["events"])["render"]["env_scale"]
    assert scale == pytest.approx(0.99 / 2.0, rel=1e-3)
    np.testing.assert_allclose(env, scale * 4.0 * events_mix(qa_timeline(), env.size),
                               atol=1e-5)


def full_augment(**overrides):
    return augment_lib.AugmentConfig(**(dict(noise_prob=1.0, reverb_prob=1.0, echo_prob=1.0,
                                             gain_db=(-6.0, 3.0)) | overrides))


def test_augmentation_is_deterministic_and_targets_stay_clean(tokenizer):
    clean = run(qa_timeline(), tokenizer)
    a, b, c = (run(qa_timeline(), tokenizer, augment=full_augment(), seed=s) for s in (5, 5, 6))
    np.testing.assert_array_equal(a["env_audio"], b["env_audio"])
    assert a["events"] == b["events"]
    assert not np.allclose(a["env_audio"], c["env_audio"])
    assert not np.allclose(a["env_audio"], clean["env_audio"])
    for name in ("speech_target", "tokens", "labels", "label_kind", "speaking"):
        np.testing.assert_array_equal(a[name], clean[name])
    info = json.loads(a["events"])["render"]
    assert info["reverb"] and info["noise"] in augment_lib.NOISE_KINDS
    assert 5.0 <= info["snr_db"] <= 30.0 and info["echo_drawn"]
    check(a, tokenizer)


def test_echo_drawn_by_augmentation_unless_fixed(tokenizer):
    only_echo = augment_lib.AugmentConfig(echo_prob=1.0)
    timeline = qa_timeline()
    record = run(timeline, tokenizer, augment=only_echo, seed=3)
    info = json.loads(record["events"])["render"]
    assert info["echo_drawn"] and 0.05 <= info["echo_gain"] <= 1.0
    assert 0.01 <= info["echo_delay_s"] <= 0.06
    assert record["echo_gain"] == np.float32(info["echo_gain"])
    assert record["echo_delay"] == int(round(info["echo_delay_s"] * SR))
    np.testing.assert_allclose(record["env_audio"].ravel(),
                               events_mix(timeline, record["env_audio"].size), atol=1e-6)
    fixed = run(qa_timeline(meta=dict(echo_fixed=True)), tokenizer, augment=only_echo, seed=3)
    assert not json.loads(fixed["events"])["render"]["echo_drawn"]
    assert fixed["echo_gain"] == 0.0
    np.testing.assert_array_equal(fixed["env_audio"].ravel(),
                                  events_mix(timeline, fixed["env_audio"].size))
