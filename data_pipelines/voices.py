"""English speech from espeak-ng, through the `espeakng-loader` wheel (ctypes, no system package).

A `Voice` is an espeak-ng variant with a pitch and a speaking rate. `voice_sets` splits the
voices into disjoint sets: training users and third speakers, evaluation-only users and
third speakers, and the assistant. The split is by family of variants (variants that sound
alike stay together), so an evaluation voice never shares a variant or a near twin of one
with anyone heard in training, and evaluation voices speak at pitches and rates of their
own (`EVAL_PITCHES`, `EVAL_RATES`). `voice_distance` says how far apart two voices are;
every user and third voice keeps `MIN_ASSISTANT_DISTANCE` from the assistant's, the
evaluation ones `EVAL_MIN_ASSISTANT_DISTANCE`. `Synthesizer.say(text, voice)` returns 16 kHz
audio with word timings (from espeak's word events), and raises `VoiceError` naming the
text for anything the voice cannot say.
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
# Variants that sound alike: built alike in espeak-ng's variant files (the same formant
# tables, or one copied from the other), or close in a measurement (MFCC means and spreads
# of three sentences at one prosody, standardized, nearest neighbours under ~3.6). A family
# is never split between two sets, so that a held-out voice has no near twin in training.
# Every variant not listed is a family of its own.
_FAMILIES = (
    ("f2", "f1", "f3", "f4", "f5", "linda", "belinda"),  # the assistant's family
    ("klatt", "klatt2"),
    ("klatt3", "klatt4", "adam", "benjamin", "caleb", "david", "edward"),
    ("rob", "robert", "quincy"),
    ("m3", "Mike"),
    ("m2", "m6", "Alex", "max"),
    ("Denis", "victor"),
    ("Mario", "Michael"),
    ("john", "norbert"),
    ("Lee", "Andy"),
    ("michel", "anika"),
)
_FAMILY = {v: family[0] for family in _FAMILIES for v in family}
# Prosody grids (espeak pitch 0-100, rate in words per minute). Training voices (users and
# third speakers) use the first; evaluation voices the second, whose pitches and rates lie
# between the training ones: no evaluation voice shares a pitch or a rate with training.
TRAIN_PITCHES, TRAIN_RATES = (35, 45, 55, 65, 75), (150, 165, 180)
EVAL_PITCHES, EVAL_RATES = (30, 40, 50, 60, 70, 80), (142, 158, 172, 188)
# The assistant's voices: its variant at these prosodies, the first for num_assistant=1.
_ASSISTANT_PROSODY = ((55, 165), (45, 150), (65, 180), (45, 180), (65, 150))
# voice_distance units: a different family, a variant of the same family, and one unit of
# distance per PITCH_UNIT of pitch and per RATE_UNIT words per minute.
FAMILY_DISTANCE, VARIANT_DISTANCE = 3.0, 1.0
PITCH_UNIT, RATE_UNIT = 20.0, 30.0
# Every user and third voice is at least this far from every assistant voice; evaluation
# voices at least EVAL_MIN_ASSISTANT_DISTANCE (another family: never the assistant's).
MIN_ASSISTANT_DISTANCE = 2.0
EVAL_MIN_ASSISTANT_DISTANCE = FAMILY_DISTANCE
DEFAULT_NUM_EVAL_THIRD = 4

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


def family(variant: str) -> str:
    """The family of an espeak variant (its first member's name; see _FAMILIES)."""
    return _FAMILY.get(variant, variant)


def voice_distance(a: Voice, b: Voice) -> float:
    """How far apart two voices sound, roughly: 0 for the same voice; FAMILY_DISTANCE for
    variants of two families, VARIANT_DISTANCE for two variants of one, plus one per
    PITCH_UNIT of pitch and per RATE_UNIT of rate between them."""
    if a.variant == b.variant:
        apart = 0.0
    elif family(a.variant) == family(b.variant):
        apart = VARIANT_DISTANCE
    else:
        apart = FAMILY_DISTANCE
    return apart + abs(a.pitch - b.pitch) / PITCH_UNIT + abs(a.rate - b.rate) / RATE_UNIT


@dataclasses.dataclass(frozen=True)
class VoiceSets:
    """Disjoint voice sets. Training: `user`, `third`; evaluation only: `eval_user`,
    `eval_third`; and the `assistant`. No family of variants is in two sets, and the
    evaluation sets use the evaluation prosody grid."""

    user: tuple[Voice, ...]
    eval_user: tuple[Voice, ...]
    third: tuple[Voice, ...]
    assistant: tuple[Voice, ...]
    eval_third: tuple[Voice, ...] = ()


def _round_robin(families: list[tuple[str, ...]]) -> list[str]:
    """The variants of `families`, first members first: a few voices span many families."""
    longest = max((len(f) for f in families), default=0)
    return [f[j] for j in range(longest) for f in families if j < len(f)]


def voice_sets(num_user: int, num_eval_user: int, num_third: int, num_assistant: int = 1,
               language: str = "en-us", seed: int = 0,
               num_eval_third: int = DEFAULT_NUM_EVAL_THIRD) -> VoiceSets:
    """Disjoint voice sets, deterministic in `seed` (see VoiceSets and the constants above).

    Families of variants are shuffled and dealt to the sets: about a quarter of the
    variants to evaluation users, a sixth to evaluation third speakers, a sixth to third
    speakers, the rest to training users (who also get the assistant's family but for its
    own variant). Voices then take prosodies of their grid, skipping any too close to an
    assistant voice.
    """
    if not 1 <= num_assistant <= len(_ASSISTANT_PROSODY):
        raise VoiceError(f"data.voices: num_assistant must be 1..{len(_ASSISTANT_PROSODY)}, "
                         f"got {num_assistant}")
    rng = np.random.default_rng(seed)
    assistant_family = _FAMILIES[0]
    families = [f for f in _FAMILIES[1:]] + [(v,) for v in _VARIANTS if v not in _FAMILY]
    rng.shuffle(families)
    num_variants = sum(len(f) for f in families)
    targets = dict(eval_user=max(1, num_variants // 4) if num_eval_user else 0,
                   eval_third=max(1, num_variants // 6) if num_eval_third else 0,
                   third=max(1, num_variants // 6))
    dealt: dict[str, list[tuple[str, ...]]] = {name: [] for name in targets}
    rest = list(families)
    for name, target in targets.items():
        while rest and sum(len(f) for f in dealt[name]) < target:
            dealt[name].append(rest.pop(0))
    dealt["user"] = rest + [tuple(v for v in assistant_family if v != _ASSISTANT_VARIANT)]
    assistant = tuple(Voice(_ASSISTANT_VARIANT, pitch, rate, language)
                      for pitch, rate in _ASSISTANT_PROSODY[:num_assistant])
    grids = {}
    for grid, (pitches, rates) in dict(train=(TRAIN_PITCHES, TRAIN_RATES),
                                       eval=(EVAL_PITCHES, EVAL_RATES)).items():
        prosody = list(itertools.product(pitches, rates))
        rng.shuffle(prosody)
        grids[grid] = prosody
    wanted = dict(user=num_user, eval_user=num_eval_user, third=num_third,
                  eval_third=num_eval_third)
    out = dict(assistant=assistant)
    for name, count in wanted.items():
        held_out = name.startswith("eval_")
        prosody = grids["eval" if held_out else "train"]
        least = EVAL_MIN_ASSISTANT_DISTANCE if held_out else MIN_ASSISTANT_DISTANCE
        pool = _round_robin(dealt[name])
        # Candidate i = a + V*b speaks variant a with prosody (a + b) mod P: a small set
        # still spans many variants and prosodies, and no (variant, prosody) pair repeats.
        candidates = (Voice(pool[i % len(pool)],
                            *prosody[(i % len(pool) + i // len(pool)) % len(prosody)], language)
                      for i in range(len(pool) * len(prosody)))
        far = [v for v in candidates
               if min(voice_distance(v, a) for a in assistant) >= least]
        if count > len(far):
            raise VoiceError(f"data.voices: {count} {name} voices asked for, only "
                             f"{len(far)} distinct ones exist")
        out[name] = tuple(far[:count])
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
