"""The Full-Duplex-Bench runner and run loading, on a freshly initialised tiny model saved as
a checkpoint (nothing is trained): outputs of exactly the input's length at its rate, the
documented output.json, per-file errors, no overwriting, the long-file limit, the CLI."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import soundfile as sf

from data_pipelines import tokenizer as tokenizer_lib
from data_pipelines import audio_io, world
from data_pipelines.audio_io import AudioError, AudioInfo
from omni_jax.duplex.engine import EngineResult
from omni_jax.serving import fdb
from omni_jax.serving.runs import RunLoadError, config_from_json, load_run
from omni_jax.train.trainer import Trainer
from tests.helpers import tiny_trainer

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
MONO_16K = FIXTURES / "manifest" / "clips" / "five_five.wav"
MONO_8K = FIXTURES / "fsdd" / "recordings" / "0_jackson_12.wav"
STEREO_48K_OPUS = FIXTURES / "gigaspeech" / "audio" / "podcast" / "P0000" / "POD0000000001.opus"
JSON_KEYS = {"format", "input", "input_sample_rate", "input_channels", "input_frames",
             "duration_s", "config_name", "checkpoint_step", "workdir", "thinking", "fusion",
             "model_sample_rate", "block_ms", "num_blocks", "training_blocks", "positions",
             "llm_max_len", "prompt", "prompt_tokens", "temperature", "seed", "events",
             "speaking_intervals", "text"}
STEP = 3


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A run directory as omni_jax.main leaves it: config.json, tokenizer, a checkpoint."""
    path = tmp_path_factory.mktemp("run")
    config = tiny_trainer.get_config()
    trainer = Trainer(config, path)
    state = trainer.init_state()
    trainer.checkpointer.save(STEP, state, force=True)
    trainer.checkpointer.wait()
    trainer.checkpointer.close()
    (path / "config.json").write_text(config.to_json_best_effort(indent=2))
    tokenizer_lib.train_tokenizer(world.all_texts(), config.data.tokenizer.vocab_size,
                                  config.data.tokenizer.model_type, path / "tokenizer.model")
    np.save(path / "embed.npy", _first_leaf(state.params))
    return path


def _first_leaf(tree):
    return np.asarray(jax.tree.leaves(tree)[0])


@pytest.fixture(scope="module")
def runner(workdir):
    return fdb.FdbRunner(load_run(workdir))


def _stereo_48k_wav(path: Path, seconds: float = 2.5) -> None:
    """The fixtures' 48 kHz stereo opus as a 48 kHz stereo wav (cut short)."""
    import librosa

    audio_CxT, rate = librosa.load(str(STEREO_48K_OPUS), sr=None, mono=False)
    assert rate == 48000 and audio_CxT.shape[0] == 2
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio_CxT[:, :int(seconds * rate)].T, rate, subtype="PCM_16")


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dest)


def _check_output(in_path: Path, out_folder: Path, rel: str,
                  prompt: str = world.PROMPT_DIALOGUE) -> dict:
    info_in, info_out = sf.info(str(in_path)), sf.info(str(out_folder / "output.wav"))
    assert info_out.samplerate == info_in.samplerate
    assert info_out.frames == info_in.frames
    assert info_out.channels == 1
    record = json.loads((out_folder / "output.json").read_text())
    assert set(record) == JSON_KEYS
    assert record["input"] == rel and record["input_frames"] == info_in.frames
    assert record["checkpoint_step"] == STEP and record["config_name"] == "tiny_trainer_test"
    assert record["prompt"] == prompt and record["prompt_tokens"]
    for event in record["events"]:
        assert event["kind"] in ("start", "stop", "text")
        assert 0.0 <= event["time_s"] < record["duration_s"]
        assert event["time_s"] == pytest.approx(event["block"] * record["block_ms"] / 1000)
    # Exact silence outside the speaking intervals.
    audio, rate = sf.read(str(out_folder / "output.wav"))
    speaking = np.zeros(audio.size, bool)
    for start, end in record["speaking_intervals"]:
        speaking[int(round(start * rate)):int(round(end * rate))] = True
    np.testing.assert_array_equal(audio[~speaking], 0.0)
    return record


def test_load_run(workdir, runner):
    run = runner.run  # load_run(workdir)
    assert run.step == STEP
    assert run.config.name == "tiny_trainer_test"
    assert isinstance(run.config.mesh.rules, tuple)
    assert isinstance(run.config.mesh.rules[0][1], tuple)  # ("batch", ("data", "fsdp"))
    assert isinstance(run.config.data.augment.snr_db, tuple)
    np.testing.assert_array_equal(_first_leaf(run.params), np.load(workdir / "embed.npy"))


def test_load_run_falls_back_past_an_unreadable_newest_step(workdir, tmp_path):
    copied = tmp_path / "run"
    shutil.copytree(workdir, copied)
    newest = copied / "checkpoints" / str(STEP + 2)
    shutil.copytree(copied / "checkpoints" / str(STEP), newest)
    (newest / "state" / "manifest.ocdbt").unlink()  # the arrays cannot be found
    run = load_run(copied)
    assert run.step == STEP
    assert (copied / "checkpoints" / "corrupt" / str(STEP + 2)).is_dir()
    np.testing.assert_array_equal(_first_leaf(run.params), np.load(workdir / "embed.npy"))
    device = jax.devices()[0]
    assert {x.sharding for x in jax.tree.leaves(run.params)} == {
        jax.sharding.SingleDeviceSharding(device)}


def test_config_from_json_lists_to_tuples():
    config = config_from_json('{"a": [1, [2, 3]], "b": {"c": []}, "d": "x"}')
    assert config.a == (1, (2, 3)) and config.b.c == () and config.d == "x"
    with pytest.raises(RunLoadError, match="not valid JSON"):
        config_from_json("{")


@pytest.mark.parametrize("remove", ["config.json", "tokenizer.model", "checkpoints"])
def test_load_run_names_what_is_missing(workdir, tmp_path, remove):
    broken = tmp_path / "run"
    shutil.copytree(workdir, broken)
    target = broken / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(RunLoadError, match=remove.split(".")[0]) as error:
        load_run(broken)
    assert str(broken) in str(error.value)
    if remove == "checkpoints":
        assert not (broken / "checkpoints").exists()  # nothing created on the way


def test_real_clips_and_bad_files(runner, tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    _copy(MONO_16K, inputs / "a" / "input.wav")
    _stereo_48k_wav(inputs / "b" / "c" / "input.wav")
    _copy(MONO_8K, inputs / "d" / "input.wav")
    (inputs / "e").mkdir()
    (inputs / "e" / "input.wav").write_bytes(b"")  # empty file
    (inputs / "f").mkdir()
    (inputs / "f" / "input.wav").write_bytes(b"RIFF\x00\x00garbage" * 50)  # corrupt
    (inputs / "g").mkdir()
    sf.write(str(inputs / "g" / "input.wav"), np.zeros(0, np.float32), 16000)  # no samples
    (inputs / "a" / "notes.wav").write_bytes(b"")  # not named input.wav: ignored

    summary = fdb.run_folder(runner, inputs, outputs)

    assert summary.processed == ["a/input.wav", "b/c/input.wav", "d/input.wav"]
    assert [e["input"] for e in summary.errors] == ["e/input.wav", "f/input.wav",
                                                    "g/input.wav"]
    assert "empty" in summary.errors[0]["error"] and "no samples" in summary.errors[2]["error"]
    assert json.loads((outputs / "errors.json").read_text()) == summary.errors
    assert summary.exit_code() == 0 and summary.exit_code(strict=True) == 1
    for rel in summary.processed:
        _check_output(inputs / rel, outputs / Path(rel).parent, rel)
    stereo = json.loads((outputs / "b" / "c" / "output.json").read_text())
    assert stereo["input_sample_rate"] == 48000 and stereo["input_channels"] == 2
    assert not (outputs / "e" / "output.wav").exists()
    assert not list(outputs.rglob(".output.partial.*"))


def test_existing_outputs_are_not_overwritten(runner, tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    _copy(MONO_8K, inputs / "x" / "input.wav")
    (outputs / "x").mkdir(parents=True)
    (outputs / "x" / "output.json").write_text("mine")
    summary = fdb.run_folder(runner, inputs, outputs)
    assert summary.skipped == ["x/input.wav"] and not summary.processed
    assert summary.exit_code() == 0
    assert (outputs / "x" / "output.json").read_text() == "mine"
    assert not (outputs / "x" / "output.wav").exists()

    summary = fdb.run_folder(runner, inputs, outputs, overwrite=True)
    assert summary.processed == ["x/input.wav"]
    _check_output(inputs / "x" / "input.wav", outputs / "x", "x/input.wav")


def test_never_writes_outside_output_dir(runner, tmp_path):
    inputs, outputs, elsewhere = tmp_path / "in", tmp_path / "out", tmp_path / "elsewhere"
    _copy(MONO_8K, inputs / "x" / "input.wav")
    elsewhere.mkdir()
    outputs.mkdir()
    (outputs / "x").symlink_to(elsewhere, target_is_directory=True)
    summary = fdb.run_folder(runner, inputs, outputs)
    assert [e["input"] for e in summary.errors] == ["x/input.wav"]
    assert "outside" in summary.errors[0]["error"]
    assert not list(elsewhere.iterdir())
    assert summary.exit_code() == 1  # every attempted file failed


def test_ten_minutes_of_silence_over_the_limit_is_a_per_file_error(runner, tmp_path):
    """Documented: files longer than --max_seconds (default 600 s) are refused from the
    header, before decoding; a ten-minute file is within the default (see the slow test)."""
    assert runner.max_seconds == fdb.DEFAULT_MAX_SECONDS == 600.0
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    (inputs / "long").mkdir(parents=True)
    (inputs / "ok").mkdir(parents=True)
    rate = 8000
    sf.write(str(inputs / "long" / "input.wav"), np.zeros(601 * rate, np.int16), rate)
    _copy(MONO_8K, inputs / "ok" / "input.wav")
    summary = fdb.run_folder(runner, inputs, outputs)
    assert summary.processed == ["ok/input.wav"]
    assert [e["input"] for e in summary.errors] == ["long/input.wav"]
    assert "601.0 s is longer than the limit of 600 s (--max_seconds" in \
        summary.errors[0]["error"]
    with pytest.raises(AudioError, match="limit"):
        fdb.FdbRunner.read_input(runner, inputs / "long" / "input.wav")


@pytest.mark.slow
def test_ten_minutes_of_silence_is_processed(runner, tmp_path):
    """7500 blocks through the engine with caches sized for the file."""
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    (inputs / "silence").mkdir(parents=True)
    sf.write(str(inputs / "silence" / "input.wav"), np.zeros(600 * 16000, np.int16), 16000)
    summary = fdb.run_folder(runner, inputs, outputs)
    assert summary.processed == ["silence/input.wav"], summary.errors
    record = _check_output(inputs / "silence" / "input.wav", outputs / "silence",
                           "silence/input.wav")
    assert record["num_blocks"] == 7500


def test_speech_and_events_of_a_speaking_model(runner):
    """The random model above never speaks: here a hand-made result speaks in blocks 1-2
    and from block 4 to the end of a 0.37 s, 48 kHz input (a reply still running).
    output.wav is the played speech (its samples resampled), silent where it plays none."""
    speaking_K = np.array([False, True, True, False, True])
    k, f, m, s = speaking_K.size, 8, 80, runner.samples_per_block
    tokens = np.full((1, k, 1), 4, np.int32)  # <think> (an id below the text ids)
    tokens[0, 1, 0] = runner.run.tokenizer.encode("yes")[0]
    tokens[0, 3, 0] = 300  # a text id beyond the tokenizer's pieces: piece None
    zeros = np.zeros((1, k, s), np.float32)
    tone_T = 0.3 * np.sin(2 * np.pi * 220 * np.arange(k * s) / 16000)
    played = np.where(speaking_K[None, :, None], tone_T.reshape(1, k, s), 0.0)
    result = EngineResult(
        input_tokens=tokens, tokens=tokens, raw_tokens=tokens, speaking=speaking_K[None],
        speak_prob=np.zeros((1, k), np.float32), mel=np.zeros((1, k, f, m), np.float32),
        speech=played.astype(np.float32), env_audio=zeros, asst_audio=zeros, logits=None,
        block_ms=80,
        sample_rate=16000, thinking="explicit")
    rate, num_samples = 48000, int(0.37 * 48000)  # the last block is partial
    audio = runner.speech(result, num_samples, rate)
    assert audio.shape == (num_samples,) and np.abs(audio).max() <= 1.0
    per_block = rate * 80 // 1000
    for block, speaking in enumerate(speaking_K):
        part = audio[block * per_block:(block + 1) * per_block]
        assert (np.abs(part).max() > 1e-3) == speaking, block
    played_48k = audio_io.resample(played[0].reshape(-1), 16000, rate)[:num_samples]
    np.testing.assert_allclose(audio[per_block:3 * per_block],
                               played_48k[per_block:3 * per_block], atol=0.02)

    info = AudioInfo(rate, 1, num_samples)
    record = runner.describe(result, info, "x/input.wav")
    assert record["speaking_intervals"] == [[0.08, 0.24], [0.32, pytest.approx(0.37)]]
    kinds = [(e["kind"], e["block"]) for e in record["events"]]
    assert kinds == [("start", 1), ("text", 1), ("stop", 3), ("text", 3), ("start", 4)]
    yes = runner.run.tokenizer.encode("yes")[0]
    assert record["events"][1]["piece"] == runner.run.tokenizer.piece_of(yes)
    assert record["events"][3]["piece"] is None
    assert record["text"] == runner.run.tokenizer.decode([yes])
    json.dumps(record)  # plain JSON types only


def test_exit_codes():
    s = fdb.Summary
    assert s().exit_code() == 1  # nothing found
    assert s(processed=["a"]).exit_code() == 0
    assert s(skipped=["a"]).exit_code() == 0
    assert s(errors=[{}]).exit_code() == 1  # all failed
    assert s(skipped=["a"], errors=[{}]).exit_code() == 0
    assert s(processed=["a"], errors=[{}]).exit_code() == 0
    assert s(processed=["a"], errors=[{}]).exit_code(strict=True) == 1


def test_prompt_too_long_is_an_error(runner):
    with pytest.raises(fdb.FdbError, match="--prompt.*prompt_len"):
        fdb.FdbRunner(runner.run, prompt="answer the user " * 40)


def test_command_line(workdir, tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    _copy(MONO_8K, inputs / "q" / "input.wav")
    command = [sys.executable, "-m", "omni_jax.serving.fdb", f"--workdir={workdir}",
               "--prompt=transcribe", str(inputs), str(outputs)]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    _check_output(inputs / "q" / "input.wav", outputs / "q", "q/input.wav", "transcribe")
    done = subprocess.run(command[:-1], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode != 0 and "INPUT_DIR OUTPUT_DIR" in done.stderr


def test_run_fails_early_on_a_bad_workdir_or_input_dir(tmp_path):
    (tmp_path / "in").mkdir()
    with pytest.raises(RunLoadError, match="no such run directory"):
        fdb.run(tmp_path / "nope", tmp_path / "in", tmp_path / "out")
    with pytest.raises(fdb.FdbError, match="no such input folder"):
        fdb.run(tmp_path / "nope", tmp_path / "missing", tmp_path / "out")
    assert not (tmp_path / "out").exists()
