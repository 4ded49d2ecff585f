"""Evaluation suites: the per-case readings (`evaluation.readings`) with known answers, the
catalog and its selection, and whole suites scored on stand-in models whose behaviour is
known (an oracle replaying the reference, a silent one, one that stops too soon)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from data_pipelines import contract, corpus, scenarios
from omni_jax import configuration
from omni_jax.duplex.engine import DuplexEngine
from omni_jax.evaluation import cases as cases_lib
from omni_jax.evaluation import catalog, metrics, readings, scoring, suites

TIMING = contract.TimingRules()
BLOCK_S = TIMING.block_ms / 1000.0
F, T = False, True


# ---- per-case readings ---------------------------------------------------------------------

def test_first_start_and_stop_blocks():
    speaking_K = np.array([F, F, T, T, T, F, F, T, F])
    assert readings.first_start_block(speaking_K) == 2
    assert readings.first_start_block(speaking_K, from_block=3) == 7
    assert readings.first_stop_block(speaking_K, after_block=2) == 5
    assert readings.first_stop_block(speaking_K, after_block=7) == 8
    assert readings.first_start_block(np.zeros(5, bool)) is None
    assert readings.first_stop_block(np.array([F, T, T]), after_block=1) is None
    assert readings.first_start_block(np.array([T, T, F])) == 0  # speaking from block 0


def test_early_stop_respects_the_natural_end():
    speaking_K = np.array([F, T, T, T, T, F, F, F, F, F])  # stops at block 5 (0.4 s)
    assert readings.early_stop_s(speaking_K, BLOCK_S, natural_end_s=1.0, tolerance_s=0.4) \
        == pytest.approx(0.4)
    # Stopping 0.4 s before the reply's end is finishing it, not a stop.
    assert readings.early_stop_s(speaking_K, BLOCK_S, natural_end_s=0.8, tolerance_s=0.4) is None
    assert readings.early_stop_s(np.zeros(10, bool), BLOCK_S, 1.0, 0.4) is None
    assert readings.early_stop_s(np.array([F, T, T, T]), BLOCK_S, 1.0, 0.0) is None


def test_barge_in_stop_counts_a_timely_stop_near_the_end():
    speaking_K = np.array([F, T, T, T, T, T, T, F, F, F])  # stops at block 7 (0.56 s)
    # The reply would end at 0.8 s: with 0.4 s tolerance block 7 is not an early stop...
    assert readings.early_stop_s(speaking_K, BLOCK_S, 0.8, 0.4) is None
    # ...but after an interruption ending in block 6 it is a reaction in the window.
    assert readings.barge_in_stop_s(speaking_K, BLOCK_S, 0.8, 0.4, TIMING,
                                  trigger_end_s=0.5) == pytest.approx(0.56)
    # An interruption long before (more than the window) does not claim it.
    assert readings.barge_in_stop_s(speaking_K, BLOCK_S, 0.8, 0.4, TIMING,
                                  trigger_end_s=0.1) is None


def test_best_lag_and_window():
    signal_T = np.zeros(100, np.float32)
    signal_T[40:50] = 1.0
    reference_T = np.ones(10, np.float32)
    lag, value = readings.best_lag(
        lambda lag: -np.abs(readings.window(signal_T, 30 + lag, 10) - reference_T).sum(), 20, 1)
    assert (lag, value) == (10, 0.0)
    np.testing.assert_array_equal(readings.window(np.arange(5.0), 3, 4), [3, 4, 0, 0])
    np.testing.assert_array_equal(readings.window(np.arange(5.0), -2, 4), [0, 0, 0, 1])


def test_speaking_runs_and_fit_length():
    assert readings.speaking_runs(np.array([F, T, T, F, T])) == [(1, 3), (4, 5)]
    assert readings.speaking_runs(np.zeros(3, bool)) == []
    np.testing.assert_array_equal(readings.fit_length(np.arange(5.0), 3), [0, 1, 2])
    padded = readings.fit_length(np.ones(2), 4)
    np.testing.assert_array_equal(padded, [1, 1, 0, 0])
    assert padded.dtype == np.float32


def test_si_sdr_floor_scores_silence_worst():
    rng = np.random.default_rng(0)
    reference_T = rng.normal(size=1600)
    assert readings.floored_si_sdr(np.zeros(1600), reference_T) == readings.SI_SDR_FLOOR_DB
    assert readings.floored_si_sdr(reference_T + 0.1 * rng.normal(size=1600), reference_T) \
        == pytest.approx(20.0, abs=1.0)


def test_gain_keys_as_the_report_spells_them():
    assert [catalog.gain_key(g) for g in catalog.ECHO_GAINS] == ["0", "0.1", "1.0"]


def test_suite_selection():
    assert suites.selected_suites(tiny.get_config("stage1")) == ["asr", "qa", "turn_taking"]
    config = tiny.get_config()
    assert suites.selected_suites(config) == list(suites.SUITES)
    config.eval.suites = "tts, asr"
    assert suites.selected_suites(config) == ["tts", "asr"]
    config.eval.suites = "none"
    assert suites.selected_suites(config) == []
    config.eval.suites = "qa,nope"
    with pytest.raises(configuration.ConfigError, match=r"config\.eval\.suites.*'nope'"):
        configuration.validate(config)
    config.eval.suites, config.eval.cases = "auto", 0
    with pytest.raises(configuration.ConfigError, match=r"config\.eval\.cases"):
        configuration.validate(config)


def test_every_suite_has_a_scorer_and_a_case_set():
    assert set(scoring.SCORERS) == set(catalog.SUITES)
    assert {s.cases for s in catalog.SUITES.values()} <= set(cases_lib.CASE_SETS)


# ---- whole suites on stand-in models ------------------------------------------------------

class ReplayModel:
    """Stands in for DuplexModel: stream b emits script_BxK[b, k] in block k, and a flat
    log-mel (audible speech) whenever it speaks."""

    def __init__(self, script_BxK, vocab_size: int):
        self.script = jnp.asarray(script_BxK, jnp.int32)
        self.vocab_size = vocab_size

    def init_state(self, params, prompt_tokens_BxP, num_blocks):
        return {"k": jnp.zeros((), jnp.int32)}

    def step(self, params, carry, block):
        k, b = carry["k"], self.script.shape[0]
        logits_BxNxV = 10.0 * jax.nn.one_hot(self.script[:, k], self.vocab_size)[:, None]
        mel_BxFxM = jnp.full((b, 8, 80), -2.0, jnp.float32)
        return {"k": k + 1}, dict(logits=logits_BxNxV, mel=mel_BxFxM,
                                  speak_logit=jnp.zeros((b,), jnp.float32))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    config = tiny.get_config()  # explicit thinking, N = 1
    config.eval.cases = 6
    config.eval.pictures = 0
    tokenizer = corpus.build_tokenizer(config, tmp_path_factory.mktemp("tok") / "t.model")
    return config, tokenizer, scenarios.make_context(config, "eval")


def _runner(setup, case_set: str, behaviour: str):
    """A SuiteRunner over `case_set` whose model replays, per case, the reference labels
    ('oracle'), nothing ('silent'), or the reference cut two blocks after it starts
    ('quitter')."""
    config, tokenizer, ctx = setup
    runner = suites.SuiteRunner(None, config, tokenizer, scenario_ctx=ctx)
    cases = runner.cases(case_set)
    labels_BxK = np.stack([c.record["labels"][:, 0] for c in cases])
    shift, think = contract.SHIFT_ID, contract.THINK_ID
    if behaviour == "silent":
        labels_BxK = np.full_like(labels_BxK, think)
    elif behaviour == "quitter":
        for row in labels_BxK:
            start = int(np.flatnonzero(row == shift)[0])
            row[start + 1:] = np.where(row[start + 1:] == shift, think, row[start + 1:])
            row[start + 2] = shift
    runner.engine = DuplexEngine(ReplayModel(labels_BxK, tokenizer.vocab_size), None, config,
                                 vocab_size=tokenizer.vocab_size)
    return runner, cases


def test_oracle_transcribes_perfectly(setup):
    runner, _ = _runner(setup, "asr", "oracle")
    scores, rows = runner.score(suites.SUITES["asr"])
    assert scores["wer"] == 0.0 and len(rows) == 6
    assert all(r["text"] and r["wer"] == 0.0 for r in rows)


def test_oracle_and_silent_turn_taking(setup):
    runner, cases = _runner(setup, "qa", "oracle")
    scores, rows = runner.score(suites.SUITES["turn_taking"])
    assert scores["success_rate"] == 1.0
    assert scores["latency_ms_median"] == pytest.approx(scores["reference_latency_ms_median"])
    # The reference starts response_delay_blocks after the block the question ends in.
    for row, case in zip(rows, cases):
        end = row["turn_end_s"]
        expected_ms = ((TIMING.heard(end) + TIMING.response_delay_blocks) * BLOCK_S - end) * 1e3
        assert row["latency_ms"] == pytest.approx(expected_ms, abs=1.0)
    silent, _ = _runner(setup, "qa", "silent")
    scores, _ = silent.score(suites.SUITES["turn_taking"])
    assert scores["success_rate"] == 0.0 and np.isnan(scores["latency_ms_median"])


def test_barge_in_on_oracle_silent_and_quitter(setup):
    runner, cases = _runner(setup, "barge_in_ci", "oracle")
    should_stop = [c.meta["should_stop"] for c in cases]
    assert any(should_stop) and not all(should_stop)  # the draw tests both kinds
    scores, rows = runner.score(suites.SUITES["barge_in_ci"])
    for gain in ("0", "0.1", "1.0"):  # replaying, the oracle ignores its echo
        assert scores[f"f1_echo_{gain}"] == 1.0
    # The reference stops stop_delay_blocks after the block the trigger ends in.
    assert scores["stop_latency_ms_median"] == TIMING.stop_delay_blocks * TIMING.block_ms
    assert len(rows) == 3 * len(cases)

    silent, _ = _runner(setup, "barge_in_ci", "silent")
    scores, _ = silent.score(suites.SUITES["barge_in_ci"])
    assert scores["recall_echo_0"] == 0.0 and scores["f1_echo_0"] == 0.0

    quitter, _ = _runner(setup, "barge_in_ci", "quitter")
    scores, _ = quitter.score(suites.SUITES["barge_in_ci"])
    positives = sum(should_stop)
    # Every case is a stop, all before any interruption: all wrong.
    assert scores["precision_echo_0"] == 0.0 and scores["recall_echo_0"] == 0.0
    assert positives < len(cases)


def test_false_stops_of_oracle_and_quitter(setup):
    for name in ("echo", "backchannel"):
        oracle, cases = _runner(setup, name, "oracle")
        scores, _ = oracle.score(suites.SUITES[name])
        assert scores["false_stop_rate"] == 0.0
        assert all(not c.meta["should_stop"] for c in cases)
        quitter, _ = _runner(setup, name, "quitter")
        scores, _ = quitter.score(suites.SUITES[name])
        assert scores["false_stop_rate"] == 1.0
    assert set(scores) >= {"false_stop_rate"}


def test_echo_suite_hears_nothing_but_echo(setup):
    _, cases = _runner(setup, "echo", "silent")
    assert {c.meta["interruption_kind"] for c in cases} == {"none"}
    assert all(c.timeline.echo_gain == 0.0 or c.meta.get("echo_fixed") for c in cases)


def test_oracle_qa_text_is_correct(setup):
    runner, cases = _runner(setup, "qa", "oracle")
    result = runner.run("qa", 0.0)
    answers = [c.meta["answer"] for c in cases]
    assert metrics.qa_accuracy(answers, result.text(runner.tokenizer)) == 1.0
