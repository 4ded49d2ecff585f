"""Scenario generators: each writes one dialogue as a `timeline.Timeline`.

A generator is `generate(rng: numpy.random.Generator, ctx: ScenarioContext) -> Timeline`,
deterministic given `rng` (build it with `seeds.rng(seed, domain, *ids)`, one stream per
domain and ids). `SCENARIOS` maps the names of `config.data.scenarios` to them;
`sample_scenario` draws a name from that mixture; `make_context` builds the context from a
config (voices, timing, and the user-speech bank `config.data.source` names); `generate`
runs one scenario. The renderer turns any Timeline into a BlockSequence; scenarios never
build tensors.

Every generator draws its people through `speakers`: the user's speech comes from
`ctx.user_speech` (a real corpus: `real_speech.CorpusBank`, `FsddBank`) when it is set, else
from espeak voices speaking the world's text; `speakers` says which lines a corpus supplies
(free sentences, questions) and which keep their words in an espeak voice (stop phrases,
backchannels, follow-ups), and what the assistant answers a corpus question with.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import numpy as np

from data_pipelines import contract, voices
from data_pipelines.scenarios import barge_in, dialogue, listening, real_speech
from data_pipelines.scenarios.base import DoesNotFit, ScenarioContext  # noqa: F401
from data_pipelines.scenarios.real_speech import UtteranceBank
from data_pipelines.timeline import Timeline

Generator = Callable[[np.random.Generator, ScenarioContext], Timeline]

SCENARIOS: dict[str, Generator] = {
    "asr": listening.asr,
    "enhancement": listening.enhancement,
    "target_speaker": listening.target_speaker,
    "tts": listening.tts,
    "qa": dialogue.qa,
    "pause": dialogue.pause,
    "barge_in_ci": barge_in.barge_in_ci,
    "barge_in_echo": barge_in.barge_in_echo,
    "barge_in_cd": barge_in.barge_in_cd,
    "backchannel": barge_in.backchannel,
    "third_speaker": barge_in.third_speaker,
    "multi_turn": dialogue.multi_turn,
}


def sample_scenario(rng: np.random.Generator, weights: Mapping[str, float]) -> str:
    """A scenario name drawn with probability proportional to `weights` (0 disables one)."""
    unknown = sorted(set(weights) - set(SCENARIOS))
    if unknown:
        raise ValueError(f"data.scenarios: unknown scenarios {unknown}; known: {list(SCENARIOS)}")
    # Registry order, not the mapping's, so that the draw does not depend on key order.
    names = [name for name in SCENARIOS if weights.get(name, 0.0) > 0]
    if any(float(w) < 0 for w in weights.values()) or not names:
        raise ValueError(f"data.scenarios: weights must be >= 0 with one > 0, got {dict(weights)}")
    p = np.array([float(weights[name]) for name in names])
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def make_context(config, split: str, synth: voices.Synthesizer | None = None,
                 workdir=None) -> ScenarioContext:
    """A context from an ml_collections config (audio.*, data.num_blocks, data.voices.*, ...).

    `workdir`: the run directory whose corpus dir holds a real corpus (data.source='corpus')
    once built; None = data.corpus.data_dir or data.corpus_dir (see
    `paths.real_corpus_dir`). The other sources ignore it.
    """
    v = config.data.voices
    sets = voices.voice_sets(v.num_user, v.num_eval_user, v.num_third, v.num_assistant,
                             language=v.language, seed=config.seed,
                             num_eval_third=v.get("num_eval_third",
                                                  voices.DEFAULT_NUM_EVAL_THIRD))
    if synth is None:
        synth = voices.Synthesizer(config.audio.sample_rate, max_words=config.data.max_text_words)
    return ScenarioContext(
        synth=synth, voices=sets, split=split, sample_rate=config.audio.sample_rate,
        max_duration_s=config.data.num_blocks * config.audio.block_ms / 1000.0,
        block_ms=config.audio.block_ms, timing=contract.TimingRules.from_config(config),
        tokens_per_block=config.data.tokens_per_block,
        user_speech=real_speech.bank_from_config(config, split, workdir=workdir))


def generate(name: str, rng: np.random.Generator, ctx: ScenarioContext,
             user_speech: UtteranceBank | None = None) -> Timeline:
    """The Timeline of scenario `name`, its user turns from `user_speech` when given, else
    from `ctx.user_speech` when set (a ValueError names an unknown scenario)."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; known: {list(SCENARIOS)}")
    if user_speech is not None:
        ctx = dataclasses.replace(ctx, user_speech=user_speech)
    return SCENARIOS[name](rng, ctx)
