"""Configs load, variants apply, and the validator names the impossible field."""

import pytest

from configs import default, tiny
from omni_jax import configuration
from data_pipelines import contract
from omni_jax.configuration import ConfigError
from omni_jax.models import encoder, layers, llm, mamba, pretrained
from omni_jax.train import losses, sharding


def test_default_and_tiny_are_valid():
    configuration.validate(default.get_config())
    configuration.validate(tiny.get_config(), num_devices=8)


@pytest.mark.parametrize("arg, field, value", [
    ("negative_ce", "thinking", "negative_ce"),
    ("implicit,cross_attention", "fusion", "cross_attention"),
    ("transformer", "encoder.kind", "transformer"),
])
def test_tiny_variants(arg, field, value):
    config = tiny.get_config(arg)
    node = config.model
    for part in field.split("."):
        node = node[part]
    assert node == value
    configuration.validate(config)


def test_unknown_variant_is_named():
    with pytest.raises(ValueError, match="'mamba2'"):
        tiny.get_config("mamba2")


def _broken(mutate):
    config = tiny.get_config()
    mutate(config)
    return config


@pytest.mark.parametrize("mutate, field", [
    (lambda c: setattr(c.audio, "block_ms", 85), "audio.block_ms"),
    (lambda c: setattr(c.audio, "block_ms", 70), "model.encoder.stack"),
    (lambda c: setattr(c.data, "tokens_per_block", 0), "data.tokens_per_block"),
    (lambda c: setattr(c.model, "thinking", "telepathy"), "model.thinking"),
    (lambda c: setattr(c.model, "fusion", "concat"), "model.fusion"),
    (lambda c: setattr(c.model.encoder, "kind", "lstm"), "model.encoder.kind"),
    (lambda c: setattr(c.model.llm, "num_heads", 3), "model.llm.num_heads"),
    (lambda c: setattr(c.model.llm, "num_kv_heads", 3), "model.llm.num_kv_heads"),
    (lambda c: setattr(c.model.synth, "llm_layer", 4), "model.synth.llm_layer"),
    (lambda c: setattr(c.model.synth, "num_kv_heads", 3), "model.synth.num_kv_heads"),
    (lambda c: (setattr(c.model, "fusion", "cross_attention"),
                setattr(c.model.llm, "cross_attention_every", 3)),
     "model.llm.cross_attention_every"),
    (lambda c: setattr(c.model.llm, "max_len", 100), "model.llm.max_len"),
    (lambda c: setattr(c.model.llm, "window", 100), "model.llm.window"),  # not whole blocks
    (lambda c: setattr(c.model.llm, "window", 2 * c.model.llm.max_len), "model.llm.window"),
    (lambda c: setattr(c.model.llm, "window", -3), "model.llm.window"),
    (lambda c: setattr(c.model.llm, "cache_update", "twice"), "model.llm.cache_update"),
    (lambda c: setattr(c.loss, "think_form", "hinge"), "loss.think_form"),
    (lambda c: (setattr(c.model, "thinking", "negative_ce"),
                setattr(c.loss, "lambda_think", 0.5)), "loss.lambda_think"),
    (lambda c: setattr(c.data.timing, "stop_delay_blocks", 5), "data.timing"),
    (lambda c: setattr(c.data.augment, "snr_db", (30.0, 5.0)), "data.augment.snr_db"),
    (lambda c: setattr(c.data.augment, "noise_prob", 1.5), "data.augment.noise_prob"),
    (lambda c: setattr(c.data.pipeline, "crop", "middle"), "data.pipeline.crop"),
    (lambda c: c.data.scenarios.__setitem__("karaoke", 1.0), "data.scenarios"),
    (lambda c: setattr(c.data.scenarios, "qa", -1.0), "data.scenarios.qa"),
    (lambda c: setattr(c.data.tokenizer, "vocab_size", 20), "data.tokenizer.vocab_size"),
    (lambda c: setattr(c.model.synth.streaming, "kind", "wavenet"),
     "model.synth.streaming.kind"),
    (lambda c: setattr(c.model.synth.streaming, "iterations", 0),
     "model.synth.streaming.iterations"),
    (lambda c: setattr(c.model.synth.streaming, "momentum", 1.0),
     "model.synth.streaming.momentum"),
    (lambda c: setattr(c.train, "self_feedback", 1.5), "train.self_feedback"),
    (lambda c: setattr(c.eval, "echo_delay_s", 0.1), "eval.echo_delay_s"),
    (lambda c: setattr(c.data.augment, "echo_delay_ms", (10.0, 90.0)),
     "data.augment.echo_delay_ms"),
])
def test_impossible_settings_name_the_field(mutate, field):
    with pytest.raises(ConfigError, match=f"config.{field}"):
        configuration.validate(_broken(mutate))


def test_mesh_resolution_and_mismatch():
    config = tiny.get_config()
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = -1, 2, 2
    assert sharding.mesh_shape(config, 8) == {"data": 2, "fsdp": 2, "tensor": 2}
    with pytest.raises(ConfigError, match="config.mesh.data"):
        sharding.mesh_shape(config, 6)
    config.mesh.data = 4
    with pytest.raises(ConfigError, match="need 16 devices, but 8 exist"):
        configuration.validate(config, num_devices=8)
    config.mesh.data, config.mesh.fsdp = -1, -1
    with pytest.raises(ConfigError, match="only one mesh axis may be -1"):
        sharding.mesh_shape(config, 8)
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 3, 1, 1
    config.data.pipeline.batch_size = 8
    with pytest.raises(ConfigError, match="config.data.pipeline.batch_size"):
        configuration.validate(config, num_devices=3)


def test_timing_rules_come_from_config():
    config = tiny.get_config()
    config.data.timing.response_delay_blocks = 3
    rules = contract.TimingRules.from_config(config)
    assert rules.response_delay_blocks == 3 and rules.block_ms == 80
    assert rules.heard(0.159) == 1 and rules.heard(0.16) == 2


def test_config_without_eval_section_is_named():
    config = tiny.get_config()
    del config["eval"]
    with pytest.raises(ConfigError, match=r"config\.eval\.\w+: missing"):
        configuration.validate(config)


@pytest.mark.parametrize("field,allowed", [
    ("model.fusion", llm.FUSIONS), ("model.dtype", layers.DTYPES),
    ("model.remat", layers.REMAT_POLICIES), ("model.encoder.kind", encoder.ENCODER_KINDS),
    ("model.encoder.scan", mamba.MAMBA_SCANS), ("model.thinking", contract.THINKING_VARIANTS),
    ("loss.think_form", losses.THINK_FORMS),
    ("model.llm.pretrained_vocab", pretrained.VOCAB_POLICIES)])
def test_allowed_values_are_the_owners(field, allowed):
    """Every value the implementing module knows validates; the error lists exactly those."""
    *parents, leaf = field.split(".")

    def with_value(value):
        config = tiny.get_config()
        node = config
        for part in parents:
            node = node[part]
        node[leaf] = value
        if field == "model.thinking" and value == "negative_ce":
            config.loss.lambda_think = -0.1
        return config

    for value in allowed:
        configuration.validate(with_value(value))
    with pytest.raises(ConfigError, match=f"config.{field}") as error:
        configuration.validate(with_value("nope"))
    assert str(list(allowed)) in str(error.value)
