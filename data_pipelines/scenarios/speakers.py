"""Who speaks in a dialogue: the user and third speakers, drawn from a bank of utterances.

Every generator gets its people here, and this is the one place that decides what a real
corpus supplies. The user is a speaker of `user_bank(ctx)`: `ctx.user_speech` when set (a
real corpus: `real_speech.CorpusBank`, `FsddBank`), else an `EspeakBank` of the context's
user voices (the embedded world). A generator asks a `Speaker` for one of three kinds of
line:

  line(rng, text)  free content: any sentence of this speaker will do (ASR and enhancement
                   sentences, the target speaker's enrolment and sentence, an interferer,
                   third-speaker chatter). `text` is the world's sentence; a bank that can
                   say it does (espeak: the embedded world is unchanged, draw for draw), a
                   corpus draws one of the speaker's own utterances instead.
  ask(...)         a question that the assistant answers (below).
  say(text)        a scripted phrase whose words the scenario needs: stop phrases, non-stop
                   words, backchannels, follow-ups about what the assistant is saying,
                   off-topic questions. A corpus speaker cannot be made to say them, so it
                   says them in a stand-in espeak voice of its role (a user voice for the
                   user, a third voice for a third speaker), fixed per corpus speaker, unless
                   the bank's `say` can give the speaker's own recording of those words.

Replies. A question drawn from a corpus needs an answer, and the paper's recipe had an LLM
write them; there is none here. The bank's reply (a manifest's `reply`, written offline) is
said when the turn has one the scenario can use: qa and multi_turn take any; the scenarios
built on a long reply (barge_in_*, backchannel, third_speaker) take one of LONG_MIN_WORDS to
their word budget; a reply that later turns must follow up on (barge_in_cd, follow-up
questions) must be about a world creature, so a bank reply never serves there. Otherwise a
world reply stands in: the assistant answers the corpus question with the world answer the
generator drew (e.g. "the zorb is a small blue animal that lives near the lake"), which has
nothing to do with the question. Such dialogues teach when to start, keep speaking and stop,
listening to real speech and speaking in the assistant voice; they do not teach what to
answer (that text is not predictable from the question). `meta` says `question` (the corpus
transcript) and `answer` (what the assistant says); `topic` is CORPUS_TOPIC for a bank reply.
A bank with replies gives its questions from the turns that carry one (they are its
questions), and the user of a dialogue that asks is drawn among the speakers that have them.

Third speakers (`pick_third`) are other speakers of the same corpus, never the user, when
the bank has any; else espeak third voices of the split (`ctx.third_voices`: the eval split's
are never heard in training). The third speaker of barge_in_cd says a scripted follow-up and
is an espeak third voice.

A known weakness: with a corpus, the user of a barge-in dialogue has two voices, the corpus
voice for the question and the stand-in for the scripted interruptions. barge_in_cd teaches
that a follow-up from the user stops the reply and the same follow-up from a third speaker
does not; with a corpus the cue "same voice as the question" is gone and only "a user
stand-in voice, not a third voice" is left.
"""

from __future__ import annotations

import dataclasses
import math
import zlib

import numpy as np

from data_pipelines import timeline, voices, world
from data_pipelines.scenarios.base import DoesNotFit, Draft, ScenarioContext, pick_voice
from data_pipelines.scenarios.real_speech import EspeakBank, UtteranceBank
from data_pipelines.timeline import AudioEvent, WordTime

CORPUS_TOPIC = "corpus"  # the topic of a question answered with the bank's own reply


@dataclasses.dataclass(frozen=True, eq=False)
class Speaker:
    """One person of a dialogue: a speaker of `bank`, and the espeak voice that says the
    scripted phrases the bank cannot (never used by an EspeakBank, which says anything)."""

    bank: UtteranceBank
    speaker_id: str
    stand_in: voices.Voice
    synth: voices.Synthesizer

    @property
    def is_real(self) -> bool:
        return not isinstance(self.bank, EspeakBank)

    def line(self, rng: np.random.Generator, text: str,
             max_seconds: float = math.inf) -> voices.Utterance:
        """Free content: `text` where the bank can say it, else one of the speaker's own
        utterances of at most `max_seconds` (DoesNotFit when none is found)."""
        said = self.bank.say(text, self.speaker_id)
        if said is not None:
            return said
        return self.bank.draw(rng, speaker=self.speaker_id, max_seconds=max_seconds).utterance

    def say(self, text: str) -> voices.Utterance:
        """Exactly `text`: the bank's recording of it, else the stand-in voice."""
        said = self.bank.say(text, self.speaker_id)
        return said if said is not None else self.synth.say(text, self.stand_in)


def user_bank(ctx: ScenarioContext) -> UtteranceBank:
    if ctx.user_speech is not None:
        return ctx.user_speech
    return EspeakBank(ctx.synth, ctx.user_voices)


def _stand_in(speaker_id: str, pool: tuple[voices.Voice, ...]) -> voices.Voice:
    """A fixed voice of `pool` per corpus speaker (crc32: stable across processes)."""
    return pool[zlib.crc32(speaker_id.encode("utf-8")) % len(pool)]


def pick_user(rng: np.random.Generator, ctx: ScenarioContext, asks: bool = False) -> Speaker:
    """The user of a dialogue; one who `asks` questions is drawn among the speakers with
    replies when the bank has any (one index draw, as `base.pick_voice`)."""
    bank = user_bank(ctx)
    ids = list(bank.speakers(with_replies=True)) if asks else []
    ids = ids or list(bank.speakers())
    speaker_id = ids[int(rng.integers(len(ids)))]
    return Speaker(bank, speaker_id, _stand_in(speaker_id, ctx.user_voices), ctx.synth)


def pick_third(rng: np.random.Generator, ctx: ScenarioContext, user: Speaker) -> Speaker:
    """Someone else: another speaker of the user's corpus, else an espeak third voice."""
    if user.is_real:
        others = [s for s in user.bank.speakers() if s != user.speaker_id]
        if others:
            speaker_id = others[int(rng.integers(len(others)))]
            return Speaker(user.bank, speaker_id, _stand_in(speaker_id, ctx.third_voices),
                           ctx.synth)
    voice = pick_voice(rng, ctx.third_voices)
    return Speaker(EspeakBank(ctx.synth, ctx.third_voices), voice.voice_id, voice, ctx.synth)


def reply_latency_s(ctx: ScenarioContext) -> float:
    """At most this long from the end of a turn to the start of the reply's speech."""
    t = ctx.timing
    blocks = t.response_delay_blocks + t.synth_delay_tokens // ctx.tokens_per_block + 1
    return blocks * ctx.block_s


def room_s(ctx: ScenarioContext, start_s: float, after_s: float = 0.0) -> float:
    """Seconds of audio that can start at `start_s` and leave `after_s` before the end."""
    return ctx.max_duration_s - ctx.block_s - start_s - after_s


def _usable_reply(ctx: ScenarioContext, reply: str, reply_words: tuple[int, int] | None,
                  about_world: bool) -> bool:
    if not reply or about_world:
        return False
    if reply_words is not None and not reply_words[0] <= len(reply.split()) <= reply_words[1]:
        return False
    try:
        voices.check_sayable(reply, ctx.synth.max_words)
    except voices.VoiceError:
        return False
    return True


def question(rng: np.random.Generator, draft: Draft, user: Speaker, pair: world.QA,
             start_s: float, *, reply_words: tuple[int, int] | None = None,
             about_world: bool = False, extra_s: float = 0.0
             ) -> tuple[voices.Utterance, world.QA]:
    """What the user asks at `start_s`, not yet heard: the utterance and the QA the
    assistant answers. An espeak user says `pair.question` and `pair` stands. A corpus user
    says one of its own turns, leaving room for the reply and `extra_s` more seconds (a
    pause the caller puts into the turn); the reply is the turn's (if it has `reply_words`
    words and the reply need not be `about_world`) or else `pair.answer` (see the module
    docstring)."""
    said = user.bank.say(pair.question, user.speaker_id)
    if said is not None:
        return said, pair
    ctx = draft.ctx
    reply_s = ctx.synth.say(pair.answer, ctx.assistant_voice).duration_s
    turn = user.bank.draw(
        rng, speaker=user.speaker_id, need_reply=bool(user.bank.speakers(with_replies=True)),
        max_seconds=room_s(ctx, start_s,
                           reply_latency_s(ctx) + reply_s + ctx.block_s + extra_s))
    text = turn.utterance.text
    if _usable_reply(ctx, turn.reply, reply_words, about_world):
        return turn.utterance, world.QA(text, turn.reply, CORPUS_TOPIC, "reply")
    return turn.utterance, dataclasses.replace(pair, question=text)


def ask(rng: np.random.Generator, draft: Draft, user: Speaker, pair: world.QA, start_s: float,
        *, kind: str = "question", reply_words: tuple[int, int] | None = None,
        about_world: bool = False) -> tuple[AudioEvent, world.QA]:
    """The user asks at `start_s` (see `question`); returns the heard question and the QA
    the assistant answers."""
    said, pair = question(rng, draft, user, pair, start_s, reply_words=reply_words,
                          about_world=about_world)
    return draft.hear(timeline.USER, kind, said, start_s), pair


PAUSE_SEARCH_S = 0.1  # how far around a word boundary `with_pause` looks for the quietest cut
_FRAME_S = 0.01


def with_pause(rng: np.random.Generator, utterance: voices.Utterance, pause_s: float
               ) -> tuple[voices.Utterance, float]:
    """`utterance` with `pause_s` of silence put in between two of its words (drawn
    uniformly among the word boundaries): (the paused utterance, where the silence starts,
    in seconds from its start). The cut is the quietest 10 ms near the boundary (corpus
    word times are estimates); words after it move by the pause. A one-word utterance
    cannot pause: DoesNotFit."""
    words, sr, audio = utterance.words, utterance.sample_rate, utterance.audio
    if len(words) < 2:
        raise DoesNotFit(f"{utterance.text!r}: one word, nowhere to pause")
    k = int(rng.integers(1, len(words)))  # the pause comes before word k
    before, after = words[k - 1], words[k]
    lo_s = max(min(before.end_s, after.start_s) - PAUSE_SEARCH_S, before.start_s + _FRAME_S)
    hi_s = min(max(before.end_s, after.start_s) + PAUSE_SEARCH_S, after.end_s - _FRAME_S)
    lo, hi = int(round(lo_s * sr)), max(int(round(hi_s * sr)), int(round(lo_s * sr)))
    frame = max(1, int(_FRAME_S * sr))
    segment = audio[lo:hi].astype(np.float64)
    if segment.size > frame:
        energy = np.convolve(segment ** 2, np.ones(frame), mode="valid")
        cut = lo + int(np.argmin(energy)) + frame // 2
    else:
        cut = (lo + hi) // 2
    cut = int(np.clip(cut, 1, audio.size - 1))
    gap = int(round(pause_s * sr))
    cut_s, gap_s = cut / sr, gap / sr
    timed = tuple(
        WordTime(w.word, w.start_s, max(min(w.end_s, cut_s), w.start_s + 1.0 / sr)) if j < k
        else WordTime(w.word, max(w.start_s, cut_s) + gap_s,
                      max(w.end_s, cut_s + 1.0 / sr) + gap_s)
        for j, w in enumerate(words))
    paused = np.concatenate([audio[:cut], np.zeros(gap, audio.dtype), audio[cut:]])
    return dataclasses.replace(utterance, audio=paused, words=timed), cut_s
