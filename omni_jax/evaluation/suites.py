"""Evaluation suites: one per case of the papers, free-running on held-out voices.

  python -m omni_jax.main --config=configs/tiny.py --workdir=DIR --mode=eval

Each suite generates `config.eval.cases` dialogues of its scenario with the evaluation
split's context (`scenarios.make_context(config, "eval")`: user voices never heard in
training, or the held-out speaker of a real corpus), lets the model run through them with
`DuplexEngine` (greedy unless `eval.temperature`), and scores what it did:

  suite           scenario      runs (echo gain)  metrics (report.json keys first)
  asr             asr           0                 wer
  qa              qa            0                 s2t_accuracy, s2s_accuracy
  turn_taking     qa            0                 success_rate, latency_ms_median
  barge_in_ci     barge_in_ci   0, 0.1, 1.0       f1_echo_{g}, stop_latency_ms_median
  barge_in_cd     barge_in_cd   0                 f1
  echo            barge_in_ci   0, 0.1, 1.0       false_stop_rate (gains > 0)
                  (nothing said during the reply)
  backchannel     backchannel   0                 false_stop_rate
  third_speaker   third_speaker 0                 false_stop_rate
  enhancement     enhancement   0                 si_sdr_improvement_db (+ log-spectral)
  target_speaker  target_speaker 0                si_sdr_improvement_db (+ log-spectral)
  tts             tts           0                 mel_distance

Definitions (times on the dialogue's axis, an engine event at block k has time k*block):
- The model's reply: its first start after block 0; its stop: the first stop after that
  start. The reply's natural end is where the reference reply's speech ends (the
  renderer's timing); a stop more than `eval.early_stop_tolerance_s` before it is an
  early stop. Only early stops count as stops in false-stop scoring, and in barge-in
  scoring also a stop within the stop window after a real interruption
  (`barge_in_stop_s`): a model that talks to the end of its reply did not stop.
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

`eval.splits` names the user-speech splits scored: "eval" (first: the report's keys), and
for a real corpus with more (FSDD's official "test" takes) "SUITE@SPLIT" keys as well.
Suites whose scenarios the config does not train are skipped with `eval.suites = "auto"`
(e.g. a stage-1 run is scored on asr, qa and turn_taking only). Per suite the run writes
`DIR/eval/step_N/SUITE/` with `cases.jsonl` (per case: text, events, scores) and, for the
first `eval.pictures` cases, a PNG timeline and a stereo wav (left: the microphone as
heard, right: the model's speech).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from data_pipelines import contract, render, world
from data_pipelines import timeline as tl
from omni_jax.evaluation import metrics

log = logging.getLogger(__name__)

ECHO_GAINS = (0.0, 0.1, 1.0)  # v2 Table 5
SI_SDR_FLOOR_DB = -50.0  # a silent or hopeless estimate scores this (keeps means finite)


def gain_key(gain: float) -> str:
    """Echo gains as report keys spell them: 0, 0.1, 1.0."""
    return "0" if gain == 0 else repr(float(gain))


# ---- what one suite is ---------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class CaseSet:
    """Dialogues of one scenario; `keep` filters them (drawing more until enough)."""

    scenario: str
    keep: Optional[Callable[[tl.Timeline], bool]] = None


def _nothing_said(timeline: tl.Timeline) -> bool:
    return timeline.meta.get("interruption_kind") == "none"


CASE_SETS = {
    "asr": CaseSet("asr"),
    "qa": CaseSet("qa"),
    "barge_in_ci": CaseSet("barge_in_ci"),
    "echo": CaseSet("barge_in_ci", keep=_nothing_said),
    "barge_in_cd": CaseSet("barge_in_cd"),
    "backchannel": CaseSet("backchannel"),
    "third_speaker": CaseSet("third_speaker"),
    "enhancement": CaseSet("enhancement"),
    "target_speaker": CaseSet("target_speaker"),
    "tts": CaseSet("tts"),
}


@dataclasses.dataclass(frozen=True)
class Suite:
    name: str
    cases: str  # a CASE_SETS key (suites sharing one share its dialogues and runs)
    echo_gains: tuple[float, ...]
    needs: tuple[str, ...]  # scenarios one of which the config must train ("auto")


SUITES = {s.name: s for s in (
    Suite("asr", "asr", (0.0,), ("asr",)),
    Suite("qa", "qa", (0.0,), ("qa", "multi_turn")),
    Suite("turn_taking", "qa", (0.0,), ("qa", "multi_turn")),
    Suite("barge_in_ci", "barge_in_ci", ECHO_GAINS, ("barge_in_ci", "barge_in_echo")),
    Suite("barge_in_cd", "barge_in_cd", (0.0,), ("barge_in_cd",)),
    Suite("echo", "echo", ECHO_GAINS, ("barge_in_echo",)),
    Suite("backchannel", "backchannel", (0.0,), ("backchannel",)),
    Suite("third_speaker", "third_speaker", (0.0,), ("third_speaker",)),
    Suite("enhancement", "enhancement", (0.0,), ("enhancement",)),
    Suite("target_speaker", "target_speaker", (0.0,), ("target_speaker",)),
    Suite("tts", "tts", (0.0,), ("tts",)),
)}


def eval_settings(config):
    """`config.eval`, over the defaults (a run directory written before a field existed
    still evaluates)."""
    from configs import default

    settings = default.get_config().eval
    if "eval" in config:
        settings.update(config.eval)
    return settings


def selected_suites(config) -> list[str]:
    """`eval.suites`: "auto" (those whose scenarios have weight > 0), "all", "none", or a
    comma-separated list of names."""
    spec = str(eval_settings(config).suites).strip()
    if spec == "none":
        return []
    if spec == "all":
        return list(SUITES)
    if spec == "auto":
        trained = {name for name, w in config.data.scenarios.items() if float(w) > 0}
        return [s.name for s in SUITES.values() if trained & set(s.needs)]
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in SUITES]
    if unknown or not names:
        raise ValueError(f"config.eval.suites: unknown suites {unknown} in {spec!r}; known: "
                         f"auto, all, none or a comma list of {list(SUITES)}")
    return names


# ---- per-case facts read from the engine's output (pure, tested) -------------------------

def first_start_block(speaking_K: np.ndarray, from_block: int = 0) -> Optional[int]:
    """The first block >= from_block where speaking turned True (None: never)."""
    previous = bool(speaking_K[from_block - 1]) if from_block > 0 else False
    for k in range(from_block, speaking_K.size):
        if speaking_K[k] and not previous:
            return k
        previous = bool(speaking_K[k])
    return None


def first_stop_block(speaking_K: np.ndarray, after_block: int) -> Optional[int]:
    """The first block > after_block where speaking turned False (None: never)."""
    for k in range(after_block + 1, speaking_K.size):
        if speaking_K[k - 1] and not speaking_K[k]:
            return k
    return None


def early_stop_s(speaking_K: np.ndarray, block_s: float, natural_end_s: float,
                 tolerance_s: float) -> Optional[float]:
    """The time of the model's first stop after its first start, when that stop comes more
    than `tolerance_s` before the reply's natural end; else None (it did not stop)."""
    start = first_start_block(speaking_K)
    if start is None:
        return None
    stop = first_stop_block(speaking_K, start)
    if stop is None or stop * block_s >= natural_end_s - tolerance_s - 1e-9:
        return None
    return stop * block_s


def barge_in_stop_s(speaking_K: np.ndarray, block_s: float, natural_end_s: float,
                    tolerance_s: float, timing: contract.TimingRules,
                    trigger_end_s: Optional[float] = None) -> Optional[float]:
    """The stop that barge-in scoring sees: an early stop (`early_stop_s`), or, after an
    interruption that ended at `trigger_end_s`, the first stop when it comes within the
    stop window (a trigger may end shortly before the reply would have: that stop is a
    reaction, not the reply's end)."""
    stop = early_stop_s(speaking_K, block_s, natural_end_s, tolerance_s)
    start = first_start_block(speaking_K)
    if stop is not None or trigger_end_s is None or start is None:
        return stop
    first = first_stop_block(speaking_K, start)
    if first is None:
        return None
    lag = first - timing.heard(trigger_end_s)
    return first * block_s if 0 <= lag <= timing.stop_window_blocks else None


def best_lag(score: Callable[[int], float], max_lag: int, step: int) -> tuple[int, float]:
    """(lag, score) maximising `score(lag)` over lags in [-max_lag, max_lag] by `step`."""
    lags = range(-(max_lag // step) * step, max_lag + 1, step)
    values = [(score(lag), lag) for lag in lags]
    value, lag = max(values, key=lambda v: (v[0], -abs(v[1])))
    return lag, value


def floored_si_sdr(estimate_T: np.ndarray, reference_T: np.ndarray) -> float:
    """SI-SDR in dB, at least SI_SDR_FLOOR_DB; a silent estimate scores the floor (plain
    SI-SDR is 0 dB for silence: 0 / 0 regularised, better than most real outputs)."""
    if not np.any(estimate_T):
        return SI_SDR_FLOOR_DB
    return max(metrics.si_sdr(estimate_T, reference_T), SI_SDR_FLOOR_DB)


def window(audio_T: np.ndarray, start: int, length: int) -> np.ndarray:
    """audio_T[start:start+length], zero outside the signal."""
    out = np.zeros(length, np.float32)
    lo, hi = max(start, 0), min(start + length, audio_T.size)
    if hi > lo:
        out[lo - start:hi - start] = audio_T[lo:hi]
    return out


# ---- cases -------------------------------------------------------------------------------

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


def make_cases(case_set: CaseSet, count: int, scenario_ctx, config, tokenizer, seed: int,
               max_draws_per_case: int = 20) -> list[Case]:
    """`count` rendered dialogues of `case_set`, deterministic in `seed`."""
    from data_pipelines import scenarios

    dims = contract.Dims.from_config(config)
    timing = scenario_ctx.timing
    cases, draw = [], 0
    while len(cases) < count:
        if draw >= count * max_draws_per_case:
            raise RuntimeError(f"suite cases {case_set.scenario!r}: only {len(cases)} of "
                               f"{count} kept after {draw} draws")
        rng = np.random.default_rng([seed, draw])
        draw += 1
        timeline = scenarios.generate(case_set.scenario, rng, scenario_ctx)
        if case_set.keep is not None and not case_set.keep(timeline):
            continue
        quiet = dataclasses.replace(timeline, echo_gain=0.0, echo_delay_s=0.0,
                                    meta={**timeline.meta, "echo_fixed": True})
        record = render.fit_blocks(
            render.render(quiet, dims=dims, timing=timing, thinking=config.model.thinking,
                          tokenizer=tokenizer, rng=rng, augment=None), dims.num_blocks)
        cases.append(Case(timeline, record, record["env_audio"].reshape(-1)))
    return cases


# ---- running and scoring ---------------------------------------------------------------

class SuiteRunner:
    """Generates, runs and scores the suites with one `DuplexEngine` (or anything with its
    `run`); `engine_for(model, params, config, tokenizer)` makes the usual one."""

    def __init__(self, engine, config, tokenizer, *, out_dir: Optional[Path] = None,
                 scenario_ctx=None, suffix: str = ""):
        from data_pipelines import scenarios
        from omni_jax.audio.frontend import LogMelFrontend
        from omni_jax.audio.vocoder import make_vocoder

        if int(config.data.tokens_per_block) != 1:
            raise ValueError("evaluation suites run free-running: data.tokens_per_block "
                             f"must be 1, got {config.data.tokens_per_block}")
        self.config, self.tokenizer = config, tokenizer
        self.eval = eval_settings(config)
        self.out_dir, self.suffix = out_dir, suffix
        self.ctx = scenario_ctx or scenarios.make_context(config, "eval")
        self.timing = self.ctx.timing
        self.block_s = config.audio.block_ms / 1000.0
        self.sample_rate = int(config.audio.sample_rate)
        self.engine = engine
        self.vocoder = make_vocoder(config)
        self.frontend = LogMelFrontend.from_config(config)
        self._cases: dict[str, list[Case]] = {}
        self._runs: dict[tuple[str, float], Any] = {}
        self._speech: dict[tuple[str, float], np.ndarray] = {}

    # -- shared pieces
    def cases(self, name: str) -> list[Case]:
        if name not in self._cases:
            seed = int(self.eval.seed) * 1000 + list(CASE_SETS).index(name)
            self._cases[name] = make_cases(CASE_SETS[name], int(self.eval.cases), self.ctx,
                                           self.config, self.tokenizer, seed)
        return self._cases[name]

    def _engine_run(self, env_BxT: np.ndarray, prompt_BxP: np.ndarray, echo_gain: float):
        return self.engine.run(env_BxT, prompt_BxP, echo_gain=echo_gain,
                               echo_delay_s=float(self.eval.echo_delay_s))

    def run(self, name: str, echo_gain: float):
        """The engine's result over a case set at one echo gain (cached)."""
        key = (name, float(echo_gain))
        if key not in self._runs:
            cases = self.cases(name)
            env_BxT = np.stack([c.env_T for c in cases])
            prompt_BxP = np.stack([c.record["prompt_tokens"] for c in cases])
            self._runs[key] = self._engine_run(env_BxT, prompt_BxP, echo_gain)
        return self._runs[key]

    def vocoded(self, name: str, echo_gain: float) -> np.ndarray:
        """B x T: each stream's kept log-mel through the configured vocoder."""
        key = (name, float(echo_gain))
        if key not in self._speech:
            result = self.run(name, echo_gain)
            length = result.speech.shape[1] * result.speech.shape[2]
            self._speech[key] = np.stack([
                metrics_fit(x, length) for x in result.speech_audio(self.vocoder)])
        return self._speech[key]

    def natural_end_s(self, case: Case) -> float:
        turn = case.first_speak_turn()
        return self.ctx.speech_start_s(turn.start_s) + turn.audio.size / self.sample_rate

    def recognize(self, audio_BxT: np.ndarray) -> list[str]:
        """The project's recognizer: the evaluated model in ASR mode, one stream per row."""
        from omni_jax.evaluation.fdb import encode_prompt

        prompt_P = encode_prompt(self.tokenizer, world.PROMPT_ASR,
                                 int(self.config.data.prompt_len))
        prompt_BxP = np.repeat(prompt_P[None], audio_BxT.shape[0], axis=0)
        return self._engine_run(audio_BxT, prompt_BxP, 0.0).text(self.tokenizer)

    # -- suites
    def score(self, suite: Suite) -> tuple[dict[str, float], list[dict[str, Any]]]:
        return getattr(self, f"_score_{suite.name}")(suite)

    def _case_row(self, case: Case, result, b: int, **scores) -> dict[str, Any]:
        events = [dict(kind=e["kind"], time_s=round(e["time_s"], 3))
                  for e in result.stream_events(b) if e["kind"] != "text"]
        return dict(scenario=case.timeline.scenario,
                    meta={k: v for k, v in case.meta.items() if k != "split"},
                    prompt=case.timeline.prompt, text=result.text(self.tokenizer)[b],
                    transitions=events, **scores)

    def _score_asr(self, suite):
        cases, result = self.cases("asr"), self.run("asr", 0.0)
        refs = [" ".join(t.text for t in c.timeline.turns if t.mode == tl.TRANSCRIBE)
                for c in cases]
        hyps = result.text(self.tokenizer)
        rows = [self._case_row(c, result, b, reference=r,
                               wer=metrics.wer([r], [h]))
                for b, (c, r, h) in enumerate(zip(cases, refs, hyps))]
        return dict(wer=metrics.wer(refs, hyps)), rows

    def _score_qa(self, suite):
        cases, result = self.cases("qa"), self.run("qa", 0.0)
        answers = [c.meta["answer"] for c in cases]
        s2t = result.text(self.tokenizer)
        heard = self.recognize(self.vocoded("qa", 0.0))
        reference_speech = np.stack([c.record["speech_target"].reshape(-1) for c in cases])
        heard_reference = self.recognize(reference_speech)
        rows = [self._case_row(c, result, b, answer=a, s2t_correct=metrics.qa_accuracy([a], [t]),
                               s2s_transcript=h,
                               s2s_correct=metrics.qa_accuracy([a], [h]))
                for b, (c, a, t, h) in enumerate(zip(cases, answers, s2t, heard))]
        return dict(s2t_accuracy=metrics.qa_accuracy(answers, s2t),
                    s2s_accuracy=metrics.qa_accuracy(answers, heard),
                    s2s_recognizer_reference_accuracy=metrics.qa_accuracy(
                        answers, heard_reference)), rows

    def _score_turn_taking(self, suite):
        cases, result = self.cases("qa"), self.run("qa", 0.0)
        ends, firsts, reference = [], [], []
        for b, case in enumerate(cases):
            question = case.event("question")
            ends.append(question.end_s(self.sample_rate))
            start = first_start_block(result.speaking[b])
            firsts.append(None if start is None else start * self.block_s)
            ref = first_start_block(case.record["speaking"])
            reference.append((ref * self.block_s - ends[-1]) * 1000.0)
        out = metrics.turn_taking(ends, firsts, max_latency_s=float(self.eval.max_turn_latency_s))
        rows = [self._case_row(c, result, b, turn_end_s=round(e, 3), success=ok,
                               latency_ms=lat)
                for b, (c, e, ok, lat) in enumerate(zip(cases, ends, out.success,
                                                        out.latency_ms))]
        return dict(success_rate=out.success_rate, latency_ms_median=out.median_latency_ms,
                    latency_ms_mean=out.mean_latency_ms,
                    reference_latency_ms_median=float(np.median(reference))), rows

    def _barge_in_cases(self, name: str, echo_gain: float):
        cases, result = self.cases(name), self.run(name, echo_gain)
        tolerance = float(self.eval.early_stop_tolerance_s)
        out = []
        for b, case in enumerate(cases):
            trigger = next((e for e in case.timeline.events
                            if e.text and e.text == case.meta.get("interruption")), None)
            should_stop = bool(case.meta.get("should_stop", False))
            trigger_end_s = None if trigger is None else trigger.end_s(self.sample_rate)
            stop = barge_in_stop_s(result.speaking[b], self.block_s, self.natural_end_s(case),
                                   tolerance, self.timing,
                                   trigger_end_s if should_stop else None)
            out.append(metrics.BargeInCase(
                should_stop=should_stop, trigger_end_s=trigger_end_s,
                stop_s=stop,
                trigger_start_s=None if trigger is None else trigger.start_s))
        return cases, result, out

    def _barge_in_rows(self, cases, result, trials, echo_gain):
        return [self._case_row(c, result, b, echo_gain=echo_gain,
                               should_stop=t.should_stop, trigger_end_s=t.trigger_end_s,
                               early_stop_s=t.stop_s)
                for b, (c, t) in enumerate(zip(cases, trials))]

    def _score_barge_in_ci(self, suite):
        scores, rows, latencies = {}, [], []
        for gain in suite.echo_gains:
            cases, result, trials = self._barge_in_cases("barge_in_ci", gain)
            out = metrics.barge_in(trials, self.timing)
            g = gain_key(gain)
            scores.update({f"f1_echo_{g}": out.f1, f"precision_echo_{g}": out.precision,
                           f"recall_echo_{g}": out.recall,
                           f"stop_latency_ms_median_echo_{g}": out.median_latency_ms})
            latencies += out.latency_ms
            rows += self._barge_in_rows(cases, result, trials, gain)
        scores["stop_latency_ms_median"] = (float(np.median(latencies)) if latencies
                                            else float("nan"))
        return scores, rows

    def _score_barge_in_cd(self, suite):
        cases, result, trials = self._barge_in_cases("barge_in_cd", 0.0)
        out = metrics.barge_in(trials, self.timing)
        return (dict(f1=out.f1, precision=out.precision, recall=out.recall,
                     stop_latency_ms_median=out.median_latency_ms),
                self._barge_in_rows(cases, result, trials, 0.0))

    def _false_stops(self, name: str, echo_gain: float):
        cases, result, trials = self._barge_in_cases(name, echo_gain)
        rate = metrics.false_stop_rate([self.natural_end_s(c) for c in cases],
                                       [t.stop_s for t in trials])
        return rate, self._barge_in_rows(cases, result, trials, echo_gain)

    def _score_echo(self, suite):
        scores, rows, echoed = {}, [], []
        for gain in suite.echo_gains:
            rate, more = self._false_stops("echo", gain)
            scores[f"false_stop_rate_echo_{gain_key(gain)}"] = rate
            rows += more
            if gain > 0:
                echoed.append(rate)
        scores["false_stop_rate"] = float(np.mean(echoed))
        return scores, rows

    def _score_backchannel(self, suite):
        rate, rows = self._false_stops("backchannel", 0.0)
        return dict(false_stop_rate=rate), rows

    def _score_third_speaker(self, suite):
        rate, rows = self._false_stops("third_speaker", 0.0)
        return dict(false_stop_rate=rate), rows

    def _enhancement(self, name: str, source_kinds: tuple[str, ...]):
        cases, result = self.cases(name), self.run(name, 0.0)
        speech_BxT = self.vocoded(name, 0.0)
        hop = self.frontend.hop
        max_lag = int(round(float(self.eval.align_max_lag_s) * self.sample_rate))
        improvements, lsd_gains, rows = [], [], []
        for b, case in enumerate(cases):
            turn, source = case.first_speak_turn(), case.event(*source_kinds)
            reference_T = turn.audio
            start = int(round(self.ctx.speech_start_s(turn.start_s) * self.sample_rate))
            mixture_T = window(case.env_T, int(round(source.start_s * self.sample_rate)),
                               reference_T.size)
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
            rows.append(self._case_row(case, result, b, si_sdr_db=sdr,
                                       si_sdr_mixture_db=sdr_mixture, lag_ms=lag * 1000 /
                                       self.sample_rate, lsd_db=lsd, lsd_mixture_db=lsd_mixture))
        return dict(si_sdr_improvement_db=float(np.mean(improvements)),
                    si_sdr_db=float(np.mean([r["si_sdr_db"] for r in rows])),
                    lsd_db=float(np.mean([r["lsd_db"] for r in rows])),
                    lsd_improvement_db=float(np.mean(lsd_gains))), rows

    def _score_enhancement(self, suite):
        return self._enhancement("enhancement", ("noisy_speech",))

    def _score_target_speaker(self, suite):
        return self._enhancement("target_speaker", ("target",))

    def _score_tts(self, suite):
        cases, result = self.cases("tts"), self.run("tts", 0.0)
        b_, k_, s_ = result.speech.shape
        hop = self.frontend.hop
        references = np.zeros((b_, k_ * s_), np.float32)
        spans = []
        for b, case in enumerate(cases):
            turn = case.first_speak_turn()
            start = int(round(self.ctx.speech_start_s(turn.start_s) * self.sample_rate))
            length = min(turn.audio.size, k_ * s_ - start)
            references[b, start:start + length] = turn.audio[:length]
            spans.append((start // hop, max(1, length // hop)))
        both = np.concatenate([result.speech.reshape(b_, -1), references]).astype(np.float32)
        mel_2BxFxM = np.asarray(self.frontend(both))
        generated, reference = mel_2BxFxM[:b_], mel_2BxFxM[b_:]
        max_lag = int(round(float(self.eval.align_max_lag_s) * self.sample_rate)) // hop
        distances, rows = [], []
        for b, (case, (f0, frames)) in enumerate(zip(cases, spans)):
            ref_FxM = reference[b, f0:f0 + frames]

            def closeness(lag, b=b, f0=f0, frames=frames, ref_FxM=ref_FxM):
                gen_FxM = window_frames(generated[b], f0 + lag, frames)
                return -float(np.mean(np.abs(gen_FxM - ref_FxM)))

            lag, value = best_lag(closeness, max_lag, 1)
            distances.append(-value)
            rows.append(self._case_row(case, result, b, mel_distance=-value,
                                       lag_ms=lag * hop * 1000 / self.sample_rate))
        return dict(mel_distance=float(np.mean(distances))), rows

    # -- everything
    def run_all(self, names: Sequence[str]) -> dict[str, dict[str, Any]]:
        report = {}
        for name in names:
            started = time.time()
            suite = SUITES[name]
            scores, rows = self.score(suite)
            scores["cases"] = len(self.cases(suite.cases))
            scores = {k: _finite_or_none(v) for k, v in scores.items()}
            report[name] = scores
            log.info("suite %s (%.1f s): %s", name, time.time() - started, scores)
            if self.out_dir is not None:
                self.write_suite(suite, rows)
        return report

    def write_suite(self, suite: Suite, rows: list[dict[str, Any]]) -> None:
        from data_pipelines.serialize import json_default
        from omni_jax.evaluation import pictures

        folder = self.out_dir / (suite.name + self.suffix)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "cases.jsonl", "w") as f:
            for row in rows:
                f.write(json.dumps(row, default=json_default, sort_keys=True) + "\n")
        cases = self.cases(suite.cases)
        result = self.run(suite.cases, suite.echo_gains[-1])
        speech_BxT = result.speech.reshape(result.num_streams, -1)
        for b in range(min(int(self.eval.pictures), len(cases))):
            # Not Path.with_suffix: the gain's "1.0" would read as a suffix.
            stem = f"case{b}_echo{gain_key(suite.echo_gains[-1])}"
            pictures.plot_case(result, b, cases[b].record, self.tokenizer,
                               folder / f"{stem}.png", frontend=self.frontend,
                               title=f"{suite.name} case {b}: {cases[b].timeline.prompt!r}")
            pictures.write_wav(folder / f"{stem}.wav", result.env_audio[b].reshape(-1),
                               speech_BxT[b], self.sample_rate)


def window_frames(mel_FxM: np.ndarray, start: int, frames: int) -> np.ndarray:
    """mel_FxM[start:start+frames], silence (the log floor) outside."""
    from omni_jax.duplex.engine import SILENCE_LOG_MEL

    out = np.full((frames, mel_FxM.shape[1]), SILENCE_LOG_MEL, np.float32)
    lo, hi = max(start, 0), min(start + frames, mel_FxM.shape[0])
    if hi > lo:
        out[lo - start:hi - start] = mel_FxM[lo:hi]
    return out


def metrics_fit(audio_T: np.ndarray, length: int) -> np.ndarray:
    """Cut or zero-pad to `length` samples."""
    return window(np.asarray(audio_T, np.float32), 0, length)


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def split_context(config, split: str, workdir=None):
    """The scenario context of an evaluation split: "eval" (held-out voices or speaker), or
    another split of the user-speech bank (e.g. FSDD's official "test" takes) with the
    held-out espeak voices for everything else. `workdir`: the run directory, where a real
    corpus (data.source='corpus') is built (see `scenarios.make_context`)."""
    from data_pipelines import scenarios
    from data_pipelines.scenarios import real_speech

    ctx = scenarios.make_context(config, "eval", workdir=workdir)
    if split == "eval":
        return ctx
    bank = real_speech.bank_from_config(config, split, workdir=workdir)
    if bank is None:
        raise ValueError(f"config.eval.splits: {split!r} needs a real-speech source with "
                         f"that split (data.source={config.data.source!r} has only 'eval')")
    return dataclasses.replace(ctx, user_speech=bank)


def run_suites(model, params, config, tokenizer, *, out_dir: Optional[Path] = None,
               workdir=None) -> dict[str, dict[str, Any]]:
    """Every selected suite's scores ({suite: {metric: value}}); files under `out_dir`.
    Splits after the first of `eval.splits` report as "SUITE@SPLIT". `workdir`: the run
    directory (where a real corpus of data.source='corpus' is built)."""
    names = selected_suites(config)
    if not names:
        return {}
    engine = engine_for(model, params, config, tokenizer)
    report = {}
    for i, split in enumerate(eval_settings(config).splits):
        suffix = "" if i == 0 else f"@{split}"
        runner = SuiteRunner(engine, config, tokenizer, out_dir=out_dir,
                             scenario_ctx=split_context(config, split, workdir=workdir),
                             suffix=suffix)
        report.update({name + suffix: scores for name, scores in runner.run_all(names).items()})
    return report


def engine_for(model, params, config, tokenizer):
    """The free-running engine the suites use: `eval.temperature` and `eval.seed`, emissions
    restricted to the tokenizer's ids."""
    from omni_jax.duplex.engine import DuplexEngine

    settings = eval_settings(config)
    return DuplexEngine(model, params, config, temperature=settings.temperature,
                        seed=settings.seed, vocab_size=tokenizer.vocab_size)
