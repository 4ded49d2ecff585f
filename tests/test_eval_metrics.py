"""Duplex metrics on hand-made cases with known answers."""

import math

import numpy as np
import pytest

from omni_jax.evaluation import metrics


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


def test_exact_match_penalises_extra_words():
    assert metrics.exact_match("seven", "Seven.")
    assert not metrics.exact_match("seven", "the answer is seven")
    assert not metrics.exact_match("seven", "seventeen")
    assert metrics.exact_match(["blue", "green"], "green")
    assert not metrics.exact_match("", "")


def test_word_f1():
    assert metrics.word_f1("the zorb is blue", "the zorb is blue") == 1.0
    assert metrics.word_f1("the zorb is blue", "blue") == pytest.approx(2 * 1 * 0.25 / 1.25)
    assert metrics.word_f1("blue", "zero one two three four blue") == pytest.approx(
        2 * (1 / 6) * 1 / (1 / 6 + 1))
    assert metrics.word_f1("blue", "") == 0.0


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
