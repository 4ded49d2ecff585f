"""An independent speech recognizer for everything scored from speech (speech-to-speech QA,
TTS, enhancement content): pocketsphinx, which the project does not train, installed from
PyPI with its US-English model inside the wheel (acoustic model, `en-us.lm.bin`,
`cmudict-en-us.dict`, under `pocketsphinx.get_model_path()`), run offline.

  rec = make_recognizer("pocketsphinx")             # the wheel's LM and dictionary
  rec = make_recognizer("pocketsphinx", words=ws)   # a uniform unigram LM over `ws`
  rec = make_recognizer("pocketsphinx_world")       # a 3-gram LM over the world's texts
  rec.transcribe(audio_T, sample_rate)              # -> "the zorb is blue"

`Recognizer` is the protocol (`transcribe(audio_T, sample_rate) -> str`: lower-case words,
single spaces, `tokenizer.normalize`d, "" for silence); `transcribe_many` the batch helper;
`RECOGNIZERS` names the kinds a config can ask for (e.g. `eval.recognizer =
"pocketsphinx_world"`); `ceiling(rec, clips)` is its WER on reference speech.

Options of `PocketsphinxRecognizer`:
  * default: the wheel's general US-English 3-gram LM and 126k-word dictionary. The
    dictionary lacks six of the world's eight creature names (zorb, florp, quib, wug, tove,
    glim), so this option cannot be right about them.
  * `words=`: a uniform unigram LM over those words and a dictionary of only them (the
    wheel's pronunciations, then `pronunciations=` and `WORLD_PRONUNCIATIONS`, the world's
    invented words). A word with neither raises `UnknownWordsError` naming every such
    word; nothing is dropped silently.
  * `sentences=`: a 3-gram LM over those sentences (pocketsphinx's own `ArpaBoLM`, fixed
    discount mass 0.5), vocabulary as for `words=` (plus `words`). "pocketsphinx_world" is
    this over `world.spoken_texts()`.
  (A JSGF word loop was tried and dropped: over the 119 words of the real set below it had
  not finished 78 s of audio in 10 minutes.)

Each call decodes on its own: the feature state (noise estimate, cepstral mean) is reset
first, so a transcript never depends on earlier calls (without the reset, 12 of 30
transcripts changed when the same clips came in reverse order). Audio at another rate is
resampled to 16 kHz (`audio_io.resample`), then clipped to int16.

Measured: `python -m omni_jax.evaluation.recognizer --clips=/work/shared/data/real/speech_clips`
(pocketsphinx 5.1.1, 2 shared CPU cores at a load of ~4). Corpus WER (`metrics.wer`, jiwer,
on `normalize`d text):

  set (sentences / reference words)          default   words=   world LM
  real read speech (18 / 198)                  0.242    0.177      -
  assistant voice, world replies (30 / 197)    0.609    0.543    0.025
  assistant voice, wrong replies (30 / 135)    0.933    0.637    0.193  (0 of 30 snapped)
  held-out user voices, world texts (30 / 150) 0.960    0.887    0.653

  real read speech: every clip of the shared real set with a known text (LibriSpeech,
    LibriVox, CMU cards and commands, JFK; resampled to 16 kHz). `words=` is the union of
    their 18 references (an oracle vocabulary of 119 words: a best case for that option).
  assistant voice: espeak-ng `voice_sets(12, 4, 4).assistant[0]` (en-us+f2, pitch 55,
    rate 165; configs/tiny.py's and default.py's) saying 30 distinct replies of
    `world.short_qas() + world.long_qas()` (`assistant_replies`, seed 0); `words=` is the
    world's 214-word vocabulary (`world_words`).
  wrong replies: fact replies with another creature's value ("the zorb is red"), which are
    no world text (`counterfactual_replies`): "snapped" counts those transcribed as the
    world's right reply ("the zorb is blue"); the world LM errs on creature names (zorb ->
    florp), never turned a wrong value into the right one.
  held-out user voices: `world.utterance` texts said by `voice_sets(12, 4, 4).eval_user`
    (m2, m4, Marco, Andrea at rates 158-188): what enhancement and target-speaker content is
    spoken in; mostly deletions.

Time per second of audio (decoding; same loaded machine): default 0.66-1.24 s, `words=`
0.09-0.16 s, world LM 0.09-0.10 s. Decoder creation: default ~0.6-1.0 s, restricted
~0.05 s (+0.6 s once per process to read the wheel's dictionary). One decoder per
recognizer, reused. Run to run, espeak's f2 voice adds random breath noise, so the assistant
rows move a little (two runs gave the same figures for the world LM).

Recommended for scoring the assistant's speech: "pocketsphinx_world" (ceiling WER 0.025).
Report that ceiling next to every figure the recognizer produces.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.metadata
import json
import math
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping, Protocol, Sequence

import numpy as np
import pocketsphinx  # ~20 ms to import; the model files are read when a decoder is made
from pocketsphinx.lm import ArpaBoLM

from data_pipelines import audio_io, voices, world
from data_pipelines.tokenizer import normalize
from omni_jax.evaluation import metrics

SAMPLE_RATE = 16000  # the wheel's acoustic model
_MODEL_DIR = Path(pocketsphinx.get_model_path()) / "en-us"
_ACOUSTIC_MODEL = _MODEL_DIR / "en-us"
_DICTIONARY = _MODEL_DIR / "cmudict-en-us.dict"
_SILENT_PCM = 1  # int16 peak at or below this (-90 dBFS) is silence: "" without decoding
_FILLER = re.compile(r"^[<\[].*[>\]]$")  # <sil>, [NOISE], ...
_ALTERNATE = re.compile(r"\(\d+\)$")  # the(2): the dictionary's second pronunciation

# Pronunciations (the wheel's ARPAbet phones, no stress) of the world's words the wheel's
# dictionary lacks, read off espeak-ng's en-us phonemes for them (what the voices say).
WORLD_PRONUNCIATIONS = {
    "zorb": "Z AO R B",  # zˈɔːɹb
    "florp": "F L AO R P",  # flˈɔːɹp
    "quib": "K W IH B",  # kwˈɪb
    "wug": "W AH G",  # wˈʌɡ
    "tove": "T OW V",  # tˈoʊv
    "glim": "G L IH M",  # ɡlˈɪm
    "uhhuh": "AH HH AH",  # uh-huh, normalised; the wheel's "uh-huh"
    "mmhmm": "EH M EH M HH AH M",  # mm-hmm, normalised; espeak spells it out
}


class RecognizerError(ValueError):
    """Audio or options a recognizer cannot use; the message names what is wrong."""


class UnknownWordsError(RecognizerError):
    """Words of a restricted vocabulary with no pronunciation (listed in `.words`)."""

    def __init__(self, words: Sequence[str]):
        self.words = tuple(words)
        super().__init__(
            f"recognizer: {len(self.words)} word(s) not in the pocketsphinx dictionary and "
            f"given no pronunciation: {', '.join(self.words)} (pass pronunciations= "
            f"{{word: 'ARPABET PHONES'}})")


class Recognizer(Protocol):
    """Speech -> text: lower-case words separated by single spaces ("" for no speech)."""

    def transcribe(self, audio_T: np.ndarray, sample_rate: int) -> str: ...


def transcribe_many(recognizer: Recognizer, audios: Iterable[np.ndarray],
                    sample_rate: int) -> list[str]:
    """One transcript per clip, in order (all clips at `sample_rate`)."""
    return [recognizer.transcribe(audio_T, sample_rate) for audio_T in audios]


@functools.cache
def _wheel_dictionary() -> dict[str, tuple[str, ...]]:
    """word -> its pronunciations in the wheel's dictionary (alternates `word(2)` folded)."""
    out: dict[str, list[str]] = {}
    with open(_DICTIONARY, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2:
                out.setdefault(_ALTERNATE.sub("", parts[0]), []).append(" ".join(parts[1:]))
    return {w: tuple(p) for w, p in out.items()}


def _vocabulary(texts: Iterable[str]) -> list[str]:
    return sorted({w for t in texts for w in normalize(t).split()})


def _as_pcm(audio_T, sample_rate: int) -> np.ndarray:
    """Checked mono float audio at any rate -> int16 PCM at SAMPLE_RATE (clipped)."""
    audio_T = np.asarray(audio_T)
    if audio_T.ndim != 1:
        raise RecognizerError(f"recognizer: audio_T must be 1-D (mono samples), got shape "
                              f"{audio_T.shape}")
    if not np.issubdtype(audio_T.dtype, np.floating):
        raise RecognizerError(f"recognizer: audio_T must hold float samples in [-1, 1], got "
                              f"dtype {audio_T.dtype}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) \
            or sample_rate <= 0:
        raise RecognizerError(f"recognizer: sample_rate must be a positive int, got "
                              f"{sample_rate!r}")
    bad = int(np.count_nonzero(~np.isfinite(audio_T)))
    if bad:
        raise RecognizerError(f"recognizer: audio_T has {bad} NaN/Inf sample(s) of "
                              f"{audio_T.size}")
    if audio_T.size == 0:
        return np.zeros(0, np.int16)
    audio_T = audio_io.resample(audio_T.astype(np.float32), int(sample_rate), SAMPLE_RATE)
    return np.round(np.clip(audio_T, -1.0, 1.0) * 32767.0).astype(np.int16)


def _clean(hypothesis: str) -> str:
    words = [_ALTERNATE.sub("", w) for w in hypothesis.split() if not _FILLER.match(w)]
    return normalize(" ".join(words))


def _write_unigram_lm(path: Path, words: Sequence[str]) -> None:
    """A uniform unigram ARPA LM over `words` (every word equally likely, any order)."""
    log_p = math.log10(1.0 / (len(words) + 1))  # the words and </s>
    lines = ["\\data\\", f"ngram 1={len(words) + 2}", "", "\\1-grams:",
             "-99.0000 <s> 0.0000", f"{log_p:.4f} </s> 0.0000"]
    lines += [f"{log_p:.4f} {w} 0.0000" for w in words]
    path.write_text("\n".join(lines + ["", "\\end\\", ""]), encoding="utf-8")


def _write_sentence_lm(path: Path, sentences: Sequence[str]) -> None:
    """A 3-gram ARPA LM over `sentences` (pocketsphinx's own builder)."""
    lm = ArpaBoLM(text="\n".join(sentences) + "\n", add_start=True)
    lm.compute()
    lm.write_file(str(path))


class PocketsphinxRecognizer:
    """pocketsphinx, offline, on the wheel's US-English model (see the module docstring).

    words: restrict the vocabulary to these (a uniform unigram LM); sentences: a 3-gram LM
    over these texts (their words, plus `words`, are the vocabulary); neither: the wheel's
    LM and dictionary. pronunciations: ARPAbet phones for words the wheel's dictionary lacks
    (in addition to WORLD_PRONUNCIATIONS); any other missing word raises UnknownWordsError.
    """

    def __init__(self, words: Sequence[str] | None = None, *,
                 sentences: Sequence[str] | None = None,
                 pronunciations: Mapping[str, str] | None = None):
        if isinstance(words, str) or isinstance(sentences, str):
            raise RecognizerError("recognizer: words= and sentences= take a list of strings, "
                                  "not one string")
        extra = {**WORLD_PRONUNCIATIONS,
                 **{normalize(w): p for w, p in (pronunciations or {}).items()}}
        self.sentences = None if sentences is None else tuple(
            t for t in (normalize(s) for s in sentences) if t)
        self.vocabulary: tuple[str, ...] | None = None
        kwargs = dict(hmm=str(_ACOUSTIC_MODEL), loglevel="ERROR")
        if words is None and sentences is None:
            self._decoder = pocketsphinx.Decoder(**kwargs)
        else:
            vocabulary = _vocabulary(list(words or ()) + list(self.sentences or ()))
            if not vocabulary:
                raise RecognizerError("recognizer: words= / sentences= hold no words")
            dictionary = _wheel_dictionary()
            missing = [w for w in vocabulary if w not in dictionary and w not in extra]
            if missing:
                raise UnknownWordsError(missing)
            self.vocabulary = tuple(vocabulary)
            with tempfile.TemporaryDirectory(prefix="recognizer_") as tmp:
                dict_path, lm_path = Path(tmp) / "words.dict", Path(tmp) / "words.arpa"
                lines = []
                for w in vocabulary:
                    phones = dictionary.get(w) or (extra[w],)
                    lines += [f"{w if i == 0 else f'{w}({i + 1})'} {p}"
                              for i, p in enumerate(phones)]
                dict_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
                if self.sentences is None:
                    _write_unigram_lm(lm_path, vocabulary)
                else:
                    _write_sentence_lm(lm_path, list(self.sentences) + sorted(
                        set(vocabulary) - {w for s in self.sentences for w in s.split()}))
                # The decoder reads both files now; they are not needed afterwards.
                self._decoder = pocketsphinx.Decoder(**kwargs, lm=str(lm_path),
                                                     dict=str(dict_path))
        self._lock = threading.Lock()  # a decoder is not reentrant

    @property
    def name(self) -> str:
        if self.vocabulary is None:
            return "pocketsphinx"
        what = "words" if self.sentences is None else "sentences"
        return f"pocketsphinx[{what}:{len(self.vocabulary)}]"

    def transcribe(self, audio_T: np.ndarray, sample_rate: int) -> str:
        pcm = _as_pcm(audio_T, sample_rate)
        if pcm.size == 0 or int(np.max(np.abs(pcm.astype(np.int32)))) <= _SILENT_PCM:
            return ""
        with self._lock:
            self._decoder.reinit_feat()  # a fresh noise estimate and cepstral mean per call
            self._decoder.start_utt()
            self._decoder.process_raw(pcm.tobytes(), full_utt=True)
            self._decoder.end_utt()
            hypothesis = self._decoder.hyp()
        return "" if hypothesis is None else _clean(hypothesis.hypstr)

    def transcribe_many(self, audios: Iterable[np.ndarray], sample_rate: int) -> list[str]:
        return transcribe_many(self, audios, sample_rate)


def world_sentences() -> tuple[str, ...]:
    """Every text a voice of the world can say (what the world LM is built on)."""
    return world.spoken_texts()


def world_words() -> tuple[str, ...]:
    """The world's spoken vocabulary, `normalize`d ("uh-huh" -> "uhhuh")."""
    return tuple(_vocabulary(world.spoken_texts()))


def _pocketsphinx_world(words: Sequence[str] | None = None) -> PocketsphinxRecognizer:
    return PocketsphinxRecognizer(words, sentences=world_sentences())


# kind -> factory(words) (words: None, or a restricted/extra vocabulary)
RECOGNIZERS: dict[str, Callable[[Sequence[str] | None], Recognizer]] = {
    "pocketsphinx": PocketsphinxRecognizer,
    "pocketsphinx_world": _pocketsphinx_world,
}


def make_recognizer(kind: str, words: Sequence[str] | None = None) -> Recognizer:
    """The recognizer `kind` names (a key of RECOGNIZERS), restricted to `words` if given."""
    if kind not in RECOGNIZERS:
        raise RecognizerError(f"recognizer: unknown kind {kind!r}; known: "
                              f"{', '.join(sorted(RECOGNIZERS))}")
    return RECOGNIZERS[kind](words)


# ---- measurement (the docstring's table) ----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Clip:
    audio_T: np.ndarray  # float32 at SAMPLE_RATE
    text: str  # normalized reference


def real_clips(clips_dir: str | os.PathLike) -> list[Clip]:
    """Every clip of a speech_clips folder whose manifest.jsonl entry has a text."""
    clips_dir = Path(clips_dir)
    out = []
    with open(clips_dir / "manifest.jsonl", encoding="utf-8") as f:
        for line in f:
            entry = json.loads(line)
            if entry.get("text"):
                out.append(Clip(audio_io.load_audio(clips_dir / entry["path"], SAMPLE_RATE),
                                normalize(entry["text"])))
    return out


def assistant_voice() -> voices.Voice:
    """The assistant's voice of configs/tiny.py and default.py (seed 0)."""
    return voices.voice_sets(12, 4, 4, language="en-us", seed=0).assistant[0]


def assistant_replies(num: int = 30, seed: int = 0) -> list[str]:
    """`num` distinct replies of the world's QA (short and long), drawn with `seed`."""
    answers = sorted({qa.answer for qa in world.short_qas() + world.long_qas()})
    rng = np.random.default_rng(seed)
    return [answers[i] for i in rng.choice(len(answers), num, replace=False)]


def counterfactual_replies(num: int = 30, seed: int = 0) -> list[tuple[str, str]]:
    """(wrong, right): a fact reply with another creature's value ("the zorb is red"), which
    is no world text, and the world's reply to the same question ("the zorb is blue")."""
    rng = np.random.default_rng(seed)
    spoken = set(world.spoken_texts())
    out: list[tuple[str, str]] = []
    while len(out) < num:
        qa = world.pick(rng, world.fact_qas())
        other = world.pick(rng, [qa2 for qa2 in world.fact_qas()
                                 if qa2.attribute == qa.attribute and qa2.topic != qa.topic])
        text = other.answer.replace(f"the {other.topic}", f"the {qa.topic}", 1)
        if text not in spoken and text not in [t for t, _ in out]:
            out.append((text, qa.answer))
    return out


def user_utterances(num: int = 30, seed: int = 0) -> list[tuple[str, voices.Voice]]:
    """`num` world utterances (`world.utterance`), each by the next held-out user voice."""
    rng = np.random.default_rng(seed)
    eval_users = voices.voice_sets(12, 4, 4, language="en-us", seed=0).eval_user
    return [(world.utterance(rng), eval_users[i % len(eval_users)]) for i in range(num)]


def spoken_clips(texts: Sequence[str], voice: voices.Voice | Sequence[voices.Voice]) -> list[Clip]:
    """Each text said by `voice` (or by the voice at its index)."""
    synth = voices.Synthesizer(SAMPLE_RATE)
    each = [voice] * len(texts) if isinstance(voice, voices.Voice) else list(voice)
    return [Clip(synth.say(t, v).audio, normalize(t)) for t, v in zip(texts, each)]


def ceiling(recognizer: Recognizer, clips: Sequence[Clip]) -> float:
    """The recognizer's WER on reference speech: the best any figure it scores can be."""
    return metrics.wer([c.text for c in clips],
                       transcribe_many(recognizer, [c.audio_T for c in clips], SAMPLE_RATE))


def measure(clips_dir: str | os.PathLike, num: int = 30, out=sys.stdout,
            verbose: bool = False) -> dict:
    """WER and RTF of every option on every set (the docstring's table). For the
    counterfactual set also `snapped`: wrong replies transcribed as the world's right one."""
    real = real_clips(clips_dir)
    voice = assistant_voice()
    wrong_right = counterfactual_replies(num)
    users = user_utterances(num)
    sets = {"real": real, "assistant": spoken_clips(assistant_replies(num), voice),
            "counterfactual": spoken_clips([w for w, _ in wrong_right], voice),
            "eval_user": spoken_clips([t for t, _ in users], [v for _, v in users])}
    print(f"pocketsphinx {importlib.metadata.version('pocketsphinx')}; "
          f"assistant voice {voice.voice_id}; eval users "
          f"{sorted({v.voice_id for _, v in users})}", file=out, flush=True)
    results = {}
    for option in ("default", "words", "world"):
        for set_name, clips in sets.items():
            if option == "world" and set_name == "real":
                continue  # not world speech
            t0 = time.perf_counter()
            if option == "default":
                recognizer = PocketsphinxRecognizer()
            elif option == "words":
                recognizer = PocketsphinxRecognizer(
                    _vocabulary(c.text for c in real) if set_name == "real" else world_words())
            else:
                recognizer = make_recognizer("pocketsphinx_world")
            t1 = time.perf_counter()
            hyps = transcribe_many(recognizer, [c.audio_T for c in clips], SAMPLE_RATE)
            t2 = time.perf_counter()
            seconds = sum(c.audio_T.size for c in clips) / SAMPLE_RATE
            row = dict(wer=metrics.wer([c.text for c in clips], hyps), rtf=(t2 - t1) / seconds,
                       create_s=t1 - t0, sentences=len(clips),
                       words=sum(len(c.text.split()) for c in clips), audio_s=seconds)
            extra = ""
            if set_name == "counterfactual":
                row["snapped"] = sum(h == normalize(r) for h, (_, r) in zip(hyps, wrong_right))
                extra = f" snapped={row['snapped']}/{len(clips)}"
            results[(option, set_name)] = row
            print(f"{option:8s} {set_name:15s} wer={row['wer']:.3f} rtf={row['rtf']:.3f} "
                  f"create={row['create_s']:.2f}s sentences={row['sentences']} "
                  f"words={row['words']} audio={seconds:.1f}s{extra}", file=out, flush=True)
            if verbose:
                for clip, hyp in zip(clips, hyps):
                    print(f"    {clip.text} | {hyp}", file=out)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", required=True,
                        help="a speech_clips folder (manifest.jsonl with `text`)")
    parser.add_argument("--num", type=int, default=30, help="assistant sentences per set")
    parser.add_argument("--verbose", action="store_true", help="print every transcript")
    args = parser.parse_args(argv)
    measure(args.clips, args.num, verbose=args.verbose)


if __name__ == "__main__":
    main()
