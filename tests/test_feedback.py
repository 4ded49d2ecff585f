"""One feedback path: the assistant stream and echo that training feeds the model are the
samples the free-running engine feeds back when the model says exactly the reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from data_pipelines import contract
from omni_jax import inspect
from omni_jax.audio.feedback import Feedback
from omni_jax.audio.frontend import SILENCE_LOG_MEL
from omni_jax.duplex.engine import DuplexEngine
from omni_jax.train.trainer import Trainer

K = 12


@pytest.fixture(scope="module")
def config():
    c = tiny.get_config("interleave,mamba,explicit")
    c.data.num_blocks = K
    for part in ("encoder", "llm", "synth"):  # the smallest model: only its mel matters
        c.model[part].num_layers = 1
    c.model.encoder.width, c.model.synth.width, c.model.synth.mlp_dim = 32, 32, 64
    c.model.llm.width, c.model.llm.mlp_dim = 64, 128
    return c


def _speech_like(num_samples, rate, seed):
    t_S = np.arange(num_samples) / rate
    f0_S = 150 + 30 * np.sin(2 * np.pi * 1.1 * t_S + seed)
    phase_S = 2 * np.pi * np.cumsum(f0_S) / rate
    audio = sum(np.sin(h * phase_S) / h for h in range(1, 20))
    return (0.1 * audio * np.clip(np.sin(5 * np.pi * t_S), 0.2, None)).astype(np.float32)


def _batch(config, seed=0):
    """Two streams: noise in the microphone, the assistant speaking blocks 2-8 (stream 0)
    and 4-10 (stream 1), echo at two gains and delays."""
    s = contract.samples_per_block(config.audio.sample_rate, config.audio.block_ms)
    rng = np.random.default_rng(seed)
    speaking_BxK = np.stack([(np.arange(K) >= 2) & (np.arange(K) < 9),
                             (np.arange(K) >= 4) & (np.arange(K) < 11)])
    speech_BxKxS = np.stack([_speech_like(K * s, config.audio.sample_rate, b)
                             for b in range(2)]).reshape(2, K, s)
    return dict(env_audio=(0.02 * rng.standard_normal((2, K, s))).astype(np.float32),
                speech_target=np.where(speaking_BxK[..., None], speech_BxKxS, 0.0
                                       ).astype(np.float32),
                speech_mask=speaking_BxK, echo_gain=np.array([0.8, 0.3], np.float32),
                echo_delay=np.array([480, 1280], np.int32))


class ReplayModel:
    """Says the reference: <shift> where the reference's speaking state changes, its kept
    log-mel every block; it counts blocks in its carry."""

    def __init__(self, kept_mel_BxKxFxM, speaking_BxK, vocab_size):
        self.mel, self.speaking = jnp.asarray(kept_mel_BxKxFxM), jnp.asarray(speaking_BxK)
        self.vocab_size = vocab_size

    def init_state(self, params, prompt_tokens_BxP, num_blocks):
        return dict(block=jnp.zeros((), jnp.int32))

    def step(self, params, carry, block):
        k = carry["block"]
        before_B = jnp.where(k > 0, self.speaking[:, jnp.maximum(k - 1, 0)], False)
        toggle_B = self.speaking[:, k] != before_B
        token_B = jnp.where(toggle_B, contract.SHIFT_ID, contract.THINK_ID)
        logits_BxNxV = jax.nn.one_hot(token_B, self.vocab_size)[:, None] * 10.0
        return dict(block=k + 1), dict(logits=logits_BxNxV, mel=self.mel[:, k],
                                       speak_logit=jnp.zeros(token_B.shape))


def test_training_streams_equal_the_engines_feedback(config, tmp_path):
    batch = _batch(config)
    trainer = Trainer(config, tmp_path)
    inputs = jax.jit(lambda b: trainer.model_inputs(None, b))(
        {k: jnp.asarray(v) for k, v in batch.items()})
    kept = trainer.feedback.reference_mel(jnp.asarray(batch["speech_target"]),
                                          jnp.asarray(batch["speech_mask"]))
    replay = ReplayModel(kept, batch["speech_mask"], config.data.tokenizer.vocab_size)
    engine = DuplexEngine(replay, None, config)
    s = batch["env_audio"].shape[2]
    result = engine.run(batch["env_audio"].reshape(2, K * s), np.zeros((2, 3), np.int32),
                        echo_gain=batch["echo_gain"],
                        echo_delay_s=batch["echo_delay"] / config.audio.sample_rate)
    np.testing.assert_array_equal(result.speaking, batch["speech_mask"])
    # The same functions compiled into two programs (training's scan, the engine's per-block
    # jit) round differently; measured: relative error 5e-4, largest sample error 3e-4.
    for name in ("asst_audio", "env_audio"):
        engine_BxKxS, training_BxKxS = getattr(result, name), np.asarray(inputs[name])
        assert np.linalg.norm(engine_BxKxS - training_BxKxS) < 2e-3 * np.linalg.norm(
            training_BxKxS), name
        np.testing.assert_allclose(engine_BxKxS, training_BxKxS, atol=2e-3, err_msg=name)
    # Not vacuous: the stream carries speech one block after it is said, and its echo.
    assert np.abs(result.asst_audio[0, 3]).max() > 0.05
    assert not result.asst_audio[:, :3].any()
    echo = result.env_audio - batch["env_audio"]
    assert np.abs(echo[0, 3]).max() > 0.04 and np.abs(echo[1, 4]).max() == 0.0


def test_stream_follows_the_timing_rules(config):
    """asst[k+1] is block k's played speech; the echo is the stream `delay` samples late."""
    batch = _batch(config, seed=1)
    feedback = Feedback.from_config(config)
    kept = feedback.reference_mel(jnp.asarray(batch["speech_target"]),
                                  jnp.asarray(batch["speech_mask"]))
    heard, asst = feedback.teacher_forced(kept, jnp.asarray(batch["env_audio"]),
                                          jnp.asarray(batch["echo_gain"]),
                                          jnp.asarray(batch["echo_delay"]))
    state, played = feedback.init_state(2), []
    for k in range(K):
        state, out = feedback.speak(state, kept[:, k])
        played.append(np.asarray(out))
    played_BxKxS = np.stack(played, axis=1)
    np.testing.assert_array_equal(np.asarray(asst)[:, 1:], played_BxKxS[:, :-1])
    s = played_BxKxS.shape[2]
    for b in range(2):
        stream_T = np.asarray(asst)[b].reshape(-1)
        delay = int(batch["echo_delay"][b])
        late_T = np.concatenate([np.zeros(delay, np.float32), stream_T[:K * s - delay]])
        np.testing.assert_allclose(np.asarray(heard)[b].reshape(-1),
                                   batch["env_audio"][b].reshape(-1)
                                   + batch["echo_gain"][b] * late_T, atol=1e-6)


def test_scheduled_feedback_feeds_the_models_own_speech(config, tmp_path):
    """train.self_feedback = 1: every row hears what the model itself said (its mel where
    the reference speaks), not the reference; 0 hears the reference."""
    config = config.copy_and_resolve_references()
    config.train.self_feedback = 1.0
    trainer = Trainer(config, tmp_path)
    params = trainer.model.init(jax.random.key(0))
    batch = {k: jnp.asarray(v) for k, v in _batch(config).items()}
    batch.update(tokens=jnp.zeros((2, K, 1), jnp.int32),
                 prompt_tokens=jnp.zeros((2, config.data.prompt_len), jnp.int32))
    own = jax.jit(trainer.model_inputs)(params, batch, jnp.asarray(3))
    reference = jax.jit(trainer.model_inputs)(params, batch)
    assert not np.allclose(np.asarray(own["asst_audio"]), np.asarray(reference["asst_audio"]))

    @jax.jit
    def expected_inputs(params, batch):
        first = trainer.model.parallel_forward(params, reference)["mel"].astype(jnp.float32)
        kept = jnp.where(batch["speech_mask"][..., None, None], first, SILENCE_LOG_MEL)
        return trainer.feedback.model_inputs(batch, kept)

    expected = expected_inputs(params, batch)
    np.testing.assert_allclose(np.asarray(own["asst_audio"]),
                               np.asarray(expected["asst_audio"]), atol=1e-5)


def test_inspect_hears_what_training_feeds(config):
    """`python -m omni_jax.inspect` writes the microphone with the echo and the assistant
    stream that the train step makes of a record."""
    batch = _batch(config)
    record = {k: v[0] for k, v in batch.items()}
    env_KxS, asst_KxS = inspect.hearing(config)(record)
    inputs = Feedback.from_config(config).model_inputs(
        {k: jnp.asarray(v) for k, v in batch.items()})
    np.testing.assert_allclose(asst_KxS, np.asarray(inputs["asst_audio"][0]), atol=2e-3)
    np.testing.assert_allclose(env_KxS, np.asarray(inputs["env_audio"][0]), atol=2e-3)
    assert np.abs(env_KxS - record["env_audio"]).max() > 0.04  # the echo is in
