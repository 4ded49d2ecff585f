"""Config validation: reject impossible settings early, naming the field.

`validate(config, num_devices=None)` is called by every entry point right after the config
is loaded. The data side's sections (`audio`, `data`) are checked by
`data_pipelines.config_checks.validate_data`; this module adds the model, loss, training,
evaluation, checkpoint and mesh sections. Every allowed value is read from the module that
implements it (fusions from the LLM, remat policies and dtypes from the shared layers,
suites from the evaluation catalog, mesh axes from the sharding), never restated here.
"""

from __future__ import annotations

from data_pipelines import contract
from data_pipelines.config_checks import (ConfigError, check, choice, get, positive,
                                          validate_data)
from omni_jax.audio import vocoder
from omni_jax.evaluation import catalog, recognizer
from omni_jax.models import attention, encoder, layers, llm, mamba, omni, pretrained
from omni_jax.train import losses, preference, sharding

__all__ = ["ConfigError", "validate"]


def _validate_eval(config):
    get(config, "eval.suites")  # a missing section or field is named before it is read
    try:
        catalog.selected_suites(config)
    except ValueError as e:
        raise ConfigError(f"config.eval.suites: {str(e).removeprefix('config.eval.suites: ')}"
                          ) from None
    positive(config, "eval.cases", "eval.max_turn_latency_s", "eval.min_reply_s")
    positive(config, "eval.min_reply_words", allow_zero=True)
    choice(config, "eval.recognizer", recognizer.RECOGNIZERS)
    check(config.eval.echo_delay_s * 1000 <= config.audio.block_ms, "eval.echo_delay_s",
          f"{config.eval.echo_delay_s} s is more than one block ({config.audio.block_ms} ms): "
          "the echo's history is one block")
    positive(config, "eval.temperature", "eval.echo_delay_s", "eval.early_stop_tolerance_s",
             "eval.align_max_lag_s", "eval.pictures", allow_zero=True)
    check(config.eval.cases <= 1024, "eval.cases",
          f"{config.eval.cases} dialogues per suite run as one batch; use <= 1024")
    splits = tuple(get(config, "eval.splits"))
    check(bool(splits) and splits[0] == "eval" and len(set(splits)) == len(splits),
          "eval.splits", f"{splits} must start with 'eval' and not repeat")
    extra = [s for s in splits[1:] if not (s == "test" and config.data.source == "fsdd")]
    check(not extra, "eval.splits", f"{extra}: only data.source='fsdd' has another "
          "split ('test', FSDD's official test takes)")


def validate(config, num_devices: int | None = None):
    """Raises ConfigError naming the first impossible field. Returns the config."""
    validate_data(config)
    a, d = config.audio, config.data

    # Model.
    m = config.model
    choice(config, "model.fusion", llm.FUSIONS)
    choice(config, "model.thinking", contract.THINKING_VARIANTS)
    choice(config, "model.dtype", layers.DTYPES)
    choice(config, "model.remat", layers.REMAT_POLICIES)
    for part in ("encoder", "llm", "synth"):  # "" or absent: the part uses model.remat
        if m[part].get("remat", ""):
            choice(config, f"model.{part}.remat", layers.REMAT_POLICIES)
    choice(config, "model.encoder.kind", encoder.ENCODER_KINDS)
    choice(config, "model.encoder.scan", mamba.MAMBA_SCANS)
    if "attention" in m.llm:
        choice(config, "model.llm.attention", attention.ATTENTION_IMPLEMENTATIONS)
    if "scan_chunk" in m.encoder:  # 0 = the whole sequence in one chunk
        positive(config, "model.encoder.scan_chunk", allow_zero=True)
    frames_per_block = a.block_ms // a.hop_ms
    check(m.encoder.subsample * m.encoder.stack == frames_per_block, "model.encoder.stack",
          f"subsample {m.encoder.subsample} x stack {m.encoder.stack} must equal the "
          f"{frames_per_block} mel frames of one block, so that one embedding per block "
          "reaches the LLM")
    check(m.encoder.kind != "transformer" or m.encoder.width % m.encoder.num_heads == 0,
          "model.encoder.num_heads",
          f"{m.encoder.num_heads} heads do not divide encoder width {m.encoder.width}")
    check(m.llm.width % m.llm.num_heads == 0, "model.llm.num_heads",
          f"{m.llm.num_heads} heads do not divide LLM width {m.llm.width}")
    check((m.llm.width // m.llm.num_heads) % 2 == 0, "model.llm.num_heads",
          "the head dimension must be even for RoPE")
    check(m.llm.num_heads % m.llm.num_kv_heads == 0, "model.llm.num_kv_heads",
          f"{m.llm.num_kv_heads} kv heads do not divide {m.llm.num_heads} query heads")
    check(m.synth.width % m.synth.num_heads == 0, "model.synth.num_heads",
          f"{m.synth.num_heads} heads do not divide synthesizer width {m.synth.width}")
    check(m.synth.num_heads % m.synth.num_kv_heads == 0, "model.synth.num_kv_heads",
          f"{m.synth.num_kv_heads} kv heads do not divide {m.synth.num_heads} heads")
    check(m.fusion != "cross_attention" or m.llm.num_layers % m.llm.cross_attention_every == 0,
          "model.llm.cross_attention_every",
          f"{m.llm.cross_attention_every} does not divide num_layers {m.llm.num_layers}")
    needed = d.prompt_len + d.num_blocks * omni.positions_per_block(config)
    check(m.llm.max_len >= needed, "model.llm.max_len",
          f"{m.llm.max_len} positions cannot hold the prompt and {d.num_blocks} blocks "
          f"({needed} positions)")
    if "cache_update" in m.llm:
        choice(config, "model.llm.cache_update", llm.CACHE_UPDATES)
    window = int(m.llm.get("window", 0))
    per_block = omni.positions_per_block(config)
    check(window >= 0, "model.llm.window", f"{window} is negative (0 = max_len - prompt_len)")
    check(window % per_block == 0, "model.llm.window",
          f"{window} positions are not whole blocks of {per_block}")
    check(window + d.prompt_len <= m.llm.max_len, "model.llm.window",
          f"{window} positions after a prompt of {d.prompt_len} exceed max_len {m.llm.max_len}")
    check((window or m.llm.max_len - d.prompt_len) >= per_block, "model.llm.window",
          f"the window holds no block of {per_block} positions")
    positive(config, "model.encoder.max_blocks", "model.synth.mlp_dim")
    layer = m.synth.llm_layer
    check(-m.llm.num_layers <= layer < m.llm.num_layers, "model.synth.llm_layer",
          f"{layer} is past the LLM depth {m.llm.num_layers}")
    positive(config, "model.llm.lora_rank", allow_zero=True)
    choice(config, "model.synth.streaming.kind", vocoder.registered_streaming_vocoders())
    positive(config, "model.synth.streaming.iterations")
    positive(config, "model.synth.streaming.lookahead_frames",
             "model.synth.streaming.nnls_iterations", allow_zero=True)
    share = config.train.self_feedback
    check(0.0 <= share <= 1.0, "train.self_feedback", f"must be in [0, 1], got {share}")
    momentum = config.model.synth.streaming.momentum
    check(0.0 <= momentum < 1.0, "model.synth.streaming.momentum",
          f"must be in [0, 1), got {momentum}")
    choice(config, "model.llm.pretrained_vocab", pretrained.VOCAB_POLICIES)

    # Loss.
    choice(config, "loss.think_form", losses.THINK_FORMS)
    if m.thinking == "negative_ce":
        check(config.loss.lambda_think < 0, "loss.lambda_think",
              f"negative_ce needs lambda_think < 0, got {config.loss.lambda_think}")
    positive(config, "loss.text", "loss.speech", "loss.think", "loss.shift",
             "loss.transition", "loss.speak_head", "loss.ctc", allow_zero=True)
    check(not config.loss.ctc or m.encoder.ctc_head, "loss.ctc",
          f"{config.loss.ctc} needs model.encoder.ctc_head=True (the head it trains)")

    positive(config, "loss.dpo_sft", allow_zero=True)

    # Training.
    choice(config, "train.objective", preference.OBJECTIVES)
    if config.train.objective == "dpo":
        check(bool(config.train.init_from), "train.init_from",
              "DPO needs the stage-2 run directory (its parameters start the run and are "
              "the frozen reference)")
        positive(config, "loss.dpo_beta")
        positive(config, "train.dpo_on_policy_dialogues", allow_zero=True)
    positive(config, "train.steps", "train.learning_rate", "train.log_every")
    positive(config, "train.warmup_steps", "train.weight_decay", "train.grad_clip",
             allow_zero=True)
    check(config.train.warmup_steps < config.train.steps, "train.warmup_steps",
          f"{config.train.warmup_steps} must be < train.steps={config.train.steps}")
    positive(config, "train.profile_steps", "train.compilation_cache_min_s", allow_zero=True)
    positive(config, "train.eval_every", "train.suites_every", allow_zero=True)
    every, suites_every = config.train.eval_every, config.train.suites_every
    check(not suites_every or (every and suites_every % every == 0), "train.suites_every",
          f"{suites_every} must be a multiple of train.eval_every={every} (the suites run "
          "at evaluation steps)")
    positive(config, "checkpoint.keep_last")
    positive(config, "checkpoint.keep_every", allow_zero=True)
    _validate_eval(config)
    sharding.logical_rules(config)  # unknown mesh axes
    if num_devices is not None:
        sharding.check_batch(config, num_devices)
    return config
