"""Stage 3 (DPO): preference pairs from the scenario generators, the DPO loss by hand, and
its gradient at policy == reference on the real model."""

import collections
import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import common, tiny
from data_pipelines import augment, contract, pipeline, preferences, scenarios, voices
from data_pipelines import tokenizer as tok
from data_pipelines import world
from data_pipelines.contract import LabelKind as LK
from omni_jax import configuration
from omni_jax.audio.feedback import Feedback
from omni_jax.evaluation import on_policy
from omni_jax.models.omni import DuplexModel
from omni_jax.train import checkpoint, losses, preference
from omni_jax.train import trainer as trainer_lib
from tests.helpers import runner
from tests.test_scenarios import small_config  # the scenario tests' few-voice world

SEEDS = range(3)


@pytest.fixture(scope="module")
def world_setup(tmp_path_factory):
    config = small_config()
    synth = voices.Synthesizer(config.audio.sample_rate, max_words=config.data.max_text_words)
    tokenizer = tok.train_tokenizer(world.all_texts(), config.data.tokenizer.vocab_size,
                                    config.data.tokenizer.model_type,
                                    tmp_path_factory.mktemp("tok") / "t.model")
    return config, scenarios.make_context(config, "train", synth), tokenizer


@pytest.fixture(scope="module")
def pairs(world_setup):
    config, ctx, tokenizer = world_setup
    dims = contract.Dims.from_config(config)
    timing = contract.TimingRules.from_config(config)
    out = []
    for name in preferences.PAIR_SCENARIOS:
        for seed in SEEDS:
            rng = np.random.default_rng(seed)
            timeline = scenarios.SCENARIOS[name](rng, ctx)
            try:
                pair = preferences.render_pair(
                    timeline, dims=dims, timing=timing, thinking="explicit",
                    tokenizer=tokenizer, rng=rng,
                    augment=augment.AugmentConfig.from_config(config))
            except preferences.NoDecision:
                continue
            out.append((timeline, pair))
    return config, tokenizer, out


def test_pairs_are_valid_records_that_differ_only_from_the_decision(pairs):
    config, tokenizer, made = pairs
    dims = contract.Dims.from_config(config)
    kinds = collections.Counter()
    for timeline, pair in made:
        chosen, rejected, d = pair["chosen"], pair["rejected"], pair["decision_block"]
        kinds[pair["kind"]] += 1
        for side in (chosen, rejected):
            contract.validate(side, dims, vocab_size=tokenizer.vocab_size)
        # The microphone (noise, reverb, echo settings, heard words) is one and the same.
        for name in ("env_audio", "echo_gain", "echo_delay", "heard_tokens", "block_mask",
                     "prompt_tokens"):
            np.testing.assert_array_equal(chosen[name], rejected[name], err_msg=name)
        for name in ("tokens", "labels", "label_kind", "speaking", "speech_target"):
            np.testing.assert_array_equal(chosen[name][:d], rejected[name][:d], err_msg=name)
        # The decision block itself already differs: the behaviour departs there.
        assert not np.array_equal(chosen["labels"][d], rejected["labels"][d]) \
            or chosen["speaking"][d] != rejected["speaking"][d], timeline.scenario
    # Every kind of pair is made.
    assert set(kinds) == set(preferences.PAIR_KINDS), kinds


def test_pair_behaviour_is_the_reference_against_its_failure(pairs):
    _, _, made = pairs
    for timeline, pair in made:
        chosen, rejected, d = pair["chosen"], pair["rejected"], pair["decision_block"]
        if pair["kind"] == "stop_in_time":  # chosen stops at d, rejected speaks on
            assert chosen["labels"][d, 0] == contract.SHIFT_ID and not chosen["speaking"][d]
            assert rejected["speaking"][d]
        elif pair["kind"] == "keep_speaking":  # rejected stops at d
            assert rejected["labels"][d, 0] == contract.SHIFT_ID
            assert chosen["speaking"][d] and not rejected["speaking"][d]
        else:  # wait_for_turn: rejected takes the turn at d, chosen is still listening
            assert rejected["labels"][d, 0] == contract.SHIFT_ID and rejected["speaking"][d]
            assert not chosen["speaking"][d]


def test_no_decision_and_broken_pairs_are_errors(pairs, world_setup):
    config, ctx, tokenizer = world_setup
    dims = contract.Dims.from_config(config)
    timing = contract.TimingRules.from_config(config)
    asr = scenarios.SCENARIOS["asr"](np.random.default_rng(0), ctx)
    with pytest.raises(preferences.NoDecision, match="'asr' makes no preference pair"):
        preferences.render_pair(asr, dims=dims, timing=timing, thinking="explicit",
                                tokenizer=tokenizer, rng=np.random.default_rng(0))
    _, pair = pairs[2][0]
    broken = dict(pair["rejected"], env_audio=pair["rejected"]["env_audio"] * 0.5)
    with pytest.raises(preferences.PairError, match="'env_audio' differs"):
        preferences.check_pair(pair["chosen"], broken, pair["decision_block"])
    with pytest.raises(preferences.PairError, match="same record"):
        preferences.check_pair(pair["chosen"], pair["chosen"], pair["decision_block"])


def test_config_pair_scenarios_are_the_librarys():
    assert common.PAIR_SCENARIOS == preferences.PAIR_SCENARIOS
    assert set(preferences.PAIR_SCENARIOS) <= set(scenarios.SCENARIOS)


def test_dpo_loss_hand_computed():
    policy = jnp.asarray([[-3.0, -5.0], [-4.0, -2.0]])
    reference = jnp.asarray([[-3.5, -4.5], [-4.0, -2.5]])
    beta = 0.5
    loss, m = preference.dpo_loss(policy, reference, beta)
    margins = [beta * ((-3.0 + 3.5) - (-5.0 + 4.5)), beta * ((-4.0 + 4.0) - (-2.0 + 2.5))]
    expected = np.mean([-math.log(1 / (1 + math.exp(-x))) for x in margins])
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
    np.testing.assert_allclose(float(m["reward_margin"]), np.mean(margins), rtol=1e-6)
    np.testing.assert_allclose(float(m["reward_chosen"]), beta * (0.5 + 0.0) / 2, rtol=1e-6)
    assert float(m["reward_accuracy"]) == 0.5


def test_at_policy_equal_reference_the_gradient_raises_the_chosen_log_prob():
    logp = jnp.asarray([[-3.0, -5.0], [-4.0, -2.0], [-1.0, -7.0]])
    beta = 0.2
    loss, grad_Bx2 = jax.value_and_grad(lambda p: preference.dpo_loss(p, logp, beta)[0])(logp)
    np.testing.assert_allclose(float(loss), math.log(2.0), rtol=1e-6)
    # d loss / d logp: -beta / (2 B) for every chosen side, +beta / (2 B) for every rejected
    # one (sigmoid(0) = 1/2): descending it raises the chosen and lowers the rejected.
    np.testing.assert_allclose(np.asarray(grad_Bx2[:, 0]), -beta / 6, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(grad_Bx2[:, 1]), beta / 6, rtol=1e-6)


def test_sequence_logp_counts_only_supervised_positions_from_the_decision():
    config = small_config()
    v = 5
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 1, v)), jnp.float32)
    rows = dict(labels=jnp.asarray([[[1], [2], [3], [4]], [[4], [3], [2], [1]]], jnp.int32),
                label_kind=jnp.asarray([[[LK.THINK], [LK.TEXT], [LK.IGNORE], [LK.SHIFT]],
                                        [[LK.TEXT], [LK.THINK], [LK.TEXT], [LK.TEXT]]],
                                       jnp.int8),
                block_mask=jnp.asarray([[True] * 4, [True, True, True, False]]),
                speaking=jnp.zeros((2, 4), bool))
    logp = np.asarray(jax.nn.log_softmax(logits, -1))[..., 0, :]
    got = preference.sequence_logp(dict(logits=logits), rows, jnp.asarray([1, 2]), config)
    expected = [logp[0, 1, 2] + logp[0, 3, 4],  # block 2 IGNORE, block 0 before the decision
                logp[1, 2, 2]]  # block 3 is padding
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5)
    # negative_ce: a THINK position scores the probability of not taking its transition.
    config.model.thinking = "negative_ce"
    got = preference.sequence_logp(dict(logits=logits), rows, jnp.asarray([0, 0]), config)
    np.testing.assert_allclose(float(got[1]), logp[1, 0, 4] + math.log1p(-math.exp(
        logp[1, 1, 3])) + logp[1, 2, 2], rtol=1e-5)


def _tiny_dpo_config():
    config = small_config()
    config.model.encoder.num_layers, config.model.encoder.width = 1, 32
    config.model.llm.num_layers, config.model.llm.width, config.model.llm.mlp_dim = 1, 64, 128
    config.model.synth.num_layers, config.model.synth.width = 1, 32
    config.data.num_blocks = 80
    config.loss.dpo_beta = 0.5
    config.model.synth.streaming.iterations = 2  # the same speech path, cheaper phase search
    return config


def test_at_policy_equal_reference_the_loss_is_log2_and_a_step_raises_the_chosen(pairs):
    _, _, made = pairs
    config = _tiny_dpo_config()
    dm = DuplexModel.from_config(config)
    feedback = Feedback.from_config(config)
    params = nn.meta.unbox(dm.init(jax.random.key(0)))
    # One pair that must stop and one that must keep speaking.
    chosen = [next(p for _, p in made if p["kind"] == kind)
              for kind in ("stop_in_time", "keep_speaking")]
    batch = {name: jnp.asarray(np.stack([np.stack([p["chosen"][name], p["rejected"][name]])
                                         for p in chosen]))
             for name in contract.FIELD_NAMES}
    batch[preferences.DECISION_BLOCK] = jnp.asarray([p["decision_block"] for p in chosen],
                                                    jnp.int32)

    def forward(p, rows):
        return dm.parallel_forward(p, feedback.model_inputs(rows))

    def loss_fn(p):
        return preference.compute_dpo_losses(forward, p, params, batch, config)

    loss_and_grad = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))  # compiled once
    (loss, parts), grads = loss_and_grad(params)
    np.testing.assert_allclose(float(loss), math.log(2.0), rtol=1e-5)
    assert float(parts["reward_margin"]) == pytest.approx(0.0, abs=1e-5)
    # A small step down the gradient raises the chosen side's log-probability against the
    # rejected side's (relative to the reference, which stays). Both may fall in absolute
    # terms (they share parameters; on this batch they do, the chosen less): DPO's known
    # likelihood displacement, which `loss.dpo_sft` counters (docs/RESULTS.md).
    norm = optax.global_norm(grads)
    stepped = jax.tree.map(lambda p, g: p - 1e-2 * g / norm, params, grads)
    (_, after), _ = loss_and_grad(stepped)
    assert float(after["reward_margin"]) > 0
    assert float(after["loss"]) < math.log(2.0)
    assert float(after["logp_chosen"]) - float(parts["logp_chosen"]) > \
        float(after["logp_rejected"]) - float(parts["logp_rejected"])


def test_stage3_config_validates_and_needs_init_from():
    config = tiny.get_config("stage3")
    assert config.train.objective == "dpo"
    assert config.data.scenarios.qa == 0 and config.data.scenarios.backchannel > 0
    with pytest.raises(configuration.ConfigError, match="train.init_from"):
        configuration.validate(config)
    config.train.init_from = "/tmp/some_run"
    configuration.validate(config)


def test_pipeline_emits_pair_batches_and_passes_over_dialogues_without_a_decision(
        pairs, world_setup):
    config, ctx, tokenizer = world_setup
    _, _, made = pairs
    asr = scenarios.SCENARIOS["asr"](np.random.default_rng(0), ctx)
    source = [asr] + [t for t, _ in made[:5]] + [asr]
    config.data.pipeline.batch_size = 5
    config.data.pipeline.update(shuffle=False, worker_count=0)
    dims = contract.Dims.from_config(config)
    (batch,) = list(pipeline.make_dataset(config, "train", tokenizer, seed=0, source=source,
                                          num_epochs=1, pairs=True, keep_metadata=True))
    assert batch["env_audio"].shape == (5, 2, dims.num_blocks, dims.samples_per_block)
    assert batch[pipeline.SKIPPED].tolist() == [0] * 5  # not bad samples: passed over
    assert batch["record_index"].tolist() == [1, 2, 3, 4, 5]
    for b in range(5):
        for side in range(2):
            contract.validate({n: np.asarray(batch[n][b, side]) for n in contract.FIELD_NAMES},
                              dims,
                              vocab_size=tokenizer.vocab_size)
    assert batch[preferences.DECISION_BLOCK].dtype == np.int32
    np.testing.assert_array_equal(batch["env_audio"][:, 0], batch["env_audio"][:, 1])


def test_init_from_a_run_of_another_model_names_the_fields(tmp_path):
    trained = tiny.get_config()
    (tmp_path / "config.json").write_text(trained.to_json_best_effort())
    config = tiny.get_config("stage3")
    trainer_lib._check_same_model(config, tmp_path)  # the same model: fine
    config.model.llm.width = 96
    with pytest.raises(checkpoint.CheckpointError, match=r"model.llm.width: 256 there, 96 here"):
        trainer_lib._check_same_model(config, tmp_path)


def test_on_policy_rejected_is_the_models_own_failure(pairs):
    config, tokenizer, made = pairs
    dims = contract.Dims.from_config(config)
    timing = contract.TimingRules.from_config(config)

    def pair_of(timeline, observed):
        return preferences.render_pair(timeline, dims=dims, timing=timing, thinking="explicit",
                                       tokenizer=tokenizer, rng=np.random.default_rng(0),
                                       observed_K=observed)

    seen = set()
    for timeline, pair in made:
        chosen = pair["chosen"]
        reference_K = chosen["speaking"]
        # A model that behaves as the reference makes no on-policy pair.
        with pytest.raises(preferences.NoDecision, match="as the reference"):
            pair_of(timeline, reference_K)
        failed_K = reference_K.copy()
        d = pair["decision_block"]
        if pair["kind"] == "stop_in_time":  # it speaks 6 blocks past its stop
            failed_K[d:d + 6] = True
            failure_block = d + 6
        elif pair["kind"] == "keep_speaking":  # it falls silent at the decision
            failed_K[d:] = False
            failure_block = d
        else:  # wait_for_turn: it starts speaking one block after the pause's decision
            failed_K[d + 1:d + 12] = True
            failure_block = d + 1
        on_policy = pair_of(timeline, failed_K)
        rejected_K = on_policy["rejected"]["speaking"]
        if pair["kind"] == "wait_for_turn":
            assert rejected_K[failure_block] and not rejected_K[failure_block - 1]
            assert on_policy["decision_block"] == failure_block
        elif on_policy["how"] == "stops late":  # at its own stop
            assert rejected_K[d:failure_block].all() and not rejected_K[failure_block]
        elif pair["kind"] == "stop_in_time":  # its stop came after the reply's end
            assert on_policy["how"] == "keeps speaking" and rejected_K[d]
        else:
            assert not rejected_K[failure_block] and rejected_K[failure_block - 1]
        seen.add(pair["kind"])
    assert seen == set(preferences.PAIR_KINDS)


def _folder_bytes(path):
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# Three main jobs (~1.5 min on 2 cores): behind `slow`; the parts are tested above in CI.
@pytest.mark.slow
def test_stage3_main_job_from_a_run_starts_at_log2_saves_no_reference_and_resumes(tmp_path):
    base = tmp_path / "stage2"
    runner.run(["-m", "omni_jax.main", f"--config={runner.CONFIG}", f"--workdir={base}",
                "--config.train.steps=1", "--config.train.warmup_steps=0",
                "--config.eval.suites=none"])
    stage3 = tmp_path / "stage3"
    args = ["-m", "omni_jax.main", f"--config={runner.CONFIG}", f"--workdir={stage3}",
            "--config.train.objective=dpo", f"--config.train.init_from={base}",
            "--config.train.warmup_steps=0", "--config.train.learning_rate=1e-3",
            "--config.data.num_blocks=80", "--config.data.train_dialogues=8",
            "--config.data.scenarios.asr=0", "--config.data.scenarios.tts=0",
            "--config.data.scenarios.backchannel=1", "--config.data.scenarios.pause=1",
            "--config.eval.suites=none"]
    runner.run(args + ["--config.train.steps=2"])
    logged = [json.loads(line) for line in (stage3 / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in logged if r.get("step") == 1)
    # Step 1 runs the policy at the reference: every margin 0, the loss log 2.
    assert first["dpo"] == pytest.approx(math.log(2.0), abs=1e-5)
    assert first["reward_margin"] == pytest.approx(0.0, abs=1e-5)
    # The run's tokenizer is the one its parameters speak.
    assert (stage3 / "tokenizer.model").read_bytes() == (base / "tokenizer.model").read_bytes()
    # The reference is not in the checkpoint: it holds params and AdamW's two moments as the
    # stage-2 one does (a saved reference, a fourth tree of that size, would make it ~4/3).
    ratio = _folder_bytes(stage3 / "checkpoints" / "2") / _folder_bytes(base / "checkpoints" / "1")
    assert 0.7 < ratio < 1.15, ratio
    # A resumed run reads the reference again and goes on.
    runner.run(args + ["--config.train.steps=3"])
    report = json.loads((stage3 / "report.json").read_text())
    assert report["step"] == 3 and "reward_accuracy" in report["train"]


def test_dpo_total_adds_the_sft_loss_of_the_chosen_side(pairs):
    config, _, made = pairs
    config = config.copy_and_resolve_references()
    config.loss.dpo_sft = 0.5
    two = [p for _, p in made[:2]]
    batch = {name: jnp.asarray(np.stack([np.stack([p["chosen"][name], p["rejected"][name]])
                                         for p in two]))
             for name in contract.FIELD_NAMES}
    batch[preferences.DECISION_BLOCK] = jnp.asarray([p["decision_block"] for p in two])
    rng = np.random.default_rng(0)
    k, v = config.data.num_blocks, config.data.tokenizer.vocab_size
    logits_RxKxNxV = jnp.asarray(rng.normal(size=(4, k, 1, v)), jnp.float32)
    mel_RxKxFxM = jnp.asarray(rng.normal(size=(4, k, 8, 80)) - 5.0, jnp.float32)

    def forward(params, rows):  # a stand-in model: the outputs scale with one parameter
        return dict(logits=params * logits_RxKxNxV, mel=mel_RxKxFxM,
                    speak_logit=jnp.zeros((4, k)))

    total, parts = preference.compute_dpo_losses(forward, jnp.float32(1.0), jnp.float32(1.0),
                                                 batch, config)
    chosen_outputs = dict(logits=logits_RxKxNxV[0::2], mel=mel_RxKxFxM[0::2],
                          speak_logit=jnp.zeros((2, k)))
    chosen_rows = {name: batch[name][:, 0] for name in contract.FIELD_NAMES}
    sft, _ = losses.compute_losses(chosen_outputs, chosen_rows, config)
    np.testing.assert_allclose(float(parts["sft"]), float(sft), rtol=1e-5)
    np.testing.assert_allclose(float(parts["dpo"]), math.log(2.0), rtol=1e-6)
    np.testing.assert_allclose(float(total), math.log(2.0) + 0.5 * float(sft), rtol=1e-5)


def test_on_policy_observation_runs_the_model_free_on_the_pair_dialogues(pairs, world_setup,
                                                                          tmp_path):
    _, ctx, tokenizer = world_setup
    _, _, made = pairs
    config = _tiny_dpo_config()
    dm = DuplexModel.from_config(config)
    params = nn.meta.unbox(dm.init(jax.random.key(0)))
    asr = scenarios.SCENARIOS["asr"](np.random.default_rng(0), ctx)
    source = [asr, made[0][0], made[-1][0]]
    observed = on_policy.observe(dm, params, config, tokenizer, source, batch_size=2)
    assert sorted(observed) == [1, 2]  # the asr dialogue makes no pair: not observed
    for speaking_K in observed.values():
        assert speaking_K.shape == (config.data.num_blocks,) and speaking_K.dtype == bool
    on_policy.write(tmp_path / on_policy.FILE, observed)
    loaded = on_policy.load(tmp_path / on_policy.FILE)
    assert sorted(loaded) == [1, 2]
    for index in observed:
        np.testing.assert_array_equal(loaded[index], observed[index])
