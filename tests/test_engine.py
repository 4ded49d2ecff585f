"""The streaming engine: teacher-forced runs equal `scan_forward`, free runs replay exactly
through it, the state machines and event times of every thinking variant, the played speech
and echo mixing (the speech path itself: tests/test_feedback.py, tests/test_vocoder.py)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from data_pipelines.contract import BOS_ID, EOS_ID, PAD_ID, SHIFT_ID, THINK_ID
from data_pipelines.contract import END_SPEAK_ID as END_ID
from data_pipelines.contract import START_SPEAK_ID as START_ID
from omni_jax.audio.vocoder import GriffinLimVocoder
from omni_jax.duplex.engine import DuplexEngine
from omni_jax.models.omni import DuplexModel

S = 1280  # samples per 80 ms block at 16 kHz
K = 8
DELAY = 560  # the streaming vocoder's: 15 ms window overlap + 20 ms look-ahead


class ScriptedModel:
    """A stand-in for DuplexModel whose block k emits script[:, k] (and speak logits)."""

    def __init__(self, config, script_BxK, speak_logit_BxK=None, log_mel=0.0):
        self.config = config
        self.script = jnp.asarray(script_BxK, jnp.int32)
        self.speak = jnp.zeros(self.script.shape, jnp.float32) if speak_logit_BxK is None \
            else jnp.asarray(speak_logit_BxK, jnp.float32)
        self.log_mel = log_mel

    def init_state(self, params, prompt_tokens_BxP, num_blocks):
        return {"k": jnp.zeros((), jnp.int32)}

    def step(self, params, carry, block):
        k, b = carry["k"], self.script.shape[0]
        logits_BxNxV = 10.0 * jax.nn.one_hot(self.script[:, k], 64)[:, None]
        mel_BxFxM = jnp.full((b, 8, 80), self.log_mel, jnp.float32)
        return {"k": k + 1}, dict(logits=logits_BxNxV, mel=mel_BxFxM,
                                  speak_logit=self.speak[:, k])


def _run_script(thinking, script, speak=None, **run_kw):
    config = tiny.get_config(thinking)
    engine = DuplexEngine(ScriptedModel(config, script, speak), None, config)
    env = np.zeros((len(script), K * S), np.float32)
    return engine.run(env, np.zeros((len(script), 2), np.int32), **run_kw)


T, A, B_, C = 10, 11, 12, 13  # text ids
F_, T_ = False, True


def _check_common(result, canonical, speaking):
    canonical = np.asarray(canonical)
    np.testing.assert_array_equal(result.tokens[..., 0], canonical)
    np.testing.assert_array_equal(result.speaking, speaking)
    # Fed back: block k+1 reads block k's emission (BOS first) and block k's speech.
    np.testing.assert_array_equal(result.input_tokens[:, 0, 0], BOS_ID)
    np.testing.assert_array_equal(result.input_tokens[:, 1:, 0], canonical[:, :-1])
    np.testing.assert_array_equal(result.asst_audio[:, 0], 0.0)
    np.testing.assert_array_equal(result.asst_audio[:, 1:], result.speech[:, :-1])
    # Speech exactly where speaking (the scripted mel is loud), played DELAY samples
    # behind the mel: a block's first DELAY samples finish the block before.
    speaking = np.asarray(speaking)
    loud = np.abs(result.speech[..., DELAY:]).max(axis=-1) > 1e-3
    np.testing.assert_array_equal(loud, speaking)
    silent_after = ~speaking & ~np.concatenate([speaking[:, :1] & False, speaking[:, :-1]], 1)
    assert not result.speech[silent_after].any()


def test_explicit_state_machine_and_events():
    script = [[THINK_ID, THINK_ID, SHIFT_ID, T, A, SHIFT_ID, THINK_ID, THINK_ID],
              [T, EOS_ID, SHIFT_ID, THINK_ID, PAD_ID, START_ID, SHIFT_ID, C]]
    canonical = [[THINK_ID, THINK_ID, SHIFT_ID, T, A, SHIFT_ID, THINK_ID, THINK_ID],
                 [T, THINK_ID, SHIFT_ID, THINK_ID, THINK_ID, THINK_ID, SHIFT_ID, C]]
    speaking = [[F_, F_, T_, T_, T_, F_, F_, F_], [F_, F_, T_, T_, T_, T_, F_, F_]]
    result = _run_script("explicit", script)
    _check_common(result, canonical, speaking)
    np.testing.assert_array_equal(result.raw_tokens[..., 0], script)
    events = result.events()
    assert events[0] == [
        dict(kind="start", block=2, time_s=pytest.approx(0.16)),
        dict(kind="text", block=3, time_s=pytest.approx(0.24), token=T),
        dict(kind="text", block=4, time_s=pytest.approx(0.32), token=A),
        dict(kind="stop", block=5, time_s=pytest.approx(0.40))]
    assert [(e["kind"], e["block"]) for e in events[1]] == [
        ("text", 0), ("start", 2), ("stop", 6), ("text", 7)]
    assert result.event_times(1, "stop", after_s=0.3) == [pytest.approx(0.48)]
    assert result.text_ids() == [[T, A], [T, C]]

    class Tok:  # decode as the tokenizer would, without a sentencepiece model
        def decode(self, ids):
            return " ".join(map(str, ids))

    assert result.text(Tok()) == ["10 11", "10 13"]
    assert result.speech_audio().shape == (2, K * S)
    vocoder = dataclasses.replace(GriffinLimVocoder.from_config(tiny.get_config()), n_iter=2)
    offline = result.speech_audio(vocoder)
    assert offline.shape == (2, K * S)
    # A frame's window reaches win - hop = 240 samples back into the block before.
    assert np.abs(offline[0, :2 * S - 240]).max() == 0
    assert np.abs(offline[0, 2 * S:5 * S]).max() > 0


def test_negative_ce_state_machine():
    # A redundant transition (start while speaking, end while listening) is idle.
    script = [[THINK_ID, START_ID, T, START_ID, A, END_ID, END_ID, B_],
              [END_ID, SHIFT_ID, START_ID, END_ID, START_ID, T, BOS_ID, END_ID]]
    canonical = [[THINK_ID, START_ID, T, THINK_ID, A, END_ID, THINK_ID, B_],
                 [THINK_ID, THINK_ID, START_ID, END_ID, START_ID, T, THINK_ID, END_ID]]
    speaking = [[F_, T_, T_, T_, T_, F_, F_, F_], [F_, F_, T_, F_, T_, T_, T_, F_]]
    result = _run_script("negative_ce", script)
    _check_common(result, canonical, speaking)
    assert [(e["kind"], e["block"]) for e in result.events()[1]] == [
        ("start", 2), ("stop", 3), ("start", 4), ("text", 5), ("stop", 7)]


def test_implicit_state_machine_follows_the_speak_head():
    script = [[THINK_ID, SHIFT_ID, T, START_ID, A, THINK_ID, END_ID, THINK_ID]]
    speak = [[-2.0, 1.0, 3.0, 0.5, 0.1, -0.1, -3.0, 2.0]]
    canonical = [[THINK_ID, THINK_ID, T, THINK_ID, A, THINK_ID, THINK_ID, THINK_ID]]
    speaking = [[F_, T_, T_, T_, T_, F_, F_, T_]]
    result = _run_script("implicit", script, speak)
    _check_common(result, canonical, speaking)
    np.testing.assert_allclose(result.speak_prob, 1 / (1 + np.exp(-np.asarray(speak))),
                               rtol=1e-6)
    assert [(e["kind"], e["block"]) for e in result.events()[0]] == [
        ("start", 1), ("text", 2), ("text", 4), ("stop", 5), ("start", 7)]


def test_echo_gain_and_delay_per_stream():
    """Heard env = env + gain * the assistant stream delayed by echo_delay_s (samples), at
    most one block; more is an error."""
    script = [[THINK_ID, SHIFT_ID, T, A, B_, SHIFT_ID, THINK_ID, THINK_ID]] * 2
    config = tiny.get_config("explicit")
    engine = DuplexEngine(ScriptedModel(config, script), None, config)
    env = (0.01 * np.random.default_rng(0).normal(size=(2, K * S - 100))).astype(np.float32)
    gains, delays_s = [0.5, 0.25], [0.0375, 0.08]  # 600 and 1280 samples
    result = engine.run(env, np.zeros((2, 2), np.int32), echo_gain=gains,
                        echo_delay_s=delays_s)
    played = result.asst_audio.reshape(2, -1)
    assert np.abs(played).max() > 0.01
    padded = np.pad(env, ((0, 0), (0, 100)))  # zero-padded to whole blocks
    for b, (gain, delay) in enumerate(zip(gains, (600, 1280))):
        echo = np.zeros(K * S, np.float32)
        echo[delay:] = np.float32(gain) * played[b, :K * S - delay]
        np.testing.assert_allclose(result.env_audio[b].reshape(-1), padded[b] + echo,
                                   rtol=0, atol=1e-7)
    # Speech made in block 1 is first heard in block 2 plus the delay.
    first = np.flatnonzero(np.abs(result.env_audio[0].reshape(-1) - padded[0]) > 0)[0]
    assert first >= 2 * S + 600
    with pytest.raises(ValueError, match="echo_delay_s"):
        engine.run(env, np.zeros((2, 2), np.int32), echo_gain=0.5, echo_delay_s=0.1)


# ---- the real model ------------------------------------------------------------------------

NUM_BLOCKS = 6


@pytest.fixture(scope="module")
def model():
    c = tiny.get_config("implicit")
    c.model.encoder.num_layers, c.model.encoder.width = 1, 32
    c.model.llm.num_layers, c.model.llm.width, c.model.llm.mlp_dim = 1, 64, 128
    c.model.synth.num_layers, c.model.synth.width, c.model.synth.mlp_dim = 1, 32, 64
    c.data.prompt_len, c.data.num_blocks = 3, NUM_BLOCKS
    dm = DuplexModel.from_config(c)
    params = dm.init(jax.random.key(0))
    # A loud synthesizer, so that the fed-back assistant stream is not silence.
    synth = params["params"]["synth"]
    synth["out_bias"] = synth["out_bias"].replace_boxed(jnp.zeros((8, 80)))
    return dm, params, DuplexEngine(dm, params, c), jax.jit(dm.scan_forward)


def _batch(dm, seed=0, batch=3):
    rng = np.random.default_rng(seed)
    shapes = dm.dummy_batch(batch, NUM_BLOCKS)
    audio = lambda: jnp.asarray(0.1 * rng.normal(size=shapes["env_audio"].shape), jnp.float32)
    ids = lambda key: jnp.asarray(rng.integers(8, 300, size=shapes[key].shape), jnp.int32)
    return dict(env_audio=audio(), asst_audio=audio(), tokens=ids("tokens"),
                prompt_tokens=ids("prompt_tokens"))


def test_teacher_forced_engine_equals_scan(model):
    dm, params, engine, scan = model
    batch = _batch(dm)
    reference = scan(params, batch)
    result = engine.run(batch["env_audio"].reshape(3, -1), batch["prompt_tokens"],
                        forced_tokens_BxKxN=batch["tokens"],
                        forced_asst_audio=batch["asst_audio"], keep_logits=True)
    np.testing.assert_allclose(result.logits, reference["logits"], atol=1e-4)
    np.testing.assert_allclose(result.mel, reference["mel"], atol=1e-4)
    np.testing.assert_allclose(result.speak_prob, jax.nn.sigmoid(reference["speak_logit"]),
                               atol=1e-5)
    np.testing.assert_array_equal(result.input_tokens, batch["tokens"])


def test_free_run_replays_through_scan(model):
    """What the engine fed itself (tokens, its own speech) replayed teacher-forced through
    `scan_forward` gives the same logits and the same greedy choices."""
    dm, params, engine, scan = model
    batch = _batch(dm, seed=1)
    result = engine.run(batch["env_audio"].reshape(3, -1), batch["prompt_tokens"],
                        echo_gain=0.3, echo_delay_s=0.02, keep_logits=True)
    assert result.speaking.any() and np.abs(result.asst_audio).max() > 1e-3
    np.testing.assert_array_equal(result.input_tokens[:, 1:], result.tokens[:, :-1])
    np.testing.assert_array_equal(result.asst_audio[:, 1:], result.speech[:, :-1])
    replay = scan(params, dict(env_audio=jnp.asarray(result.env_audio),
                               asst_audio=jnp.asarray(result.asst_audio),
                               tokens=jnp.asarray(result.input_tokens),
                               prompt_tokens=batch["prompt_tokens"]))
    np.testing.assert_allclose(result.logits, replay["logits"], atol=1e-4)
    np.testing.assert_array_equal(result.raw_tokens, np.argmax(replay["logits"], axis=-1))
    np.testing.assert_array_equal(result.speaking, np.asarray(replay["speak_logit"]) > 0)
