"""launch/local.py, and the Trainer across two local processes (gloo CPU collectives)
agreeing with one process that sees the same global batch."""

import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import runner

_ECHO = ("import os, sys; print(' '.join(sys.argv[1:])); "
         "print(os.environ['JAX_PLATFORMS'], os.environ.get('XLA_FLAGS'))")
_ONE_FAILS = ("import sys, time; rank = int(sys.argv[-1].split('=')[1]); "
              "sys.exit(3) if rank == 1 else time.sleep(120)")


def launch(*args, timeout=60):
    return subprocess.run([sys.executable, runner.LAUNCHER, *args], cwd=runner.REPO,
                          capture_output=True, text=True, timeout=timeout)


# ---- the launcher (no JAX) ----------------------------------------------------------------

def test_launcher_appends_distributed_flags_and_prefixes_output():
    done = launch("--num_processes=2", "--devices_per_process=4", "--port=12345", "--",
                  "-c", _ECHO, "--workdir=X")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for i in range(2):
        flags = next(line for line in lines if line.startswith(f"[{i}] --workdir=X"))
        assert flags.split()[1:] == [
            "--workdir=X", "--config.distributed.initialize=True",
            "--config.distributed.coordinator_address=127.0.0.1:12345",
            "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}"]
        assert f"[{i}] cpu --xla_force_host_platform_device_count=4" in lines


def test_launcher_stops_the_others_and_propagates_a_failure():
    began = time.monotonic()
    done = launch("--num_processes=2", "--", "-c", _ONE_FAILS)
    assert done.returncode == 3
    assert time.monotonic() - began < 30  # process 0 was stopped, not waited for
    assert "process 1 exited with status 3" in done.stderr


def test_launcher_needs_a_command():
    assert launch("--num_processes=2").returncode == 2
    assert launch("--num_processes=2", "--").returncode == 2


# ---- two processes == one process -----------------------------------------------------------

@pytest.mark.slow  # ~90 s on 2 cores; test_distributed keeps a two-process check in CI
def test_two_processes_loss_and_grads_match_one(tmp_path):
    two = runner.worker("grads", tmp_path / "two", launch=["--num_processes=2"])
    one = runner.worker("grads", tmp_path / "one")
    assert two["processes"] == 2 and two["mesh"]["data"] == 2
    assert abs(two["loss"] - one["loss"]) <= 1e-5 * abs(one["loss"])
    grads_two, grads_one = (np.load(tmp_path / d / "grads.npz") for d in ("two", "one"))
    assert sorted(grads_two) == sorted(grads_one)
    for name in grads_one:
        np.testing.assert_allclose(grads_two[name], grads_one[name], rtol=1e-4, atol=1e-5,
                                   err_msg=name)


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path):
    two = runner.worker("fit", tmp_path / "two", launch=["--num_processes=2"])
    one = runner.worker("fit", tmp_path / "one")
    assert two["processes"] == 2 and two["step"] == one["step"] == 4
    assert two["checkpoints"] == one["checkpoints"] == [1, 2, 3, 4]
    curves = [runner.read_metrics(tmp_path / d) for d in ("two", "one")]
    np.testing.assert_allclose([m["loss"] for m in curves[0]],
                               [m["loss"] for m in curves[1]], rtol=1e-5)
    params_two, params_one = (np.load(tmp_path / d / "params.npz") for d in ("two", "one"))
    for name in params_one:
        np.testing.assert_allclose(params_two[name], params_one[name], rtol=1e-4, atol=1e-5,
                                   err_msg=name)
