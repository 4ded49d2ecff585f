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
from data_pipelines.scenarios import real_speech, seeds
from omni_jax.evaluation import outcomes


@dataclasses.dataclass(frozen=True)
class CaseSet:
    """Dialogues of one scenario; `keep` filters them (drawing more until enough).
    `reading` ("turn" | "stop" | ""): how its suites read a case (`turn_reading`,
    `stop_reading`); a case whose reference behaviour does not read as correct that way
    is ill-posed (e.g. an interruption so close to the reply's end that stopping and
    finishing look alike) and is drawn again."""

    scenario: str
    keep: Optional[Callable[[tl.Timeline], bool]] = None
    reading: str = ""


def _nothing_said(timeline: tl.Timeline) -> bool:
    return timeline.meta.get("interruption_kind") == "none"


CASE_SETS = {
    "asr": CaseSet("asr"),
    "qa": CaseSet("qa", reading="turn"),
    "pause": CaseSet("pause", reading="turn"),
    "barge_in_ci": CaseSet("barge_in_ci", reading="stop"),
    "echo": CaseSet("barge_in_ci", keep=_nothing_said, reading="stop"),
    "barge_in_cd": CaseSet("barge_in_cd", reading="stop"),
    "backchannel": CaseSet("backchannel", reading="stop"),
    "third_speaker": CaseSet("third_speaker", reading="stop"),
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


def reply_length_s(case: Case, sample_rate: int) -> float:
    """The reference reply's speech duration: a reply's natural end is the model's own
    onset plus this."""
    return case.first_speak_turn().audio.size / sample_rate


def turn_reading(case: Case, speaking_K: np.ndarray, eval_cfg, timing: contract.TimingRules,
                 sample_rate: int, words_in=None) -> outcomes.TurnOutcome:
    """The case's question as the user's turn (`outcomes.turn_outcome`): a reply must start
    within eval.max_turn_latency_s of its end and be sustained (eval.min_reply_s, or half
    the reference reply when shorter, or more than eval.min_reply_words words)."""
    question = case.event("question")
    return outcomes.turn_outcome(
        speaking_K, timing.block_ms / 1000.0, turn_start_s=question.start_s,
        turn_end_s=question.end_s(sample_rate), max_latency_s=float(eval_cfg.max_turn_latency_s),
        min_reply_s=min(float(eval_cfg.min_reply_s), 0.5 * reply_length_s(case, sample_rate)),
        min_reply_words=int(eval_cfg.min_reply_words), words_in=words_in)


def trigger_event(case: Case) -> Optional[tl.AudioEvent]:
    """The interruption or distractor said during the reply (meta `interruption`), if any."""
    return next((e for e in case.timeline.events
                 if e.text and e.text == case.meta.get("interruption")), None)


def without_trigger(case: Case, config, tokenizer, timing: contract.TimingRules) -> np.ndarray:
    """The case's microphone with its interruption left out: the twin that a listening
    model must answer differently after the trigger's start."""
    trigger = trigger_event(case)
    quiet = dataclasses.replace(
        case.timeline, events=tuple(e for e in case.timeline.events if e is not trigger),
        echo_gain=0.0, echo_delay_s=0.0)
    dims = contract.Dims.from_config(config)
    record = render.fit_blocks(
        render.render(quiet, dims=dims, timing=timing, thinking=config.model.thinking,
                      tokenizer=tokenizer, rng=np.random.default_rng(0), augment=None),
        dims.num_blocks)
    return record["env_audio"].reshape(-1)


def stop_reading(case: Case, speaking_K: np.ndarray, eval_cfg, timing: contract.TimingRules,
                 sample_rate: int) -> outcomes.StopOutcome:
    """The reply to the case's question against its interruption (meta should_stop) or
    distractor (`outcomes.stop_outcome`); with none, the model's own echo all reply long."""
    question, trigger = case.event("question"), trigger_event(case)
    return outcomes.stop_outcome(
        speaking_K, timing, reply_from_s=question.start_s,
        question_end_s=question.end_s(sample_rate),
        reply_length_s=reply_length_s(case, sample_rate),
        trigger_start_s=None if trigger is None else trigger.start_s,
        trigger_end_s=None if trigger is None else trigger.end_s(sample_rate),
        should_stop=bool(case.meta.get("should_stop", False)),
        tolerance_s=float(eval_cfg.early_stop_tolerance_s))


def well_posed(case_set: CaseSet, case: Case, eval_cfg, timing, sample_rate: int) -> bool:
    """The reference behaviour reads as correct by the suites' own definitions."""
    speaking_K = case.record["speaking"]
    if case_set.reading == "turn":
        return turn_reading(case, speaking_K, eval_cfg, timing, sample_rate).taken
    if case_set.reading == "stop":
        return stop_reading(case, speaking_K, eval_cfg, timing, sample_rate).correct
    return True


def make_cases(case_set: CaseSet, count: int, scenario_ctx, config, tokenizer, seed: int,
               suite_index: int, max_draws_per_case: int = 20) -> list[Case]:
    """`count` rendered dialogues of `case_set`, deterministic in (`seed`, `suite_index`):
    their generators come from the "suite" seed domain, never a training dialogue's."""
    dims = contract.Dims.from_config(config)
    timing = scenario_ctx.timing
    cases, draw = [], 0
    while len(cases) < count:
        if draw >= count * max_draws_per_case:
            raise RuntimeError(f"suite cases {case_set.scenario!r}: only {len(cases)} of "
                               f"{count} kept after {draw} draws")
        rng = seeds.rng(seed, "suite", suite_index, draw)
        draw += 1
        timeline = scenarios.generate(case_set.scenario, rng, scenario_ctx)
        if case_set.keep is not None and not case_set.keep(timeline):
            continue
        quiet = dataclasses.replace(timeline, echo_gain=0.0, echo_delay_s=0.0,
                                    meta={**timeline.meta, "echo_fixed": True})
        record = render.fit_blocks(
            render.render(quiet, dims=dims, timing=timing, thinking=config.model.thinking,
                          tokenizer=tokenizer, rng=rng, augment=None), dims.num_blocks)
        case = Case(timeline, record, record["env_audio"].reshape(-1))
        if well_posed(case_set, case, config.eval, timing, int(config.audio.sample_rate)):
            cases.append(case)
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
