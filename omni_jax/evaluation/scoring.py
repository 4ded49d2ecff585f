"""How each suite is scored: one function per suite, `SCORERS[name](runner, suite)` ->
(scores, rows), rows one per case (what cases.jsonl holds).

A scorer reads the runner's cached pieces (`omni_jax.evaluation.suites.SuiteRunner`): its
cases (`runner.cases(name)`), the engine's result over them at an echo gain
(`runner.run(name, gain)`), the vocoded speech (`runner.vocoded`), the recognizer
(`runner.recognize`) and the per-case row (`runner.case_row`).

Definitions (times on the dialogue's axis, an engine event at block k has time k*block):
- The model's reply: its first start after block 0; its stop: the first stop after that
  start. The reply's natural end is where the reference reply's speech ends (the
  renderer's timing); a stop more than `eval.early_stop_tolerance_s` before it is an
  early stop. Only early stops count as stops in false-stop scoring, and in barge-in
  scoring also a stop within the stop window after a real interruption
  (`readings.barge_in_stop_s`): a model that talks to the end of its reply did not stop.
- Turn-taking: the user's turn ends at the end of the question; the response starts at the
  model's first start (its speaking state, as in the renderer's `speaking`).
- Echo: the engine mixes the model's OWN speech into the microphone at the run's gain and
  `eval.echo_delay_s` (never the reference speech).
- Speech-to-speech QA: the reply's speech (Griffin-Lim over the kept log-mel,
  `config.model.synth.vocoder`) is transcribed by the recognizer trained in this project:
  the evaluated model itself in ASR mode (prompt `world.PROMPT_ASR`, the reply as the only
  sound). `s2s_recognizer_reference_accuracy` is the same recognizer on the reference
  reply speech: the ceiling the recognizer allows.
- Enhancement / target speaker: the reply's vocoded speech against the clean reference at
  the reference's position, aligned by the lag (within `eval.align_max_lag_s`, 10 ms
  steps) that maximises SI-SDR; the mixture is the microphone over the source utterance.
  SI-SDR is floored at SI_SDR_FLOOR_DB, which a silent estimate scores.
  A mel vocoder has no phase to match, so SI-SDR is harsh; log-spectral distance is given
  as well (`lsd_improvement_db` = LSD(mixture) - LSD(estimate)).
- TTS: mean |log-mel| difference between the generated speech (the streamed samples, as
  heard back) and the reference voice over the reference's frames, aligned likewise.
"""

from __future__ import annotations

import numpy as np

from data_pipelines import timeline as tl
from omni_jax.evaluation import metrics
from omni_jax.evaluation.catalog import gain_key
from omni_jax.evaluation.readings import (barge_in_stop_s, best_lag, first_start_block,
                                          floored_si_sdr, window, window_frames)


def natural_end_s(runner, case) -> float:
    """Where the reference reply's speech ends (the renderer's timing)."""
    turn = case.first_speak_turn()
    return runner.ctx.speech_start_s(turn.start_s) + turn.audio.size / runner.sample_rate


def score_asr(runner, suite):
    cases, result = runner.cases("asr"), runner.run("asr", 0.0)
    refs = [" ".join(t.text for t in c.timeline.turns if t.mode == tl.TRANSCRIBE)
            for c in cases]
    hyps = result.text(runner.tokenizer)
    rows = [runner.case_row(c, result, b, reference=r, wer=metrics.wer([r], [h]))
            for b, (c, r, h) in enumerate(zip(cases, refs, hyps))]
    return dict(wer=metrics.wer(refs, hyps)), rows


def score_qa(runner, suite):
    cases, result = runner.cases("qa"), runner.run("qa", 0.0)
    answers = [c.meta["answer"] for c in cases]
    s2t = result.text(runner.tokenizer)
    heard = runner.recognize(runner.vocoded("qa", 0.0))
    reference_speech = np.stack([c.record["speech_target"].reshape(-1) for c in cases])
    heard_reference = runner.recognize(reference_speech)
    rows = [runner.case_row(c, result, b, answer=a, s2t_correct=metrics.qa_accuracy([a], [t]),
                            s2s_transcript=h, s2s_correct=metrics.qa_accuracy([a], [h]))
            for b, (c, a, t, h) in enumerate(zip(cases, answers, s2t, heard))]
    return dict(s2t_accuracy=metrics.qa_accuracy(answers, s2t),
                s2s_accuracy=metrics.qa_accuracy(answers, heard),
                s2s_recognizer_reference_accuracy=metrics.qa_accuracy(
                    answers, heard_reference)), rows


def score_turn_taking(runner, suite):
    cases, result = runner.cases("qa"), runner.run("qa", 0.0)
    ends, firsts, reference = [], [], []
    for b, case in enumerate(cases):
        question = case.event("question")
        ends.append(question.end_s(runner.sample_rate))
        start = first_start_block(result.speaking[b])
        firsts.append(None if start is None else start * runner.block_s)
        ref = first_start_block(case.record["speaking"])
        reference.append((ref * runner.block_s - ends[-1]) * 1000.0)
    out = metrics.turn_taking(ends, firsts,
                              max_latency_s=float(runner.eval.max_turn_latency_s))
    rows = [runner.case_row(c, result, b, turn_end_s=round(e, 3), success=ok, latency_ms=lat)
            for b, (c, e, ok, lat) in enumerate(zip(cases, ends, out.success,
                                                    out.latency_ms))]
    return dict(success_rate=out.success_rate, latency_ms_median=out.median_latency_ms,
                latency_ms_mean=out.mean_latency_ms,
                reference_latency_ms_median=float(np.median(reference))), rows


def _barge_in_cases(runner, name: str, echo_gain: float):
    cases, result = runner.cases(name), runner.run(name, echo_gain)
    tolerance = float(runner.eval.early_stop_tolerance_s)
    out = []
    for b, case in enumerate(cases):
        trigger = next((e for e in case.timeline.events
                        if e.text and e.text == case.meta.get("interruption")), None)
        should_stop = bool(case.meta.get("should_stop", False))
        trigger_end_s = None if trigger is None else trigger.end_s(runner.sample_rate)
        stop = barge_in_stop_s(result.speaking[b], runner.block_s, natural_end_s(runner, case),
                               tolerance, runner.timing, trigger_end_s if should_stop else None)
        out.append(metrics.BargeInCase(
            should_stop=should_stop, trigger_end_s=trigger_end_s, stop_s=stop,
            trigger_start_s=None if trigger is None else trigger.start_s))
    return cases, result, out


def _barge_in_rows(runner, cases, result, trials, echo_gain):
    return [runner.case_row(c, result, b, echo_gain=echo_gain, should_stop=t.should_stop,
                            trigger_end_s=t.trigger_end_s, early_stop_s=t.stop_s)
            for b, (c, t) in enumerate(zip(cases, trials))]


def score_barge_in_ci(runner, suite):
    scores, rows, latencies = {}, [], []
    for gain in suite.echo_gains:
        cases, result, trials = _barge_in_cases(runner, "barge_in_ci", gain)
        out = metrics.barge_in(trials, runner.timing)
        g = gain_key(gain)
        scores.update({f"f1_echo_{g}": out.f1, f"precision_echo_{g}": out.precision,
                       f"recall_echo_{g}": out.recall,
                       f"stop_latency_ms_median_echo_{g}": out.median_latency_ms})
        latencies += out.latency_ms
        rows += _barge_in_rows(runner, cases, result, trials, gain)
    scores["stop_latency_ms_median"] = (float(np.median(latencies)) if latencies
                                        else float("nan"))
    return scores, rows


def score_barge_in_cd(runner, suite):
    cases, result, trials = _barge_in_cases(runner, "barge_in_cd", 0.0)
    out = metrics.barge_in(trials, runner.timing)
    return (dict(f1=out.f1, precision=out.precision, recall=out.recall,
                 stop_latency_ms_median=out.median_latency_ms),
            _barge_in_rows(runner, cases, result, trials, 0.0))


def _false_stops(runner, name: str, echo_gain: float):
    cases, result, trials = _barge_in_cases(runner, name, echo_gain)
    rate = metrics.false_stop_rate([natural_end_s(runner, c) for c in cases],
                                   [t.stop_s for t in trials])
    return rate, _barge_in_rows(runner, cases, result, trials, echo_gain)


def score_echo(runner, suite):
    scores, rows, echoed = {}, [], []
    for gain in suite.echo_gains:
        rate, more = _false_stops(runner, "echo", gain)
        scores[f"false_stop_rate_echo_{gain_key(gain)}"] = rate
        rows += more
        if gain > 0:
            echoed.append(rate)
    scores["false_stop_rate"] = float(np.mean(echoed))
    return scores, rows


def score_backchannel(runner, suite):
    rate, rows = _false_stops(runner, "backchannel", 0.0)
    return dict(false_stop_rate=rate), rows


def score_third_speaker(runner, suite):
    rate, rows = _false_stops(runner, "third_speaker", 0.0)
    return dict(false_stop_rate=rate), rows


def _enhancement(runner, name: str, source_kinds: tuple[str, ...]):
    cases, result = runner.cases(name), runner.run(name, 0.0)
    speech_BxT = runner.vocoded(name, 0.0)
    rate, hop = runner.sample_rate, runner.frontend.hop
    max_lag = int(round(float(runner.eval.align_max_lag_s) * rate))
    improvements, lsd_gains, rows = [], [], []
    for b, case in enumerate(cases):
        turn, source = case.first_speak_turn(), case.event(*source_kinds)
        reference_T = turn.audio
        start = int(round(runner.ctx.speech_start_s(turn.start_s) * rate))
        mixture_T = window(case.env_T, int(round(source.start_s * rate)), reference_T.size)
        lag, sdr = best_lag(
            lambda lag, b=b, start=start, reference_T=reference_T: floored_si_sdr(
                window(speech_BxT[b], start + lag, reference_T.size), reference_T),
            max_lag, hop)
        estimate_T = window(speech_BxT[b], start + lag, reference_T.size)
        sdr_mixture = floored_si_sdr(mixture_T, reference_T)
        lsd = metrics.log_spectral_distance(estimate_T, reference_T)
        lsd_mixture = metrics.log_spectral_distance(mixture_T, reference_T)
        improvements.append(sdr - sdr_mixture)
        lsd_gains.append(lsd_mixture - lsd)
        rows.append(runner.case_row(case, result, b, si_sdr_db=sdr,
                                    si_sdr_mixture_db=sdr_mixture, lag_ms=lag * 1000 / rate,
                                    lsd_db=lsd, lsd_mixture_db=lsd_mixture))
    return dict(si_sdr_improvement_db=float(np.mean(improvements)),
                si_sdr_db=float(np.mean([r["si_sdr_db"] for r in rows])),
                lsd_db=float(np.mean([r["lsd_db"] for r in rows])),
                lsd_improvement_db=float(np.mean(lsd_gains))), rows


def score_enhancement(runner, suite):
    return _enhancement(runner, "enhancement", ("noisy_speech",))


def score_target_speaker(runner, suite):
    return _enhancement(runner, "target_speaker", ("target",))


def score_tts(runner, suite):
    cases, result = runner.cases("tts"), runner.run("tts", 0.0)
    b_, k_, s_ = result.speech.shape
    rate, hop = runner.sample_rate, runner.frontend.hop
    references = np.zeros((b_, k_ * s_), np.float32)
    spans = []
    for b, case in enumerate(cases):
        turn = case.first_speak_turn()
        start = int(round(runner.ctx.speech_start_s(turn.start_s) * rate))
        length = min(turn.audio.size, k_ * s_ - start)
        references[b, start:start + length] = turn.audio[:length]
        spans.append((start // hop, max(1, length // hop)))
    both = np.concatenate([result.speech.reshape(b_, -1), references]).astype(np.float32)
    mel_2BxFxM = np.asarray(runner.frontend(both))
    generated, reference = mel_2BxFxM[:b_], mel_2BxFxM[b_:]
    max_lag = int(round(float(runner.eval.align_max_lag_s) * rate)) // hop
    distances, rows = [], []
    for b, (case, (f0, frames)) in enumerate(zip(cases, spans)):
        ref_FxM = reference[b, f0:f0 + frames]

        def closeness(lag, b=b, f0=f0, frames=frames, ref_FxM=ref_FxM):
            gen_FxM = window_frames(generated[b], f0 + lag, frames)
            return -float(np.mean(np.abs(gen_FxM - ref_FxM)))

        lag, value = best_lag(closeness, max_lag, 1)
        distances.append(-value)
        rows.append(runner.case_row(case, result, b, mel_distance=-value,
                                    lag_ms=lag * hop * 1000 / rate))
    return dict(mel_distance=float(np.mean(distances))), rows


SCORERS = {
    "asr": score_asr,
    "qa": score_qa,
    "turn_taking": score_turn_taking,
    "barge_in_ci": score_barge_in_ci,
    "barge_in_cd": score_barge_in_cd,
    "echo": score_echo,
    "backchannel": score_backchannel,
    "third_speaker": score_third_speaker,
    "enhancement": score_enhancement,
    "target_speaker": score_target_speaker,
    "tts": score_tts,
}
