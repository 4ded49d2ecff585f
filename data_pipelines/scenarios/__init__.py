"""Scenario generators: each writes one dialogue as a `timeline.Timeline`.

A generator is `generate(rng: numpy.random.Generator, ctx: ScenarioContext) -> Timeline`,
deterministic given `rng`. `SCENARIOS` maps the names of `config.data.scenarios` to them;
`sample_scenario` draws a name from that mixture; `make_context` builds the context from a
config. The renderer turns any Timeline into a BlockSequence; scenarios never build tensors.

Every generator draws its people through `speakers`: the user's speech comes from
`ctx.user_speech` (a real corpus: `real_speech.CorpusBank`, `FsddBank`) when it is set, else
from espeak voices speaking the world's text; `speakers` says which lines a corpus supplies
(free sentences, questions) and which keep their words in an espeak voice (stop phrases,
backchannels, follow-ups), and what the assistant answers a corpus question with.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from data_pipelines.scenarios import barge_in, dialogue, listening
from data_pipelines.scenarios.base import (DoesNotFit, ScenarioContext,  # noqa: F401
                                           make_context)
from data_pipelines.timeline import Timeline

Generator = Callable[[np.random.Generator, ScenarioContext], Timeline]

SCENARIOS: dict[str, Generator] = {
    "asr": listening.asr,
    "enhancement": listening.enhancement,
    "target_speaker": listening.target_speaker,
    "tts": listening.tts,
    "qa": dialogue.qa,
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


def generate(name: str, rng: np.random.Generator, ctx: ScenarioContext) -> Timeline:
    """The Timeline of scenario `name`, its user turns from `ctx.user_speech` when set (a
    ValueError names an unknown scenario)."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; known: {list(SCENARIOS)}")
    return SCENARIOS[name](rng, ctx)
