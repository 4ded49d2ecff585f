"""Full-Duplex-Bench v1 scores of a folder answered by `omni_jax.serving.fdb` (or by any
system in FDB's layout): the command line of `omni_jax.evaluation.fdb_metrics`.

  python -m omni_jax.serving.fdb_score --task=pause|backchannel|turn_taking|interruption|auto
      INPUT_DIR OUTPUT_DIR [--out=metrics.json] [--per_sample]
      [--segments=vad|intervals] [--words=auto|chunks|recognizer|text|none]
      [--recognizer=NAME] [--backchannel_gt=icc_gt_distribution.json]
      [--backchannel_fdb_code] [--vad_threshold_dbfs=-40] [--vad_frame_s=0.02]
      [--vad_min_speech_s=0.25] [--vad_min_gap_s=0.1] [--vad_pad_s=0]
      [--turn_min_s=1] [--turn_max_words=3] [--bootstrap=2000] [--seed=0]

INPUT_DIR holds the benchmark's sample folders (input.wav and the task's annotation:
pause.json, turn_taking.json, interrupt.json, or our fdb_meta.json; see fdb_metrics), and
OUTPUT_DIR the answers at the same relative folders (output.wav, output.json); they may be
the same folder. --task=auto takes each sample's task from its annotation (FDB's backchannel
folders have none: a path containing "backchannel"); a named task (FDB's names
pause_handling, smooth_turn_taking, user_interruption work too) scores every sample as that
task. --recognizer=NAME uses `omni_jax.evaluation.recognizer.make_recognizer(NAME)` for the
word counts, when that module is there.

Prints one JSON (also written to --out): the settings; counts {found, scored, skipped};
per task the takeover rate with its Wilson 95% interval, the latencies (turn-taking,
interruption), backchannel frequency and JSD, each with mean, std, median and bootstrap
95% intervals, per subset folder when there are several; `skipped`: [{sample, reason}]
(a missing or unreadable file is named there and the other samples are still scored);
with --per_sample every sample's record. Not computed: FDB's LLM-judged relevance of the
reply after an interruption.

Exit status: 0 when at least one sample was scored; 1 when none was, or for a missing
folder or a bad option.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from absl import app, flags

from omni_jax.evaluation import fdb_metrics

from omni_jax.evaluation.recognizer import make_recognizer

TASK_CHOICES = ("auto",) + fdb_metrics.TASKS + tuple(fdb_metrics.TASK_ALIASES)


def build_settings(*, segments: str = "vad", words: str = "auto",
                   vad_threshold_dbfs: float = -40.0, vad_frame_s: float = 0.02,
                   vad_min_speech_s: float = 0.25, vad_min_gap_s: float = 0.1,
                   vad_pad_s: float = 0.0, turn_min_s: float = 1.0, turn_max_words: int = 3,
                   backchannel_fdb_code: bool = False, bootstrap: int = 2000,
                   seed: int = 0) -> fdb_metrics.ScoreSettings:
    return fdb_metrics.ScoreSettings(
        vad=fdb_metrics.VadSettings(threshold_dbfs=vad_threshold_dbfs, frame_s=vad_frame_s,
                                    min_speech_s=vad_min_speech_s, min_gap_s=vad_min_gap_s,
                                    pad_s=vad_pad_s),
        turn=fdb_metrics.TurnRule(min_turn_s=turn_min_s, max_words=turn_max_words),
        backchannel=fdb_metrics.BackchannelRule(fdb_code=backchannel_fdb_code),
        segments=segments, words=words, bootstrap=bootstrap, seed=seed)


def recognizer_for(name: str | None):
    """The transcribe callable for --recognizer (None without one)."""
    if not name:
        return None
    return make_recognizer(name).transcribe


def run(input_dir, output_dir, *, task: str = "auto", out: str | None = None,
        per_sample: bool = False, recognizer: str | None = None,
        backchannel_gt: str | None = None, transcribe=None, **setting_kw) -> int:
    """Scores the folder, prints the report (and writes it to `out`); the exit status.
    `transcribe` (a callable) overrides `recognizer` (a name)."""
    try:
        if task not in TASK_CHOICES:
            raise ValueError(f"--task={task}: expected one of {TASK_CHOICES}")
        settings = build_settings(**setting_kw)
        if transcribe is None:
            transcribe = recognizer_for(recognizer)
        gt = None
        if backchannel_gt:
            try:
                gt = fdb_metrics.load_gt_distributions(Path(backchannel_gt))
            except (OSError, json.JSONDecodeError) as e:
                raise ValueError(f"--backchannel_gt={backchannel_gt}: {e}") from None
        report = fdb_metrics.score_folder(Path(input_dir), Path(output_dir), task, settings,
                                          transcribe, gt, per_sample=per_sample)
    except ValueError as e:
        print(f"fdb_score: {e}", file=sys.stderr)
        return 1
    text = json.dumps(report, indent=1)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
    print(text)
    for item in report["skipped"]:
        print(f"fdb_score: skipped {item['sample']}: {item['reason']}", file=sys.stderr)
    return 0 if report["counts"]["scored"] else 1


def _main(argv) -> int:
    if len(argv) != 3:
        raise app.UsageError(f"expected INPUT_DIR OUTPUT_DIR, got {argv[1:]}")
    f = flags.FLAGS
    return run(argv[1], argv[2], task=f.task, out=f.out, per_sample=f.per_sample,
               recognizer=f.recognizer, backchannel_gt=f.backchannel_gt,
               segments=f.segments, words=f.words, vad_threshold_dbfs=f.vad_threshold_dbfs,
               vad_frame_s=f.vad_frame_s, vad_min_speech_s=f.vad_min_speech_s,
               vad_min_gap_s=f.vad_min_gap_s, vad_pad_s=f.vad_pad_s,
               turn_min_s=f.turn_min_s, turn_max_words=f.turn_max_words,
               backchannel_fdb_code=f.backchannel_fdb_code, bootstrap=f.bootstrap,
               seed=f.seed)


def _define_flags() -> None:
    """Defined only when run as a program (importing must not clash with other flags)."""
    flags.DEFINE_enum("task", "auto", list(TASK_CHOICES), "The FDB v1 task of every sample, "
                      "or auto: each sample's own annotation.")
    flags.DEFINE_string("out", None, "Also write the JSON report here.")
    flags.DEFINE_bool("per_sample", False, "Add every sample's record to the report.")
    flags.DEFINE_enum("segments", "vad", list(fdb_metrics.SEGMENT_SOURCES),
                      "Speaking segments: energy VAD on output.wav, or output.json's "
                      "speaking_intervals.")
    flags.DEFINE_enum("words", "auto", list(fdb_metrics.WORD_SOURCES), "Word counts: FDB's "
                      "ASR chunks, the recogniser, output.json's text events, none; auto "
                      "picks in that order.")
    flags.DEFINE_string("recognizer", None, "make_recognizer(NAME) of "
                        "omni_jax.evaluation.recognizer (e.g. pocketsphinx).")
    flags.DEFINE_string("backchannel_gt", None, "FDB's icc_gt_distribution.json (JSD).")
    flags.DEFINE_bool("backchannel_fdb_code", False, "Backchannel TOR as eval_backchannel.py "
                      "computes it (last segment's verdict).")
    flags.DEFINE_float("vad_threshold_dbfs", -40.0, "Frame RMS threshold re full scale.")
    flags.DEFINE_float("vad_frame_s", 0.02, "VAD frame length.")
    flags.DEFINE_float("vad_min_speech_s", 0.25, "Shorter speech segments are dropped.")
    flags.DEFINE_float("vad_min_gap_s", 0.1, "Shorter silences are bridged.")
    flags.DEFINE_float("vad_pad_s", 0.0, "Padding added to each segment (Silero: 0.03).")
    flags.DEFINE_float("turn_min_s", 1.0, "Takeover: speech spanning at least this ...")
    flags.DEFINE_integer("turn_max_words", 3, "... or more words than this.")
    flags.DEFINE_integer("bootstrap", 2000, "Bootstrap resamples.")
    flags.DEFINE_integer("seed", 0, "Bootstrap seed.")


if __name__ == "__main__":
    _define_flags()
    app.run(_main)
