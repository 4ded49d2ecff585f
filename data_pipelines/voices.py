"""English speech from espeak-ng, through the `espeakng-loader` wheel (ctypes, no system package).

A `Voice` is an espeak-ng variant with a pitch and a speaking rate. `voice_sets` splits the
voices into disjoint sets: training users, evaluation-only users, third speakers and the
assistant; the split is by variant, so evaluation users never share a variant with anyone
heard in training. `Synthesizer.say(text, voice)` returns 16 kHz audio with word timings
(from espeak's word events), and raises `VoiceError` naming the text for anything the
voice cannot say.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import itertools
import re
import threading

import numpy as np

from data_pipelines.timeline import WordTime


class VoiceError(ValueError):
    """Text a voice cannot say (empty, overlong, unsupported characters) or a bad voice."""


# Variants that sound like plausible different people (the novelty ones are left out).
_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4", "Alex", "Alicia", "Andrea", "Andy", "Annie",
    "Denis", "Gene", "Jacky", "Lee", "Marco", "Mario", "Michael", "Mike", "Storm", "adam",
    "anika", "belinda", "benjamin", "boris", "caleb", "david", "ed", "edward", "iven",
    "john", "linda", "max", "michel", "norbert", "paul", "quincy", "rob", "robert",
    "steph", "travis", "victor", "zac",
)
_ASSISTANT_VARIANT = "f2"  # the synthesizer's target voice; no user ever has it
_PITCHES = (35, 45, 55, 65, 75)
_RATES = (150, 165, 180)

# Characters the voices are allowed to read. Anything else is an error, never a guess.
_SAYABLE = re.compile(r"^[A-Za-z0-9 ,.?!'\-]+$")

_ESPEAK_WORD_EVENT, _ESPEAK_LIST_END = 1, 0
_ESPEAK_RATE, _ESPEAK_PITCH, _ESPEAK_RANGE = 1, 3, 4
_AUDIO_OUTPUT_SYNCHRONOUS, _INIT_DONT_EXIT = 2, 0x8000
_POS_CHARACTER, _CHARS_UTF8 = 1, 1


@dataclasses.dataclass(frozen=True, order=True)
class Voice:
    variant: str
    pitch: int
    rate: int
    language: str = "en-us"

    @property
    def voice_id(self) -> str:
        return f"{self.language}+{self.variant}:p{self.pitch}:r{self.rate}"


@dataclasses.dataclass(frozen=True)
class VoiceSets:
    user: tuple[Voice, ...]
    eval_user: tuple[Voice, ...]
    third: tuple[Voice, ...]
    assistant: tuple[Voice, ...]


def voice_sets(num_user: int, num_eval_user: int, num_third: int, num_assistant: int = 1,
               language: str = "en-us", seed: int = 0) -> VoiceSets:
    """Disjoint voice sets; evaluation users and third speakers use variants of their own."""
    rng = np.random.default_rng(seed)
    variants = [v for v in _VARIANTS if v != _ASSISTANT_VARIANT]
    rng.shuffle(variants)
    # Variant pools: a quarter for evaluation users, a sixth for third speakers, rest users.
    n_eval = max(1, len(variants) // 4) if num_eval_user else 0
    n_third = max(1, len(variants) // 6)
    pools = dict(eval_user=variants[:n_eval], third=variants[n_eval:n_eval + n_third],
                 user=variants[n_eval + n_third:], assistant=[_ASSISTANT_VARIANT])
    wanted = dict(user=num_user, eval_user=num_eval_user, third=num_third,
                  assistant=num_assistant)
    prosody = list(itertools.product(_PITCHES, _RATES))
    rng.shuffle(prosody)
    out = {}
    for name, pool in pools.items():
        available = len(pool) * len(prosody)
        if wanted[name] > available:
            raise VoiceError(f"data.voices: {wanted[name]} {name} voices asked for, only "
                             f"{available} distinct ones exist")
        # Voice i = a + V*b speaks variant a with prosody (a + b) mod P: a small set still
        # spans many variants and prosodies, and no (variant, prosody) pair repeats.
        num_variants = len(pool)
        out[name] = tuple(
            Voice(pool[i % num_variants],
                  *prosody[(i % num_variants + i // num_variants) % len(prosody)], language)
            for i in range(wanted[name]))
    return VoiceSets(**out)


@dataclasses.dataclass(frozen=True)
class Utterance:
    text: str
    voice_id: str
    audio: np.ndarray  # float32, mono, at the synthesizer's sample rate
    words: tuple[WordTime, ...]  # relative to the start of `audio`
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return self.audio.size / self.sample_rate


class _EspeakEvent(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_EspeakEvent))


class _Espeak:
    """The process-wide espeak-ng engine (it is a global C library): one lock, one callback."""

    def __init__(self):
        import espeakng_loader  # deferred: only corpus building needs the library

        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.sample_rate = self.lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(),
            _INIT_DONT_EXIT)
        if self.sample_rate <= 0:
            raise VoiceError("espeak-ng failed to initialise from the espeakng-loader wheel")
        self._chunks: list[np.ndarray] = []
        self._words: list[tuple[int, int]] = []  # (text position, sample)
        self._callback = _CALLBACK(self._on_audio)  # kept alive as long as the engine
        self.lib.espeak_SetSynthCallback(self._callback)
        self.lock = threading.Lock()

    def _on_audio(self, wav, num_samples, events):
        if num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        i = 0
        while events[i].type != _ESPEAK_LIST_END:
            if events[i].type == _ESPEAK_WORD_EVENT:
                self._words.append((events[i].text_position, events[i].sample))
            i += 1
        return 0

    def synth(self, text: str, voice: Voice) -> tuple[np.ndarray, list[tuple[int, int]]]:
        with self.lock:
            name = f"{voice.language}+{voice.variant}".encode()
            if self.lib.espeak_SetVoiceByName(name) != 0:
                raise VoiceError(f"espeak-ng has no voice {name.decode()!r}")
            self.lib.espeak_SetParameter(_ESPEAK_RATE, voice.rate, 0)
            self.lib.espeak_SetParameter(_ESPEAK_PITCH, voice.pitch, 0)
            self.lib.espeak_SetParameter(_ESPEAK_RANGE, 50, 0)
            self._chunks, self._words = [], []
            data = text.encode("utf-8")
            status = self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0,
                                           _CHARS_UTF8, None, None)
            self.lib.espeak_Synchronize()
            if status != 0 or not self._chunks:
                raise VoiceError(f"espeak-ng failed (status {status}) on {text!r}")
            return np.concatenate(self._chunks), list(self._words)


@functools.cache
def _engine() -> _Espeak:
    return _Espeak()


def check_sayable(text: str, max_words: int, where: str = "text") -> list[str]:
    """Returns the words of `text`, or raises VoiceError naming what is wrong with it."""
    if not text or not text.strip():
        raise VoiceError(f"{where}: empty text")
    bad = sorted(set(ch for ch in text if not _SAYABLE.match(ch)))
    if bad:
        raise VoiceError(f"{where}: {text!r} has characters the voice cannot say: {bad}")
    words = text.split()
    if len(words) > max_words:
        raise VoiceError(f"{where}: {len(words)} words is over the limit of {max_words}: "
                         f"{text[:60]!r}...")
    return words


def _word_spans(text: str, words: list[str], word_events: list[tuple[int, int]],
                scale: float, end: int) -> list[tuple[int, int]]:
    """Sample span [start, stop) of every whitespace word, from espeak's word events.

    espeak sometimes reads two words as one event ("in the") or one word as two ("uh-huh");
    a word belongs to the last event starting at or before it, and words sharing an event
    split its span in proportion to their length.
    """
    if not word_events:
        raise VoiceError(f"espeak-ng gave no word events for {text!r}")
    char_starts = [m.start() for m in re.finditer(r"\S+", text)]
    event_chars = [pos - 1 for pos, _ in word_events]  # espeak positions are 1-based
    event_samples = [min(end, int(round(sample * scale))) for _, sample in word_events]
    owner = [max(0, int(np.searchsorted(event_chars, c, side="right")) - 1)
             for c in char_starts]
    groups: dict[int, list[int]] = {}
    for word_index, event in enumerate(owner):
        groups.setdefault(event, []).append(word_index)
    owners = sorted(groups)
    spans = [(0, 0)] * len(words)
    for g, event in enumerate(owners):
        start = event_samples[event] if g else 0
        stop = event_samples[owners[g + 1]] if g + 1 < len(owners) else end
        members = groups[event]
        weights = np.cumsum([0] + [len(words[i]) for i in members], dtype=float)
        cuts = start + np.round((stop - start) * weights / weights[-1]).astype(int)
        for j, i in enumerate(members):
            spans[i] = (int(cuts[j]), int(max(cuts[j + 1], cuts[j] + 1)))
    return spans


class Synthesizer:
    """Text + Voice -> Utterance at `sample_rate`, cached (the world repeats its phrases)."""

    def __init__(self, sample_rate: int = 16000, max_words: int = 24,
                 silence_threshold: float = 0.01):
        self.sample_rate = sample_rate
        self.max_words = max_words
        self.silence_threshold = silence_threshold
        self._cache: dict[tuple[str, Voice], Utterance] = {}

    def say(self, text: str, voice: Voice) -> Utterance:
        key = (text, voice)
        if key not in self._cache:
            self._cache[key] = self._say(text, voice)
        return self._cache[key]

    def _say(self, text: str, voice: Voice) -> Utterance:
        import librosa  # deferred: heavy import, only corpus building needs it

        words = check_sayable(text, self.max_words, where=f"voice {voice.voice_id}")
        engine = _engine()
        pcm, word_events = engine.synth(text, voice)
        native = engine.sample_rate
        audio = pcm.astype(np.float32) / 32768.0
        if native != self.sample_rate:
            audio = librosa.resample(audio, orig_sr=native, target_sr=self.sample_rate,
                                     res_type="soxr_hq").astype(np.float32)
        audio = np.clip(audio, -1.0, 1.0)
        loud = np.flatnonzero(np.abs(audio) > self.silence_threshold)
        if loud.size == 0:
            raise VoiceError(f"voice {voice.voice_id} produced silence for {text!r}")
        # Keep 40 ms after the last loud sample: espeak appends long trailing silence.
        end = min(audio.size, loud[-1] + int(0.04 * self.sample_rate))
        audio = audio[:end]
        scale = self.sample_rate / native
        spans = _word_spans(text, words, word_events, scale, end)
        timed = []
        for word, (start, stop) in zip(words, spans):
            seg = np.flatnonzero(np.abs(audio[start:stop]) > self.silence_threshold)
            word_end = start + (seg[-1] + 1 if seg.size else 0)
            timed.append(WordTime(word, float(start / self.sample_rate),
                                  float(max(word_end, start + 1) / self.sample_rate)))
        return Utterance(text=text, voice_id=voice.voice_id, audio=audio, words=tuple(timed),
                         sample_rate=self.sample_rate)
