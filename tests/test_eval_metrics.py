"""Duplex metrics on hand-made cases with known answers."""

import math

import numpy as np
import pytest

from data_pipelines.contract import TimingRules
from omni_jax.evaluation import metrics
from omni_jax.evaluation.metrics import BargeInCase


def test_wer_known_strings():
    # "the cat sat" vs "the hat sat down": 1 substitution + 1 insertion over 3 words.
    assert metrics.wer(["The cat sat."], ["the hat, sat down"]) == pytest.approx(2 / 3)
    # Corpus-level: errors and words pooled over pairs; normalisation removes case/punct.
    assert metrics.wer(["a b c d", "e f"], ["A B C D!", "e"]) == pytest.approx(1 / 6)
    # An empty reference adds its hypothesis words as insertions.
    assert metrics.wer(["a b", ""], ["a b", "x y"]) == pytest.approx(2 / 2)
    assert metrics.wer([""], [""]) == 0.0
    with pytest.raises(ValueError):
        metrics.wer(["a"], [])


def test_qa_accuracy_exact_or_contained_whole_words():
    answers = ["seven", ["paris", "the city of paris"], "Blue", "seven"]
    hyps = ["Seven.", "I think it is Paris!", "the sky is green", "seventeen"]
    assert metrics.qa_accuracy(answers, hyps) == pytest.approx(2 / 4)


def test_turn_taking_success_and_latency_median():
    ends = [1.0, 2.0, 3.0, 4.0, 5.0]
    first = [1.24, 2.48, 2.9, None, 8.0]  # ok, ok, before the end, silent, too late
    result = metrics.turn_taking(ends, first, max_latency_s=2.0)
    assert result.success == [True, True, False, False, False]
    assert result.success_rate == pytest.approx(0.4)
    assert result.median_latency_ms == pytest.approx(360.0)
    assert result.latency_ms[2] == pytest.approx(-100.0) and result.latency_ms[3] is None
    three = metrics.turn_taking([0.0, 0.0, 0.0], [0.16, 0.4, 0.24])
    assert three.median_latency_ms == pytest.approx(240.0)
    assert three.mean_latency_ms == pytest.approx(800 / 3)


def test_stop_latency_three_blocks_is_240_ms():
    timing = TimingRules(block_ms=80)
    # Interruption ends at 1.05 s (block 13); speaking went False in block 16 (1.28 s).
    assert metrics.stop_latency_ms(1.05, 16 * 0.08, timing) == 240.0
    assert metrics.stop_latency_ms(1.04, 1.04, timing) == 0.0


def test_barge_in_precision_recall_f1():
    timing = TimingRules(block_ms=80, stop_window_blocks=3)
    cases = [
        BargeInCase(True, 1.05, 16 * 0.08),  # TP, 240 ms
        BargeInCase(True, 1.05, 14 * 0.08),  # TP, 80 ms
        BargeInCase(True, 1.05, 17 * 0.08),  # 4 blocks: late -> FP + FN
        BargeInCase(True, 1.05, None),  # FN
        BargeInCase(True, 1.05, 12 * 0.08),  # before the end, no start given -> FP + FN
        BargeInCase(True, 1.05, 12 * 0.08, trigger_start_s=0.8),  # during it -> TP, -80 ms
        BargeInCase(False, 1.05, 14 * 0.08),  # stopped on a backchannel -> FP
        BargeInCase(False, None, None),  # TN
        BargeInCase(False, 2.0, None),  # TN
    ]
    r = metrics.barge_in(cases, timing)
    assert (r.true_positives, r.false_positives, r.false_negatives, r.true_negatives) == (
        3, 3, 3, 2)
    assert r.precision == pytest.approx(0.5) and r.recall == pytest.approx(0.5)
    assert r.f1 == pytest.approx(0.5)
    assert r.latency_ms == [240.0, 80.0, -80.0]
    assert r.median_latency_ms == pytest.approx(80.0)
    perfect = metrics.barge_in([BargeInCase(True, 0.5, 0.56), BargeInCase(False, 0.5, None)])
    assert (perfect.precision, perfect.recall, perfect.f1) == (1.0, 1.0, 1.0)
    empty = metrics.barge_in([BargeInCase(False, None, None)])
    assert (empty.precision, empty.recall, empty.f1) == (0.0, 0.0, 0.0)


def test_false_stop_rate():
    ends = [3.0, 3.0, 3.0, 3.0]
    stops = [None, 3.0, 2.0, 2.96]
    assert metrics.false_stop_rate(ends, stops) == pytest.approx(0.5)
    assert metrics.false_stop_rate(ends, stops, tolerance_s=0.08) == pytest.approx(0.25)


def _orthogonal_noise(ref, snr_db, rng):
    noise = rng.normal(size=ref.size)
    noise -= noise.mean()
    noise -= (noise @ ref) / (ref @ ref) * ref  # exactly orthogonal to the zero-mean ref
    return noise * np.sqrt((ref @ ref) / (noise @ noise) / 10 ** (snr_db / 10))


def test_si_sdr_scaled_copy_and_known_snr():
    rng = np.random.default_rng(0)
    ref = np.sin(2 * np.pi * 220 * np.arange(16000) / 16000) + 0.3 * rng.normal(size=16000)
    ref -= ref.mean()
    assert metrics.si_sdr(0.3 * ref, ref) > 100.0  # scale-invariant: a copy is near +inf
    for snr in (-5.0, 0.0, 10.0, 20.0):
        est = 2.0 * (ref + _orthogonal_noise(ref, snr, rng))
        assert metrics.si_sdr(est, ref) == pytest.approx(snr, abs=0.1)
    noisy = ref + _orthogonal_noise(ref, 0.0, rng)
    better = ref + _orthogonal_noise(ref, 12.0, rng)
    assert metrics.si_sdr_improvement(better, ref, noisy) == pytest.approx(12.0, abs=0.1)


def test_log_spectral_distance():
    rng = np.random.default_rng(1)
    x = rng.normal(size=8000)
    assert metrics.log_spectral_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    # A gain of g changes every bin by 20*log10(g) dB.
    assert metrics.log_spectral_distance(2 * x, x) == pytest.approx(20 * math.log10(2), 1e-6)


def test_mel_distance():
    rng = np.random.default_rng(2)
    x = (0.1 * rng.normal(size=4000)).astype(np.float32)
    assert metrics.mel_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    # Doubling the amplitude adds log(4) to every (non-floor) log-mel bin.
    assert metrics.mel_distance(2 * x, x) == pytest.approx(math.log(4), abs=0.01)
