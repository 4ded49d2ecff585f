"""Config code every experiment file shares (big_vision's `configs/common.py`): named
variants and the paper's training stages as freeze patterns.

Configs import only `configs` modules and ml_collections: a config file is data, and
reading one never imports the library.
"""

from __future__ import annotations

# The LLM's pretrained base: everything under llm/ except the LoRA adapters and the
# cross-attention layers (new in the cross_attention fusion, so never pretrained).
# Patterns are Python regexes over parameter paths ('llm/layers/layer_0/attn/q/kernel'),
# matched whole (`omni_jax.train.optim`).
LLM_BASE = r"llm/(?!.*(/lora_[ab]$|/cross_)).*"
STAGE_FROZEN = {
    # Connector + LoRA (+ cross-attention, speak head) on ASR/QA; synthesizer not yet.
    "stage1": (r"encoder/.*", LLM_BASE, r"synth/.*"),
    # Adds the synthesizer, on duplex data.
    "stage2": (r"encoder/.*", LLM_BASE),
    # DPO on barge-in/backchannel pairs trains what stage 2 trains.
    "dpo": (r"encoder/.*", LLM_BASE),
    # DPO of a model trained without LoRA (the tiny one): the connector and the LLM; the
    # synthesizer is not scored by DPO and stays.
    "dpo_no_lora": (r"encoder/.*", r"synth/.*"),
    "full": (),
}
# The scenarios that make preference pairs (data_pipelines.preferences.PAIR_SCENARIOS; a
# test keeps the two equal: configs import nothing from the library).
PAIR_SCENARIOS = ("barge_in_ci", "barge_in_echo", "barge_in_cd", "backchannel",
                  "third_speaker", "pause")


def stage_frozen_patterns(stage: str) -> tuple[str, ...]:
    """The `train.frozen` patterns of one of the paper's training stages."""
    if stage not in STAGE_FROZEN:
        raise ValueError(f"unknown training stage {stage!r}; known: {sorted(STAGE_FROZEN)}")
    return STAGE_FROZEN[stage]


def stage(name: str, scenarios=None, lora_rank: int = 8):
    """A variant: stage `name`'s freeze patterns, LoRA on (rank `lora_rank` unless the config
    sets one) and, when `scenarios` is given, every other scenario's weight set to 0."""
    def apply(config):
        config.model.llm.lora_rank = config.model.llm.lora_rank or lora_rank
        config.train.frozen = stage_frozen_patterns(name)
        if scenarios is not None:
            for scenario in config.data.scenarios:
                if scenario not in scenarios:
                    config.data.scenarios[scenario] = 0.0
    return apply


DPO_SUITES = ("turn_taking,pause_handling,barge_in_ci,barge_in_cd,echo,backchannel,"
              "third_speaker,listening")


def dpo_stage(pattern: str = "dpo", learning_rate: float = 1e-6, steps: int = 40,
              lora_rank: int = 8):
    """A variant: stage 3, DPO on preference pairs of the pair scenarios (every other
    scenario's weight 0), starting from `train.init_from` (the stage-2 run directory, set
    on the command line) with freeze patterns `pattern`. The paper: lr 1e-6, 10-40 steps."""
    def apply(config):
        if pattern == "dpo":
            config.model.llm.lora_rank = config.model.llm.lora_rank or lora_rank
        config.train.objective = "dpo"
        config.train.frozen = stage_frozen_patterns(pattern)
        config.train.learning_rate = learning_rate
        config.train.steps = steps
        config.train.warmup_steps = 0
        for scenario in config.data.scenarios:
            if scenario not in PAIR_SCENARIOS:
                config.data.scenarios[scenario] = 0.0
        # What DPO is to change, and turn-taking (which it must not break), on the same
        # cases as the run it starts from.
        config.eval.suites = DPO_SUITES
    return apply


def ctc_head(weight: float):
    """A variant: the encoder's CTC head on, its loss weighted `weight`."""
    def apply(config):
        config.model.encoder.ctc_head = True
        config.loss.ctc = weight
    return apply


def apply_variants(config, arg, variants):
    """Applies comma-separated named variants, each a (field, value) pair or a function of
    the config; an unknown name is an error naming it."""
    for name in filter(None, (arg or "").split(",")):
        if name not in variants:
            raise ValueError(f"unknown config variant {name!r}; known: {sorted(variants)}")
        if callable(variants[name]):
            variants[name](config)
            continue
        path, value = variants[name]
        *parents, leaf = path.split(".")
        node = config
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config
