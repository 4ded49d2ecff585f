"""What every scenario generator shares: its context, a Timeline draft, and the fitting loop.

A generator is `generate(rng, ctx) -> Timeline`. It writes a `Draft` (events and assistant turns
on a continuous time axis); the draft checks as it goes that everything fits in
`ctx.max_duration_s` (K blocks) and raises `DoesNotFit` when not. `fit_attempts` retries with a
growing attempt index, which generators use to pick shorter content, and finally raises a
ValueError naming the scenario.

Timing a clock cannot predict. `Draft.finish` moves the whole dialogue later by a whole
number of blocks (`Draft.delay`; whole blocks keep every timing rule as it was), drawn
uniformly among those that keep the first sound by LEAD_IN_MAX_S and the content inside
the dialogue, unless `place_in_reply` planned it with an interruption (so that the
interruption's time, too, spreads evenly over the times it can have). Over a split, the
user's turn ends, the reply starts and the interruptions then spread over most of the
dialogue instead of clustering after a short lead-in, so a policy that acts at fixed times
(start speaking at 3 s, stop at block 60) is wrong for most dialogues. Pauses between turns
are drawn wide (`pause_s`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from data_pipelines import contract, timeline, voices
from data_pipelines.timeline import AssistantTurn, AudioEvent, Timeline, WordTime

SPLITS = ("train", "eval")
# Silence kept after the last sound or label, drawn per dialogue (seconds).
TAIL_S = (0.3, 0.8)
# Silence before the first sound: lead_in_s draws LEAD_IN_S, Draft.delay then adds whole
# blocks, keeping the first sound by LEAD_IN_MAX_S (seconds).
LEAD_IN_S = (0.1, 0.6)
LEAD_IN_MAX_S = 3.0
# Silence between turns (pause_s), seconds.
PAUSE_S = (0.2, 1.5)
# A transcript's last tokens come asr_lag_blocks after its word, then a few blocks of tokens.
ASR_TOKENS_PER_WORD = 4


class DoesNotFit(Exception):
    """The content drawn so far does not fit in the dialogue; draw shorter content."""


@dataclasses.dataclass(frozen=True)
class ScenarioContext:
    """Everything a scenario generator needs besides its random generator."""

    synth: voices.Synthesizer
    voices: voices.VoiceSets
    split: str  # train: voices.user and .third; eval: voices.eval_user and .eval_third
    sample_rate: int
    max_duration_s: float  # K blocks * block_ms
    block_ms: int
    timing: contract.TimingRules
    tokens_per_block: int = 1
    max_attempts: int = 8  # draws of content before a scenario gives up
    # Where user turns come from: None = the context's espeak user voices speaking the
    # world's text; else an UtteranceBank of real speech (scenarios.real_speech; the
    # registry's `make_context` picks it from the config). Every
    # scenario draws its people through scenarios.speakers, which says what a bank supplies.
    user_speech: Any = None

    def __post_init__(self):
        if self.split not in SPLITS:
            raise ValueError(f"ScenarioContext.split must be one of {SPLITS}, got {self.split!r}")
        if self.synth.sample_rate != self.sample_rate:
            raise ValueError(f"synthesizer sample rate {self.synth.sample_rate} != "
                             f"context sample rate {self.sample_rate}")
        if self.timing.block_ms != self.block_ms:
            raise ValueError(f"timing.block_ms {self.timing.block_ms} != block_ms {self.block_ms}")
        if not self.voices.assistant:
            raise ValueError("ScenarioContext needs at least one assistant voice")
        if not self.user_voices or not self.third_voices:
            raise ValueError(f"ScenarioContext ({self.split}) needs user and third voices "
                             "(data.voices.num_user/num_third, or num_eval_user/"
                             "num_eval_third for eval)")

    @property
    def block_s(self) -> float:
        return self.block_ms / 1000.0

    @property
    def user_voices(self) -> tuple[voices.Voice, ...]:
        return self.voices.user if self.split == "train" else self.voices.eval_user

    @property
    def third_voices(self) -> tuple[voices.Voice, ...]:
        """Third speakers' espeak voices: training ones, or never heard in training."""
        return self.voices.third if self.split == "train" else self.voices.eval_third

    @property
    def assistant_voice(self) -> voices.Voice:
        return self.voices.assistant[0]

    def speech_start_s(self, turn_start_s: float) -> float:
        """When the renderer starts a SPEAK turn's speech: the start transition comes
        response_delay_blocks after the answered turn is heard, and speech with the block
        that emits the synth_delay_tokens-th text token."""
        return self.timing.block_start_s(
            self.timing.speech_start_block(turn_start_s, self.tokens_per_block))

    def stop_done_s(self, stop_s: float) -> float:
        """The end of the block in which a reply stopped at `stop_s` falls silent."""
        t = self.timing
        return t.block_start_s(t.heard(stop_s) + t.stop_delay_blocks + 1)


@dataclasses.dataclass(frozen=True)
class Reply:
    """A planned SPEAK turn: what is said, and when its speech would play."""

    text: str
    start_s: float  # the end of the turn it answers
    utterance: voices.Utterance
    speech_start_s: float

    @property
    def speech_end_s(self) -> float:
        return self.speech_start_s + self.utterance.duration_s


class Draft:
    """A Timeline under construction that refuses content past `ctx.max_duration_s`."""

    def __init__(self, ctx: ScenarioContext):
        self.ctx = ctx
        self.events: list[AudioEvent] = []
        self.turns: list[AssistantTurn] = []
        self.busy_until_s = 0.0  # the end of the last sound or label so far
        self.delayed = False  # whether `delay` has moved the draft already
        # A shift that `delay` will apply, chosen early (`place_in_reply`); content drafted
        # after the choice must fit with it.
        self.planned_shift_s: float | None = None

    @property
    def limit_s(self) -> float:
        """Everything must end by this time (before `delay` moves it)."""
        return self.ctx.max_duration_s - self.ctx.block_s - (self.planned_shift_s or 0.0)

    @property
    def first_start_s(self) -> float:
        """When the first sound or turn drafted so far starts (0 when there is none)."""
        starts = [e.start_s for e in self.events] + [t.start_s for t in self.turns]
        return min(starts, default=0.0)

    def delay_blocks_left(self, latest_s: float = LEAD_IN_MAX_S) -> int:
        """The most whole blocks `delay` may add to keep the first sound by `latest_s`."""
        return max(0, int(np.floor((latest_s - self.first_start_s) / self.ctx.block_s + 1e-9)))

    def _occupy(self, end_s: float, what: str) -> None:
        if end_s > self.limit_s:
            raise DoesNotFit(f"{what} ends at {end_s:.2f}s")
        self.busy_until_s = max(self.busy_until_s, end_s)

    def mark(self) -> tuple[int, int, float]:
        return len(self.events), len(self.turns), self.busy_until_s

    def rollback(self, mark: tuple[int, int, float]) -> None:
        num_events, num_turns, self.busy_until_s = mark
        del self.events[num_events:], self.turns[num_turns:]

    def add_event(self, event: AudioEvent) -> AudioEvent:
        self._occupy(event.end_s(self.ctx.sample_rate), f"event {event.kind!r}")
        self.events.append(event)
        return event

    def say(self, role: str, kind: str, text: str, voice: voices.Voice, start_s: float,
            gain: float = 1.0) -> AudioEvent:
        """A voice says `text` in the environment stream, starting at `start_s`."""
        return self.hear(role, kind, self.ctx.synth.say(text, voice), start_s, gain)

    def hear(self, role: str, kind: str, utterance: voices.Utterance, start_s: float,
             gain: float = 1.0) -> AudioEvent:
        """`utterance` (synthesized or real) heard in the environment stream from `start_s`."""
        return self.add_event(AudioEvent(role=role, kind=kind, start_s=start_s,
                                         audio=utterance.audio, speaker=utterance.voice_id,
                                         text=utterance.text, words=utterance.words, gain=gain))

    def plan_reply(self, text: str, start_s: float,
                   utterance: voices.Utterance | None = None) -> Reply:
        """The assistant's reply to a turn that ends at `start_s` (its own voice by default)."""
        if utterance is None:
            utterance = self.ctx.synth.say(text, self.ctx.assistant_voice)
        return Reply(text, start_s, utterance, self.ctx.speech_start_s(start_s))

    def speak(self, reply: Reply, stop_s: float | None = None) -> AssistantTurn:
        """Commits a planned reply; `stop_s` (the end of a barge-in trigger) cuts it short."""
        if stop_s is None:
            end_s = reply.speech_end_s + self.ctx.block_s  # the end transition follows
        else:
            if not reply.speech_start_s < stop_s < reply.speech_end_s:
                raise ValueError(f"stop at {stop_s:.2f}s outside the reply's speech "
                                 f"[{reply.speech_start_s:.2f}, {reply.speech_end_s:.2f}]s")
            end_s = self.ctx.stop_done_s(stop_s)
        self._occupy(end_s, f"reply {reply.text[:20]!r}")
        turn = AssistantTurn(mode=timeline.SPEAK, text=reply.text, start_s=reply.start_s,
                             audio=reply.utterance.audio, words=reply.utterance.words,
                             stop_s=stop_s, speaker=reply.utterance.voice_id)
        self.turns.append(turn)
        return turn

    def turn_end_s(self, turn: AssistantTurn) -> float:
        """When a committed SPEAK turn falls silent."""
        if turn.stop_s is not None:
            return self.ctx.stop_done_s(turn.stop_s)
        return self.ctx.speech_start_s(turn.start_s) + turn.audio.size / self.ctx.sample_rate

    def transcribe(self, event: AudioEvent) -> AssistantTurn:
        """A streaming transcript of `event`: word times made absolute (when each is heard)."""
        words = tuple(WordTime(w.word, event.start_s + w.start_s, event.start_s + w.end_s)
                      for w in event.words)
        t = self.ctx.timing
        last = t.heard(words[-1].end_s) + t.asr_lag_blocks + ASR_TOKENS_PER_WORD
        self._occupy(t.block_start_s(last), f"transcript of {event.kind!r}")
        turn = AssistantTurn(mode=timeline.TRANSCRIBE, text=event.text, start_s=event.start_s,
                             words=words)
        self.turns.append(turn)
        return turn

    def delay(self, rng: np.random.Generator, latest_s: float = LEAD_IN_MAX_S) -> float:
        """Moves everything drafted so far later by a whole number of blocks (so every
        timing rule holds as before): the planned shift when one was chosen, else one drawn
        uniformly among the shifts that keep the first sound or turn starting by `latest_s`
        and everything inside the dialogue. Returns the shift in seconds; `finish` calls it
        unless the generator did."""
        if self.delayed:
            raise ValueError("Draft.delay: the draft was delayed already")
        ctx = self.ctx
        if self.planned_shift_s is not None:
            shift = self.planned_shift_s
        else:
            room = int(np.floor((self.limit_s - self.busy_until_s) / ctx.block_s + 1e-9))
            most = max(0, min(room, self.delay_blocks_left(latest_s)))
            shift = int(rng.integers(0, most + 1)) * ctx.block_s
        self.delayed = True
        if shift == 0:
            return 0.0
        self.events = [dataclasses.replace(e, start_s=e.start_s + shift) for e in self.events]
        self.turns = [dataclasses.replace(
            t, start_s=t.start_s + shift,
            stop_s=None if t.stop_s is None else t.stop_s + shift,
            words=t.words if t.mode == timeline.SPEAK else tuple(
                WordTime(w.word, w.start_s + shift, w.end_s + shift) for w in t.words))
            for t in self.turns]
        self.busy_until_s += shift
        return shift

    def finish(self, rng: np.random.Generator, scenario: str, prompt: str,
               meta: dict[str, Any], echo_gain: float = 0.0,
               echo_delay_s: float = 0.0, delay: bool = True) -> Timeline:
        """The Timeline: content (moved by `self.delay` unless `delay` is False or the
        generator delayed it already) plus a short silent tail, in whole blocks. `meta` gets
        the split, and `real_speech=True` when the user's speech came from
        `ctx.user_speech`."""
        ctx = self.ctx
        if delay and not self.delayed:
            self.delay(rng)
        if ctx.user_speech is not None:
            meta = dict(meta, real_speech=True)
        end_s = self.busy_until_s + rng.uniform(*TAIL_S)
        duration_s = min(ctx.max_duration_s, np.ceil(end_s / ctx.block_s - 1e-9) * ctx.block_s)
        return Timeline(scenario=scenario, sample_rate=ctx.sample_rate,
                        duration_s=float(duration_s), events=tuple(self.events),
                        turns=tuple(self.turns), prompt=prompt, echo_gain=float(echo_gain),
                        echo_delay_s=float(echo_delay_s), meta=dict(split=ctx.split, **meta))


Attempt = Callable[[np.random.Generator, ScenarioContext, int], Timeline]


def fit_attempts(name: str, attempt: Attempt, rng: np.random.Generator,
                 ctx: ScenarioContext) -> Timeline:
    """Runs `attempt(rng, ctx, i)` for i = 0, 1, ... until its content fits."""
    reasons = []
    for i in range(ctx.max_attempts):
        try:
            return attempt(rng, ctx, i)
        except DoesNotFit as e:
            reasons.append(str(e))
    raise ValueError(f"scenario {name!r}: no content fits in max_duration_s="
                     f"{ctx.max_duration_s:.2f}s after {ctx.max_attempts} attempts "
                     f"(last: {reasons[-1]}); raise data.num_blocks")


def shrink(attempt: int, longest: int, shortest: int, ctx: ScenarioContext) -> int:
    """A word budget that falls from `longest` to `shortest` over the attempts."""
    steps = max(1, ctx.max_attempts - 2)
    return max(shortest, longest - round(attempt * (longest - shortest) / steps))


def pick_voice(rng: np.random.Generator, pool: tuple[voices.Voice, ...]) -> voices.Voice:
    return pool[int(rng.integers(len(pool)))]


def lead_in_s(rng: np.random.Generator, attempt: int) -> float:
    """Silence before the first sound, before `Draft.delay` adds whole blocks to it; shorter
    on later attempts."""
    lo, hi = LEAD_IN_S
    return float(rng.uniform(lo, hi if attempt < 2 else lo + 0.3 * (hi - lo)))


def pause_s(rng: np.random.Generator, attempt: int, lo: float = PAUSE_S[0],
            hi: float = PAUSE_S[1]) -> float:
    """Silence between two turns; shorter on later attempts."""
    return float(rng.uniform(lo, hi if attempt < 2 else lo + 0.2 * (hi - lo)))


# Margins that keep an interruption well inside the reply's speech, whatever the renderer's
# exact rounding: after the speech has started, and ending before it would have ended.
AFTER_SPEECH_START_S = 0.25
BEFORE_SPEECH_END_S = 0.3


def _merged(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def place_in_reply(rng: np.random.Generator, reply: Reply, duration_s: float,
                   latest_fraction: float = 1.0, draft: Draft | None = None,
                   stops: bool = False, after_s: float = 0.0) -> float:
    """A start time for a `duration_s` sound heard while `reply` speaks: it starts at least
    AFTER_SPEECH_START_S into the speech, no later than `latest_fraction` of the way through,
    and ends BEFORE_SPEECH_END_S before the speech would end.

    Without a `draft` (or with one delayed already) the place is uniform in that window.
    With one, the draft's delay is planned here too (`Draft.planned_shift_s`), so that the
    sound's time in the finished dialogue is uniform over every time it can have: placing
    the sound first and then delaying the dialogue by what room is left would pile the
    sounds up near the end of the dialogue (a late place leaves no room). Of the delays
    that reach the drawn time, smaller ones (later places in the reply) are likelier, in
    proportion to their rank: so the places in the reply stay spread too, instead of
    crowding its start. `stops`: the reply stops when the sound ends, and `after_s` more
    seconds must fit after that (e.g. the answer to a follow-up); else the whole reply,
    and `after_s` after it, must fit.
    """
    length = reply.speech_end_s - reply.speech_start_s
    earliest = reply.speech_start_s + max(AFTER_SPEECH_START_S, 0.1 * length)
    latest = min(reply.speech_end_s - BEFORE_SPEECH_END_S - duration_s,
                 reply.speech_start_s + latest_fraction * length)
    if latest < earliest:
        raise DoesNotFit(f"a {duration_s:.2f}s sound does not fit inside a {length:.2f}s reply")
    if draft is None or draft.delayed or draft.planned_shift_s is not None:
        return float(rng.uniform(earliest, latest))
    ctx = draft.ctx
    block, limit = ctx.block_s, draft.limit_s
    # latest_k[k]: the latest place (before the delay) that fits a delay of k blocks.
    if stops:  # the reply falls silent stop_delay_blocks + 1 blocks after the sound ends
        done_s = (ctx.timing.stop_delay_blocks + 1) * block
        latest_k = [min(latest, limit - k * block - after_s - done_s - duration_s)
                    for k in range(draft.delay_blocks_left() + 1)]
    else:  # the whole reply plays, its end transition one block later
        room = limit - max(draft.busy_until_s, reply.speech_end_s + block) - after_s
        most = min(draft.delay_blocks_left(), int(np.floor(room / block + 1e-9)))
        latest_k = [latest] * (max(most, 0) + 1)
    windows = {k: (earliest + k * block, top + k * block)
               for k, top in enumerate(latest_k) if top >= earliest}
    if not windows:
        raise DoesNotFit(f"a {duration_s:.2f}s sound in a {length:.2f}s reply leaves no room")
    spans = _merged(list(windows.values()))
    widths = np.array([hi - lo for lo, hi in spans])
    if widths.sum() > 0:  # a time uniform over the union of the windows
        lo, hi = spans[int(rng.choice(len(spans), p=widths / widths.sum()))]
        time_s = float(rng.uniform(lo, hi))
    else:
        time_s = spans[0][0]
    fits = [k for k, (lo, hi) in windows.items() if lo - 1e-9 <= time_s <= hi + 1e-9]
    rank = np.arange(len(fits), 0, -1, dtype=float)
    k = fits[int(rng.choice(len(fits), p=rank / rank.sum()))]
    draft.planned_shift_s = k * block
    return float(np.clip(time_s - k * block, earliest, latest_k[k]))
