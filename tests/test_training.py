"""Learning: the trainer overfits a small real batch under every thinking variant, and a
training stage leaves its frozen parameters bitwise unchanged."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from data_pipelines import contract, render, scenarios, tokenizer as tokenizer_lib, world
from omni_jax.train import losses, optim
from omni_jax.train.trainer import Trainer, computed


@functools.cache
def _tokenizer(tmp_dir):
    return tokenizer_lib.train_tokenizer(world.all_texts(), 320, "unigram",
                                         f"{tmp_dir}/tokenizer.model")


def _config(variant):
    c = tiny.get_config(variant)
    c.data.num_blocks = 64
    c.data.pipeline.batch_size = 2
    c.model.encoder.num_layers, c.model.encoder.width = 1, 32
    c.model.llm.num_layers, c.model.llm.width, c.model.llm.mlp_dim = 2, 64, 128
    c.model.synth.num_layers, c.model.synth.width = 1, 32
    c.train.steps, c.train.warmup_steps, c.train.learning_rate = 100, 5, 3e-3
    c.model.synth.streaming.iterations = 4  # the same speech path, cheaper phase search
    return c


def _real_batch(config, tokenizer):
    """Two rendered dialogues (a QA turn and a barge-in) in the config's thinking variant."""
    ctx = scenarios.make_context(config, "train")
    dims = contract.Dims.from_config(config)
    records = []
    for i, name in enumerate(("qa", "barge_in_ci")):
        rng = np.random.default_rng(i)
        timeline = scenarios.SCENARIOS[name](rng, ctx)
        records.append(render.render_fixed(
            timeline, dims=dims, timing=contract.TimingRules.from_config(config),
            thinking=config.model.thinking, tokenizer=tokenizer, rng=rng, augment=None))
    return {f: np.stack([r[f] for r in records]) for f in contract.FIELD_NAMES}


TOKEN_PARTS = {"explicit": ("text", "think", "shift"), "negative_ce": ("text", "transition"),
               "implicit": ("text", "think", "speak")}


# One variant in CI; the other two behind `slow` (~55 s each on 2 cores).
@pytest.mark.parametrize("variant", ["explicit",
                                     pytest.param("negative_ce", marks=pytest.mark.slow),
                                     pytest.param("implicit", marks=pytest.mark.slow)])
def test_overfits_a_small_batch(variant, tmp_path_factory):
    config = _config(variant)
    tokenizer = _tokenizer(str(tmp_path_factory.getbasetemp()))
    trainer = Trainer(config, tmp_path_factory.mktemp(variant))
    batch = trainer.global_batch(_real_batch(config, tokenizer))
    state = trainer.init_state()
    history = []
    for _ in range(80):
        state, parts = trainer.train_step(state, batch)
        history.append(computed(parts))
    first, last = history[0], history[-1]
    for name in TOKEN_PARTS[variant]:
        assert last[name] < first[name] / 5, (name, first[name], last[name])
    assert last["speech"] < first["speech"] / 2
    assert last["acc_text"] > 0.9
    assert int(optim.nonfinite_count(state.opt_state)) == 0


def test_stage_training_leaves_frozen_parameters_bitwise_unchanged(tmp_path):
    config = _config("stage2")
    config.model.llm.lora_rank = 4
    tokenizer = _tokenizer(str(tmp_path))
    trainer = Trainer(config, tmp_path)
    batch = trainer.global_batch(_real_batch(config, tokenizer))
    state = trainer.init_state()
    before = jax.device_get(state.params)
    for _ in range(3):
        state, _ = trainer.train_step(state, batch)
    after = jax.device_get(state.params)
    flat_before = dict(zip(optim.param_paths(before), jax.tree.leaves(before)))
    flat_after = dict(zip(optim.param_paths(after), jax.tree.leaves(after)))
    frozen = [p for p in flat_before if optim.is_frozen(p, config.train.frozen)]
    trained = [p for p in flat_before if p not in frozen]
    assert any(p.startswith("encoder/") for p in frozen)
    assert any(re.search(r"lora_[ab]$", p) for p in trained)
    assert any(p.startswith("synth/") for p in trained)
    for path in frozen:
        np.testing.assert_array_equal(flat_after[path], flat_before[path], err_msg=path)
    # LoRA B starts at zero and must move; so must the connector.
    assert any(not np.array_equal(flat_after[p], flat_before[p]) for p in trained
               if p.endswith("lora_b"))
    assert any(not np.array_equal(flat_after[p], flat_before[p]) for p in trained
               if p.startswith("connector/"))


def test_logged_window_keeps_the_latest_nonfinite_count():
    # A window of logged steps is averaged, but the consecutive non-finite counter must
    # not be: averaging 1, 2, 3 would hide a run that reached the stop limit.
    from omni_jax.train.trainer import step_metrics

    config = _config("explicit")
    parts = {name: jnp.float32(0.0) for name in losses.output_names(config)}
    window = None
    for loss, count in ((1.0, 1), (3.0, 2), (5.0, 3)):
        step = step_metrics(config).single_from_model_output(
            **dict(parts, loss=jnp.float32(loss)), grad_norm=jnp.float32(loss),
            nonfinite=jnp.int32(count))
        window = step if window is None else window.merge(step)
    summary = computed(window)
    assert summary["loss"] == summary["grad_norm"] == 3.0 and summary["nonfinite"] == 3.0


def test_frozen_parameters_cost_no_gradient_work():
    """Only the trainable subtree is differentiated: in stage 1 (encoder, LLM base and
    synthesizer frozen) the compiled step's backward dots (its dots beyond the forward's:
    the loss alone, compiled the same way) fall far below the full step's, because no
    frozen weight gradient and no encoder backward are built; the optimizer holds moments
    for the trainable leaves alone."""
    from configs import common as config_common
    from helpers import tiny_trainer
    from omni_jax.benchmarks import common, flops
    from omni_jax.train import sharding

    backward, moments = {}, {}
    for stage in ("full", "stage1"):
        config = tiny_trainer.get_config()
        config.model.llm.lora_rank = 4  # the same parameters in both runs
        if stage == "stage1":
            config.train.frozen = config_common.stage_frozen_patterns("stage1")
        trainer = common.make_trainer(config)
        batch = common.abstract_batch(config, config.data.pipeline.batch_size)
        compiled, _, _ = common.compile_train_step(trainer, batch)
        with sharding.activate(trainer.mesh, trainer.rules):
            forward = jax.jit(lambda p, b: trainer._loss_fn(p, b)[0]).lower(
                trainer.abstract_state.params, batch).compile()
        backward[stage] = (flops.hlo_dot_flops(compiled.as_text())["flops"]
                           - flops.hlo_dot_flops(forward.as_text())["flops"])
        trainable, frozen = trainer.optimizer.split(trainer.abstract_state.params)
        moments[stage] = len(jax.tree.leaves(trainable)), len(jax.tree.leaves(frozen))
    assert moments["full"][1] == 0 and moments["stage1"][1] > moments["stage1"][0]
    # Stage 1 keeps the LLM's activation backward (LoRA sits in every layer) and the
    # synthesizer's (the speech loss reaches the LLM through it), without their weights.
    assert 0 < backward["stage1"] < 0.6 * backward["full"], backward
