"""Blind baselines: policies that ignore what is said, scored by the suites' own code.

A figure is a claim about listening only when these fall clearly below the model:
  silent        never speaks
  never_stop    talks from block 0 to the end
  fixed_clock   speaks in blocks [start, stop), the same in every case; (start, stop) is
                chosen on the even-indexed cases to maximise the suite's headline and scored
                on the odd-indexed ones (so it cannot see the cases it is scored on)
  energy        hears loudness only: starts `quiet_blocks` after the microphone goes quiet
                following sound, stops one block after any sound begins while it speaks
They say nothing (no text tokens) and make no speech, so text and speech metrics score them
at the floor. `PolicyRunner` hands a policy's result to the unchanged scorers in place of
the engine's.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import numpy as np

from data_pipelines import contract
from omni_jax.audio.frontend import SILENCE_LOG_MEL
from omni_jax.duplex.engine import EngineResult

ENERGY_THRESHOLD = 0.01  # block RMS (-40 dBFS) above which the energy policy hears sound
QUIET_BLOCKS = 3  # 240 ms of quiet after sound: the energy policy's turn end


def silent(env_BxKxS: np.ndarray) -> np.ndarray:
    return np.zeros(env_BxKxS.shape[:2], bool)


def never_stop(env_BxKxS: np.ndarray) -> np.ndarray:
    return np.ones(env_BxKxS.shape[:2], bool)


def fixed_clock(start: int, stop: int) -> Callable[[np.ndarray], np.ndarray]:
    def policy(env_BxKxS: np.ndarray) -> np.ndarray:
        speaking_BxK = np.zeros(env_BxKxS.shape[:2], bool)
        speaking_BxK[:, start:stop] = True
        return speaking_BxK
    return policy


def energy(env_BxKxS: np.ndarray, threshold: float = ENERGY_THRESHOLD,
           quiet_blocks: int = QUIET_BLOCKS) -> np.ndarray:
    loud_BxK = np.sqrt(np.mean(np.square(env_BxKxS, dtype=np.float64), axis=-1)) > threshold
    speaking_BxK = np.zeros(loud_BxK.shape, bool)
    for b in range(loud_BxK.shape[0]):
        talking, heard, quiet = False, False, 0
        for k in range(loud_BxK.shape[1]):
            # The state after block k may use block k's audio (as the model's may).
            if talking and loud_BxK[b, k]:
                talking, heard, quiet = False, True, 0
            elif not talking:
                quiet = 0 if loud_BxK[b, k] else quiet + 1
                heard |= bool(loud_BxK[b, k])
                if heard and quiet >= quiet_blocks:
                    talking, heard = True, False
            speaking_BxK[b, k] = talking
    return speaking_BxK


FIXED_POLICIES = {"silent": silent, "never_stop": never_stop, "energy": energy}


def policy_result(speaking_BxK: np.ndarray, env_BxKxS: np.ndarray, like: EngineResult
                  ) -> EngineResult:
    """An EngineResult of a policy: its speaking state, no text (every slot <think>), no
    speech, the microphone as given (no echo: it makes no sound)."""
    b, k, s = env_BxKxS.shape
    n = like.tokens.shape[2]
    think_BxKxN = np.full((b, k, n), contract.THINK_ID, np.int32)
    return EngineResult(
        input_tokens=think_BxKxN, tokens=think_BxKxN, raw_tokens=think_BxKxN,
        speaking=speaking_BxK.astype(bool), speak_prob=speaking_BxK.astype(np.float32),
        mel=np.full((b, k) + like.mel.shape[2:], SILENCE_LOG_MEL, np.float32),
        speech=np.zeros((b, k, s), np.float32), env_audio=env_BxKxS.astype(np.float32),
        asst_audio=np.zeros((b, k, s), np.float32), logits=None, block_ms=like.block_ms,
        sample_rate=like.sample_rate, thinking=like.thinking)


class PolicyRunner:
    """A `SuiteRunner` seen through a policy: the same cases (or a subset), the policy's
    speaking state as the result, silence as speech, nothing recognised. Everything else
    (ctx, timing, eval, tokenizer, ...) is the runner's."""

    def __init__(self, runner, policy: Callable[[np.ndarray], np.ndarray],
                 indices: Optional[Sequence[int]] = None, resamples: int = 0):
        self._runner, self._policy, self._indices = runner, policy, indices
        self.resamples = resamples  # bootstrap resamples of intervals (0: none, fast)
        self._runs: dict[tuple[str, float], EngineResult] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runner, name)

    def cases(self, name: str):
        cases = self._runner.cases(name)
        return cases if self._indices is None else [cases[i] for i in self._indices]

    def run(self, name: str, echo_gain: float) -> EngineResult:
        key = (name, float(echo_gain))
        if key not in self._runs:
            like = self._runner.run(name, 0.0)
            s = like.env_audio.shape[2]
            env_BxKxS = np.stack([c.env_T[:like.env_audio.shape[1] * s]
                                  .reshape(-1, s) for c in self.cases(name)])
            self._runs[key] = policy_result(self._policy(env_BxKxS), env_BxKxS, like)
        return self._runs[key]

    def run_inputs(self, key: str, env_BxT: np.ndarray, prompt_BxP: np.ndarray
                   ) -> EngineResult:
        like = self._runner.run("qa", 0.0)
        env_BxKxS = env_BxT.reshape(env_BxT.shape[0], -1, like.env_audio.shape[2])
        return policy_result(self._policy(env_BxKxS), env_BxKxS, like)

    def vocoded(self, name: str, echo_gain: float) -> np.ndarray:
        result = self.run(name, echo_gain)
        return result.speech.reshape(result.num_streams, -1)

    def recognize(self, audio_BxT: np.ndarray) -> list[str]:
        return [""] * audio_BxT.shape[0]

    def case_row(self, case, result, b: int, **scores) -> dict[str, Any]:
        return scores


@dataclasses.dataclass(frozen=True)
class Baseline:
    name: str
    value: Optional[float]  # the suite's headline under this policy
    detail: dict  # fixed_clock: the chosen blocks


def headline_of(scores: dict, key: str) -> Optional[float]:
    value = scores.get(key)
    return None if value is None or not np.isfinite(value) else float(value)


def score_baselines(runner, suite, scorer, headline: str, clock_step: int = 2
                    ) -> list[Baseline]:
    """Every blind policy's headline on `suite` (scored on all cases; the fixed clock fit
    on the even cases and scored on the odd ones)."""
    out = []
    for name, policy in FIXED_POLICIES.items():
        scores, _ = scorer(PolicyRunner(runner, policy), suite)
        out.append(Baseline(name, headline_of(scores, headline), {}))
    num_cases = len(runner.cases(suite.cases))
    num_blocks = runner.run(suite.cases, 0.0).speaking.shape[1]
    fit, held = list(range(0, num_cases, 2)), list(range(1, num_cases, 2))
    best, best_value = (0, 0), -np.inf
    for start in range(0, num_blocks, clock_step):
        for stop in range(start + clock_step, num_blocks + 1, clock_step):
            scores, _ = scorer(PolicyRunner(runner, fixed_clock(start, stop), fit), suite)
            value = headline_of(scores, headline)
            if value is not None and value > best_value:
                best, best_value = (start, stop), value
    scores, _ = scorer(PolicyRunner(runner, fixed_clock(*best), held), suite)
    out.append(Baseline("fixed_clock", headline_of(scores, headline),
                        dict(start_s=best[0] * runner.block_s, stop_s=best[1] * runner.block_s,
                             fit_cases=len(fit), scored_cases=len(held))))
    return out
