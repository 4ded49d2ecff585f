"""Full-Duplex-Bench-compatible runner: a trained run answers every `input.wav` of a folder.

  python -m omni_jax.serving.fdb --workdir=RUN INPUT_DIR OUTPUT_DIR
      [--prompt="answer the user"] [--overwrite] [--strict] [--max_seconds=600]
      [--temperature=0] [--seed=0] [--bucket_seconds=10]

For every file named `input.wav` under INPUT_DIR (recursive, sorted; any sample rate,
stereo downmixed, resampled to the model's rate) the model listens free-running through
`DuplexEngine` (one stream, greedy by default), and under OUTPUT_DIR, at the same relative
folder, the runner writes:

  output.wav   time-synchronous: EXACTLY as many frames as the input, at the input's rate,
               mono 16-bit. What the model heard itself say: the played speech of the
               engine's speech path (`omni_jax.audio.feedback`, streaming Griffin-Lim, 35 ms
               behind its mel), resampled; exact zeros in every block it plays nothing.
  output.json  {format, input, input_sample_rate, input_channels, input_frames,
                duration_s, config_name, checkpoint_step, workdir, thinking, fusion,
                model_sample_rate, block_ms, num_blocks, training_blocks, positions,
                llm_max_len, prompt, prompt_tokens, temperature, seed,
                events: [{kind: start|stop|text, block, time_s, (token, piece)}]
                (piece None for an id beyond the tokenizer's pieces),
                speaking_intervals: [[start_s, end_s], ...], text}
               Times are seconds on the input's axis; an event at block k has time
               k * block_ms (`duplex.engine`). A reply still running at the end of the file
               closes its interval at `duration_s`.

and OUTPUT_DIR/errors.json: [{input, error}] of this run (rewritten each run, `[]` when
every file went through). A bad file (empty, corrupt, too long, ...) is logged, listed
there, and the next file is processed. An existing output.wav or output.json is never
replaced without --overwrite (the file is skipped with a message). Outputs are written to
temporary names and renamed, so an interrupted run leaves no half-written output.wav that a
rerun would skip. Nothing is written outside OUTPUT_DIR.

Exit status: 0 when at least one file was processed or skipped and none failed, or some
failed without --strict; 1 when every attempted file failed, when no input.wav was found,
or (with --strict) when any file failed. A workdir that cannot be loaded fails at once.

Long inputs. The engine sizes the LLM and synthesizer caches for the whole file, at most
the model's window (`model.llm.window`, `DuplexModel.init_carry`); a longer file slides
through them (the prompt pinned, the last window of blocks kept: `omni_jax.models.kv_cache`),
so memory per stream is bounded by the window, not the duration. Files up to
`--max_seconds` (default 600 s = 7500 blocks of 80 ms) are processed; a longer one is a
per-file error naming the limit, raised from the header before any audio is decoded.
Beyond the trained length (`data.num_blocks`) the model runs on a window it was not trained
past: output.json records `training_blocks`, `positions` and `llm_max_len` and the log
warns. Each file is padded with silence to a multiple of
`--bucket_seconds` blocks so that files of similar length share one compiled cache shape;
the padding comes after the input (the model is causal), so it changes no output, and it is
cut off before anything is written.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np
from absl import app, flags

from data_pipelines import audio_io, render, world
from omni_jax.duplex.engine import DuplexEngine
from omni_jax.evaluation.readings import fit_length
from omni_jax.models.omni import positions_per_block
from omni_jax.serving.runs import RunLoadError, load_run

log = logging.getLogger(__name__)

INPUT_NAME = "input.wav"
OUTPUT_WAV = "output.wav"
OUTPUT_JSON = "output.json"
ERRORS_JSON = "errors.json"
FORMAT = "omni_jax.fdb/1"
DEFAULT_MAX_SECONDS = 600.0
DEFAULT_BUCKET_SECONDS = 10.0


class FdbError(RuntimeError):
    """A problem with the whole run (no inputs, unusable model); per-file problems are
    recorded in errors.json instead."""


@dataclasses.dataclass
class Summary:
    processed: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    errors: list[dict[str, str]] = dataclasses.field(default_factory=list)

    def exit_code(self, strict: bool = False) -> int:
        attempted = len(self.processed) + len(self.errors)
        if not (attempted or self.skipped):
            return 1  # nothing found: most likely a wrong INPUT_DIR
        if self.errors and (strict or not self.processed and not self.skipped):
            return 1
        return 0


def find_inputs(input_dir: str | os.PathLike) -> list[Path]:
    """Every `input.wav` under `input_dir`, sorted (relative order = processing order)."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise FdbError(f"{input_dir}: no such input folder")
    return sorted(p for p in input_dir.rglob(INPUT_NAME) if p.is_file())


class FdbRunner:
    """One loaded run and its engine; `process` answers one input file."""

    def __init__(self, run, *, prompt: str | None = None, temperature: float = 0.0,
                 seed: int = 0, max_seconds: float = DEFAULT_MAX_SECONDS,
                 bucket_seconds: float = DEFAULT_BUCKET_SECONDS):
        self.run = run
        config = run.config
        if int(config.data.tokens_per_block) != 1:
            raise FdbError(f"{run.workdir}: free-running needs data.tokens_per_block == 1, "
                           f"the run has {config.data.tokens_per_block}")
        self.prompt = world.PROMPT_DIALOGUE if prompt is None else prompt
        try:
            self.prompt_tokens, self.prompt_mask = render.encode_prompt(
                run.tokenizer, self.prompt, int(config.data.prompt_len), where="--prompt")
        except render.PromptError as e:
            raise FdbError(f"{e} (data.prompt_len of {run.workdir})") from None
        self.temperature, self.seed = float(temperature), int(seed)
        self.max_seconds = float(max_seconds)
        self.engine = DuplexEngine(run.model, run.params, config, temperature=temperature,
                                   seed=seed, vocab_size=run.tokenizer.vocab_size)
        self.sample_rate = int(config.audio.sample_rate)
        self.block_ms = int(config.audio.block_ms)
        self.samples_per_block = self.engine.samples_per_block
        self.bucket_blocks = max(1, round(bucket_seconds * 1000 / self.block_ms))

    # ---- one file -------------------------------------------------------------------------

    def read_input(self, path: Path) -> tuple[np.ndarray, audio_io.AudioInfo]:
        """(mono audio at the model rate, the file's native info); AudioError if unusable.
        The length limit is checked on the header, before decoding ten hours of audio."""
        if path.is_file() and path.stat().st_size == 0:
            raise audio_io.AudioError(f"{path}: empty file (0 bytes)")
        info = audio_io.audio_info(path)
        if info.num_samples == 0:
            raise audio_io.AudioError(f"{path}: no samples")
        if info.duration_s > self.max_seconds:
            raise audio_io.AudioError(
                f"{path}: {info.duration_s:.1f} s is longer than the limit of "
                f"{self.max_seconds:g} s (--max_seconds; the engine's caches grow with the "
                "file's length)")
        return audio_io.load_audio(path, self.sample_rate), info

    def respond(self, audio_T: np.ndarray):
        """The engine's result for one stream, cut to the input's blocks."""
        s = self.samples_per_block
        num_blocks = -(-audio_T.size // s)
        padded_blocks = -(-num_blocks // self.bucket_blocks) * self.bucket_blocks
        env_1xT = np.zeros((1, padded_blocks * s), np.float32)
        env_1xT[0, :audio_T.size] = audio_T
        result = self.engine.run(env_1xT, self.prompt_tokens[None])
        return _cut_blocks(result, num_blocks)

    def speech(self, result, num_samples: int, rate: int) -> np.ndarray:
        """The model's played speech at `rate`, exactly `num_samples` long, zero in every
        block where it plays nothing."""
        played_T = result.speech_audio()[0]
        s = self.samples_per_block
        audible_K = np.abs(played_T.reshape(-1, s)).max(axis=1) > 0
        if not audible_K.any():
            return np.zeros(num_samples, np.float32)
        audio_T = fit_length(audio_io.resample(played_T, self.sample_rate, rate), num_samples)
        # Resampling rings a few samples into the silent blocks: mask them at `rate`.
        block_of_sample = (np.arange(num_samples) * 1000 // (rate * self.block_ms))
        mask = audible_K[np.minimum(block_of_sample, audible_K.size - 1)]
        return np.clip(np.where(mask, audio_T, 0.0), -1.0, 1.0).astype(np.float32)

    def describe(self, result, info: audio_io.AudioInfo, rel: str) -> dict[str, Any]:
        """output.json's content."""
        config, run = self.run.config, self.run
        num_blocks = int(result.speaking.shape[1])
        events, text_ids = _with_pieces(result.events()[0], run.tokenizer)
        intervals, start = [], None
        for event in events:
            if event["kind"] == "start":
                start = event["time_s"]
            elif event["kind"] == "stop" and start is not None:
                intervals.append([start, event["time_s"]])
                start = None
        if start is not None:
            intervals.append([start, info.duration_s])
        return dict(
            format=FORMAT, input=rel, input_sample_rate=info.sample_rate,
            input_channels=info.channels, input_frames=info.num_samples,
            duration_s=info.duration_s, config_name=run.config_name,
            checkpoint_step=run.step, workdir=str(run.workdir),
            thinking=str(config.model.thinking), fusion=str(config.model.fusion),
            model_sample_rate=self.sample_rate, block_ms=self.block_ms, num_blocks=num_blocks,
            training_blocks=int(config.data.num_blocks),
            positions=int(config.data.prompt_len) + num_blocks * positions_per_block(config),
            llm_max_len=int(config.model.llm.max_len), prompt=self.prompt,
            prompt_tokens=[int(t) for t in self.prompt_tokens[self.prompt_mask]],
            temperature=self.temperature, seed=self.seed, events=events,
            speaking_intervals=intervals, text=run.tokenizer.decode(text_ids))

    def process(self, path: Path, out_folder: Path, rel: str) -> dict[str, Any]:
        """Answers `path` into out_folder/output.{wav,json}; returns output.json's content."""
        audio_T, info = self.read_input(path)
        result = self.respond(audio_T)
        record = self.describe(result, info, rel)
        if record["positions"] > record["llm_max_len"]:
            log.warning("%s: %d LLM positions exceed model.llm.max_len=%d (trained on %d "
                        "blocks): RoPE extrapolation, untested quality", rel,
                        record["positions"], record["llm_max_len"], record["training_blocks"])
        speech_T = self.speech(result, info.num_samples, info.sample_rate)
        _write_outputs(out_folder, speech_T, info.sample_rate, record)
        return record


def _with_pieces(events: list[dict], tokenizer) -> tuple[list[dict], list[int]]:
    """Adds each text event's `piece`; returns (events, the decodable text ids). The LLM's
    vocabulary (`data.tokenizer.vocab_size`) may be larger than the trained tokenizer's:
    an id beyond it has piece None and is left out of `text`."""
    text_ids = []
    for event in events:
        if event["kind"] == "text":
            known = event["token"] < tokenizer.vocab_size
            event["piece"] = tokenizer.piece_of(event["token"]) if known else None
            if known:
                text_ids.append(event["token"])
    return events, text_ids


def _cut_blocks(result, num_blocks: int):
    """`result` with every per-block array cut to the first `num_blocks` blocks."""
    cut = {}
    for field in dataclasses.fields(result):
        value = getattr(result, field.name)
        if isinstance(value, np.ndarray) and value.ndim >= 2:
            cut[field.name] = value[:, :num_blocks]
    return dataclasses.replace(result, **cut)


def _write_outputs(folder: Path, speech_T: np.ndarray, rate: int, record: dict) -> None:
    """Writes both files under temporary names, then renames them into place."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp_wav, tmp_json = folder / ".output.partial.wav", folder / ".output.partial.json"
    try:
        audio_io.write_wav(tmp_wav, speech_T, rate)
        tmp_json.write_text(json.dumps(record, indent=1))
        os.replace(tmp_json, folder / OUTPUT_JSON)
        os.replace(tmp_wav, folder / OUTPUT_WAV)
    finally:
        for tmp in (tmp_wav, tmp_json):
            tmp.unlink(missing_ok=True)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def run_folder(runner: FdbRunner, input_dir: str | os.PathLike,
               output_dir: str | os.PathLike, *, overwrite: bool = False) -> Summary:
    """Every input.wav under `input_dir` -> outputs under `output_dir`; never raises for a
    single file's problem. Writes output_dir/errors.json."""
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    inputs = find_inputs(input_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    summary = Summary()
    if not inputs:
        log.error("no %s under %s", INPUT_NAME, input_dir)
    for i, path in enumerate(inputs):
        rel = path.relative_to(input_dir).as_posix()
        out_folder = output_dir / path.parent.relative_to(input_dir)
        prefix = f"[{i + 1}/{len(inputs)}] {rel}"
        if not _inside(out_folder, output_dir):  # e.g. a symlinked folder in OUTPUT_DIR
            message = f"{out_folder} resolves outside {output_dir}; not writing there"
            summary.errors.append(dict(input=rel, error=message))
            log.error("%s: %s", prefix, message)
            continue
        existing = [n for n in (OUTPUT_WAV, OUTPUT_JSON) if (out_folder / n).exists()]
        if existing and not overwrite:
            summary.skipped.append(rel)
            log.warning("%s: skipped, %s already in %s (--overwrite replaces them)", prefix,
                        " and ".join(existing), out_folder)
            continue
        try:
            record = runner.process(path, out_folder, rel)
        except audio_io.AudioError as e:
            summary.errors.append(dict(input=rel, error=str(e)))
            log.error("%s: %s", prefix, e)
            continue
        except Exception as e:  # noqa: BLE001 - one bad file must not stop the others
            message = f"{type(e).__name__}: {e}"
            summary.errors.append(dict(input=rel, error=message))
            log.error("%s: %s\n%s", prefix, message, traceback.format_exc())
            continue
        summary.processed.append(rel)
        log.info("%s: %.2f s, %d speaking interval(s), text %r", prefix,
                 record["duration_s"], len(record["speaking_intervals"]),
                 record["text"][:80])
    (output_dir / ERRORS_JSON).write_text(json.dumps(summary.errors, indent=1))
    log.info("fdb: %d processed, %d skipped, %d failed (%s)", len(summary.processed),
             len(summary.skipped), len(summary.errors), output_dir / ERRORS_JSON)
    return summary


def run(workdir: str | os.PathLike, input_dir: str | os.PathLike,
        output_dir: str | os.PathLike, *, prompt: str | None = None,
        overwrite: bool = False, strict: bool = False, **runner_kw) -> int:
    """Loads the run, answers the folder, returns the exit status (see the module doc)."""
    find_inputs(input_dir)  # a wrong INPUT_DIR fails before minutes of model loading
    runner = FdbRunner(load_run(workdir), prompt=prompt, **runner_kw)
    summary = run_folder(runner, input_dir, output_dir, overwrite=overwrite)
    return summary.exit_code(strict)


def _main(argv) -> int:
    if len(argv) != 3:
        raise app.UsageError(f"expected INPUT_DIR OUTPUT_DIR, got {argv[1:]}")
    f = flags.FLAGS
    try:
        code = run(f.workdir, argv[1], argv[2], prompt=f.prompt, overwrite=f.overwrite,
                   strict=f.strict, temperature=f.temperature, seed=f.seed,
                   max_seconds=f.max_seconds, bucket_seconds=f.bucket_seconds)
    except (FdbError, RunLoadError) as e:
        print(f"fdb: {e}", file=sys.stderr)
        code = 1
    return code  # app.run exits with it


def _define_flags() -> None:
    """Defined only when run as a program: importing this module (tests, other tools) must
    not clash with flags of the same name elsewhere (omni_jax.main's --workdir)."""
    flags.DEFINE_string("workdir", None, "Run directory (config.json, tokenizer, "
                        "checkpoints/).", required=True)
    flags.DEFINE_string("prompt", None, "Text prompt (default world.PROMPT_DIALOGUE).")
    flags.DEFINE_bool("overwrite", False, "Replace existing output.wav/output.json.")
    flags.DEFINE_bool("strict", False, "Exit 1 if any file fails (default: only if all do).")
    flags.DEFINE_float("max_seconds", DEFAULT_MAX_SECONDS, "Longer inputs are a per-file "
                       "error (the caches are sized for the whole file).")
    flags.DEFINE_float("temperature", 0.0, "Sampling temperature (0 = greedy).")
    flags.DEFINE_integer("seed", 0, "Sampling and in-loop phase seed.")
    flags.DEFINE_float("bucket_seconds", DEFAULT_BUCKET_SECONDS, "Inputs are padded to a "
                       "multiple of this so similar lengths share one compilation.")


if __name__ == "__main__":
    _define_flags()
    app.run(_main)
