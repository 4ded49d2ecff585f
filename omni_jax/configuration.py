"""Config validation: reject impossible settings early, naming the field.

`validate(config)` is called by every entry point right after the config is loaded.
"""

from __future__ import annotations

import math

from data_pipelines import contract

FUSIONS = ("interleave", "cross_attention")
ENCODER_KINDS = ("mamba", "transformer")
MAMBA_SCANS = ("associative", "sequential")
THINK_FORMS = ("paper", "unlikelihood")
DTYPES = ("float32", "bfloat16")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
CROPS = ("start", "random")
BAD_SAMPLE_POLICIES = ("raise", "skip")
TOKENIZER_TYPES = ("unigram", "bpe", "word")
SCENARIOS = ("asr", "enhancement", "target_speaker", "tts", "qa", "barge_in_ci",
             "barge_in_echo", "barge_in_cd", "backchannel", "third_speaker", "multi_turn")
MESH_AXES = ("data", "fsdp", "tensor")
PRETRAINED_VOCAB = ("exact", "prefix")  # see omni_jax.models.pretrained
# data.source="corpus": the layouts of data_pipelines.sources.real.BUILDERS (named here so
# that validating needs no tensorflow_datasets import), and data.corpus.replies values.
REAL_CORPUS_KINDS = ("librispeech", "libriheavy", "gigaspeech", "manifest")
CORPUS_REPLIES = ("auto", "yes", "no")


class ConfigError(ValueError):
    """An impossible or unknown setting; the message names the field."""


def _fail(field: str, msg: str):
    raise ConfigError(f"config.{field}: {msg}")


def _check(cond: bool, field: str, msg: str):
    if not cond:
        _fail(field, msg)


def _choice(config, field: str, choices):
    value = _get(config, field)
    _check(value in choices, field, f"{value!r} is not one of {list(choices)}")


def _get(config, field: str):
    node = config
    for part in field.split("."):
        if part not in node:
            _fail(field, "missing")
        node = node[part]
    return node


def _positive(config, *fields: str, allow_zero: bool = False):
    for field in fields:
        value = _get(config, field)
        ok = value >= 0 if allow_zero else value > 0
        _check(ok, field, f"must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def _range(config, field: str, lo: float | None = None, hi: float | None = None):
    value = tuple(_get(config, field))
    _check(len(value) == 2 and value[0] <= value[1], field,
           f"must be a (low, high) pair with low <= high, got {value}")
    if lo is not None:
        _check(value[0] >= lo, field, f"low end {value[0]} < {lo}")
    if hi is not None:
        _check(value[1] <= hi, field, f"high end {value[1]} > {hi}")


def _probability(config, *fields: str):
    for field in fields:
        value = _get(config, field)
        _check(0.0 <= value <= 1.0, field, f"must be a probability in [0, 1], got {value}")


def timing_rules(config) -> contract.TimingRules:
    t = config.data.timing
    try:
        return contract.TimingRules(
            block_ms=config.audio.block_ms,
            response_delay_blocks=t.response_delay_blocks,
            synth_delay_tokens=t.synth_delay_tokens,
            stop_delay_blocks=t.stop_delay_blocks,
            stop_window_blocks=t.stop_window_blocks,
            asr_lag_blocks=t.asr_lag_blocks,
        )
    except contract.ContractError as e:
        raise ConfigError(f"config.data.{e}") from None


def mesh_shape(config, num_devices: int) -> dict[str, int]:
    """Resolves the mesh axis sizes (-1 = the rest) for `num_devices` devices."""
    sizes = {axis: int(config.mesh[axis]) for axis in MESH_AXES}
    free = [a for a, s in sizes.items() if s == -1]
    if len(free) > 1:
        _fail(f"mesh.{free[1]}", f"only one mesh axis may be -1, got {free}")
    for axis, size in sizes.items():
        _check(size == -1 or size >= 1, f"mesh.{axis}", f"must be >= 1 or -1, got {size}")
    fixed = math.prod(s for s in sizes.values() if s != -1)
    if free:
        _check(num_devices % fixed == 0, f"mesh.{free[0]}",
               f"{num_devices} devices are not divisible by the other axes' product {fixed}")
        sizes[free[0]] = num_devices // fixed
    _check(math.prod(sizes.values()) == num_devices, "mesh",
           f"axes {sizes} need {math.prod(sizes.values())} devices, but {num_devices} exist")
    return sizes


def _validate_eval(config):
    from omni_jax.evaluation import suites  # numpy-only at import

    try:
        suites.selected_suites(config)
    except ValueError as e:
        _fail("eval.suites", str(e).removeprefix("config.eval.suites: "))
    _positive(config, "eval.cases", "eval.max_turn_latency_s")
    _positive(config, "eval.temperature", "eval.echo_delay_s", "eval.early_stop_tolerance_s",
              "eval.align_max_lag_s", "eval.pictures", allow_zero=True)
    _check(config.eval.cases <= 1024, "eval.cases",
           f"{config.eval.cases} dialogues per suite run as one batch; use <= 1024")
    splits = tuple(config.eval.get("splits", ("eval",)))
    _check(bool(splits) and splits[0] == "eval" and len(set(splits)) == len(splits),
           "eval.splits", f"{splits} must start with 'eval' and not repeat")
    extra = [s for s in splits[1:] if not (s == "test" and config.data.source == "fsdd")]
    _check(not extra, "eval.splits", f"{extra}: only data.source='fsdd' has another "
           "split ('test', FSDD's official test takes)")


def _validate_corpus(config):
    """data.corpus, read when data.source='corpus' (see data_pipelines.sources.real)."""
    _choice(config, "data.corpus.kind", REAL_CORPUS_KINDS)
    spec = config.data.corpus
    _check(bool(_get(config, "data.corpus.root")), "data.corpus.root",
           f"data.source='corpus' needs the {spec.kind} corpus folder")
    for field in ("train_parts", "eval_parts"):
        parts = _get(config, f"data.corpus.{field}")
        _check(isinstance(parts, (tuple, list)) and all(isinstance(p, str) and p
                                                        for p in parts),
               f"data.corpus.{field}", f"{parts!r} is not a tuple of part names")
    _positive(config, "data.corpus.max_seconds", allow_zero=True)
    _choice(config, "data.corpus.replies", CORPUS_REPLIES)
    _positive(config, "data.corpus.tokenizer_texts", allow_zero=True)


def validate(config, num_devices: int | None = None):
    """Raises ConfigError naming the first impossible field. Returns the config."""
    # Audio and blocks.
    _positive(config, "audio.sample_rate", "audio.block_ms", "audio.win_ms", "audio.hop_ms",
              "audio.n_mels")
    a = config.audio
    try:
        contract.samples_per_block(a.sample_rate, a.block_ms)
    except contract.ContractError as e:
        _fail("audio.block_ms", str(e))
    for field in ("win_ms", "hop_ms"):
        samples = a.sample_rate * a[field] / 1000.0
        _check(samples == int(samples), f"audio.{field}",
               f"{a[field]} ms is not a whole number of samples at {a.sample_rate} Hz")
    _check(a.block_ms % a.hop_ms == 0, "audio.block_ms",
           f"{a.block_ms} ms is not a multiple of the frame hop audio.hop_ms={a.hop_ms}")
    _check(a.win_ms >= a.hop_ms, "audio.win_ms", f"window {a.win_ms} ms < hop {a.hop_ms} ms")

    # Data.
    d = config.data
    _positive(config, "data.num_blocks", "data.tokens_per_block", "data.train_dialogues",
              "data.max_text_words")
    _positive(config, "data.prompt_len", "data.eval_dialogues", allow_zero=True)
    _choice(config, "data.on_bad_sample", BAD_SAMPLE_POLICIES)
    source = d.source
    _check(source in ("embedded", "fsdd", "corpus") or source.startswith("tfds:"),
           "data.source", f"{source!r} is not 'embedded', 'fsdd', 'corpus' or 'tfds:NAME'")
    if source == "fsdd":
        _check(bool(d.get("real_dir")), "data.real_dir",
               "data.source='fsdd' needs the FSDD folder (the one holding recordings/)")
        digits = d.fsdd
        _check(1 <= digits.min_digits <= digits.max_digits, "data.fsdd.min_digits",
               f"need 1 <= min_digits <= max_digits, got {digits.min_digits}, "
               f"{digits.max_digits}")
        _range(config, "data.fsdd.pause_s", lo=0.0)
    if source == "corpus":
        _validate_corpus(config)
    unknown = sorted(set(d.scenarios) - set(SCENARIOS))
    _check(not unknown, "data.scenarios", f"unknown scenarios {unknown}; known {SCENARIOS}")
    for name, weight in d.scenarios.items():
        _check(weight >= 0, f"data.scenarios.{name}", f"weight must be >= 0, got {weight}")
    _check(sum(d.scenarios.values()) > 0, "data.scenarios", "every weight is 0")
    _positive(config, "data.voices.num_user", "data.voices.num_third",
              "data.voices.num_assistant")
    _positive(config, "data.voices.num_eval_user", allow_zero=d.eval_dialogues == 0)
    timing_rules(config)
    _probability(config, "data.augment.noise_prob", "data.augment.reverb_prob",
                 "data.augment.echo_prob")
    _range(config, "data.augment.snr_db")
    _range(config, "data.augment.rt60_s", lo=0.0)
    _range(config, "data.augment.echo_gain", lo=0.0)
    _range(config, "data.augment.echo_delay_ms", lo=0.0)
    _range(config, "data.augment.gain_db")
    _choice(config, "data.tokenizer.model_type", TOKENIZER_TYPES)
    reserved = 4 + len(contract.STATE_TOKENS)
    _check(d.tokenizer.vocab_size > reserved + 26, "data.tokenizer.vocab_size",
           f"{d.tokenizer.vocab_size} leaves no room beside {reserved} reserved tokens and "
           "the alphabet")
    _positive(config, "data.pipeline.batch_size")
    _positive(config, "data.pipeline.worker_count", "data.pipeline.prefetch_buffer",
              allow_zero=True)
    _choice(config, "data.pipeline.crop", CROPS)
    _check(d.pipeline.num_epochs == -1 or d.pipeline.num_epochs >= 1,
           "data.pipeline.num_epochs", f"must be -1 or >= 1, got {d.pipeline.num_epochs}")

    # Model.
    m = config.model
    _choice(config, "model.fusion", FUSIONS)
    _choice(config, "model.thinking", contract.THINKING_VARIANTS)
    _choice(config, "model.dtype", DTYPES)
    _choice(config, "model.remat", REMAT_POLICIES)
    for part in ("encoder", "llm", "synth"):  # "" or absent: the part uses model.remat
        if m[part].get("remat", ""):
            _choice(config, f"model.{part}.remat", REMAT_POLICIES)
    _choice(config, "model.encoder.kind", ENCODER_KINDS)
    _choice(config, "model.encoder.scan", MAMBA_SCANS)
    frames_per_block = a.block_ms // a.hop_ms
    _check(m.encoder.subsample * m.encoder.stack == frames_per_block, "model.encoder.stack",
           f"subsample {m.encoder.subsample} x stack {m.encoder.stack} must equal the "
           f"{frames_per_block} mel frames of one block, so that one embedding per block "
           "reaches the LLM")
    _check(m.encoder.kind != "transformer" or m.encoder.width % m.encoder.num_heads == 0,
           "model.encoder.num_heads",
           f"{m.encoder.num_heads} heads do not divide encoder width {m.encoder.width}")
    _check(m.llm.width % m.llm.num_heads == 0, "model.llm.num_heads",
           f"{m.llm.num_heads} heads do not divide LLM width {m.llm.width}")
    _check((m.llm.width // m.llm.num_heads) % 2 == 0, "model.llm.num_heads",
           "the head dimension must be even for RoPE")
    _check(m.llm.num_heads % m.llm.num_kv_heads == 0, "model.llm.num_kv_heads",
           f"{m.llm.num_kv_heads} kv heads do not divide {m.llm.num_heads} query heads")
    _check(m.synth.width % m.synth.num_heads == 0, "model.synth.num_heads",
           f"{m.synth.num_heads} heads do not divide synthesizer width {m.synth.width}")
    _check(m.synth.num_heads % m.synth.num_kv_heads == 0, "model.synth.num_kv_heads",
           f"{m.synth.num_kv_heads} kv heads do not divide {m.synth.num_heads} heads")
    _check(m.fusion != "cross_attention" or m.llm.num_layers % m.llm.cross_attention_every == 0,
           "model.llm.cross_attention_every",
           f"{m.llm.cross_attention_every} does not divide num_layers {m.llm.num_layers}")
    per_block = d.tokens_per_block + (2 if m.fusion == "interleave" else 0)
    needed = d.prompt_len + d.num_blocks * per_block
    _check(m.llm.max_len >= needed, "model.llm.max_len",
           f"{m.llm.max_len} positions cannot hold the prompt and {d.num_blocks} blocks "
           f"({needed} positions)")
    _positive(config, "model.encoder.max_blocks", "model.synth.mlp_dim")
    layer = m.synth.llm_layer
    _check(-m.llm.num_layers <= layer < m.llm.num_layers, "model.synth.llm_layer",
           f"{layer} is past the LLM depth {m.llm.num_layers}")
    _positive(config, "model.llm.lora_rank", allow_zero=True)
    vocab_policy = m.llm.get("pretrained_vocab", "exact")  # absent in older saved configs
    _check(vocab_policy in PRETRAINED_VOCAB, "model.llm.pretrained_vocab",
           f"{vocab_policy!r} is not one of {list(PRETRAINED_VOCAB)}")

    # Loss.
    _choice(config, "loss.think_form", THINK_FORMS)
    if m.thinking == "negative_ce":
        _check(config.loss.lambda_think < 0, "loss.lambda_think",
               f"negative_ce needs lambda_think < 0, got {config.loss.lambda_think}")
    _positive(config, "loss.text", "loss.speech", "loss.think", "loss.shift",
              "loss.transition", "loss.speak_head", allow_zero=True)

    # Training.
    _positive(config, "train.steps", "train.learning_rate", "train.log_every")
    _positive(config, "train.warmup_steps", "train.weight_decay", "train.grad_clip",
              allow_zero=True)
    _check(config.train.warmup_steps < config.train.steps, "train.warmup_steps",
           f"{config.train.warmup_steps} must be < train.steps={config.train.steps}")
    _positive(config, "checkpoint.keep_last")
    _positive(config, "checkpoint.keep_every", allow_zero=True)
    if "eval" in config:  # run directories written before the suites existed lack it
        _validate_eval(config)
    if num_devices is not None:
        sizes = mesh_shape(config, num_devices)
        batch_shards = sizes["data"] * sizes["fsdp"]
        _check(d.pipeline.batch_size % batch_shards == 0, "data.pipeline.batch_size",
               f"{d.pipeline.batch_size} is not divisible by data x fsdp = {batch_shards}")
    return config
