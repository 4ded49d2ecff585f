"""Timeline: what happens in a dialogue, on a continuous time axis.

Scenario generators write Timelines; the renderer turns any Timeline into a BlockSequence.
Scenario code never builds tensors; model code never sees a Timeline.

All audio is mono float32 at the Timeline's sample rate (16 kHz), in [-1, 1].
Times are seconds from the start of the dialogue.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

# Roles of audio events heard in the environment stream.
USER, THIRD, NOISE = "user", "third", "noise"
ROLES = (USER, THIRD, NOISE)

# Assistant turn modes.
SPEAK = "speak"  # a spoken reply: start transition, text tokens, synthesized speech
TRANSCRIBE = "transcribe"  # text emitted while listening (streaming ASR), no speech
TURN_MODES = (SPEAK, TRANSCRIBE)


@dataclasses.dataclass(frozen=True)
class WordTime:
    word: str
    start_s: float  # relative to the start of the audio it belongs to
    end_s: float


@dataclasses.dataclass(frozen=True)
class AudioEvent:
    """A sound in the environment stream."""

    role: str  # USER, THIRD or NOISE
    kind: str  # what it is in the scenario: question, interruption, backchannel, chatter, ...
    start_s: float
    audio: np.ndarray  # float32, mono
    speaker: str = ""  # voice id; "" for noise
    text: str = ""  # what was said; "" for noise
    words: tuple[WordTime, ...] = ()  # word timing relative to start_s
    gain: float = 1.0  # linear gain applied when mixing

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"AudioEvent.role must be one of {ROLES}, got {self.role!r}")
        if self.start_s < 0:
            raise ValueError(f"AudioEvent '{self.kind}' starts at negative time {self.start_s}")
        if self.audio.ndim != 1 or self.audio.size == 0:
            raise ValueError(f"AudioEvent '{self.kind}' needs non-empty mono audio, "
                             f"got shape {self.audio.shape}")

    def duration_s(self, sample_rate: int) -> float:
        return self.audio.size / sample_rate

    def end_s(self, sample_rate: int) -> float:
        return self.start_s + self.duration_s(sample_rate)


@dataclasses.dataclass(frozen=True)
class AssistantTurn:
    """What the assistant says (or transcribes), and when.

    SPEAK: `start_s` is the end of the user turn it answers; the renderer puts the start
    transition `response_delay_blocks` later. `audio` is the speech the synthesizer must
    produce (normally the assistant voice; for enhancement the clean source).
    `stop_s`, if set, is the end of a trigger word that barges in: the reply stops there.
    TRANSCRIBE: `words` carry absolute ready times (the end of each heard word); no audio.
    """

    mode: str
    text: str
    start_s: float
    audio: np.ndarray | None = None
    words: tuple[WordTime, ...] = ()  # SPEAK: relative to speech start; TRANSCRIBE: absolute
    stop_s: float | None = None
    speaker: str = ""

    def __post_init__(self):
        if self.mode not in TURN_MODES:
            raise ValueError(f"AssistantTurn.mode must be one of {TURN_MODES}, got {self.mode!r}")
        if not self.text.strip():
            raise ValueError("AssistantTurn.text is empty")
        if self.mode == SPEAK and (self.audio is None or self.audio.size == 0):
            raise ValueError(f"SPEAK turn {self.text[:30]!r} has no audio")
        if self.stop_s is not None and self.stop_s < self.start_s:
            raise ValueError(f"turn {self.text[:30]!r}: stop_s {self.stop_s} < start_s "
                             f"{self.start_s}")


@dataclasses.dataclass(frozen=True)
class Timeline:
    """One dialogue: environment events, assistant turns, and render settings."""

    scenario: str
    sample_rate: int
    duration_s: float
    events: tuple[AudioEvent, ...]
    turns: tuple[AssistantTurn, ...]
    prompt: str = ""  # text prompt before block 0 (task instruction, text to read aloud)
    echo_gain: float = 0.0  # gain of the assistant's own voice in the microphone
    echo_delay_s: float = 0.0  # acoustic delay of that echo
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)  # scenario facts for eval

    def __post_init__(self):
        if self.duration_s <= 0:
            raise ValueError(f"Timeline '{self.scenario}' has duration {self.duration_s}")
        for ev in self.events:
            if ev.end_s(self.sample_rate) > self.duration_s + 1e-6:
                raise ValueError(f"Timeline '{self.scenario}': event '{ev.kind}' ends at "
                                 f"{ev.end_s(self.sample_rate):.3f}s past duration "
                                 f"{self.duration_s:.3f}s")
        if self.echo_gain < 0 or self.echo_delay_s < 0:
            raise ValueError(f"Timeline '{self.scenario}': echo gain/delay must be >= 0")

    def events_json(self) -> str:
        """Who spoke what, when: the BlockSequence's `events` metadata."""
        items = [dict(role=e.role, kind=e.kind, speaker=e.speaker, text=e.text,
                      start_s=round(e.start_s, 4),
                      end_s=round(e.end_s(self.sample_rate), 4), gain=e.gain)
                 for e in self.events]
        items += [dict(role="assistant", kind=t.mode, speaker=t.speaker, text=t.text,
                       start_s=round(t.start_s, 4),
                       stop_s=None if t.stop_s is None else round(t.stop_s, 4))
                  for t in self.turns]
        return json.dumps(dict(scenario=self.scenario, prompt=self.prompt,
                               echo_gain=self.echo_gain, echo_delay_s=self.echo_delay_s,
                               events=items, meta=self.meta), sort_keys=True)
