"""The serving export of an untrained tiny model (random parameters; the slow test goes
through a real checkpoint and the CLI): the exported init_state/step reproduce the streaming
engine's block to float tolerance on real clips (tokens, state machine, the model's own
speech fed back and heard as echo), the standalone runner streams from a copied export
folder without importing omni_jax or flax and gives what `DuplexEngine.run` gives, and
broken inputs are errors that name the path."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from data_pipelines import contract
from data_pipelines import tokenizer as tokenizer_lib
from data_pipelines import world
from omni_jax.audio.frontend import LogMelFrontend
from omni_jax.duplex.engine import DuplexEngine
from omni_jax.serving import export, export_runner, runs
from omni_jax.serving.export_runner import ExportedModel, ExportError
from omni_jax.models.omni import DuplexModel
from omni_jax.train.trainer import Trainer
from tests.helpers import tiny_trainer

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
CLIP_16K = FIXTURES / "manifest" / "clips" / "five_five.wav"  # 1.55 s, mono 16 kHz
CLIP_8K = FIXTURES / "fsdd" / "recordings" / "0_jackson_12.wav"  # mono 8 kHz
STEP = 3
BATCH = 2
MAX_SECONDS = 2.0  # 25 blocks: both clips fit
# Modules an export folder must run without.
FORBIDDEN = ("omni_jax", "data_pipelines", "flax", "optax", "orbax", "librosa", "configs")


def _make_workdir(path: Path):
    """A run directory as omni_jax.main leaves it: config.json, tokenizer, a checkpoint of
    untrained parameters."""
    config = tiny_trainer.get_config()
    trainer = Trainer(config, path)
    trainer.checkpointer.save(STEP, trainer.init_state(), force=True)
    trainer.checkpointer.wait()
    trainer.checkpointer.close()
    (path / "config.json").write_text(config.to_json_best_effort(indent=2))
    tokenizer_lib.train_tokenizer(world.all_texts(), config.data.tokenizer.vocab_size,
                                  config.data.tokenizer.model_type, path / "tokenizer.model")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """What `load_run` returns, built directly (the checkpoint round trip, ~20 s here, is
    left to the slow end-to-end test)."""
    path = tmp_path_factory.mktemp("run")
    config = runs.serving_config(tiny_trainer.get_config())
    config.model.thinking = "implicit"  # with the speak head's bias up: it always speaks
    (path / "config.json").write_text(config.to_json_best_effort(indent=2))
    tokenizer = tokenizer_lib.train_tokenizer(
        world.all_texts(), config.data.tokenizer.vocab_size, config.data.tokenizer.model_type,
        path / "tokenizer.model")
    model = DuplexModel.from_config(config)
    # Random values in the parameters' shapes: `model.init` compiles for ~20 s here, and
    # any values serve to compare the export with the model.
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.asarray(
            np.full(x.shape, 5.0) if "speak_head" in jax.tree_util.keystr(path)
            and "bias" in jax.tree_util.keystr(path)
            else rng.normal(0, 0.2, x.shape), x.dtype),
        runs.abstract_params(model, jax.devices()[0]))
    return runs.LoadedRun(workdir=path, config=config, tokenizer=tokenizer, params=params,
                          step=STEP, model=model)


@pytest.fixture(scope="module")
def export_dir(run, tmp_path_factory):
    return export.export_loaded(run, tmp_path_factory.mktemp("export") / "model",
                                batch=BATCH, max_seconds=MAX_SECONDS)


@pytest.fixture(scope="module")
def exported(export_dir):
    return ExportedModel(export_dir)


@pytest.fixture(scope="module")
def engine(run):
    """The streaming engine over the model (what the export must reproduce)."""
    return DuplexEngine(run.model, run.params, run.config,
                        vocab_size=run.tokenizer.vocab_size)


@pytest.fixture(scope="module")
def reference(run, export_dir, engine):
    """The engine's own initial_state/block_step, jitted."""
    max_blocks = json.loads((export_dir / "manifest.json").read_text())["max_blocks"]
    init = jax.jit(lambda params, prompt: engine.initial_state(params, prompt, max_blocks))
    return init, jax.jit(engine.block_step)


def _clips_BxT(sample_rate: int) -> np.ndarray:
    """The two fixture clips at the model's rate (the 8 kHz one resampled as the runner
    does), zero-padded to the longer."""
    clips = [export_runner.read_audio(p, sample_rate) for p in (CLIP_16K, CLIP_8K)]
    audio_BxT = np.zeros((len(clips), max(c.shape[0] for c in clips)), np.float32)
    for i, clip in enumerate(clips):
        audio_BxT[i, :clip.shape[0]] = clip
    return audio_BxT


def _assert_close(actual, expected, what: str):
    np.testing.assert_allclose(np.asarray(actual, np.float32),
                               np.asarray(expected, np.float32), rtol=1e-4, atol=1e-4,
                               err_msg=what)


def test_manifest_describes_the_export(run, export_dir):
    manifest = export_runner.read_manifest(export_dir)
    config = run.config
    assert manifest["checkpoint_step"] == STEP and manifest["batch"] == BATCH
    assert manifest["sample_rate"] == config.audio.sample_rate
    assert manifest["samples_per_block"] == (config.audio.sample_rate
                                             * config.audio.block_ms // 1000)
    assert manifest["max_blocks"] == 25 and manifest["jax_version"] == jax.__version__
    assert len(manifest["prompt_tokens"]) == manifest["prompt_len"] == config.data.prompt_len
    assert manifest["params"][0]["name"].startswith("['params']")
    assert manifest["token_ids"] == contract.CONTROL_TOKEN_IDS
    assert manifest["state_token_ids"] == contract.STATE_TOKEN_IDS
    assert manifest["first_text_id"] == contract.FIRST_TEXT_ID
    assert any("['llm']['k']" in leaf["name"] for leaf in manifest["carry"])
    step_outputs = {o["name"]: o.get("shape") for o in manifest["functions"]["step"]["outputs"]}
    assert step_outputs["tokens"] == [BATCH, 1] and step_outputs["mel"] == [BATCH, 8, 80]
    assert step_outputs["speech"] == step_outputs["asst_audio"] == [BATCH, 1280]
    assert manifest["speech"]["vocoder"] == "streaming_griffin_lim"
    assert manifest["speech"]["delay_ms"] == 35.0 and manifest["speech"]["lookahead_ms"] == 20
    for name in ("run_exported.py", "tokenizer.model", "params.npz", "step.jaxexport",
                 "init_state.jaxexport"):
        assert (export_dir / name).is_file(), name


def test_exported_step_reproduces_the_engine(run, exported, reference):
    init, step = reference
    s = exported.samples_per_block
    env_BxT = _clips_BxT(exported.sample_rate)
    prompt_BxP = np.tile(np.asarray(exported.manifest["prompt_tokens"], np.int32), (BATCH, 1))
    state = init(run.params, prompt_BxP)
    state_leaves = lambda state: jax.tree.leaves({k: v for k, v in state.items() if k != "key"})
    flat_state = exported.init_state(prompt_BxP)
    for i, (a, b) in enumerate(zip(flat_state, state_leaves(state), strict=True)):
        _assert_close(a, b, f"init state leaf {i}")
    echo = dict(gain=jnp.asarray([0.5, 0.2], jnp.float32), delay=jnp.asarray([480, 1280]))
    for k in range(5):
        env_BxS = jnp.asarray(env_BxT[:, k * s:(k + 1) * s])
        state, record = step(run.params, state, env_BxS, echo)
        flat_state, flat_out = exported.step(flat_state, env_BxS, echo["gain"], echo["delay"])
        for name in export_runner.OUTPUT_NAMES:
            assert flat_out[name].shape == record[name].shape, name
            _assert_close(flat_out[name], record[name], f"block {k} {name}")
        for i, (a, b) in enumerate(zip(flat_state, state_leaves(state), strict=True)):
            _assert_close(a, b, f"block {k} state leaf {i}")
    # Not vacuous: it speaks, and from block 1 hears its own speech (fed back and as echo).
    assert bool(np.all(record["speaking"])) and np.abs(record["asst_audio"]).max() > 1e-3
    assert np.abs(np.asarray(record["env_audio"]) - np.asarray(env_BxS)).max() > 1e-4


def test_runner_streams_from_a_copied_folder_without_omni_jax(run, export_dir, engine,
                                                              tmp_path):
    copied = tmp_path / "copied_export"
    shutil.copytree(export_dir, copied)
    out_json = tmp_path / "result.json"
    script = copied / "run_exported.py"
    argv = [str(script), str(copied), str(CLIP_16K), str(CLIP_8K), "--out", str(out_json),
            "--speech_out", str(tmp_path / "speech.wav")]
    # The package is installed editable, so blocking the imports is what proves the runner
    # needs none of them; the module list afterwards double-checks.
    driver = textwrap.dedent(f"""
        import json, runpy, sys
        FORBIDDEN = {FORBIDDEN!r}
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in FORBIDDEN:
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        sys.argv = {argv!r}
        try:
            runpy.run_path(sys.argv[0], run_name="__main__")
        except SystemExit as e:
            code = e.code
        loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set(FORBIDDEN))
        print("RESULT", json.dumps(dict(code=code, loaded=loaded)))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", driver], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    result_line = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert result_line, done.stdout + done.stderr
    status = json.loads(result_line[-1][len("RESULT "):])
    assert status == {"code": 0, "loaded": []}, done.stdout + done.stderr
    summary = json.loads(out_json.read_text())
    assert summary["assistant_feedback"] == "streaming_griffin_lim"
    streams = summary["streams"]
    assert [s["input"] for s in streams] == [str(CLIP_16K), str(CLIP_8K)]
    assert streams[0]["num_blocks"] == 20  # 1.554 s in 80 ms blocks
    for i, item in enumerate(streams):  # the played speech, one wav per input
        speech_T, rate = sf.read(tmp_path / f"speech_{i}.wav")
        assert rate == 16000 and speech_T.shape == (item["num_blocks"] * 1280,)

    # The same streaming through the engine: the same tokens, the same speech fed back.
    env_BxT = _clips_BxT(run.config.audio.sample_rate)
    manifest = export_runner.read_manifest(copied)
    prompt_BxP = np.tile(np.asarray(manifest["prompt_tokens"], np.int32), (BATCH, 1))
    expected = engine.run(env_BxT, prompt_BxP)
    assert expected.speaking.all() and np.abs(expected.asst_audio).max() > 1e-3
    for i, item in enumerate(streams):
        assert item["tokens"] == expected.tokens[i, :item["num_blocks"]].tolist(), i
        text_ids = [t for t in np.ravel(item["tokens"])
                    if contract.FIRST_TEXT_ID <= t < run.tokenizer.vocab_size]
        assert item["text"] == run.tokenizer.decode(text_ids)
    _, arrays = export_runner.run_files(copied, [CLIP_16K, CLIP_8K])
    # Per block the two agree to float tolerance (test above); over 20 blocks of a random
    # model hearing itself, rounding is amplified by Griffin-Lim's phase search: measured,
    # waveforms within 7% (relative L2), their log-mel (what the model hears) within 0.01,
    # the synthesizer's mel within 1e-3.
    np.testing.assert_allclose(arrays["mel"], expected.mel, atol=3e-3)
    np.testing.assert_array_equal(arrays["env_audio"], expected.env_audio)
    frontend = LogMelFrontend.from_config(run.config)
    for name in ("speech", "asst_audio"):
        ours, theirs = (np.asarray(x, np.float32).reshape(BATCH, -1)
                        for x in (arrays[name], getattr(expected, name)))
        assert np.linalg.norm(ours - theirs) < 0.15 * np.linalg.norm(theirs), name
        heard = np.abs(np.asarray(frontend(ours)) - np.asarray(frontend(theirs)))
        assert heard.mean() < 0.05, name


def test_runner_in_process_one_file_pads_the_batch(exported):
    summary, arrays = export_runner.run_files(exported, [CLIP_8K])
    assert len(summary["streams"]) == 1 and arrays["tokens"].shape[0] == BATCH
    assert arrays["mel"].shape[2:] == (8, 80)
    with pytest.raises(ValueError, match="exceed the export's max_blocks=25"):
        export_runner.stream(exported, np.zeros((BATCH, 26 * 1280)))


def test_resample_keeps_a_tone():
    t_8k = np.arange(8000) / 8000
    up = export_runner.resample(np.sin(2 * np.pi * 440 * t_8k), 8000, 16000)
    t_16k = np.arange(16000) / 16000
    assert up.shape == (16000,)
    np.testing.assert_allclose(up, np.sin(2 * np.pi * 440 * t_16k), atol=1e-3)


def _copy(export_dir: Path, tmp_path: Path) -> Path:
    copied = tmp_path / "broken"
    shutil.copytree(export_dir, copied)
    return copied


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "manifest.json").write_text("{not json"), "manifest.json: not valid JSON"),
    (lambda d: (d / "manifest.json").unlink(), "manifest.json: missing"),
    (lambda d: (d / "manifest.json").write_text(json.dumps({"format": "omni_jax.export/2"})),
     "manifest.json: missing keys"),
    (lambda d: (d / "step.jaxexport").write_bytes(b"\0" * 64), "step.jaxexport: content differs"),
    (lambda d: (d / "init_state.jaxexport").unlink(), "init_state.jaxexport: missing"),
    (lambda d: (d / "params.npz").write_bytes(b"PK\3\4 truncated"), "params.npz: unreadable"),
    (lambda d: (d / "tokenizer.model").write_bytes(b"x"), "tokenizer.model: content differs"),
])
def test_broken_export_folder_names_the_file(export_dir, tmp_path, damage, message):
    broken = _copy(export_dir, tmp_path)
    damage(broken)
    with pytest.raises(ExportError, match=message) as info:
        ExportedModel(broken)
    assert str(broken) in str(info.value)


def test_params_that_disagree_with_the_manifest(export_dir, tmp_path):
    broken = _copy(export_dir, tmp_path)
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["params"][0]["shape"] = [7, 7]
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match=r"params.npz: \['params'\].* has shape"):
        ExportedModel(broken)


def test_not_a_run_and_occupied_out_dir(run, tmp_path):
    with pytest.raises(runs.RunLoadError, match=str(tmp_path / "nothing")):
        export.export_run(tmp_path / "nothing", tmp_path / "out")
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(runs.RunLoadError, match="no config.json"):
        export.export_run(tmp_path / "empty_run", tmp_path / "out")
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not empty"):
        export.export_loaded(run, occupied, max_seconds=0.2)
    with pytest.raises(ExportError, match="not an export"):
        export.export_loaded(run, occupied, max_seconds=0.2, overwrite=True)
    assert (occupied / "notes.txt").read_text() == "keep me"
    assert not list(tmp_path.glob(".*partial*"))


def test_cli_reports_a_workdir_that_is_not_a_run(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "omni_jax.serving.export", f"--workdir={tmp_path / 'nothing'}",
         f"--out={tmp_path / 'out'}"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 1
    assert f"{tmp_path / 'nothing'}: no such run directory" in done.stderr


@pytest.mark.slow
def test_end_to_end_from_a_checkpointed_run(tmp_path):
    """A run directory with a real checkpoint -> the CLI -> the runner, in subprocesses."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    _make_workdir(workdir)
    out = tmp_path / "export"
    done = subprocess.run(
        [sys.executable, "-m", "omni_jax.serving.export", f"--workdir={workdir}", f"--out={out}",
         "--max_seconds=2", "--platforms=cpu"],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    manifest = export_runner.read_manifest(out)
    assert manifest["checkpoint_step"] == STEP and manifest["platforms"] == ["cpu"]
    result = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, str(out / "run_exported.py"), str(out), str(CLIP_16K),
         f"--out={result}", f"--mel_out={tmp_path / 'mel.npz'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(result.read_text())["streams"][0]["num_blocks"] == 20
    with np.load(tmp_path / "mel.npz") as mel:
        assert mel["mel"].shape == (1, 20, 8, 80) and mel["speaking"].shape == (1, 20)
