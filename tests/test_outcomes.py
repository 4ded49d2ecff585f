"""Per-case outcomes (omni_jax.evaluation.outcomes) and the interval helpers: known answers."""

import math

import numpy as np
import pytest

from data_pipelines import contract
from omni_jax.evaluation import metrics, outcomes

TIMING = contract.TimingRules(block_ms=80, stop_delay_blocks=1, stop_window_blocks=3)
B = 0.08


def speaking(k: int, *runs: tuple[int, int]) -> np.ndarray:
    out = np.zeros(k, bool)
    for a, b in runs:
        out[a:b] = True
    return out


def turn(s, **kw):
    args = dict(turn_start_s=0.8, turn_end_s=2.0, max_latency_s=1.0)
    args.update(kw)
    return outcomes.turn_outcome(s, B, **args)


def test_turn_taken_needs_a_timely_sustained_reply():
    ok = turn(speaking(80, (27, 60)))  # onset 2.16 s: 160 ms after the turn end, 2.6 s long
    assert ok.taken and not ok.cut_off and ok.latency_ms == pytest.approx(160.0)
    late = turn(speaking(80, (40, 70)))  # 3.2 s: 1.2 s after the end
    assert not late.taken and late.latency_ms == pytest.approx(1200.0)
    short = turn(speaking(80, (27, 30)))  # 240 ms of speech, no words
    assert not short.taken and not short.sustained
    wordy = turn(speaking(80, (27, 30)), words_in=lambda a, b: 4)  # > 3 words
    assert wordy.taken
    never = turn(speaking(80))
    assert (never.onset_s, never.taken, never.cut_off) == (None, False, False)


def test_a_start_before_the_user_finished_is_a_cut_off():
    early = turn(speaking(80, (20, 60)))  # 1.6 s, the user still talking
    assert early.cut_off and not early.taken and early.latency_ms < 0
    always = turn(speaking(80, (0, 80)))  # talking from block 0: onset at the turn's start
    assert always.cut_off and not always.taken
    same_block = turn(speaking(80, (25, 60)), turn_end_s=2.03)  # onset in the end's block
    assert not same_block.cut_off and same_block.taken


def stop(s, should_stop=True, **kw):
    # Question 0.8-2.0 s, reply of 3.0 s, trigger 3.0-3.4 s (blocks 37-42).
    args = dict(reply_from_s=0.8, question_end_s=2.0, reply_length_s=3.0,
                trigger_start_s=3.0, trigger_end_s=3.4, should_stop=should_stop,
                tolerance_s=0.4)
    args.update(kw)
    return outcomes.stop_outcome(s, TIMING, **args)


def test_barge_in_stop_counts_from_the_trigger_end_to_the_window_end():
    heard_end = TIMING.heard(3.4)  # block 42
    for stop_block, kind in [(heard_end, outcomes.HIT), (heard_end + 3, outcomes.HIT),
                             (heard_end + 4, outcomes.LATE), (heard_end - 1, outcomes.DURING),
                             (38, outcomes.DURING)]:
        o = stop(speaking(100, (27, stop_block)))
        assert o.kind == kind, (stop_block, o)
        assert o.correct == (kind == outcomes.HIT)
    hit = stop(speaking(100, (27, heard_end + 2)))
    assert hit.latency_ms == pytest.approx(160.0)
    assert stop(speaking(100, (27, 100))).kind == outcomes.NO_STOP


def test_a_stop_near_the_natural_end_is_the_reply_ending_on_both_sides():
    # Onset 2.16 s + 3.0 s = natural end 5.16 s; a stop at 4.88 s is within the 0.4 s.
    ending = speaking(100, (27, 61))
    assert stop(ending, should_stop=True, trigger_start_s=4.3, trigger_end_s=4.6).kind \
        == outcomes.NO_STOP
    assert stop(ending, should_stop=False).kind == outcomes.KEPT
    cut = speaking(100, (27, 50))  # 4.0 s: a real stop after a distractor
    assert stop(cut, should_stop=False).kind == outcomes.FALSE_STOP


def test_uncovered_cases_fail_on_both_sides():
    never = speaking(100)
    before = speaking(100, (27, 36))  # stopped before the distractor began (block 37)
    late_start = speaking(100, (40, 90))  # started after it began
    talker = speaking(100, (0, 100))  # from block 0: cut the user off
    for s in (never, before, late_start, talker):
        for should in (True, False):
            o = stop(s, should_stop=should)
            assert o.kind == outcomes.UNCOVERED and not o.covered and not o.correct
    scores = outcomes.barge_in_scores([stop(talker, True), stop(talker, False)])
    assert scores.f1 == 0.0 and scores.coverage == 0.0


def test_strict_f1_of_known_policies():
    positive = dict(should_stop=True)
    negative = dict(should_stop=False)
    oracle = [stop(speaking(100, (27, 43)), **positive), stop(speaking(100, (27, 65)), **negative)]
    assert outcomes.barge_in_scores(oracle).f1 == 1.0
    never_stop = [stop(speaking(100, (27, 100)), **positive),
                  stop(speaking(100, (27, 100)), **negative)]
    assert outcomes.barge_in_scores(never_stop).f1 == 0.0
    # Stops one block after any sound begins: during every trigger, after every distractor.
    energy = [stop(speaking(100, (27, 38)), **positive), stop(speaking(100, (27, 38)), **negative)]
    scores = outcomes.barge_in_scores(energy)
    assert scores.f1 == 0.0 and scores.counts == {"during_trigger": 1, "false_stop": 1}


def test_wilson_interval_matches_a_hand_computation():
    lo, hi = metrics.wilson_interval(8, 10)
    z = metrics.Z_95
    p, n = 0.8, 10
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (lo, hi) == pytest.approx((centre - half, centre + half))
    assert (lo, hi) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert metrics.wilson_interval(0, 0) == (0.0, 1.0)
    assert metrics.wilson_interval(0, 20)[0] == 0.0 and metrics.wilson_interval(20, 20)[1] == 1.0


def test_bootstrap_and_slope():
    x = np.arange(20.0)
    assert metrics.slope(x, 2 * x + 1) == pytest.approx(2.0)
    assert math.isnan(metrics.slope([1.0, 1.0], [0.0, 1.0]))
    values = np.r_[np.zeros(10), np.ones(10)]
    lo, hi = metrics.bootstrap_interval(lambda idx: values[idx].mean(), 20, seed=1)
    assert 0.2 < lo < 0.5 < hi < 0.8
    assert metrics.bootstrap_interval(lambda idx: values[idx].mean(), 20, seed=1) == (lo, hi)
