"""The suites' cases: which dialogues a suite runs, drawn and rendered deterministically.

A case set is one scenario's dialogues, optionally filtered (`CaseSet.keep`, drawing more
until enough are kept). Each case is rendered as the reference the model is scored
against: no augmentation and no echo (the engine mixes in the model's OWN speech at the
run's gain instead). The scenario context of a split (`split_context`) supplies user
voices never heard in training, or the held-out speaker of a real corpus.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import numpy as np

from data_pipelines import contract, render, scenarios
from data_pipelines import timeline as tl
from data_pipelines.scenarios import real_speech


@dataclasses.dataclass(frozen=True)
class CaseSet:
    """Dialogues of one scenario; `keep` filters them (drawing more until enough)."""

    scenario: str
    keep: Optional[Callable[[tl.Timeline], bool]] = None


def _nothing_said(timeline: tl.Timeline) -> bool:
    return timeline.meta.get("interruption_kind") == "none"


CASE_SETS = {
    "asr": CaseSet("asr"),
    "qa": CaseSet("qa"),
    "barge_in_ci": CaseSet("barge_in_ci"),
    "echo": CaseSet("barge_in_ci", keep=_nothing_said),
    "barge_in_cd": CaseSet("barge_in_cd"),
    "backchannel": CaseSet("backchannel"),
    "third_speaker": CaseSet("third_speaker"),
    "enhancement": CaseSet("enhancement"),
    "target_speaker": CaseSet("target_speaker"),
    "tts": CaseSet("tts"),
}


@dataclasses.dataclass
class Case:
    timeline: tl.Timeline
    record: dict[str, Any]  # the reference rendering (no augmentation, no echo), K blocks
    env_T: np.ndarray  # the microphone without echo (the engine adds the model's own)

    @property
    def meta(self) -> dict[str, Any]:
        return self.timeline.meta

    def first_speak_turn(self) -> Optional[tl.AssistantTurn]:
        return next((t for t in self.timeline.turns if t.mode == tl.SPEAK), None)

    def event(self, *kinds: str) -> Optional[tl.AudioEvent]:
        return next((e for e in self.timeline.events if e.kind in kinds), None)


def make_cases(case_set: CaseSet, count: int, scenario_ctx, config, tokenizer, seed: int,
               max_draws_per_case: int = 20) -> list[Case]:
    """`count` rendered dialogues of `case_set`, deterministic in `seed`."""
    dims = contract.Dims.from_config(config)
    timing = scenario_ctx.timing
    cases, draw = [], 0
    while len(cases) < count:
        if draw >= count * max_draws_per_case:
            raise RuntimeError(f"suite cases {case_set.scenario!r}: only {len(cases)} of "
                               f"{count} kept after {draw} draws")
        rng = np.random.default_rng([seed, draw])
        draw += 1
        timeline = scenarios.generate(case_set.scenario, rng, scenario_ctx)
        if case_set.keep is not None and not case_set.keep(timeline):
            continue
        quiet = dataclasses.replace(timeline, echo_gain=0.0, echo_delay_s=0.0,
                                    meta={**timeline.meta, "echo_fixed": True})
        record = render.fit_blocks(
            render.render(quiet, dims=dims, timing=timing, thinking=config.model.thinking,
                          tokenizer=tokenizer, rng=rng, augment=None), dims.num_blocks)
        cases.append(Case(timeline, record, record["env_audio"].reshape(-1)))
    return cases


def split_context(config, split: str, workdir=None):
    """The scenario context of an evaluation split: "eval" (held-out voices or speaker), or
    another split of the user-speech bank (e.g. FSDD's official "test" takes) with the
    held-out espeak voices for everything else. `workdir`: the run directory, where a real
    corpus (data.source='corpus') is built (see `scenarios.make_context`)."""
    ctx = scenarios.make_context(config, "eval", workdir=workdir)
    if split == "eval":
        return ctx
    bank = real_speech.bank_from_config(config, split, workdir=workdir)
    if bank is None:
        raise ValueError(f"config.eval.splits: {split!r} needs a real-speech source with "
                         f"that split (data.source={config.data.source!r} has only 'eval')")
    return dataclasses.replace(ctx, user_speech=bank)
