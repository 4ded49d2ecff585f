"""Scenario generators: each writes one dialogue as a `timeline.Timeline`.

A generator is `generate(rng: numpy.random.Generator, ctx: ScenarioContext) -> Timeline`,
deterministic given `rng`. `SCENARIOS` maps the names of `config.data.scenarios` to them;
`sample_scenario` draws a name from that mixture; `make_context` builds the context from a
config. The renderer turns any Timeline into a BlockSequence; scenarios never build tensors.
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
    """The Timeline of scenario `name` (a ValueError names an unknown one)."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; known: {list(SCENARIOS)}")
    if ctx.user_speech is not None:
        from data_pipelines.scenarios import real_speech

        real = real_speech.generators(ctx.user_speech)
        if name not in real:
            raise ValueError(f"scenario {name!r} cannot draw user turns from real speech "
                             f"yet; supported: {sorted(real)}")
        return real[name](rng, ctx)
    return SCENARIOS[name](rng, ctx)
