"""User turns from real speech: an `UtteranceBank` the scenario generators draw from.

A bank hands out what a user says, as a `UserTurn` (a `voices.Utterance`: text, speaker,
16 kHz audio, word times; plus an optional reply text). Three banks:

  EspeakBank   the embedded world: world sentences said by espeak-ng voices
  CorpusBank   a prepared real corpus (`sources.real`: LibriSpeech, LibriHeavy, GigaSpeech,
               a manifest); word times are estimated (see `estimate_word_times`)
  FsddBank     digit strings joined from Free Spoken Digit clips of one speaker, with
               exact word times; one speaker is held out as the eval split

`say` puts a drawn turn into a `Draft`; `asr` and `qa` are the streaming-ASR and
turn-taking scenarios with user turns from a bank (`generators(bank)` gives both with the
usual `(rng, ctx)` signature). The assistant still speaks with its own voice.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Protocol, Sequence

import numpy as np

from data_pipelines import timeline, voices, world
from data_pipelines.scenarios.base import (DoesNotFit, Draft, ScenarioContext, fit_attempts,
                                           lead_in_s, pause_s, shrink)
from data_pipelines.sources import fsdd
from data_pipelines.sources.utterances import CorpusUtterance, voiced_span
from data_pipelines.timeline import AudioEvent, Timeline, WordTime

if TYPE_CHECKING:  # the builder module imports tensorflow_datasets: only for type hints
    from data_pipelines.sources.builder import UtteranceSource

DRAWS = 8  # tries to find an utterance that fits before a bank gives up (DoesNotFit)


@dataclasses.dataclass(frozen=True)
class UserTurn:
    utterance: voices.Utterance  # voice_id is the speaker
    reply: str = ""  # what the assistant answers, when the source knows ("" otherwise)


class UtteranceBank(Protocol):
    def speakers(self) -> Sequence[str]:
        """Who can be drawn (one split's speakers)."""

    def draw(self, rng: np.random.Generator, *, speaker: str | None = None,
             max_seconds: float = math.inf, max_words: int | None = None,
             need_reply: bool = False) -> UserTurn:
        """A turn of `speaker` (random if None) within the limits; DoesNotFit if none fits."""


def _check(utt: voices.Utterance, max_seconds: float, max_words: int | None) -> bool:
    return utt.duration_s <= max_seconds and (max_words is None
                                              or len(utt.text.split()) <= max_words)


class EspeakBank:
    """World sentences (`world.utterance`) said by the context's espeak-ng user voices."""

    def __init__(self, synth: voices.Synthesizer, pool: Sequence[voices.Voice]):
        self.synth = synth
        self._voices = {v.voice_id: v for v in pool}

    def speakers(self) -> list[str]:
        return list(self._voices)

    def draw(self, rng, *, speaker=None, max_seconds=math.inf, max_words=None,
             need_reply=False) -> UserTurn:
        if need_reply:  # the world's questions come with answers: use world.short_qa
            raise ValueError("EspeakBank draws statements; questions come from the world")
        ids = self.speakers()
        voice = self._voices[speaker or ids[int(rng.integers(len(ids)))]]
        utt = self.synth.say(world.utterance(rng, max_words=max_words or 12), voice)
        if not _check(utt, max_seconds, max_words):
            raise DoesNotFit(f"a {utt.duration_s:.2f}s sentence > {max_seconds:.2f}s")
        return UserTurn(utt)


def estimate_word_times(audio: np.ndarray, text: str, sample_rate: int
                        ) -> tuple[WordTime, ...]:
    """Word times spread over the voiced span in proportion to word length.

    Real corpora come without alignments. This is a rough estimate: a word's end may be off
    by a few hundred ms, which the ASR lag (`timing.asr_lag_blocks`) partly absorbs. Feed
    forced alignments instead where a lab has them.
    """
    words = text.split()
    if not words:
        raise ValueError("estimate_word_times: empty text")
    first, stop = voiced_span(audio, sample_rate)
    weights = np.cumsum([0] + [len(w) + 1 for w in words], dtype=np.float64)
    edges = first + (stop - first) * weights / weights[-1]
    return tuple(WordTime(w, float(a / sample_rate), float(b / sample_rate))
                 for w, a, b in zip(words, edges[:-1], edges[1:]))


def as_turn(utt: CorpusUtterance) -> UserTurn:
    words = estimate_word_times(utt.audio, utt.text, utt.sample_rate)
    spoken = voices.Utterance(text=utt.text, voice_id=utt.speaker, audio=utt.audio,
                              words=words, sample_rate=utt.sample_rate)
    return UserTurn(spoken, utt.reply)


class CorpusBank:
    """Utterances of one split of a prepared real corpus (random access, lazy)."""

    def __init__(self, source: UtteranceSource):
        if not len(source):
            raise ValueError(f"{source.name}: no utterances")
        self.source = source

    def speakers(self) -> list[str]:
        return self.source.speakers()

    def draw(self, rng, *, speaker=None, max_seconds=math.inf, max_words=None,
             need_reply=False) -> UserTurn:
        pool = (self.source.indices_of(speaker) if speaker is not None
                else np.arange(len(self.source)))
        for _ in range(DRAWS):
            utt = self.source[int(pool[int(rng.integers(pool.size))])]
            if need_reply and not utt.reply:
                continue
            turn = as_turn(utt)
            if _check(turn.utterance, max_seconds, max_words):
                return turn
        raise DoesNotFit(f"{self.source.name}: no utterance{' with a reply' * need_reply} "
                         f"of <= {max_seconds:.2f}s in {DRAWS} draws")


class FsddBank:
    """Digit strings of one FSDD speaker: train = all speakers but the held-out one."""

    def __init__(self, root: str, split: str, holdout_speaker: str, sample_rate: int = 16000,
                 min_digits: int = 1, max_digits: int = 5,
                 pause_s: tuple[float, float] = (0.05, 0.3), on_bad_sample: str = "raise"):
        if not 1 <= min_digits <= max_digits:
            raise ValueError(f"need 1 <= min_digits <= max_digits, got {min_digits}, "
                             f"{max_digits}")
        chosen = fsdd.split_speakers(fsdd.list_speakers(root), split, holdout_speaker)
        self.digits = fsdd.load_digits(root, chosen, sample_rate, on_bad_sample)
        self.sample_rate = sample_rate
        self.min_digits, self.max_digits = min_digits, max_digits
        self.pause_s = (float(pause_s[0]), float(pause_s[1]))

    def speakers(self) -> list[str]:
        return self.digits.speakers

    def draw(self, rng, *, speaker=None, max_seconds=math.inf, max_words=None,
             need_reply=False) -> UserTurn:
        if need_reply:
            raise ValueError("FSDD digit strings have no replies")
        ids = self.speakers()
        speaker = speaker or ids[int(rng.integers(len(ids)))]
        most = min(self.max_digits, max_words or self.max_digits)
        if most < self.min_digits:
            raise DoesNotFit(f"{max_words} words < min_digits {self.min_digits}")
        num = int(rng.integers(self.min_digits, most + 1))
        for count in range(num, self.min_digits - 1, -1):  # fewer digits until it fits
            text, audio, words = fsdd.digit_string(rng, self.digits.clips[speaker], count,
                                                   self.pause_s, self.sample_rate)
            if audio.size <= max_seconds * self.sample_rate:
                return UserTurn(voices.Utterance(text, speaker, audio, words,
                                                 self.sample_rate))
        raise DoesNotFit(f"no {self.min_digits}-digit string of {speaker} fits "
                         f"{max_seconds:.2f}s")


def say(draft: Draft, role: str, kind: str, turn: UserTurn, start_s: float,
        gain: float = 1.0) -> AudioEvent:
    """A drawn turn heard in the environment stream from `start_s`."""
    utt = turn.utterance
    return draft.add_event(AudioEvent(role=role, kind=kind, start_s=start_s, audio=utt.audio,
                                      speaker=utt.voice_id, text=utt.text, words=utt.words,
                                      gain=gain))


def _room(ctx: ScenarioContext, start_s: float, after_s: float) -> float:
    """Seconds of audio that can start at `start_s` and leave `after_s` before the end."""
    return ctx.max_duration_s - ctx.block_s - start_s - after_s


def asr(rng: np.random.Generator, ctx: ScenarioContext, bank: UtteranceBank) -> Timeline:
    """One to three utterances of one speaker, each transcribed while it is heard."""
    lag_s = (ctx.timing.asr_lag_blocks + 4) * ctx.block_s  # the last words' tokens

    def attempt(rng, ctx, i):
        draft = Draft(ctx)
        ids = bank.speakers()
        speaker = ids[int(rng.integers(len(ids)))]
        wanted, t = int(rng.integers(1, 4)), lead_in_s(rng, i)
        for n in range(wanted):
            mark = draft.mark()
            try:
                turn = bank.draw(rng, speaker=speaker, max_seconds=_room(ctx, t, lag_s),
                                 max_words=shrink(i, 12, 3, ctx))
                event = say(draft, timeline.USER, "utterance", turn, t)
                draft.transcribe(event)
            except DoesNotFit:
                if n == 0:
                    raise
                draft.rollback(mark)  # keep the utterances that fit
                break
            t = event.end_s(ctx.sample_rate) + pause_s(rng, i, 0.3, 1.0)
        meta = dict(transcripts=[turn.text for turn in draft.turns], real_speech=True)
        return draft.finish(rng, "asr", world.PROMPT_ASR, meta)

    return fit_attempts("asr", attempt, rng, ctx)


def qa(rng: np.random.Generator, ctx: ScenarioContext, bank: UtteranceBank) -> Timeline:
    """A real spoken turn, then the assistant's reply (the source's reply text)."""
    def attempt(rng, ctx, i):
        draft = Draft(ctx)
        start = lead_in_s(rng, i)
        turn = bank.draw(rng, max_seconds=_room(ctx, start, 2.0), need_reply=True)
        question = say(draft, timeline.USER, "question", turn, start)
        draft.speak(draft.plan_reply(turn.reply, question.end_s(ctx.sample_rate)))
        meta = dict(question=turn.utterance.text, answer=turn.reply, real_speech=True)
        return draft.finish(rng, "qa", world.PROMPT_DIALOGUE, meta)

    return fit_attempts("qa", attempt, rng, ctx)


def generators(bank: UtteranceBank) -> dict:
    """{"asr": ..., "qa": ...} as `(rng, ctx) -> Timeline`, drawing user turns from `bank`."""
    return {"asr": lambda rng, ctx: asr(rng, ctx, bank),
            "qa": lambda rng, ctx: qa(rng, ctx, bank)}


def bank_from_config(config, split: str) -> UtteranceBank | None:
    """The bank `config.data.source` asks for; None for the generated (espeak) world.

    fsdd: config.data.real_dir (the FSDD folder), config.data.holdout_speaker and
    config.data.fsdd.{min_digits, max_digits, pause_s}.
    """
    data = config.data
    if data.source != "fsdd":
        return None
    if not data.get("real_dir"):
        raise ValueError("data.source='fsdd' needs data.real_dir (the FSDD folder)")
    digits = data.fsdd
    return FsddBank(data.real_dir, split, data.holdout_speaker,
                    sample_rate=config.audio.sample_rate, min_digits=digits.min_digits,
                    max_digits=digits.max_digits, pause_s=tuple(digits.pause_s),
                    on_bad_sample=data.on_bad_sample)
