"""The Trainer's equivalences: a sharded mesh computes what one device computes, a resumed
run is bitwise the uninterrupted one, SIGTERM checkpoints and exits cleanly, and a run of
non-finite steps stops with the last good state intact.

Each check runs in a fresh subprocess (tests/helpers/trainer_worker.py, or the main job)
on the one-layer model of tests/helpers/tiny_trainer.py; they share a compilation cache.
"""

import json
import math
import signal
import subprocess
import sys

import numpy as np
import pytest
from helpers import runner


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """One tokenizer and 8-dialogue corpus for every run that reads real data (built by the
    first run that needs it)."""
    return tmp_path_factory.getbasetemp() / "trainer_corpus"


# ---- sharded == one device ----------------------------------------------------------------

def test_sharded_loss_and_grads_match_one_device(tmp_path):
    r = runner.worker("grads", tmp_path, config_arg="mesh=2x2x2", devices=8)
    assert r["mesh"] == {"data": 2, "fsdp": 2, "tensor": 2}
    assert math.isclose(r["loss"], r["reference_loss"], rel_tol=1e-6)
    assert r["grads_max_diff"] <= 1e-5 * max(1.0, r["grad_max_abs"]), r


@pytest.mark.slow
def test_sharded_train_steps_match_one_device(tmp_path):
    r = runner.worker("sharded", tmp_path, config_arg="mesh=2x2x2", devices=8)
    assert r["mesh"]["sharded"] == {"data": 2, "fsdp": 2, "tensor": 2}
    assert r["sharded_leaves"] > 0  # the parameters really are split over the mesh
    assert r["init_max_diff"] == 0.0  # the same initial values whatever the layout
    for sharded, single in zip(r["parts"]["sharded"], r["parts"]["single"], strict=True):
        for name in ("loss", "text", "speech", "grad_norm"):
            assert math.isclose(sharded[name], single[name], rel_tol=1e-5), name
    assert r["params_max_diff"] <= 1e-5 * max(1.0, r["params_max_abs"]), r


# ---- non-finite guard --------------------------------------------------------------------

def test_nonfinite_steps_stop_with_last_good_state(tmp_path):
    # 2 good steps, then NaN audio: step 3 is skipped (and, being under the limit of 2,
    # checkpointed with the step-2 parameters); step 4 reaches the limit and raises.
    r = runner.worker("nonfinite", tmp_path)
    assert r["error"] is not None, "no NonFiniteError"
    assert "2 non-finite steps in a row up to step 4" in r["error"]
    assert r["checkpoints"] == [1, 2, 3] and r["latest"] == 3
    assert f"last good checkpoint: step {r['latest']}" in r["error"]
    assert r["latest_equals_last_good"]  # the skipped step changed no parameter
    assert r["step_keeps_params"]
    assert r["step_parts"]["nonfinite"] == 1 and math.isnan(r["step_parts"]["loss"])
    # train.profile_steps=1 traced one step into DIR/profile (TensorBoard's xplane format).
    assert any(name.endswith(".xplane.pb") for name in r["profile_files"]), r["profile_files"]


# ---- resume -------------------------------------------------------------------------------

def test_resume_equals_uninterrupted_run(tmp_path, data_dir):
    r = runner.worker("resume", tmp_path, *runner.corpus_flags(data_dir))
    straight, first, second = r["straight"], r["first"], r["second"]
    assert (straight["step"], straight["stopped_early"]) == (4, False)
    assert (first["step"], first["stopped_early"]) == (2, True)  # SIGTERM at step 2
    assert (second["start"], second["step"]) == (2, 4)
    # The restored Grain iterator continues exactly where the checkpoint left it...
    assert first["digests"] + second["digests"] == straight["digests"]
    assert len(set(straight["digests"])) == 4
    assert second["next"] == straight["next"]
    # ...and the restored state trains to the same bits.
    assert r["params_bitwise_equal"], r["params_max_diff"]
    assert r["first_differs"]


# ---- SIGTERM ------------------------------------------------------------------------------

def test_sigterm_checkpoints_and_exits_cleanly(tmp_path, data_dir):
    workdir = tmp_path / "run"
    args = ["-m", "omni_jax.main", f"--config={runner.CONFIG}", f"--workdir={workdir}",
            "--config.train.steps=1000", "--config.train.checkpoint_every=500",
            *runner.corpus_flags(data_dir)]
    proc = subprocess.Popen([sys.executable, *args], cwd=runner.REPO, env=runner.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines = []
        for line in proc.stdout:  # the first progress line: training is under way
            lines.append(line)
            if line.startswith("step "):
                proc.send_signal(signal.SIGTERM)
                break
        lines += proc.stdout.readlines()
        assert proc.wait(timeout=300) == 0, "".join(lines)[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    report = json.loads((workdir / "report.json").read_text())
    step = report["step"]
    assert report["stopped_early"] is True and 1 <= step < 1000
    assert (workdir / "checkpoints" / str(step)).is_dir()

    # The checkpoint restores: an evaluation run resumes at that step.
    runner.run(args + ["--mode=eval"])
    report = json.loads((workdir / "report.json").read_text())
    assert report["step"] == step and report["stopped_early"] is False
    # ...and the evaluation suites ran from it, with their files.
    assert report["suites"]["asr"]["cases"] == 2 and report["suites"]["asr"]["wer"] >= 0
    suite_dir = workdir / "eval" / f"step_{step}" / "asr"
    assert len((suite_dir / "cases.jsonl").read_text().splitlines()) == 2
    assert (suite_dir / "case0_echo0.png").stat().st_size > 0
    assert "### asr" in (workdir / "report.md").read_text()


def test_synthetic_batches_satisfy_the_contract():
    from data_pipelines import contract
    from helpers import tiny_trainer

    config = tiny_trainer.get_config()
    batch = tiny_trainer.synthetic_batch(config, seed=0)
    contract.validate(batch, contract.Dims.from_config(config), batched=True,
                      vocab_size=config.data.tokenizer.vocab_size)
    half = tiny_trainer.synthetic_batch(config, seed=0, rows=slice(2, 4))
    np.testing.assert_array_equal(half["tokens"], batch["tokens"][2:])
