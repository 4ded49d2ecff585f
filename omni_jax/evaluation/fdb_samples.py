"""Full-Duplex-Bench v1 scoring, a run's inputs: the sample folders, their annotations and
the scorer's settings (omni_jax.evaluation.fdb_metrics scores them; fdb_speech reads what
the model said; sources and citation in fdb_metrics).

Layout. A sample is a folder REL with INPUT_DIR/REL/input.wav and/or OUTPUT_DIR/REL/
{output.wav, output.json} (INPUT_DIR and OUTPUT_DIR may be the same folder, as in FDB,
whose scripts expect everything in one folder). The task's annotation is looked up in the
input folder, then in the output folder:
  pause.json        FDB pause handling:  [{"text": "[PAUSE]", "timestamp": [start, end]}, ...]
  turn_taking.json  FDB smooth turn-taking: [{"timestamp": [user_end, ...]}]; the user's turn
                    ends at timestamp[0] (FDB's `input_end_time`)
  interrupt.json    FDB user interruption:
                    [{"context", "interrupt", "timestamp": [start, end]}];
                    the interruption ends at timestamp[1]
  (none)            FDB backchannel (icc_backchannel/ID has only input.wav): recognised in
                    --task=auto by a path component containing "backchannel"
or our own `fdb_meta.json` (used where the FDB file is absent; its "task" decides auto):
  {"task": "pause" | "backchannel" | "turn_taking" | "interruption",
   "turn_end_s": 2.01,              turn_taking: the user's turn end (required)
   "interruption": [10.53, 13.14],  interruption: [start, end] in s (required; end is used)
   "pauses": [[3.32, 4.0], ...],    pause: informational (FDB's score does not use it)
   "context": "...", "interrupt": "...",   interruption: kept for a relevance judge
   "gt_distribution": [p0, p1, ...]}       backchannel: the human backchannel distribution
                                           over the sample's duration (JSD needs it)
All times are seconds on the input's axis.
FDB's backchannel ground truth (evaluation/icc_gt_distribution.json, {folder name: [p, ...]})
is read by `load_gt_distributions`. A sample that cannot be scored raises `SampleError`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Optional, Sequence

TASKS = ("pause", "backchannel", "turn_taking", "interruption")
TASK_ALIASES = {"pause_handling": "pause", "smooth_turn_taking": "turn_taking",
                "user_interruption": "interruption", "backchanneling": "backchannel"}
INPUT_WAV = "input.wav"
OUTPUT_WAV = "output.wav"
OUTPUT_JSON = "output.json"
OWN_META = "fdb_meta.json"
FDB_META = {"pause": "pause.json", "turn_taking": "turn_taking.json",
            "interruption": "interrupt.json"}
SEGMENT_SOURCES = ("vad", "intervals")
WORD_SOURCES = ("auto", "chunks", "recognizer", "text", "none")


class SampleError(ValueError):
    """One sample cannot be scored; the message names the file. The rest go on."""


# ---- settings ------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class VadSettings:
    threshold_dbfs: float = -40.0  # frame RMS re full scale (1.0) above this is speech
    frame_s: float = 0.02
    min_speech_s: float = 0.25  # Silero's min_speech_duration_ms default
    min_gap_s: float = 0.1  # Silero's min_silence_duration_ms default: shorter gaps bridged
    pad_s: float = 0.0  # Silero pads 30 ms; off so that onsets stay where speech starts


@dataclasses.dataclass(frozen=True)
class TurnRule:
    """FDB's takeover rule: a span of at least `min_turn_s` or more than `max_words` words."""
    min_turn_s: float = 1.0
    max_words: int = 3


@dataclasses.dataclass(frozen=True)
class BackchannelRule:
    max_s: float = 1.0  # a backchannel is shorter than this ...
    max_words: int = 2  # ... and has at most this many words
    long_s: float = 3.0  # fdb_code only: a longer segment ends the scan as a turn
    window_s: float = 0.2  # JSD histogram bins
    fdb_code: bool = False  # reproduce eval_backchannel.py's last-segment TOR (fdb_metrics)


@dataclasses.dataclass(frozen=True)
class ScoreSettings:
    vad: VadSettings = VadSettings()
    turn: TurnRule = TurnRule()
    backchannel: BackchannelRule = BackchannelRule()
    segments: str = "vad"  # SEGMENT_SOURCES
    words: str = "auto"  # WORD_SOURCES
    text_slack_s: float = 0.2  # a text event this close to a segment counts in it
    bootstrap: int = 2000  # resamples for the bootstrap intervals
    seed: int = 0

    def __post_init__(self):
        if self.segments not in SEGMENT_SOURCES:
            raise ValueError(f"segments={self.segments!r}: expected one of {SEGMENT_SOURCES}")
        if self.words not in WORD_SOURCES:
            raise ValueError(f"words={self.words!r}: expected one of {WORD_SOURCES}")

    def describe(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def canonical_task(task: str) -> str:
    """A task name of TASKS (FDB's evaluate.py names are accepted too)."""
    name = TASK_ALIASES.get(task, task)
    if name not in TASKS:
        raise ValueError(f"unknown task {task!r}: expected one of {TASKS} (or "
                         f"{sorted(TASK_ALIASES)})")
    return name


# ---- annotations ---------------------------------------------------------------------------

def read_json(path: Path) -> Any:
    if not path.is_file():
        raise SampleError(f"{path}: missing")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SampleError(f"{path}: unreadable JSON ({e})") from None


def _first(paths: Sequence[Path], name: str) -> Optional[Path]:
    for folder in paths:
        if folder is not None and (folder / name).is_file():
            return folder / name
    return None


def _fdb_entry(path: Path) -> dict:
    data = read_json(path)
    entry = data[0] if isinstance(data, list) and data else data
    if not isinstance(entry, dict):
        raise SampleError(f"{path}: expected a list of objects with 'timestamp'")
    return entry


def _interval(value, path: Path, what: str) -> tuple[float, float]:
    try:
        start, end = float(value[0]), float(value[1])
    except (TypeError, ValueError, IndexError, KeyError):
        raise SampleError(f"{path}: {what} must be [start_s, end_s], got {value!r}") from None
    return start, end


def load_metadata(folders: Sequence[Optional[Path]], rel: str,
                  task: Optional[str] = None) -> tuple[str, dict[str, Any]]:
    """(task, metadata) of one sample from FDB's annotation files or fdb_meta.json in
    `folders` (first found wins). `task` None: detect it (fdb_meta.json's "task", else the
    one FDB annotation present, else "backchannel" in the path). SampleError if it cannot."""
    own_path = _first(folders, OWN_META)
    own = read_json(own_path) if own_path is not None else {}
    if not isinstance(own, dict):
        raise SampleError(f"{own_path}: expected a JSON object")
    if task is None:
        if "task" in own:
            try:
                task = canonical_task(str(own["task"]))
            except ValueError as e:
                raise SampleError(f"{own_path}: {e}") from None
        else:
            present = [t for t, name in FDB_META.items() if _first(folders, name)]
            if len(present) > 1:
                raise SampleError(f"{rel}: ambiguous task, both "
                                  + " and ".join(FDB_META[t] for t in present))
            if present:
                task = present[0]
            elif any("backchannel" in part.lower() for part in Path(rel).parts):
                task = "backchannel"
            else:
                raise SampleError(f"{rel}: no task (no {', '.join(FDB_META.values())} or "
                                  f"{OWN_META}, no 'backchannel' in the path; --task sets it)")
    meta: dict[str, Any] = {}
    fdb_path = _first(folders, FDB_META[task]) if task in FDB_META else None
    where = fdb_path or own_path or Path(rel)
    if task == "pause":
        if fdb_path is not None:
            data = read_json(fdb_path)
            items = data if isinstance(data, list) else [data]
            meta["pauses"] = [list(_interval(i.get("timestamp") if isinstance(i, dict) else
                                             None, fdb_path, "timestamp")) for i in items]
        elif "pauses" in own:
            meta["pauses"] = [list(_interval(p, own_path, "pauses[i]")) for p in own["pauses"]]
    elif task == "turn_taking":
        if fdb_path is not None:
            entry = _fdb_entry(fdb_path)
            stamp = entry.get("timestamp")
            if not isinstance(stamp, list) or not stamp:
                raise SampleError(f"{fdb_path}: no timestamp [user_end, ...]")
            try:
                meta["turn_end_s"] = float(stamp[0])
            except (TypeError, ValueError):
                raise SampleError(f"{fdb_path}: timestamp[0] is not a number") from None
        elif "turn_end_s" in own:
            try:
                meta["turn_end_s"] = float(own["turn_end_s"])
            except (TypeError, ValueError):
                raise SampleError(f"{own_path}: turn_end_s is not a number") from None
        else:
            raise SampleError(f"{rel}: no user turn end ({FDB_META[task]}, or {OWN_META} "
                              "with turn_end_s)")
    elif task == "interruption":
        if fdb_path is not None:
            entry = _fdb_entry(fdb_path)
            meta["interruption"] = _interval(entry.get("timestamp"), fdb_path, "timestamp")
            meta.update({k: entry[k] for k in ("context", "interrupt") if k in entry})
        elif "interruption" in own:
            meta["interruption"] = _interval(own["interruption"], own_path, "interruption")
            meta.update({k: own[k] for k in ("context", "interrupt") if k in own})
        else:
            raise SampleError(f"{rel}: no interruption time ({FDB_META[task]}, or {OWN_META} "
                              "with interruption [start_s, end_s])")
    elif task == "backchannel" and "gt_distribution" in own:
        meta["gt_distribution"] = own["gt_distribution"]
    meta["source"] = str(where)
    return task, meta


# ---- folders -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Sample:
    rel: str
    input_folder: Optional[Path]
    output_folder: Path


def find_samples(input_dir: Path, output_dir: Path) -> list[Sample]:
    """Every folder with input.wav under input_dir, and every folder with output.wav or
    output.json under output_dir, by relative path (sorted)."""
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    rels = {p.parent.relative_to(input_dir).as_posix()
            for p in input_dir.rglob(INPUT_WAV) if p.is_file()}
    for name in (OUTPUT_WAV, OUTPUT_JSON):
        rels |= {p.parent.relative_to(output_dir).as_posix()
                 for p in output_dir.rglob(name) if p.is_file()}
    samples = []
    for rel in sorted(rels):
        input_folder = input_dir / rel
        samples.append(Sample(rel, input_folder if input_folder.is_dir() else None,
                              output_dir / rel))
    return samples


def load_gt_distributions(path: Path) -> dict[str, list[float]]:
    """FDB's icc_gt_distribution.json: {sample folder name: [p, ...]}."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ValueError(f"{path}: expected {{sample name: [probabilities]}}")
    return {str(k): [float(x) for x in v] for k, v in data.items()}

