"""Evaluation suites: one per case of the papers, free-running on held-out voices.

  python -m omni_jax.main --config=configs/tiny.py --workdir=DIR --mode=eval

Each suite generates `config.eval.cases` dialogues of its scenario with the evaluation
split's context (`cases.split_context`: user voices never heard in training, or the
held-out speaker of a real corpus), lets the model run through them with `DuplexEngine`
(greedy unless `eval.temperature`), and scores what it did (`scoring`, which also defines
every metric):

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
  pause_handling  pause         0                 success_rate, pause_takeover_rate
  listening       qa (+ barge_in_ci, silence and noise probes)
                                0                 onset_slope, replies_to_silence,
                                                  replies_to_noise, changed_by_trigger
Duplex suites also report their blind baselines (`baselines`: silent, never-stop, the best
fixed clock, an energy detector; `best_baseline`, `margin`, `beats_baselines`).

The pieces: `catalog` (the table above as data, and `eval.suites` selection), `cases`
(which dialogues), `readings` (pure per-case readings of the engine's output), `scoring`
(one function per suite); this module runs them (`SuiteRunner`, `run_suites`).

`eval.splits` names the user-speech splits scored: "eval" (first: the report's keys), and
for a real corpus with more (FSDD's official "test" takes) "SUITE@SPLIT" keys as well.
Suites whose scenarios the config does not train are skipped with `eval.suites = "auto"`
(e.g. a stage-1 run is scored on asr, qa and turn_taking only). Per suite the run writes
`DIR/eval/step_N/SUITE/` with `cases.jsonl` (per case: text, events, scores) and, for the
first `eval.pictures` cases, a PNG timeline and a stereo wav (left: the microphone as
heard, right: the model's speech).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from data_pipelines import scenarios
from data_pipelines.serialize import json_default
from omni_jax.audio.frontend import LogMelFrontend
from omni_jax.audio.feedback import Feedback
from omni_jax.duplex.engine import DuplexEngine
from omni_jax.evaluation import baselines, pictures, scoring
from omni_jax.evaluation.cases import CASE_SETS, Case, make_cases, split_context
from omni_jax.evaluation.catalog import SUITES, Suite, gain_key, selected_suites
from omni_jax.evaluation.recognizer import make_recognizer

__all__ = ["SUITES", "SuiteRunner", "engine_for", "run_suites", "selected_suites",
           "split_context"]

log = logging.getLogger(__name__)


class SuiteRunner:
    """Generates, runs and scores the suites with one `DuplexEngine` (or anything with its
    `run`); `engine_for(model, params, config, tokenizer)` makes the usual one. Cases,
    engine runs and vocoded speech are made once and shared by the suites that use them."""

    def __init__(self, engine, config, tokenizer, *, out_dir: Optional[Path] = None,
                 scenario_ctx=None, suffix: str = ""):
        if int(config.data.tokens_per_block) != 1:
            raise ValueError("evaluation suites run free-running: data.tokens_per_block "
                             f"must be 1, got {config.data.tokens_per_block}")
        self.config, self.tokenizer = config, tokenizer
        self.eval = config.eval
        self.out_dir, self.suffix = out_dir, suffix
        self.ctx = scenario_ctx or scenarios.make_context(config, "eval")
        self.timing = self.ctx.timing
        self.block_s = config.audio.block_ms / 1000.0
        self.sample_rate = int(config.audio.sample_rate)
        self.engine = engine
        # The speech path (training's, the engine's): what the model says.
        self.speech_path = Feedback.from_config(config)
        self.frontend = LogMelFrontend.from_config(config)
        self.resamples = 1000  # bootstrap resamples of the intervals
        self._recognizer = None
        self._cases: dict[str, list[Case]] = {}
        self._runs: dict[tuple[str, float], Any] = {}
        self._speech: dict[tuple[str, float], np.ndarray] = {}

    # -- shared pieces
    def cases(self, name: str) -> list[Case]:
        """The dialogues of case set `name` (`cases.CASE_SETS`), made once."""
        if name not in self._cases:
            self._cases[name] = make_cases(CASE_SETS[name], int(self.eval.cases), self.ctx,
                                           self.config, self.tokenizer, int(self.eval.seed),
                                           list(CASE_SETS).index(name))
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

    def run_inputs(self, key: str, env_BxT: np.ndarray, prompt_BxP: np.ndarray):
        """The engine over inputs that are not a case set's (the listening checks' silence,
        noise and trigger-less twins), cached by `key`, no echo."""
        if ("inputs", key) not in self._runs:
            self._runs[("inputs", key)] = self._engine_run(env_BxT, prompt_BxP, 0.0)
        return self._runs[("inputs", key)]

    def vocoded(self, name: str, echo_gain: float) -> np.ndarray:
        """B x T: each stream's played speech (the speech path's, what a user hears), in
        block time: the vocoder's fixed delay taken off."""
        key = (name, float(echo_gain))
        if key not in self._speech:
            played_BxT = self.run(name, echo_gain).speech_audio()
            delay = self.speech_path.vocoder.delay_samples
            self._speech[key] = np.pad(played_BxT[:, delay:], ((0, 0), (0, delay)))
        return self._speech[key]

    def recognize(self, audio_BxT: np.ndarray) -> list[str]:
        """An independent recognizer (`eval.recognizer`, one the project does not train; its
        ceiling on the reference speech is reported beside every figure it makes), one
        transcript per row."""
        if self._recognizer is None:
            self._recognizer = make_recognizer(str(self.eval.recognizer))
        return self._recognizer.transcribe_many(list(audio_BxT), self.sample_rate)

    def case_row(self, case: Case, result, b: int, **scores) -> dict[str, Any]:
        """One line of cases.jsonl: what the case was, what the model did, `scores`."""
        events = [dict(kind=e["kind"], time_s=round(e["time_s"], 3))
                  for e in result.stream_events(b) if e["kind"] != "text"]
        return dict(scenario=case.timeline.scenario,
                    meta={k: v for k, v in case.meta.items() if k != "split"},
                    prompt=case.timeline.prompt, text=result.text(self.tokenizer)[b],
                    transitions=events, **scores)

    # -- suites
    def score(self, suite: Suite) -> tuple[dict[str, float], list[dict[str, Any]]]:
        return scoring.SCORERS[suite.name](self, suite)

    def run_all(self, names: Sequence[str]) -> dict[str, dict[str, Any]]:
        report = {}
        for name in names:
            started = time.time()
            suite = SUITES[name]
            scores, rows = self.score(suite)
            scores["cases"] = len(self.cases(suite.cases))
            if suite.headline:
                scores.update(baseline_entries(self, suite, scores))
            scores = _finite_or_none(scores)
            report[name] = scores
            log.info("suite %s (%.1f s): %s", name, time.time() - started, scores)
            if self.out_dir is not None:
                self.write_suite(suite, rows)
        return report

    def write_suite(self, suite: Suite, rows: list[dict[str, Any]]) -> None:
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


def _finite_or_none(value):
    """NaN and infinities -> None, inside dicts and lists too (report.json is strict JSON)."""
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        return None
    return value


def baseline_entries(runner, suite: Suite, scores: dict) -> dict:
    """The blind baselines' headlines beside the model's: `baselines` {policy: value},
    `best_baseline`, `margin` (model - best) and `beats_baselines`: the model's 95% interval
    lies entirely above the best baseline."""
    found = baselines.score_baselines(runner, suite, scoring.SCORERS[suite.name],
                                      suite.headline)
    values = {b.name: b.value for b in found}
    best = max((b for b in found if b.value is not None), key=lambda b: b.value, default=None)
    model = scores.get(suite.headline)
    interval = scores.get(f"{suite.headline}_ci95") or [None, None]
    out = dict(baselines=values, headline=suite.headline,
               fixed_clock=next(b.detail for b in found if b.name == "fixed_clock"))
    if best is not None:
        out.update(best_baseline=best.name, best_baseline_value=best.value)
        if model is not None and math.isfinite(model):
            out["margin"] = model - best.value
            out["beats_baselines"] = bool(interval[0] is not None
                                          and math.isfinite(interval[0])
                                          and interval[0] > best.value)
    return out


def scalars(report: dict[str, dict[str, Any]]) -> dict[str, float]:
    """A suites report as flat scalars for the metric writers: `suites/SUITE/KEY` for every
    finite number (booleans as 0/1), `suites/SUITE/KEY_lo` and `_hi` for its 95% interval
    (`KEY_ci95`), the best blind baseline's headline as `suites/SUITE/best_baseline`."""
    out = {}
    for suite, scores in report.items():
        for key, value in scores.items():
            if key == "best_baseline_value":
                key = "best_baseline"
            if key.endswith("_ci95") and isinstance(value, (list, tuple)) and len(value) == 2:
                for end, bound in zip(("lo", "hi"), value):
                    if isinstance(bound, (int, float)) and math.isfinite(bound):
                        out[f"suites/{suite}/{key[:-5]}_{end}"] = float(bound)
            elif isinstance(value, (bool, int, float, np.number)) and math.isfinite(value):
                out[f"suites/{suite}/{key}"] = float(value)
    return out


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
    for i, split in enumerate(config.eval.splits):
        suffix = "" if i == 0 else f"@{split}"
        runner = SuiteRunner(engine, config, tokenizer, out_dir=out_dir,
                             scenario_ctx=split_context(config, split, workdir=workdir),
                             suffix=suffix)
        report.update({name + suffix: scores for name, scores in runner.run_all(names).items()})
    return report


def engine_for(model, params, config, tokenizer):
    """The free-running engine the suites use: `eval.temperature` and `eval.seed`, emissions
    restricted to the tokenizer's ids."""
    return DuplexEngine(model, params, config, temperature=config.eval.temperature,
                        seed=config.eval.seed, vocab_size=tokenizer.vocab_size)
