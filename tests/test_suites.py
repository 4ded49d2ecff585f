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
from omni_jax.evaluation import baselines, catalog, metrics, readings, scoring, suites

TIMING = contract.TimingRules()
BLOCK_S = TIMING.block_ms / 1000.0
F, T = False, True


# ---- per-case readings ---------------------------------------------------------------------

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
    assert suites.selected_suites(tiny.get_config("stage1")) == ["asr", "qa", "turn_taking",
                                                                 "listening"]
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
    log-mel (audible speech) whenever it speaks, or `mel_BxKxFxM[b, k]` when given."""

    def __init__(self, script_BxK, vocab_size: int, mel_BxKxFxM=None):
        self.script = jnp.asarray(script_BxK, jnp.int32)
        self.vocab_size = vocab_size
        self.mel = None if mel_BxKxFxM is None else jnp.asarray(mel_BxKxFxM, jnp.float32)

    def init_state(self, params, prompt_tokens_BxP, num_blocks):
        return {"k": jnp.zeros((), jnp.int32)}

    def step(self, params, carry, block):
        # Streams beyond the script's rows (probes of another batch size) replay row 0.
        k, b = carry["k"], block["tokens"].shape[0]
        rows = jnp.minimum(jnp.arange(b), self.script.shape[0] - 1)
        script_BxK = jnp.where((jnp.arange(b) < self.script.shape[0])[:, None],
                               self.script[rows], self.script[0])
        logits_BxNxV = 10.0 * jax.nn.one_hot(script_BxK[:, k], self.vocab_size)[:, None]
        mel_BxFxM = jnp.full((b, 8, 80), -2.0, jnp.float32) if self.mel is None \
            else self.mel[:, k]
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
    ('oracle', with a flat log-mel; 'speaker': and the reference speech's log-mel),
    nothing ('silent'), or the reference cut two blocks after it starts ('quitter')."""
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
    mel = None
    if behaviour == "speaker":
        mel = runner.speech_path.reference_mel(
            jnp.asarray(np.stack([c.record["speech_target"] for c in cases])),
            jnp.asarray(np.stack([c.record["speech_mask"] for c in cases])))
    runner.engine = DuplexEngine(ReplayModel(labels_BxK, tokenizer.vocab_size, mel), None,
                                 config, vocab_size=tokenizer.vocab_size)
    return runner, cases


def test_oracle_transcribes_perfectly(setup):
    runner, _ = _runner(setup, "asr", "oracle")
    scores, rows = runner.score(suites.SUITES["asr"])
    assert scores["wer"] == 0.0 and len(rows) == 6
    assert all(r["text"] and r["wer"] == 0.0 for r in rows)


def test_oracle_and_silent_turn_taking(setup):
    runner, cases = _runner(setup, "qa", "oracle")
    scores, rows = runner.score(suites.SUITES["turn_taking"])
    assert scores["success_rate"] == 1.0 and scores["cut_off_rate"] == 0.0
    lo, hi = scores["success_rate_ci95"]
    assert (lo, hi) == pytest.approx(metrics.wilson_interval(6, 6), abs=1e-4)
    assert scores["latency_ms_median"] == pytest.approx(scores["reference_latency_ms_median"])
    # Replaying, the oracle starts exactly where the reference rendering does.
    for row, case in zip(rows, cases):
        end = row["turn_end_s"]
        onset = int(np.flatnonzero(case.record["speaking"])[0])
        assert row["latency_ms"] == pytest.approx((onset * BLOCK_S - end) * 1e3, abs=1.0)
        assert 0 <= row["latency_ms"] <= 1000
    silent, _ = _runner(setup, "qa", "silent")
    scores, _ = silent.score(suites.SUITES["turn_taking"])
    assert scores["success_rate"] == 0.0 and np.isnan(scores["latency_ms_median"])
    assert scores["success_rate_ci95"][1] < 0.5


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
    scores, rows = quitter.score(suites.SUITES["barge_in_ci"])
    # It stops two blocks into every reply: before any interruption or distractor (not
    # covered), and where nothing interrupts, a stop all the same.
    assert scores["precision_echo_0"] == 0.0 and scores["recall_echo_0"] == 0.0
    for row, case in zip(rows, cases):
        quiet = case.meta["interruption_kind"] == "none"
        assert row["outcome"] == ("false_stop" if quiet else "uncovered")


def test_false_stops_of_oracle_and_quitter(setup):
    for name in ("echo", "backchannel"):
        oracle, cases = _runner(setup, name, "oracle")
        scores, _ = oracle.score(suites.SUITES[name])
        assert scores["keep_rate"] == 1.0 and scores["coverage"] == 1.0
        assert scores["false_stop_rate"] == 0.0
        assert all(not c.meta["should_stop"] for c in cases)
        quitter, _ = _runner(setup, name, "quitter")
        scores, _ = quitter.score(suites.SUITES[name])
        assert scores["keep_rate"] == 0.0
    # Echo is heard all reply long: the quitter was speaking and stopped (a false stop);
    # a backchannel comes after it already stopped (not covered, never "no false stop").
    echo, _ = _runner(setup, "echo", "quitter")
    assert echo.score(suites.SUITES["echo"])[0]["false_stop_rate"] == 1.0
    assert scores["coverage"] == 0.0 and scores["false_stop_rate"] is None


def test_echo_suite_hears_nothing_but_echo(setup):
    _, cases = _runner(setup, "echo", "silent")
    assert {c.meta["interruption_kind"] for c in cases} == {"none"}
    assert all(c.timeline.echo_gain == 0.0 or c.meta.get("echo_fixed") for c in cases)


def test_oracle_qa_text_is_correct(setup):
    runner, cases = _runner(setup, "qa", "oracle")
    result = runner.run("qa", 0.0)
    answers = [c.meta["answer"] for c in cases]
    assert all(metrics.exact_match(a, t) for a, t in zip(answers, result.text(runner.tokenizer)))
    scores, rows = runner.score(suites.SUITES["qa"])
    assert scores["s2t_accuracy"] == 1.0 and scores["s2t_word_f1"] == 1.0
    normalized = [metrics.normalize(a) for a in answers]
    commonest = max(normalized, key=normalized.count)
    assert scores["constant_answer_accuracy"] == pytest.approx(
        np.mean([metrics.exact_match(a, commonest) for a in answers]))
    assert scores["constant_answer_accuracy"] < 1.0
    silent, _ = _runner(setup, "qa", "silent")
    assert silent.score(suites.SUITES["qa"])[0]["s2t_accuracy"] == 0.0


@pytest.mark.parametrize("name", ["turn_taking", "barge_in_ci", "backchannel"])
def test_blind_baselines_score_below_the_oracle(setup, name):
    """Scored by the suites' own code, every blind policy falls clearly below the oracle;
    report entries name the best one and whether the model's interval clears it."""
    suite = suites.SUITES[name]
    runner, _ = _runner(setup, suite.cases, "oracle")
    runner.resamples = 200
    scores, _ = runner.score(suite)
    entries = suites.baseline_entries(runner, suite, scores)
    assert set(entries["baselines"]) == {"silent", "never_stop", "energy", "fixed_clock"}
    values = entries["baselines"]
    assert values["silent"] == 0.0 and values["never_stop"] == 0.0
    assert scores[suite.headline] == 1.0  # the oracle; every case is well posed
    assert values["fixed_clock"] < 1.0
    if name == "turn_taking":  # clean audio: a loudness detector takes turns (the pause
        assert values["energy"] > 0.5  # and barge-in suites are where it fails)
    else:
        assert values["energy"] == 0.0  # stops on every sound: during triggers, on backchannels
    assert entries["fixed_clock"]["fit_cases"] + entries["fixed_clock"]["scored_cases"] == 6
    assert entries["best_baseline_value"] == max(values.values())


def test_listening_checks_catch_a_model_that_replays_a_script(setup):
    """A stand-in replaying one fixed script whatever it hears (a clock) talks over silence
    and noise, ignores the interruption and its onset does not follow the question's end;
    the oracle (each case's own reference) has slope 1; the energy detector, which hears
    loudness, does not talk over silence and reacts to the interruption."""
    suite = suites.SUITES["listening"]
    oracle, _ = _runner(setup, "qa", "oracle")
    oracle.resamples = 100
    scores, _ = oracle.score(suite)
    assert scores["onset_slope"] == pytest.approx(1.0, abs=0.15)
    lo, hi = scores["onset_slope_ci95"]
    assert lo <= scores["onset_slope"] <= hi
    config, tokenizer, _ = setup
    script = np.stack([oracle.cases("qa")[0].record["labels"][:, 0]])
    clock = suites.SuiteRunner(None, config, tokenizer, scenario_ctx=oracle.ctx)
    clock.resamples = 100
    clock.engine = DuplexEngine(ReplayModel(script, tokenizer.vocab_size), None, config,
                                vocab_size=tokenizer.vocab_size)
    scores, _ = clock.score(suite)
    assert scores["onset_slope"] == pytest.approx(0.0, abs=1e-9)
    assert scores["replies_to_silence"] == 1.0 and scores["replies_to_noise"] == 1.0
    assert scores["changed_by_trigger"] == 0.0
    energy, _ = scoring.score_listening(baselines.PolicyRunner(oracle, baselines.energy), suite)
    assert energy["replies_to_silence"] == 0.0 and energy["changed_by_trigger"] == 1.0
    # Talking from block 0 has no reply onset at all (not one at each question's start).
    talker, _ = scoring.score_listening(baselines.PolicyRunner(oracle, baselines.never_stop),
                                        suite)
    assert talker["onset_cases"] == 0 and talker["replies_to_silence"] == 1.0


def test_pause_handling_oracle_and_energy_detector(setup):
    """The reference waits through the user's mid-question pause; a loudness detector, which
    takes any quiet for the turn's end, takes over inside it."""
    suite = suites.SUITES["pause_handling"]
    oracle, cases = _runner(setup, "pause", "oracle")
    scores, rows = oracle.score(suite)
    assert scores["success_rate"] == 1.0 and scores["pause_takeover_rate"] == 0.0
    assert all(0.5 - 1e-6 <= c.meta["pause_end_s"] - c.meta["pause_start_s"] <= 1.5 + 1e-6
               for c in cases)
    energy, _ = scoring.score_pause_handling(baselines.PolicyRunner(oracle, baselines.energy),
                                             suite)
    assert energy["pause_takeover_rate"] == 1.0 and energy["success_rate"] == 0.0


def test_tts_intelligibility_by_the_independent_recognizer(setup):
    """A model that says the reference log-mel is heard (through the speech path) about as
    well as the reference speech itself; a flat log-mel is not heard at all."""
    speaker, cases = _runner(setup, "tts", "speaker")
    heard, rows = speaker.score(suites.SUITES["tts"])
    flat, _ = _runner(setup, "tts", "oracle")[0].score(suites.SUITES["tts"])
    assert len(rows) == len(cases) and all("transcript" in r for r in rows)
    assert heard["recognizer_reference_wer"] < 0.3
    assert heard["wer"] <= heard["recognizer_reference_wer"] + 0.15
    assert heard["wer_ci95"][0] <= heard["wer"] <= heard["wer_ci95"][1]
    assert flat["wer"] > 0.9 and heard["mel_distance"] < flat["mel_distance"]


def test_enhancement_is_scored_over_the_vocoded_mixture_with_a_perfect_mel_ceiling(setup):
    runner, cases = _runner(setup, "enhancement", "oracle")
    scores, rows = runner.score(suites.SUITES["enhancement"])
    assert len(rows) == len(cases)
    for key in ("lsd_improvement_db", "si_sdr_improvement_db", "lsd_improvement_perfect_mel_db",
                "lsd_perfect_mel_db", "si_sdr_mixture_db"):
        assert np.isfinite(scores[key]), key
    # The stand-in says a flat log-mel: far from what a perfect log-mel would give.
    assert scores["lsd_improvement_perfect_mel_db"] > scores["lsd_improvement_db"]
    assert scores["lsd_perfect_mel_db"] < scores["lsd_db"]
    low, high = scores["lsd_improvement_db_ci95"]
    assert low <= scores["lsd_improvement_db"] <= high
