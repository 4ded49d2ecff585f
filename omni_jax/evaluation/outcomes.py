"""One outcome per case, shared by every suite: what the model did around a user's turn or a
distractor, read strictly and the same way for positives and negatives.

Times are seconds on the dialogue's axis; block k covers [k*B, (k+1)*B) and a transition the
engine reports at block k has time k*B (`duplex.engine`). `speaking_K` is the state after
each block. Definitions:

  onset          the first block at or after `from_s` where speaking turned True
  the reply      the speaking run that starts at the onset
  sustained      the reply lasts >= `min_reply_s` or carries more than `min_reply_words`
                 words (Full-Duplex-Bench's takeover rule: >= 1 s of speech or > 3 words)
  turn taken     onset in [turn end, turn end + max_latency] and sustained; an onset before
                 the turn end is `cut_off`, its own failure (never a success)
  natural end    the model's own onset + the reference reply's duration
  a stop         the first speaking -> listening transition after the onset that comes more
                 than `tolerance_s` before the natural end; a later one is the reply ending.
                 One definition for positives and negatives.
  covered        the model took the turn (its onset is not before the question's end) and
                 was speaking when the distractor began (onset at or before its start block,
                 no stop before it). An uncovered case is a failure of the suite on both
                 sides: a positive is a miss, a negative is not "kept". (So talking from
                 block 0 and never stopping covers nothing.)
  hit            covered, should stop, and the stop's block lies in
                 [heard(trigger end), heard(trigger end) + stop_window_blocks]
  during         covered, should stop, the stop came before heard(trigger end): reported,
                 never a hit
  false stop     covered, should not stop, and it stopped after the distractor began
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import numpy as np

from data_pipelines import contract


def _block_of(t_s: float, block_s: float) -> int:
    return int(np.floor(t_s / block_s + 1e-9))


def onset_block(speaking_K: np.ndarray, from_block: int = 0) -> Optional[int]:
    """The first block >= from_block where speaking turned True (None: never). Speaking
    already at `from_block` counts as an onset there."""
    speaking_K = np.asarray(speaking_K, bool)
    for k in range(max(0, from_block), speaking_K.size):
        if speaking_K[k] and (k == 0 or not speaking_K[k - 1] or k == from_block):
            return k
    return None


def run_end_block(speaking_K: np.ndarray, onset: int) -> int:
    """The first block after `onset` where speaking is False (K if it never stops)."""
    speaking_K = np.asarray(speaking_K, bool)
    after = np.flatnonzero(~speaking_K[onset:])
    return int(onset + after[0]) if after.size else int(speaking_K.size)


@dataclasses.dataclass(frozen=True)
class TurnOutcome:
    onset_s: Optional[float]  # the reply's onset (None: no reply)
    latency_ms: Optional[float]  # onset - turn end (negative: cut the user off)
    reply_s: float  # length of the reply's speaking run (0 without one)
    sustained: bool
    cut_off: bool
    taken: bool


def turn_outcome(speaking_K: np.ndarray, block_s: float, *, turn_start_s: float,
                 turn_end_s: float, max_latency_s: float, min_reply_s: float = 1.0,
                 min_reply_words: int = 3,
                 words_in: Callable[[int, int], int] | None = None) -> TurnOutcome:
    """What the model did with one user turn [turn_start_s, turn_end_s]. `words_in(first,
    end)` counts the words the model said in blocks [first, end) (None: duration only)."""
    onset = onset_block(speaking_K, _block_of(turn_start_s, block_s))
    if onset is None:
        return TurnOutcome(None, None, 0.0, False, False, False)
    end = run_end_block(speaking_K, onset)
    reply_s = (end - onset) * block_s
    words = words_in(onset, end) if words_in is not None else 0
    sustained = reply_s >= min_reply_s - 1e-9 or words > min_reply_words
    onset_s = onset * block_s
    latency_s = onset_s - turn_end_s
    # An onset in the block where the turn ends is not a cut-off: the block's audio is heard.
    cut_off = onset < _block_of(turn_end_s, block_s)
    taken = (not cut_off) and sustained and latency_s <= max_latency_s + 1e-9
    return TurnOutcome(onset_s, latency_s * 1000.0, reply_s, sustained, cut_off, taken)


HIT, DURING, LATE, NO_STOP = "hit", "during_trigger", "late", "no_stop"
FALSE_STOP, KEPT, UNCOVERED = "false_stop", "kept", "uncovered"


@dataclasses.dataclass(frozen=True)
class StopOutcome:
    should_stop: bool
    covered: bool
    kind: str  # HIT, DURING, LATE, NO_STOP (positives); FALSE_STOP, KEPT (negatives); UNCOVERED
    onset_s: Optional[float]
    stop_s: Optional[float]  # the stop (the definition above), None if none
    latency_ms: Optional[float]  # hits: stop block - heard(trigger end), in ms

    @property
    def correct(self) -> bool:
        return self.kind in (HIT, KEPT)

    @property
    def stopped(self) -> bool:
        """The prediction "it stopped" of F1 scoring: a hit, a false stop, and (strict) any
        uncovered negative; a miss of any kind is "did not stop"."""
        return self.kind in (HIT, FALSE_STOP) or (self.kind == UNCOVERED and not self.should_stop)


def stop_outcome(speaking_K: np.ndarray, timing: contract.TimingRules, *, reply_from_s: float,
                 question_end_s: float, reply_length_s: float,
                 trigger_start_s: Optional[float], trigger_end_s: Optional[float],
                 should_stop: bool, tolerance_s: float) -> StopOutcome:
    """What the model did when a distractor (should_stop False) or an interruption (True)
    came during its reply. The reply is the first onset at or after `reply_from_s` (the
    user's question start), which must not come before `question_end_s`; its natural end
    is that onset + `reply_length_s`. With no trigger (`trigger_start_s` None: the model's
    own echo is the distractor, all reply long) the reply is read from its onset."""
    block_s = timing.block_ms / 1000.0
    onset = onset_block(speaking_K, _block_of(reply_from_s, block_s))
    if onset is None:
        return StopOutcome(should_stop, False, UNCOVERED, None, None, None)
    natural_end_s = onset * block_s + reply_length_s
    end = run_end_block(speaking_K, onset)
    stop = end if end < len(speaking_K) and end * block_s < natural_end_s - tolerance_s else None
    onset_s, stop_s = onset * block_s, None if stop is None else stop * block_s
    if trigger_start_s is None and should_stop:
        raise ValueError("an interruption (should_stop) needs its trigger times")
    start_block = onset if trigger_start_s is None else timing.heard(trigger_start_s)
    if onset < timing.heard(question_end_s) or onset > start_block or (stop is not None and stop <= start_block):
        return StopOutcome(should_stop, False, UNCOVERED, onset_s, stop_s, None)
    if not should_stop:
        return StopOutcome(False, True, KEPT if stop is None else FALSE_STOP, onset_s, stop_s,
                           None)
    heard_end = timing.heard(trigger_end_s)
    if stop is None:
        kind, latency = NO_STOP, None
    elif stop < heard_end:
        kind, latency = DURING, None
    elif stop <= heard_end + timing.stop_window_blocks:
        kind, latency = HIT, float((stop - heard_end) * timing.block_ms)
    else:
        kind, latency = LATE, None
    return StopOutcome(True, True, kind, onset_s, stop_s, latency)


@dataclasses.dataclass(frozen=True)
class BargeInScores:
    f1: float
    precision: float
    recall: float
    coverage: float  # covered cases / all
    counts: dict  # outcome kind -> cases


def barge_in_scores(outcomes: Sequence[StopOutcome]) -> BargeInScores:
    """F1 of "stopped" against "should stop", strict: uncovered positives are misses and
    uncovered negatives count as stops (the model failed to keep speaking)."""
    tp = sum(o.should_stop and o.stopped for o in outcomes)
    fp = sum((not o.should_stop) and o.stopped for o in outcomes)
    fn = sum(o.should_stop and not o.stopped for o in outcomes)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.kind] = counts.get(o.kind, 0) + 1
    coverage = float(np.mean([o.covered for o in outcomes])) if outcomes else 0.0
    return BargeInScores(f1, precision, recall, coverage, counts)
