"""Banks of utterances: where the user's (and third speakers') speech comes from.

A bank hands out what a speaker says, as a `UserTurn` (a `voices.Utterance`: text, speaker,
16 kHz audio, word times; plus an optional reply text). Three banks:

  EspeakBank   the embedded world: world sentences said by espeak-ng voices; it can say any
               text, so scripted phrases and the world's sentences come out as before
  CorpusBank   a prepared real corpus (`sources.real`: LibriSpeech, LibriHeavy, GigaSpeech,
               a manifest); word times are estimated (see `estimate_word_times`); replies
               come from a manifest's `reply` field
  FsddBank     digit strings joined from Free Spoken Digit clips of one speaker, with
               exact word times; one speaker is held out as the eval split

The scenario generators reach a bank only through `scenarios.speakers` (which also says
what is taken from a corpus and what is not); `ScenarioContext.user_speech` selects the
bank (`scenarios.generate(name, rng, ctx, user_speech=bank)` runs a scenario on a given
one). `bank_from_config` makes the bank `config.data.source` names: FSDD, or a real corpus
(`data.corpus`), prepared on first use under `paths.real_corpus_dir`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Protocol, Sequence

import numpy as np

from data_pipelines import paths, voices, world
from data_pipelines.scenarios.base import DoesNotFit
from data_pipelines.sources import REPLY_KINDS, fsdd, real
from data_pipelines.sources.builder import UtteranceSource
from data_pipelines.sources.utterances import CorpusUtterance, voiced_span
from data_pipelines.timeline import WordTime

DRAWS = 8  # tries to find an utterance that fits before a bank gives up (DoesNotFit)


@dataclasses.dataclass(frozen=True)
class UserTurn:
    utterance: voices.Utterance  # voice_id is the speaker
    reply: str = ""  # what the assistant answers, when the source knows ("" otherwise)


class UtteranceBank(Protocol):
    def speakers(self, with_replies: bool = False) -> Sequence[str]:
        """Who can be drawn (one split's speakers); `with_replies`: only those with turns
        that carry a reply ([] for a bank without replies)."""

    def draw(self, rng: np.random.Generator, *, speaker: str | None = None,
             max_seconds: float = math.inf, max_words: int | None = None,
             need_reply: bool = False) -> UserTurn:
        """A turn of `speaker` (random if None) within the limits; DoesNotFit if none fits."""

    def say(self, text: str, speaker: str) -> voices.Utterance | None:
        """`speaker` saying exactly `text`, or None when this bank cannot make it (a corpus
        holds only what its speakers said)."""


def _check(utt: voices.Utterance, max_seconds: float, max_words: int | None) -> bool:
    return utt.duration_s <= max_seconds and (max_words is None
                                              or len(utt.text.split()) <= max_words)


class EspeakBank:
    """World sentences (`world.utterance`) said by the context's espeak-ng user voices."""

    def __init__(self, synth: voices.Synthesizer, pool: Sequence[voices.Voice]):
        self.synth = synth
        self._voices = {v.voice_id: v for v in pool}

    def speakers(self, with_replies: bool = False) -> list[str]:
        # The world's questions come with their answers from the generators, not from here.
        return [] if with_replies else list(self._voices)

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

    def say(self, text: str, speaker: str) -> voices.Utterance:
        return self.synth.say(text, self._voices[speaker])


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
    """Utterances of one split of a prepared real corpus (random access, lazy).

    `replies`: whether its utterances carry reply texts (a manifest's `reply`). None finds
    out by reading the split once, when first asked; a source of more than SCAN_LIMIT
    utterances must say, since that would read a whole large corpus.
    """

    SCAN_LIMIT = 5000

    def __init__(self, source: UtteranceSource, replies: bool | None = None):
        if not len(source):
            raise ValueError(f"{source.name}: no utterances")
        if replies is None and len(source) > self.SCAN_LIMIT:
            raise ValueError(f"CorpusBank({source.name}): {len(source)} utterances; pass "
                             f"replies=True or False (whether they carry reply texts) "
                             f"instead of reading them all to find out")
        self.source = source
        self._speakers = list(source.speakers())
        self._replies = replies
        self._reply_indices: np.ndarray | None = None  # known after a scan
        self._reply_speakers: list[str] | None = None

    def _scan_replies(self) -> np.ndarray:
        if self._reply_indices is None:
            self._reply_indices = np.array(
                [i for i in range(len(self.source)) if self.source[i].reply], dtype=np.int64)
            self._reply_speakers = [
                s for s in self._speakers
                if np.isin(self.source.indices_of(s), self._reply_indices).any()]
        return self._reply_indices

    def speakers(self, with_replies: bool = False) -> list[str]:
        if not with_replies:
            return self._speakers
        if self._replies is False:
            return []
        if self._replies is True:  # declared, not scanned: assume every speaker has some
            return self._speakers
        self._scan_replies()
        return self._reply_speakers

    def draw(self, rng, *, speaker=None, max_seconds=math.inf, max_words=None,
             need_reply=False) -> UserTurn:
        pool = (self.source.indices_of(speaker) if speaker is not None
                else np.arange(len(self.source)))
        if need_reply and self._replies is None:  # scanned: draw among the replied turns
            pool = np.intersect1d(pool, self._scan_replies())
        if need_reply and (self._replies is False or not pool.size):
            raise DoesNotFit(f"{self.source.name}: no utterance of {speaker} with a reply")
        for _ in range(DRAWS):
            utt = self.source[int(pool[int(rng.integers(pool.size))])]
            if need_reply and not utt.reply:
                continue
            turn = as_turn(utt)
            if _check(turn.utterance, max_seconds, max_words):
                return turn
        raise DoesNotFit(f"{self.source.name}: no utterance{' with a reply' * need_reply} "
                         f"of <= {max_seconds:.2f}s in {DRAWS} draws")

    def say(self, text: str, speaker: str) -> None:
        return None  # its transcripts are not searched for scripted phrases


class FsddBank:
    """Digit strings of one FSDD speaker. Splits (`fsdd.split_selection`): train = every
    speaker but the held-out one, takes 5-49; eval = the held-out speaker; test = FSDD's
    official test takes 0-4 of every speaker."""

    def __init__(self, root: str, split: str, holdout_speaker: str, sample_rate: int = 16000,
                 min_digits: int = 1, max_digits: int = 5,
                 pause_s: tuple[float, float] = (0.05, 0.3), on_bad_sample: str = "raise"):
        if not 1 <= min_digits <= max_digits:
            raise ValueError(f"need 1 <= min_digits <= max_digits, got {min_digits}, "
                             f"{max_digits}")
        chosen, keep_take = fsdd.split_selection(root, split, holdout_speaker)
        self.digits = fsdd.load_digits(root, chosen, sample_rate, on_bad_sample, keep_take)
        self.sample_rate = sample_rate
        self.min_digits, self.max_digits = min_digits, max_digits
        self.pause_s = (float(pause_s[0]), float(pause_s[1]))

    def speakers(self, with_replies: bool = False) -> list[str]:
        return [] if with_replies else self.digits.speakers

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

    def say(self, text: str, speaker: str) -> None:
        return None  # only digit strings it draws itself


# data.corpus.replies -> CorpusBank(replies=...); "auto" is None (read the split to find
# out) for the layouts whose records may carry a reply (`sources.REPLY_KINDS`) and False
# for the others.
CORPUS_REPLIES = {"auto": None, "yes": True, "no": False}


def corpus_splits(config) -> dict[str, tuple[str, ...]]:
    """split -> the layout's parts: data.corpus.{train,eval}_parts, empty = the layout's
    DEFAULT_SPLITS (e.g. LibriSpeech train-clean-100 / dev-clean)."""
    spec = config.data.corpus
    if spec.kind not in real.BUILDERS:
        raise ValueError(f"config.data.corpus.kind: unknown real corpus {spec.kind!r}; "
                         f"known: {sorted(real.BUILDERS)}")
    defaults = real.BUILDERS[spec.kind].DEFAULT_SPLITS
    return {split: tuple(spec[f"{split}_parts"]) or tuple(defaults[split])
            for split in ("train", "eval")}


def corpus_source(config, split: str, workdir=None) -> UtteranceSource:
    """Split `split` of the real corpus `config.data.corpus` names, prepared on first use
    under `paths.real_corpus_dir(config, workdir)`. The build is named by a digest of the
    folder, parts, rate, length limit and bad-sample policy (`sources.builder.config_for`),
    so a changed corpus is built anew, never read stale. Only one process should build
    (the main job: process 0, before the others look)."""
    spec = config.data.corpus
    if not spec.root:
        raise ValueError("config.data.corpus.root: data.source='corpus' needs the corpus "
                         "folder")
    if not os.path.isdir(spec.root):
        raise FileNotFoundError(f"config.data.corpus.root: {spec.kind} corpus folder "
                                f"{spec.root!r} does not exist")
    splits = corpus_splits(config)
    if split not in splits:
        raise ValueError(f"config.data.corpus: a real corpus has the splits {sorted(splits)}, "
                         f"not {split!r}")
    builder = real.make_builder(spec.kind, spec.root, paths.real_corpus_dir(config, workdir),
                                splits=splits, sample_rate=config.audio.sample_rate,
                                on_bad_sample=config.data.on_bad_sample,
                                max_seconds=spec.max_seconds, audio_root=spec.audio_root)
    if not builder.is_prepared():
        real.prepare(builder)
    return real.open_utterances(builder, split)


def corpus_bank(config, split: str, workdir=None) -> CorpusBank:
    """A CorpusBank of `corpus_source(config, split, workdir)` (replies per
    data.corpus.replies)."""
    spec = config.data.corpus
    if spec.replies not in CORPUS_REPLIES:
        raise ValueError(f"config.data.corpus.replies: {spec.replies!r} is not one of "
                         f"{list(CORPUS_REPLIES)}")
    replies = CORPUS_REPLIES[spec.replies]
    if replies is None and spec.kind not in REPLY_KINDS:
        replies = False
    source = corpus_source(config, split, workdir)
    if replies is None and len(source) > CorpusBank.SCAN_LIMIT:
        raise ValueError(f"config.data.corpus.replies: {source.name} has {len(source)} "
                         f"utterances; say 'yes' or 'no' (whether they carry reply texts) "
                         f"instead of 'auto', which would read them all")
    if not len(source):
        raise ValueError(f"config.data.corpus: {split} split {source.name} has no utterances "
                         f"(parts {corpus_splits(config)[split]}, max_seconds "
                         f"{spec.max_seconds})")
    return CorpusBank(source, replies)


def bank_from_config(config, split: str, workdir=None) -> UtteranceBank | None:
    """The bank `config.data.source` asks for; None for the generated (espeak) world.

    fsdd: config.data.real_dir (the FSDD folder), config.data.holdout_speaker and
    config.data.fsdd.{min_digits, max_digits, pause_s}.
    corpus: config.data.corpus (see `corpus_bank`); its build lands under `workdir`'s
    corpus dir unless data.corpus.data_dir or data.corpus_dir says where.
    """
    data = config.data
    if data.source == "corpus":
        return corpus_bank(config, split, workdir)
    if data.source != "fsdd":
        return None
    if not data.get("real_dir"):
        raise ValueError("data.source='fsdd' needs data.real_dir (the FSDD folder)")
    digits = data.fsdd
    return FsddBank(data.real_dir, split, data.holdout_speaker,
                    sample_rate=config.audio.sample_rate, min_digits=digits.min_digits,
                    max_digits=digits.max_digits, pause_s=tuple(digits.pause_s),
                    on_bad_sample=data.on_bad_sample)
