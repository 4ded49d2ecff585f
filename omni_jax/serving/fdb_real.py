"""Full-Duplex-Bench v1 samples made of real recordings: a folder in FDB's layout
(`omni_jax.evaluation.fdb_samples`) for the runner and the scorer, from any folder of read
speech with a `manifest.jsonl` (`path` per line, e.g. ../shared/data/real/speech_clips).

  python -m omni_jax.serving.fdb_real --clips=CLIPS_DIR --out=FDB_DIR [--seed=0]
  python -m omni_jax.serving.fdb --workdir=RUN FDB_DIR ANSWERS_DIR
  python -m omni_jax.serving.fdb_score --task=auto FDB_DIR ANSWERS_DIR --out=metrics.json

and blind answers to score beside the model's (`--baseline` writes ANSWERS_DIR for FDB_DIR):

  python -m omni_jax.serving.fdb_real --baseline=silent|clock --inputs=FDB_DIR --out=ANSWERS_DIR

  silent  never speaks (output.wav all zeros).
  clock   ignores the input: speaks from `CLOCK_START_S` for `CLOCK_SPEAK_S` in every file
          (a harmonic tone at speech level); 3.5 s is the median turn end of the
          turn-taking samples built from ../shared/data/real/speech_clips.

Per clip (16 kHz mono, the clip's speech span found by energy, clips over `MAX_CLIP_S`
left out), one sample of each task, with our `fdb_meta.json` as its annotation:
  turn_taking   0.5 s silence, the clip, 4 s silence; the user's turn ends at the clip's
                last speech.
  pause         the clip cut at its quietest 10 ms frame in the middle half (a word gap),
                `PAUSE_S` of silence inserted there (FDB: 0.5-1.5 s pauses), 4 s after.
  interruption  the clip, 3 s of silence (the model may reply), another clip (the
                interruption), 3 s of silence; scored after the interruption's end.
  backchannel   three clips with 0.3 s gaps (a monologue), 1 s after; no human backchannel
                distribution exists for these, so its JSD is not computed.
Which clips go together is drawn with `seed`; the same seed gives the same folder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from absl import app, flags

from data_pipelines import audio_io

SAMPLE_RATE = 16000
MAX_CLIP_S = 12.0
PAUSE_S = 1.0
LEAD_S, TAIL_S, REPLY_GAP_S, MONOLOGUE_GAP_S = 0.5, 4.0, 3.0, 0.3
_FRAME = 160  # 10 ms
_SPEECH_DB = -35.0  # frame level (dB below the clip's peak frame) that counts as speech
CLOCK_START_S, CLOCK_SPEAK_S = 3.5, 2.0
BASELINES = ("silent", "clock")


class FdbRealError(ValueError):
    """A clips folder that cannot make samples; the message names it."""


def _frame_db(audio_T: np.ndarray) -> np.ndarray:
    if len(audio_T) < _FRAME:
        raise FdbRealError(f"{len(audio_T)} samples: shorter than one 10 ms frame")
    frames = audio_T[:len(audio_T) // _FRAME * _FRAME].reshape(-1, _FRAME)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1)) + 1e-10
    return 20 * np.log10(rms / rms.max())


def speech_span(audio_T: np.ndarray) -> tuple[int, int]:
    """(first, last + 1) sample of the frames within `_SPEECH_DB` of the loudest."""
    if np.abs(audio_T).max(initial=0.0) < 1e-3:  # below -60 dBFS: nothing to hear
        raise FdbRealError("no speech found (silent)")
    loud = np.flatnonzero(_frame_db(audio_T) > _SPEECH_DB)
    return int(loud[0] * _FRAME), int((loud[-1] + 1) * _FRAME)


def _quietest_middle(audio_T: np.ndarray) -> int:
    """The sample at the start of the quietest 10 ms frame in the middle half."""
    db = _frame_db(audio_T)
    lo, hi = len(db) // 4, max(len(db) // 4 + 1, 3 * len(db) // 4)
    return int((lo + int(np.argmin(db[lo:hi]))) * _FRAME)


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(round(seconds * SAMPLE_RATE)), np.float32)


def load_clips(clips_dir: str | Path) -> list[tuple[str, np.ndarray]]:
    """(name, speech span at 16 kHz, peak-normalised to 0.5) of every usable clip."""
    clips_dir = Path(clips_dir)
    manifest = clips_dir / "manifest.jsonl"
    if not manifest.is_file():
        raise FdbRealError(f"{manifest}: missing (a clips folder has a manifest.jsonl)")
    clips = []
    for line_number, line in enumerate(manifest.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            relative = json.loads(line)["path"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise FdbRealError(f"{manifest}:{line_number}: not a JSON object with 'path' "
                               f"({e})") from None
        audio_T = audio_io.load_audio(clips_dir / relative, SAMPLE_RATE)
        try:
            first, last = speech_span(audio_T)
        except FdbRealError as e:
            raise FdbRealError(f"{clips_dir / relative}: {e}") from None
        speech_T = audio_T[first:last]
        if len(speech_T) / SAMPLE_RATE > MAX_CLIP_S:
            continue
        name = Path(relative).with_suffix("").as_posix().replace("/", "_")
        clips.append((name, (0.5 * speech_T / np.abs(speech_T).max()).astype(np.float32)))
    if len(clips) < 3:
        raise FdbRealError(f"{clips_dir}: {len(clips)} usable clips, at least 3 are needed")
    return clips


def build(clips_dir: str | Path, out_dir: str | Path, seed: int = 0) -> dict[str, int]:
    """Writes the samples; returns the count per task."""
    clips = load_clips(clips_dir)
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    counts = {}

    def write(task: str, name: str, audio_T: np.ndarray, meta: dict) -> None:
        folder = out_dir / task / name
        folder.mkdir(parents=True, exist_ok=True)
        audio_io.write_wav(folder / "input.wav", audio_T, SAMPLE_RATE)
        (folder / "fdb_meta.json").write_text(json.dumps(dict(task=task, **meta), indent=1))
        counts[task] = counts.get(task, 0) + 1

    seconds = lambda samples: round(samples / SAMPLE_RATE, 4)  # noqa: E731
    for i, (name, speech_T) in enumerate(clips):
        others = [j for j in range(len(clips)) if j != i]
        lead = _silence(LEAD_S)
        write("turn_taking", name, np.concatenate([lead, speech_T, _silence(TAIL_S)]),
              dict(turn_end_s=seconds(len(lead) + len(speech_T))))

        cut = _quietest_middle(speech_T)
        pause = _silence(PAUSE_S)
        start = len(lead) + cut
        write("pause", name, np.concatenate([lead, speech_T[:cut], pause, speech_T[cut:],
                                             _silence(TAIL_S)]),
              dict(pauses=[[seconds(start), seconds(start + len(pause))]],
                   turn_end_s=seconds(len(lead) + len(speech_T) + len(pause))))

        interrupt_T = clips[int(rng.choice(others))][1]
        before = len(lead) + len(speech_T) + int(REPLY_GAP_S * SAMPLE_RATE)
        write("interruption", name,
              np.concatenate([lead, speech_T, _silence(REPLY_GAP_S), interrupt_T,
                              _silence(REPLY_GAP_S)]),
              dict(interruption=[seconds(before), seconds(before + len(interrupt_T))]))

        second, third = (clips[int(j)][1] for j in rng.choice(others, 2, replace=False))
        gap = _silence(MONOLOGUE_GAP_S)
        write("backchannel", name,
              np.concatenate([lead, speech_T, gap, second, gap, third, _silence(1.0)]), {})
    return counts


def write_baseline(policy: str, inputs_dir: str | Path, out_dir: str | Path) -> int:
    """A blind policy's answers (output.wav, output.json) to every input.wav under
    `inputs_dir`, at the same relative folders; returns how many."""
    if policy not in BASELINES:
        raise FdbRealError(f"--baseline={policy}: expected one of {BASELINES}")
    inputs_dir, out_dir = Path(inputs_dir), Path(out_dir)
    count = 0
    for wav in sorted(inputs_dir.rglob("input.wav")):
        info = audio_io.audio_info(wav)
        rate, num = info.sample_rate, info.num_samples
        out_T = np.zeros(num, np.float32)
        intervals = []
        if policy == "clock":
            t_S = np.arange(num) / rate
            speaking_S = (t_S >= CLOCK_START_S) & (t_S < CLOCK_START_S + CLOCK_SPEAK_S)
            tone_S = sum(np.sin(2 * np.pi * 150 * h * t_S) / h for h in range(1, 8))
            out_T = np.where(speaking_S, 0.1 * tone_S, 0.0).astype(np.float32)
            end_s = min(CLOCK_START_S + CLOCK_SPEAK_S, num / rate)
            if CLOCK_START_S < end_s:
                intervals.append([CLOCK_START_S, end_s])
        folder = out_dir / wav.parent.relative_to(inputs_dir)
        folder.mkdir(parents=True, exist_ok=True)
        audio_io.write_wav(folder / "output.wav", out_T, rate)
        (folder / "output.json").write_text(json.dumps(dict(
            policy=policy, speaking_intervals=intervals, events=[], text="")))
        count += 1
    return count


def define_flags():
    flags.DEFINE_string("clips", None, "A folder of read speech with a manifest.jsonl.")
    flags.DEFINE_string("out", None, "The folder to write.", required=True)
    flags.DEFINE_integer("seed", 0, "Which clips are combined.")
    flags.DEFINE_enum("baseline", None, list(BASELINES),
                      "Write a blind policy's answers to --inputs instead.")
    flags.DEFINE_string("inputs", None, "--baseline: the FDB-layout folder to answer.")


def main(argv) -> None:
    del argv
    f = flags.FLAGS
    try:
        if f.baseline:
            if not f.inputs:
                raise FdbRealError("--baseline needs --inputs=FDB_DIR")
            print(json.dumps(dict(out=f.out, baseline=f.baseline,
                                  answered=write_baseline(f.baseline, f.inputs, f.out))))
            return
        if not f.clips:
            raise FdbRealError("--clips=CLIPS_DIR is required (or --baseline with --inputs)")
        counts = build(f.clips, f.out, f.seed)
    except (FdbRealError, audio_io.AudioError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(dict(out=f.out, samples=counts)))


if __name__ == "__main__":
    define_flags()
    app.run(main)
