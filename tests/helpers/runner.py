"""Starting the trainer tests' subprocesses: paths, environment, result files.

Every subprocess shares one persistent XLA compilation cache (in the system temp dir, or
$OMNI_JAX_TEST_XLA_CACHE): the tests compile the same few programs (init, train step) in
many fresh processes, and a cache hit turns ~40 s of compiling into ~5 s of loading.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIG = "tests/helpers/tiny_trainer.py"
WORKER = "tests/helpers/trainer_worker.py"
LAUNCHER = "launch/local.py"


def env(devices: int | None = None) -> dict:
    """CPU-only, `devices` fake devices (default one), the shared compilation cache."""
    e = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    e["JAX_PLATFORMS"] = "cpu"
    if devices:
        e["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    e["JAX_COMPILATION_CACHE_DIR"] = os.environ.get(
        "OMNI_JAX_TEST_XLA_CACHE", str(Path(tempfile.gettempdir()) / "omni_jax_test_xla_cache"))
    e["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    e["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    return e


def corpus_flags(data_dir: Path) -> list[str]:
    """Config overrides that make every run share one tokenizer and corpus."""
    return [f"--config.data.corpus_dir={data_dir / 'corpus'}",
            f"--config.data.tokenizer.path={data_dir / 'tokenizer.model'}"]


def run(args: list[str], *, devices: int | None = None, timeout: float = 600,
        ) -> subprocess.CompletedProcess:
    """`python ARGS` from the repository root; fails with the output's tail unless rc 0."""
    done = subprocess.run([sys.executable, *args], cwd=REPO, env=env(devices),
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-5000:])
    return done


def worker(mode: str, workdir: Path, *flags: str, config_arg: str = "",
           launch: list[str] | None = None, devices: int | None = None) -> dict:
    """Runs a trainer_worker mode (under launch/local.py with `launch` options) and returns
    the JSON it wrote."""
    out = workdir / "result.json"
    config = CONFIG + (f":{config_arg}" if config_arg else "")
    args = [WORKER, f"--mode={mode}", f"--config={config}", f"--workdir={workdir}",
            f"--out={out}", *flags]
    if launch is not None:
        args = [LAUNCHER, *launch, "--", *args]
    run(args, devices=devices)
    return json.loads(out.read_text())


def read_metrics(workdir: Path) -> list[dict]:
    """The per-step scalars process 0 logged (metrics.jsonl), step records only."""
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "step" in r and "loss" in r]
