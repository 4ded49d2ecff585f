"""Preference pairs for stage 3 (DPO): one dialogue rendered twice, chosen vs rejected.

The chosen side is the scenario's own Timeline (the reference behaviour); the rejected side
is the same Timeline with the assistant's reply changed at one moment, the decision:

  kind              scenarios (meta)                              rejected behaviour
  stop_in_time      barge_in_ci/echo trigger, barge_in_cd relevant  keeps speaking, or stops
                                                                  past the stop window
  keep_speaking     a non-stop word, backchannel, third speaker,   stops when that sound
                    an off-topic question, a third speaker's       ends (or, with only its own
                    follow-up, the model's own echo                 echo, at a random moment)
  wait_for_turn     pause (a user still mid-turn)                  takes the turn at the pause

Both sides are rendered by the one renderer with the same random stream, so they share the
microphone audio everywhere and every field before the decision block; they differ from it
on in tokens, labels, state, speech (and so in the fed-back assistant stream and the echo,
which are made on device from the speech). `render_pair` checks exactly that, and that both
records are valid BlockSequences.

decision_block: for a stop, the block of the chosen (or rejected) end transition
(`heard(stop) + stop_delay_blocks`); for a turn taken too early, the rejected start
transition (`heard(pause start) + response_delay_blocks`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from data_pipelines import augment as augment_lib
from data_pipelines import contract, render
from data_pipelines import timeline as tl

PAIR_KINDS = ("stop_in_time", "keep_speaking", "wait_for_turn")
# Scenarios that make pairs (the others have no duplex decision to prefer).
PAIR_SCENARIOS = ("barge_in_ci", "barge_in_echo", "barge_in_cd", "backchannel",
                  "third_speaker", "pause")
# A late stop lands this many blocks past the stop window (drawn uniformly).
LATE_STOP_BLOCKS = (1, 4)
# A rejected stop needs this many blocks of speech before and after it to be a stop.
MIN_SPEECH_AROUND_STOP_BLOCKS = 1
# Fields a pair must share before its decision block (the environment everywhere).
_DIFFERING = ("tokens", "labels", "label_kind", "speaking", "speech_target", "speech_mask")
DECISION_BLOCK = "decision_block"


class PairError(ValueError):
    """A pair that breaks its rules (the sides differ where they must not); the message
    names the scenario and the field."""


class NoDecision(PairError):
    """A dialogue without a duplex decision to prefer (a scenario that makes no pair, a
    reply with nothing heard during it, a decision past the record): not a bad sample, the
    pipeline passes over it."""


@dataclasses.dataclass(frozen=True)
class Rejection:
    """The rejected Timeline, where it departs from the chosen one, and how."""

    timeline: tl.Timeline
    decision_block: int
    kind: str
    how: str  # e.g. "keeps speaking", "stops late", "stops at the backchannel"


def _speech_blocks(turn: tl.AssistantTurn, timing: contract.TimingRules,
                   tokens_per_block: int, samples_per_block: int) -> tuple[int, int]:
    """[first, last] block of a SPEAK turn's full speech, by the renderer's rules."""
    start = timing.speech_start_block(turn.start_s, tokens_per_block)
    return start, start + int(np.ceil(turn.audio.size / samples_per_block)) - 1


def _first_speak_turn(timeline: tl.Timeline) -> int:
    for i, turn in enumerate(timeline.turns):
        if turn.mode == tl.SPEAK:
            return i
    raise NoDecision(f"scenario {timeline.scenario!r}: no spoken reply to change")


def _heard_at(block: int, block_s: float) -> float:
    """A time inside `block` (its middle): heard(t) is that block."""
    return (block + 0.5) * block_s


def _onset(speaking_K: np.ndarray, start: int, stop: int) -> int | None:
    """The first block in [start, stop) where speaking turned on (None: none)."""
    for k in range(max(start, 0), min(stop, speaking_K.size)):
        if speaking_K[k] and (k == 0 or not speaking_K[k - 1]):
            return k
    return None


def _run_end(speaking_K: np.ndarray, block: int) -> int:
    """The first block after `block` where speaking is off (K: it never stops)."""
    off = np.flatnonzero(~speaking_K[block:])
    return int(block + off[0]) if off.size else int(speaking_K.size)


def _first_stop(speaking_K: np.ndarray, start: int, stop: int) -> int | None:
    """The first block in (start, stop] where a speaking run ends (None: none)."""
    for k in range(max(start, 0) + 1, min(stop + 1, speaking_K.size)):
        if speaking_K[k - 1] and not speaking_K[k]:
            return k
    return None


def _with_turns(timeline: tl.Timeline, turns) -> tl.Timeline:
    return dataclasses.replace(timeline, turns=tuple(turns))


def rejected(timeline: tl.Timeline, *, timing: contract.TimingRules, tokens_per_block: int,
             samples_per_block: int, rng: np.random.Generator,
             observed_K: np.ndarray | None = None) -> Rejection:
    """The rejected side of `timeline` (see the module docstring); NoDecision when it makes
    no pair (a scenario without a duplex decision, or no room to make one).

    `observed_K` (on-policy pairs): the model's own speaking state per block when it ran
    free on this dialogue. The rejected side is then its failure at the decision (its late
    or missing stop, its stop on a distractor, its turn taken in the pause), and NoDecision
    when it behaved as the reference there."""
    where = f"scenario {timeline.scenario!r}"
    if timeline.scenario not in PAIR_SCENARIOS:
        raise NoDecision(f"{where} makes no preference pair (pairs: {list(PAIR_SCENARIOS)})")
    meta = timeline.meta
    block_s = timing.block_ms / 1000.0
    index = _first_speak_turn(timeline)
    reply = timeline.turns[index]
    first, last = _speech_blocks(reply, timing, tokens_per_block, samples_per_block)

    if timeline.scenario == "pause":
        pause_start_s = float(meta["pause_start_s"])
        decision = timing.heard(pause_start_s) + timing.response_delay_blocks
        if observed_K is not None:
            chosen_start = timing.heard(reply.start_s) + timing.response_delay_blocks
            onset = _onset(observed_K, decision, chosen_start)
            if onset is None:
                raise NoDecision(f"{where}: the model waited for the turn (as the reference)")
            decision, pause_start_s = onset, _heard_at(onset - timing.response_delay_blocks,
                                                       block_s)
        early = dataclasses.replace(reply, start_s=pause_start_s)
        return Rejection(_with_turns(timeline, [*timeline.turns[:index], early,
                                                *timeline.turns[index + 1:]]),
                         decision, "wait_for_turn", "takes the turn at the pause")

    if meta.get("should_stop"):
        if reply.stop_s is None:
            raise PairError(f"{where}: should_stop but the reply has no stop")
        chosen_stop = timing.heard(reply.stop_s) + timing.stop_delay_blocks
        late = chosen_stop + timing.stop_window_blocks - timing.stop_delay_blocks + int(
            rng.integers(LATE_STOP_BLOCKS[0], LATE_STOP_BLOCKS[1] + 1))
        keeps = rng.random() >= 0.5
        if observed_K is not None:
            heard = timing.heard(reply.stop_s)
            if heard >= observed_K.size or not observed_K[heard]:
                raise NoDecision(f"{where}: the model was not speaking at the interruption")
            end = _run_end(observed_K, heard)
            if end <= heard + timing.stop_window_blocks:
                raise NoDecision(f"{where}: the model stopped in time (as the reference)")
            late, keeps = end, end > last - MIN_SPEECH_AROUND_STOP_BLOCKS
        # Whatever followed the stop (the answer to a follow-up) is not said either.
        if not keeps and late <= last - MIN_SPEECH_AROUND_STOP_BLOCKS:
            changed = dataclasses.replace(reply, stop_s=(late - timing.stop_delay_blocks
                                                         + 0.5) * block_s)
            how = "stops late"
        else:
            changed, how = dataclasses.replace(reply, stop_s=None), "keeps speaking"
        return Rejection(_with_turns(timeline, [*timeline.turns[:index], changed]),
                         chosen_stop, "stop_in_time", how)

    if reply.stop_s is not None:
        raise PairError(f"{where}: a reply that should not stop has a stop")
    heard_events = [e for e in timeline.events if e.role in (tl.USER, tl.THIRD)
                    and e.kind != "question"]
    speech_start_s, speech_end_s = first * block_s, (last + 1) * block_s
    lo_s = speech_start_s + MIN_SPEECH_AROUND_STOP_BLOCKS * block_s
    hi_s = speech_end_s - (MIN_SPEECH_AROUND_STOP_BLOCKS + timing.stop_delay_blocks + 1
                           ) * block_s
    if hi_s <= lo_s:
        raise NoDecision(f"{where}: the reply is too short to stop inside it")
    if observed_K is not None:
        early = _first_stop(observed_K, first, timing.heard(hi_s) + timing.stop_delay_blocks)
        if early is None or early - timing.stop_delay_blocks < timing.heard(lo_s):
            raise NoDecision(f"{where}: the model kept speaking (as the reference)")
        stop_s, how = _heard_at(early - timing.stop_delay_blocks, block_s), "stops (its own)"
    elif heard_events:
        event = heard_events[0]
        stop_s = min(event.end_s(timeline.sample_rate), hi_s)
        how = f"stops at the {event.kind}"
        if stop_s <= lo_s:
            raise NoDecision(f"{where}: the {event.kind} ends before the reply's speech")
    elif timeline.echo_gain > 0:  # only its own voice is heard
        stop_s, how = float(rng.uniform(lo_s, hi_s)), "stops at its own echo"
    else:
        raise NoDecision(f"{where}: nothing is heard during the reply (no decision)")
    changed = dataclasses.replace(reply, stop_s=stop_s)
    return Rejection(_with_turns(timeline, [*timeline.turns[:index], changed,
                                            *timeline.turns[index + 1:]]),
                     timing.heard(stop_s) + timing.stop_delay_blocks, "keep_speaking", how)


def render_pair(timeline: tl.Timeline, *, dims: contract.Dims, timing: contract.TimingRules,
                thinking: str, tokenizer, rng: np.random.Generator,
                augment: augment_lib.AugmentConfig | None = None,
                observed_K: np.ndarray | None = None) -> dict[str, Any]:
    """{"chosen": record, "rejected": record, "decision_block": int, "kind", "how"}: both
    records of dims.num_blocks blocks (cropped at the start), rendered with one random
    stream drawn from `rng` (the same noise, reverb and echo on both sides); `observed_K`:
    the model's own behaviour on the dialogue (on-policy pairs, see `rejected`). Raises
    NoDecision for a dialogue without one, PairError when the records are not a pair (they
    differ before the decision)."""
    where = f"scenario {timeline.scenario!r}"
    entropy = int(rng.integers(2 ** 63))
    rejection = rejected(timeline, timing=timing, tokens_per_block=dims.tokens_per_block,
                         samples_per_block=dims.samples_per_block,
                         rng=np.random.default_rng([entropy, 0]),
                         observed_K=None if observed_K is None else np.asarray(observed_K, bool))
    decision = rejection.decision_block
    if not 0 < decision < dims.num_blocks:
        raise NoDecision(f"{where}: decision block {decision} outside the record's "
                         f"{dims.num_blocks} blocks")
    records = {}
    for side, side_timeline in (("chosen", timeline), ("rejected", rejection.timeline)):
        records[side] = render.render_fixed(
            side_timeline, dims=dims, timing=timing, thinking=thinking, tokenizer=tokenizer,
            rng=np.random.default_rng([entropy, 1]), augment=augment, crop="start")
        contract.validate(records[side], dims, vocab_size=tokenizer.vocab_size,
                          where=f"{where} {side}")
    check_pair(records["chosen"], records["rejected"], decision, where)
    return dict(records, decision_block=decision, kind=rejection.kind, how=rejection.how)


def check_pair(chosen: dict, rejected_record: dict, decision_block: int,
               where: str = "pair") -> None:
    """PairError unless the two records share the environment everywhere and every field
    before `decision_block`, and differ from it on."""
    for spec in contract.FIELDS:
        a, b = chosen[spec.name], rejected_record[spec.name]
        if spec.name in _DIFFERING:
            if not np.array_equal(a[:decision_block], b[:decision_block]):
                raise PairError(f"{where}: field '{spec.name}' differs before the decision "
                                f"block {decision_block}")
        elif not np.array_equal(a, b):
            raise PairError(f"{where}: field '{spec.name}' differs between chosen and "
                            "rejected (only the assistant's side may)")
    if all(np.array_equal(chosen[n][decision_block:], rejected_record[n][decision_block:])
           for n in _DIFFERING):
        raise PairError(f"{where}: chosen and rejected are the same record")
