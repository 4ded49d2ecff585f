"""The suite catalog: which suites exist, the cases and echo gains each runs, and which of
them a config selects (`eval.suites`). How a suite is scored: `omni_jax.evaluation.scoring`.
"""

from __future__ import annotations

import dataclasses

ECHO_GAINS = (0.0, 0.1, 1.0)  # v2 Table 5


def gain_key(gain: float) -> str:
    """Echo gains as report keys spell them: 0, 0.1, 1.0."""
    return "0" if gain == 0 else repr(float(gain))


@dataclasses.dataclass(frozen=True)
class Suite:
    name: str
    cases: str  # a cases.CASE_SETS key (suites sharing one share its dialogues and runs)
    echo_gains: tuple[float, ...]
    needs: tuple[str, ...]  # scenarios one of which the config must train ("auto")
    # The figure blind baselines are scored on beside the model (higher is better); "" = none
    # (a speech-quality suite: the policies make no speech).
    headline: str = ""


SUITES = {s.name: s for s in (
    Suite("asr", "asr", (0.0,), ("asr",)),
    Suite("qa", "qa", (0.0,), ("qa", "multi_turn"), "s2t_accuracy"),
    Suite("turn_taking", "qa", (0.0,), ("qa", "multi_turn"), "success_rate"),
    Suite("barge_in_ci", "barge_in_ci", ECHO_GAINS, ("barge_in_ci", "barge_in_echo"),
          "f1_echo_0"),
    Suite("barge_in_cd", "barge_in_cd", (0.0,), ("barge_in_cd",), "f1"),
    Suite("echo", "echo", ECHO_GAINS, ("barge_in_echo",), "keep_rate"),
    Suite("backchannel", "backchannel", (0.0,), ("backchannel",), "keep_rate"),
    Suite("third_speaker", "third_speaker", (0.0,), ("third_speaker",), "keep_rate"),
    Suite("enhancement", "enhancement", (0.0,), ("enhancement",)),
    Suite("target_speaker", "target_speaker", (0.0,), ("target_speaker",)),
    Suite("tts", "tts", (0.0,), ("tts",)),
    Suite("pause_handling", "pause", (0.0,), ("pause",), "success_rate"),
    # The listening checks read the qa and barge_in_ci runs plus probes of their own.
    Suite("listening", "qa", (0.0,), ("qa", "multi_turn"), "onset_slope"),
)}


def selected_suites(config) -> list[str]:
    """`config.eval.suites`: "auto" (those whose scenarios have weight > 0), "all", "none",
    or a comma-separated list of names."""
    spec = str(config.eval.suites).strip()
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
