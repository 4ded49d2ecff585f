"""Timeline <-> flat record of numpy arrays, the on-disk form of a generated dialogue.

A record has five fields, all plain numpy values so that any store (TFDS array_record,
npz, a queue between processes) can hold it:

  event_audio     (E_total,) int16   every AudioEvent's audio, concatenated
  event_offsets   (E+1,)     int64   event i is event_audio[offsets[i]:offsets[i+1]]
  turn_audio      (T_total,) int16   every AssistantTurn's audio (TRANSCRIBE turns: empty)
  turn_offsets    (T+1,)     int64   likewise
  info            str                JSON: everything else (roles, kinds, texts, word times,
                                     gains, start times, prompt, echo, meta)

Audio is stored at the Timeline's sample rate as int16 (scale 32767), so a round trip is
exact up to int16 quantisation (|error| <= 0.5 / 32767). Times and gains are JSON floats,
which round-trip exactly. `meta` must be JSON-serialisable; numpy scalars and arrays in it
come back as Python numbers and lists, tuples as lists.

A corrupt or truncated record raises `RecordError` naming the record and the field.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import numpy as np

from data_pipelines.timeline import AssistantTurn, AudioEvent, Timeline, WordTime

FORMAT_VERSION = 1
_INT16_SCALE = 32767.0
RECORD_FIELDS = ("event_audio", "event_offsets", "turn_audio", "turn_offsets", "info")


class RecordError(ValueError):
    """A stored record cannot be turned back into a Timeline; names the record and field."""


def to_int16(audio: np.ndarray) -> np.ndarray:
    """float audio in [-1, 1] -> int16 (values outside are clipped)."""
    scaled_T = np.rint(np.clip(audio, -1.0, 1.0) * _INT16_SCALE)
    return scaled_T.astype(np.int16)


def from_int16(pcm: np.ndarray) -> np.ndarray:
    return pcm.astype(np.float32) * np.float32(1.0 / _INT16_SCALE)


def json_default(value: Any):
    """`json.dumps(..., default=json_default)`: numpy scalars and arrays as Python values
    (scenario meta and Grain iterator states may hold them)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _words_to_json(words: tuple[WordTime, ...]) -> list[list]:
    return [[w.word, w.start_s, w.end_s] for w in words]


def _concat(chunks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lengths = [c.size for c in chunks]
    offsets_Np1 = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)
    audio = np.concatenate(chunks) if chunks else np.zeros((0,), np.int16)
    return audio.astype(np.int16), offsets_Np1


def serialize(timeline: Timeline) -> dict[str, Any]:
    """A Timeline as a flat record (see the module docstring for the fields)."""
    events = [dict(role=e.role, kind=e.kind, start_s=e.start_s, speaker=e.speaker,
                   text=e.text, words=_words_to_json(e.words), gain=e.gain)
              for e in timeline.events]
    turns = [dict(mode=t.mode, text=t.text, start_s=t.start_s, has_audio=t.audio is not None,
                  words=_words_to_json(t.words), stop_s=t.stop_s, speaker=t.speaker)
             for t in timeline.turns]
    info = dict(version=FORMAT_VERSION, scenario=timeline.scenario,
                sample_rate=timeline.sample_rate, duration_s=timeline.duration_s,
                prompt=timeline.prompt, echo_gain=timeline.echo_gain,
                echo_delay_s=timeline.echo_delay_s, meta=timeline.meta,
                events=events, turns=turns)
    event_audio, event_offsets = _concat([to_int16(e.audio) for e in timeline.events])
    turn_audio, turn_offsets = _concat(
        [to_int16(t.audio) if t.audio is not None else np.zeros((0,), np.int16)
         for t in timeline.turns])
    return dict(event_audio=event_audio, event_offsets=event_offsets, turn_audio=turn_audio,
                turn_offsets=turn_offsets,
                info=json.dumps(info, default=json_default, sort_keys=True))


class _Reader:
    """Checks one record field by field, so that every error names what is broken."""

    def __init__(self, record: Mapping[str, Any], where: str):
        self.record = record
        self.where = where

    def fail(self, field: str, msg: str):
        raise RecordError(f"{self.where}: field '{field}': {msg}")

    def array(self, field: str, dtype) -> np.ndarray:
        if field not in self.record:
            self.fail(field, f"missing (record has {sorted(self.record)})")
        value = np.asarray(self.record[field])
        if value.ndim != 1:
            self.fail(field, f"expected a 1-D array, got shape {value.shape}")
        if value.dtype != dtype:
            self.fail(field, f"dtype {value.dtype} != expected {np.dtype(dtype)}")
        return value

    def info(self) -> dict:
        if "info" not in self.record:
            self.fail("info", f"missing (record has {sorted(self.record)})")
        raw = self.record["info"]
        if isinstance(raw, np.ndarray):
            raw = raw.item()
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", errors="replace")
        try:
            info = json.loads(raw)
        except (TypeError, json.JSONDecodeError) as e:
            self.fail("info", f"not valid JSON ({e})")
        if not isinstance(info, dict):
            self.fail("info", f"expected a JSON object, got {type(info).__name__}")
        if info.get("version") != FORMAT_VERSION:
            self.fail("info", f"format version {info.get('version')!r} != {FORMAT_VERSION}")
        return info

    def segments(self, prefix: str, count: int) -> list[np.ndarray]:
        """Splits `{prefix}_audio` at `{prefix}_offsets` into `count` float32 chunks."""
        audio = self.array(f"{prefix}_audio", np.int16)
        offsets = self.array(f"{prefix}_offsets", np.int64)
        name = f"{prefix}_offsets"
        if offsets.size != count + 1:
            self.fail(name, f"{offsets.size} offsets for {count} {prefix}s (want {count + 1})")
        if offsets[0] != 0 or np.any(np.diff(offsets) < 0):
            self.fail(name, f"offsets must start at 0 and not decrease: {offsets.tolist()}")
        if offsets[-1] != audio.size:
            self.fail(f"{prefix}_audio", f"holds {audio.size} samples but the offsets "
                                         f"promise {int(offsets[-1])} (truncated?)")
        return [from_int16(audio[a:b]) for a, b in zip(offsets[:-1], offsets[1:])]


def _words(items) -> tuple[WordTime, ...]:
    return tuple(WordTime(str(w), float(s), float(e)) for w, s, e in items)


def deserialize(record: Mapping[str, Any], where: str = "record") -> Timeline:
    """The Timeline a record holds; raises RecordError naming `where` and the field."""
    reader = _Reader(record, where)
    info = reader.info()
    try:
        event_infos, turn_infos = list(info["events"]), list(info["turns"])
    except (KeyError, TypeError) as e:
        reader.fail("info", f"no events/turns list ({e!r})")
    event_audio = reader.segments("event", len(event_infos))
    turn_audio = reader.segments("turn", len(turn_infos))
    try:
        events = tuple(
            AudioEvent(role=e["role"], kind=e["kind"], start_s=e["start_s"], audio=audio,
                       speaker=e["speaker"], text=e["text"], words=_words(e["words"]),
                       gain=e["gain"])
            for e, audio in zip(event_infos, event_audio))
        turns = tuple(
            AssistantTurn(mode=t["mode"], text=t["text"], start_s=t["start_s"],
                          audio=audio if t["has_audio"] else None, words=_words(t["words"]),
                          stop_s=t["stop_s"], speaker=t["speaker"])
            for t, audio in zip(turn_infos, turn_audio))
        return Timeline(scenario=info["scenario"], sample_rate=info["sample_rate"],
                        duration_s=info["duration_s"], events=events, turns=turns,
                        prompt=info["prompt"], echo_gain=info["echo_gain"],
                        echo_delay_s=info["echo_delay_s"], meta=info["meta"])
    except (KeyError, TypeError, ValueError) as e:
        reader.fail("info", f"does not describe a valid Timeline ({type(e).__name__}: {e})")


def scenario_of(record: Mapping[str, Any]) -> str:
    """The scenario name of a record, or '?' when its info cannot be read (for messages)."""
    try:
        raw = record["info"]
        raw = raw.item() if isinstance(raw, np.ndarray) else raw
        return str(json.loads(raw)["scenario"])
    except Exception:  # noqa: BLE001 - only used to label an error that is being reported
        return "?"
