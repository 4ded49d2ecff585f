"""How each suite is scored: one function per suite, `SCORERS[name](runner, suite)` ->
(scores, rows), rows one per case (what cases.jsonl holds).

A scorer reads the runner's cached pieces (`omni_jax.evaluation.suites.SuiteRunner`): its
cases (`runner.cases(name)`), the engine's result over them at an echo gain
(`runner.run(name, gain)`), the vocoded speech (`runner.vocoded`), the recognizer
(`runner.recognize`) and the per-case row (`runner.case_row`).

Definitions: every duplex suite reads one outcome per case, `omni_jax.evaluation.outcomes`
(the reply's onset, sustained speech, cut-offs, one stop definition, coverage), strictly:
- Turn-taking: taken when the reply starts within `eval.max_turn_latency_s` (1.0 s) after
  the question ends and is sustained (>= `eval.min_reply_s` of speech, or half the
  reference reply when that is shorter, or more than `eval.min_reply_words` words); a start
  before the end is a cut-off (`cut_off_rate`).
- Barge-in (CI, CD): a hit is a stop in [heard(trigger end), + stop window]; a stop during
  the trigger, a late one and none are misses; a case where the model did not take the
  turn or was not speaking when the trigger came is uncovered: a miss for an interruption,
  a stop for a distractor. F1 over all cases, with a bootstrap interval.
- False-stop suites (echo, backchannel, third speaker): `keep_rate` over ALL cases is the
  headline (took the turn, was speaking when the distractor came, kept speaking);
  `coverage` and `false_stop_rate` over the covered cases beside it, Wilson intervals.
- QA: only the text of the reply (the first speaking run after the question starts),
  normalised exact match (headline) and word F1; speech-to-speech by the recognizer.
- Echo: the engine mixes the model's OWN speech into the microphone at the run's gain and
  `eval.echo_delay_s` (never the reference speech).
- Speech-to-speech QA: the reply's speech (the played speech of the speech path)
  is transcribed by an independent recognizer (`eval.recognizer`, pocketsphinx offline,
  `omni_jax.evaluation.recognizer`); `s2s_recognizer_reference_accuracy` and
  `recognizer_reference_wer` are the same recognizer on the reference reply speech: the
  ceiling it allows.
- Enhancement / target speaker: the reply's vocoded speech against the clean reference,
  aligned by the model's own onset (no lag search). The mixture and the reference itself
  pass through the same log-mel + vocoder path, so the improvement is over what the path
  makes of the mixture and `*_perfect_mel_db` is the ceiling; log-spectral distance
  (`lsd_improvement_db`) is the headline, SI-SDR (floored at SI_SDR_FLOOR_DB, which silence
  scores) beside it.
- TTS: mean |log-mel| difference between the generated speech (the streamed samples, as
  heard back) and the reference voice over the reference's frames, aligned likewise.
"""

from __future__ import annotations

import numpy as np

from data_pipelines import contract
from data_pipelines import timeline as tl
from omni_jax.evaluation import cases as cases_lib
from omni_jax.evaluation import metrics, outcomes
from omni_jax.evaluation.catalog import gain_key
from omni_jax.evaluation.readings import (best_lag, fit_length, floored_si_sdr, window,
                                          window_frames)


def rate(successes: int, trials: int) -> dict:
    """A rate with its Wilson 95% interval, as report entries."""
    lo, hi = metrics.wilson_interval(successes, trials)
    return dict(value=successes / trials if trials else None, lo=lo, hi=hi, n=trials)


def _with_interval(scores: dict, name: str, entry: dict) -> None:
    scores[name] = entry["value"]
    scores[f"{name}_ci95"] = [round(entry["lo"], 4), round(entry["hi"], 4)]


def reply_words(runner, result, b: int):
    """`words_in(first, end)`: the words the model said in blocks [first, end) of stream b."""
    def words_in(first: int, end: int) -> int:
        ids = [int(t) for t in result.tokens[b, first:end].reshape(-1)
               if t >= contract.FIRST_TEXT_ID]
        return len(runner.tokenizer.decode(ids).split()) if ids else 0
    return words_in


def reply_text(runner, result, b: int, from_block: int) -> str:
    """The text of the model's reply: the text tokens of its first speaking run at or after
    `from_block` (nothing said outside that run counts)."""
    onset = outcomes.onset_block(result.speaking[b], from_block)
    if onset is None:
        return ""
    end = outcomes.run_end_block(result.speaking[b], onset)
    ids = [int(t) for t in result.tokens[b, onset:end].reshape(-1)
           if t >= contract.FIRST_TEXT_ID]
    return runner.tokenizer.decode(ids) if ids else ""


def score_asr(runner, suite):
    cases, result = runner.cases("asr"), runner.run("asr", 0.0)
    refs = [" ".join(t.text for t in c.timeline.turns if t.mode == tl.TRANSCRIBE)
            for c in cases]
    hyps = result.text(runner.tokenizer)
    rows = [runner.case_row(c, result, b, reference=r, wer=metrics.wer([r], [h]))
            for b, (c, r, h) in enumerate(zip(cases, refs, hyps))]
    return dict(wer=metrics.wer(refs, hyps), wer_ci95=_corpus_wer_interval(runner, refs, hyps)
                ), rows


def _corpus_wer_interval(runner, refs, hyps) -> list[float]:
    """Bootstrap 95% interval of the corpus WER over the cases."""
    return list(metrics.bootstrap_interval(
        lambda idx: metrics.wer([refs[i] for i in idx], [hyps[i] for i in idx]), len(refs),
        resamples=runner.resamples, seed=int(runner.eval.seed)))


def _mean_interval(runner, values) -> list[float]:
    """Bootstrap 95% interval of a mean over the cases."""
    values = np.asarray(values, np.float64)
    return list(metrics.bootstrap_interval(lambda idx: float(np.mean(values[idx])),
                                           len(values), resamples=runner.resamples,
                                           seed=int(runner.eval.seed)))


def score_qa(runner, suite):
    """Only the reply's text counts: normalised exact match (headline) and word F1."""
    cases, result = runner.cases("qa"), runner.run("qa", 0.0)
    answers = [c.meta["answer"] for c in cases]
    starts = [runner.timing.heard(c.event("question").start_s) for c in cases]
    s2t = [reply_text(runner, result, b, k) for b, k in enumerate(starts)]
    heard = runner.recognize(runner.vocoded("qa", 0.0))
    reference_speech = np.stack([c.record["speech_target"].reshape(-1) for c in cases])
    heard_reference = runner.recognize(reference_speech)
    exact = [metrics.exact_match(a, t) for a, t in zip(answers, s2t)]
    rows = [runner.case_row(c, result, b, answer=a, reply_text=t, s2t_correct=e,
                            s2t_word_f1=metrics.word_f1(a, t), s2s_transcript=h,
                            s2s_correct=metrics.exact_match(a, h))
            for b, (c, a, t, e, h) in enumerate(zip(cases, answers, s2t, exact, heard))]
    scores = dict(s2t_word_f1=float(np.mean([r["s2t_word_f1"] for r in rows])),
                  s2s_accuracy=float(np.mean([r["s2s_correct"] for r in rows])),
                  s2s_recognizer_reference_accuracy=float(np.mean(
                      [metrics.exact_match(a, h) for a, h in zip(answers, heard_reference)])),
                  recognizer_reference_wer=metrics.wer(answers, heard_reference))
    _with_interval(scores, "s2t_accuracy", rate(sum(exact), len(exact)))
    # A blind bar: always say the answer that is most common among these very cases.
    normalized = [metrics.normalize(a) for a in answers]
    commonest = max(set(normalized), key=normalized.count) if normalized else ""
    scores["constant_answer_accuracy"] = float(np.mean(
        [metrics.exact_match(a, commonest) for a in answers])) if answers else None
    return scores, rows


def score_turn_taking(runner, suite):
    """A reply is taken when it starts within eval.max_turn_latency_s after the question's
    end and is sustained; starting before the end is a cut-off (outcomes.turn_outcome)."""
    cases, result = runner.cases("qa"), runner.run("qa", 0.0)
    e = runner.eval
    rows, taken, cut, latencies, reference = [], [], [], [], []
    for b, case in enumerate(cases):
        end_s = case.event("question").end_s(runner.sample_rate)
        o = cases_lib.turn_reading(case, result.speaking[b], e, runner.timing,
                                   runner.sample_rate, reply_words(runner, result, b))
        taken.append(o.taken)
        cut.append(o.cut_off)
        if o.taken:
            latencies.append(o.latency_ms)
        ref = outcomes.onset_block(case.record["speaking"])
        reference.append((ref * runner.block_s - end_s) * 1000.0)
        rows.append(runner.case_row(case, result, b, turn_end_s=round(end_s, 3),
                                    success=o.taken, cut_off=o.cut_off,
                                    sustained=o.sustained, latency_ms=o.latency_ms))
    scores = dict(latency_ms_median=float(np.median(latencies)) if latencies else float("nan"),
                  reference_latency_ms_median=float(np.median(reference)))
    lat = np.asarray(latencies, np.float64)
    scores["latency_ms_median_ci95"] = list(metrics.bootstrap_interval(
        lambda idx: float(np.median(lat[idx])), lat.size, seed=int(e.seed),
        resamples=runner.resamples))
    _with_interval(scores, "success_rate", rate(sum(taken), len(taken)))
    _with_interval(scores, "cut_off_rate", rate(sum(cut), len(cut)))
    return scores, rows


def score_pause_handling(runner, suite):
    """The user pauses mid-question (0.5-1.5 s): a reply taken after the real end is a
    success (turn-taking's rule); `pause_takeover_rate` counts onsets inside the pause
    (Full-Duplex-Bench's pause handling, lower is better)."""
    cases, result = runner.cases("pause"), runner.run("pause", 0.0)
    taken, in_pause, rows = [], [], []
    for b, case in enumerate(cases):
        o = cases_lib.turn_reading(case, result.speaking[b], runner.eval, runner.timing,
                                   runner.sample_rate, reply_words(runner, result, b))
        first, last = (runner.timing.heard(case.meta[k]) for k in ("pause_start_s",
                                                                   "pause_end_s"))
        onset = outcomes.onset_block(result.speaking[b], first)
        in_pause.append(onset is not None and onset <= last)
        taken.append(o.taken)
        rows.append(runner.case_row(case, result, b, success=o.taken, cut_off=o.cut_off,
                                    took_over_in_pause=in_pause[-1], latency_ms=o.latency_ms))
    scores = {}
    _with_interval(scores, "success_rate", rate(sum(taken), len(taken)))
    _with_interval(scores, "pause_takeover_rate", rate(sum(in_pause), len(in_pause)))
    return scores, rows


def stop_outcomes(runner, name: str, echo_gain: float):
    """(cases, result, one outcomes.StopOutcome per case) of a case set whose replies meet
    an interruption (meta should_stop) or a distractor; a case with no such event (the
    model's own echo is the only distractor) is read over the whole reply."""
    cases, result = runner.cases(name), runner.run(name, echo_gain)
    out = [cases_lib.stop_reading(case, result.speaking[b], runner.eval, runner.timing,
                                  runner.sample_rate) for b, case in enumerate(cases)]
    return cases, result, out


def _stop_rows(runner, cases, result, trials, echo_gain):
    return [runner.case_row(c, result, b, echo_gain=echo_gain, should_stop=t.should_stop,
                            outcome=t.kind, covered=t.covered, onset_s=t.onset_s,
                            stop_s=t.stop_s, stop_latency_ms=t.latency_ms)
            for b, (c, t) in enumerate(zip(cases, trials))]


def barge_in_entries(trials, seed: int, resamples: int, suffix: str = "") -> dict:
    """F1 (bootstrap 95% interval), precision, recall, coverage, stop latency, outcome counts."""
    out = outcomes.barge_in_scores(trials)
    latencies = [t.latency_ms for t in trials if t.kind == outcomes.HIT]
    scores = {f"f1{suffix}": out.f1, f"precision{suffix}": out.precision,
              f"recall{suffix}": out.recall, f"coverage{suffix}": out.coverage,
              f"stop_latency_ms_median{suffix}": (float(np.median(latencies)) if latencies
                                                  else float("nan")),
              f"outcomes{suffix}": out.counts}
    scores[f"f1{suffix}_ci95"] = list(metrics.bootstrap_interval(
        lambda idx: outcomes.barge_in_scores([trials[i] for i in idx]).f1, len(trials),
        seed=seed, resamples=resamples))
    return scores


def score_barge_in_ci(runner, suite):
    scores, rows, latencies = {}, [], []
    for gain in suite.echo_gains:
        cases, result, trials = stop_outcomes(runner, "barge_in_ci", gain)
        scores.update(barge_in_entries(trials, int(runner.eval.seed), runner.resamples,
                                       f"_echo_{gain_key(gain)}"))
        latencies += [t.latency_ms for t in trials if t.kind == outcomes.HIT]
        rows += _stop_rows(runner, cases, result, trials, gain)
    scores["stop_latency_ms_median"] = (float(np.median(latencies)) if latencies
                                        else float("nan"))
    return scores, rows


def score_barge_in_cd(runner, suite):
    cases, result, trials = stop_outcomes(runner, "barge_in_cd", 0.0)
    return (barge_in_entries(trials, int(runner.eval.seed), runner.resamples),
            _stop_rows(runner, cases, result, trials, 0.0))


def _keeps(runner, name: str, echo_gain: float, suffix: str = ""):
    """False-stop suites: `keep_rate` (the headline: the model took the turn, was speaking
    when the distractor came and did not stop, over ALL cases), `coverage` (cases where it
    was speaking then) and `false_stop_rate` over the covered cases (None if none)."""
    cases, result, trials = stop_outcomes(runner, name, echo_gain)
    covered = [t for t in trials if t.covered]
    scores = {}
    _with_interval(scores, f"keep_rate{suffix}",
                   rate(sum(t.kind == outcomes.KEPT for t in trials), len(trials)))
    _with_interval(scores, f"coverage{suffix}", rate(len(covered), len(trials)))
    _with_interval(scores, f"false_stop_rate{suffix}",
                   rate(sum(t.kind == outcomes.FALSE_STOP for t in covered), len(covered)))
    return scores, _stop_rows(runner, cases, result, trials, echo_gain)


def score_echo(runner, suite):
    scores, rows = {}, []
    for gain in suite.echo_gains:
        more, more_rows = _keeps(runner, "echo", gain, f"_echo_{gain_key(gain)}")
        scores.update(more)
        rows += more_rows
    loudest = gain_key(max(suite.echo_gains))
    for name in ("keep_rate", "coverage", "false_stop_rate"):
        scores[name] = scores[f"{name}_echo_{loudest}"]
        scores[f"{name}_ci95"] = scores[f"{name}_echo_{loudest}_ci95"]
    return scores, rows


def score_backchannel(runner, suite):
    return _keeps(runner, "backchannel", 0.0)


def score_third_speaker(runner, suite):
    return _keeps(runner, "third_speaker", 0.0)


def _through_vocoder(runner, audio_BxT: np.ndarray) -> np.ndarray:
    """Audio as the model's speech path renders it: the frontend's log-mel, then the
    streaming vocoder (what a perfect log-mel would sound like), its delay taken off."""
    mel_BxFxM = np.asarray(runner.frontend(np.asarray(audio_BxT, np.float32)))
    return np.stack([fit_length(runner.speech_path.play_utterance(m), audio_BxT.shape[1])
                     for m in mel_BxFxM])


def _enhancement(runner, name: str, source_kinds: tuple[str, ...]):
    """The reply's vocoded speech against the clean reference, aligned by the model's own
    onset (its reply starts where its speaking starts; no lag search). The mixture and the
    reference itself go through the same log-mel + vocoder path: `lsd_improvement_db` (the
    headline) and `si_sdr_improvement_db` are over the vocoded mixture, and
    `*_perfect_mel_db` is the ceiling the path allows."""
    cases, result = runner.cases(name), runner.run(name, 0.0)
    speech_BxT = runner.vocoded(name, 0.0)
    rate, s = runner.sample_rate, result.env_audio.shape[2]
    mixtures, references, estimates, rows = [], [], [], []
    for b, case in enumerate(cases):
        turn, source = case.first_speak_turn(), case.event(*source_kinds)
        reference_T = turn.audio
        start = int(round(runner.ctx.speech_start_s(turn.start_s) * rate))
        ref_onset = outcomes.onset_block(case.record["speaking"])
        onset = outcomes.onset_block(result.speaking[b], runner.timing.heard(source.start_s))
        shift = 0 if onset is None or ref_onset is None else (onset - ref_onset) * s
        estimates.append(window(speech_BxT[b], start + shift, reference_T.size))
        mixtures.append(window(case.env_T, int(round(source.start_s * rate)), reference_T.size))
        references.append(reference_T)
    hop = runner.frontend.hop
    length = -(-max(r.size for r in references) // hop) * hop  # whole frames for the frontend
    pad = lambda xs: np.stack([fit_length(x, length) for x in xs])  # noqa: E731
    vocoded_mixture_BxT = _through_vocoder(runner, pad(mixtures))
    perfect_BxT = _through_vocoder(runner, pad(references))
    sums = {k: [] for k in ("si_sdr_db", "si_sdr_mixture_db", "si_sdr_perfect_mel_db", "lsd_db",
                            "lsd_mixture_db", "lsd_perfect_mel_db")}
    for b, case in enumerate(cases):
        ref = references[b]
        mix, perfect = vocoded_mixture_BxT[b, :ref.size], perfect_BxT[b, :ref.size]
        row = dict(si_sdr_db=floored_si_sdr(estimates[b], ref),
                   si_sdr_mixture_db=floored_si_sdr(mix, ref),
                   si_sdr_perfect_mel_db=floored_si_sdr(perfect, ref),
                   lsd_db=metrics.log_spectral_distance(estimates[b], ref),
                   lsd_mixture_db=metrics.log_spectral_distance(mix, ref),
                   lsd_perfect_mel_db=metrics.log_spectral_distance(perfect, ref))
        for k, v in row.items():
            sums[k].append(v)
        rows.append(runner.case_row(case, result, b, **row))
    mean = {k: float(np.mean(v)) for k, v in sums.items()}
    lsd_gain = np.asarray(sums["lsd_mixture_db"]) - np.asarray(sums["lsd_db"])
    sdr_gain = np.asarray(sums["si_sdr_db"]) - np.asarray(sums["si_sdr_mixture_db"])
    return dict(lsd_improvement_db=mean["lsd_mixture_db"] - mean["lsd_db"],
                lsd_improvement_db_ci95=_mean_interval(runner, lsd_gain),
                si_sdr_improvement_db_ci95=_mean_interval(runner, sdr_gain),
                si_sdr_improvement_db=mean["si_sdr_db"] - mean["si_sdr_mixture_db"],
                lsd_improvement_perfect_mel_db=mean["lsd_mixture_db"] - mean["lsd_perfect_mel_db"],
                si_sdr_improvement_perfect_mel_db=(mean["si_sdr_perfect_mel_db"]
                                                   - mean["si_sdr_mixture_db"]),
                **mean), rows


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
    # Intelligibility: the independent recognizer on the played speech, its WER on the
    # reference speech (the same text in the assistant's voice) as the ceiling.
    texts = [case.first_speak_turn().text for case in cases]
    heard = runner.recognize(runner.vocoded("tts", 0.0))
    heard_reference = runner.recognize(references)
    for row, hypothesis in zip(rows, heard):
        row["transcript"] = hypothesis
    return dict(mel_distance=float(np.mean(distances)),
                mel_distance_ci95=_mean_interval(runner, distances),
                wer=metrics.wer(texts, heard),
                wer_ci95=_corpus_wer_interval(runner, texts, heard),
                recognizer_reference_wer=metrics.wer(texts, heard_reference)), rows


LISTENING_PROBES = 8  # streams of silence and of noise each
PROBE_NOISE_RMS = 0.01  # white noise at -40 dBFS: the noise-only probe


def score_listening(runner, suite):
    """The simplest proof that the model hears (a clock scores 0 / yes / never):
    `onset_slope` of the reply onset against the question's end over the qa cases (a
    listener is near 1; bootstrap interval), `replies_to_silence` / `replies_to_noise`
    (streams of silence / noise only, with the qa prompt, in which the model ever speaks),
    and `changed_by_trigger`: of the barge-in dialogues with an interruption, those whose
    speaking state after the trigger's start differs from the same dialogue without it."""
    cases, result = runner.cases("qa"), runner.run("qa", 0.0)
    ends, onsets, rows = [], [], []
    for b, case in enumerate(cases):
        question = case.event("question")
        start = runner.timing.heard(question.start_s)
        onset = outcomes.onset_block(result.speaking[b], start)
        if onset == start and start > 0 and result.speaking[b, start - 1]:
            onset = None  # already talking when the question began: no reply onset
        end_s = question.end_s(runner.sample_rate)
        if onset is not None:
            ends.append(end_s)
            onsets.append(onset * runner.block_s)
        rows.append(dict(check="onset", turn_end_s=round(end_s, 3),
                         onset_s=None if onset is None else onset * runner.block_s))
    x, y = np.asarray(ends), np.asarray(onsets)
    scores = dict(onset_slope=metrics.slope(x, y), onset_cases=len(ends))
    scores["onset_slope_ci95"] = list(metrics.bootstrap_interval(
        lambda idx: metrics.slope(x[idx], y[idx]), x.size, seed=int(runner.eval.seed),
        resamples=runner.resamples))
    n = min(LISTENING_PROBES, len(cases))
    length = result.speaking.shape[1] * result.env_audio.shape[2]
    prompt_BxP = np.stack([c.record["prompt_tokens"] for c in cases[:n]])
    noise = np.random.default_rng(int(runner.eval.seed)).normal(0.0, PROBE_NOISE_RMS, (n, length))
    for key, env_BxT in (("silence", np.zeros((n, length), np.float32)),
                         ("noise", np.clip(noise, -1, 1).astype(np.float32))):
        probe = runner.run_inputs(key, env_BxT, prompt_BxP)
        spoke = probe.speaking.any(axis=1)
        _with_interval(scores, f"replies_to_{key}", rate(int(spoke.sum()), n))
        rows += [dict(check=key, spoke=bool(v)) for v in spoke]
    barge, with_trigger = runner.cases("barge_in_ci"), runner.run("barge_in_ci", 0.0)
    positives = [b for b, c in enumerate(barge) if c.meta.get("should_stop")]
    if positives:
        twins_BxT = np.stack([cases_lib.without_trigger(barge[b], runner.config,
                                                        runner.tokenizer, runner.timing)
                              for b in positives])
        prompts = np.stack([barge[b].record["prompt_tokens"] for b in positives])
        without = runner.run_inputs("no_trigger", twins_BxT, prompts)
        changed = []
        for i, b in enumerate(positives):
            start = runner.timing.heard(cases_lib.trigger_event(barge[b]).start_s)
            changed.append(bool(np.any(with_trigger.speaking[b, start:]
                                       != without.speaking[i, start:])))
            rows.append(dict(check="trigger", changed=changed[-1]))
        _with_interval(scores, "changed_by_trigger", rate(sum(changed), len(changed)))
    return scores, rows


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
    "pause_handling": score_pause_handling,
    "listening": score_listening,
}
