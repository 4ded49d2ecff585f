"""Benchmarks print one JSON object as their last line, with the documented keys."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_pipeline_benchmark_prints_json(tmp_path):
    cmd = [sys.executable, "-m", "omni_jax.benchmark", "--config=configs/tiny.py",
           "--what=pipeline", f"--workdir={tmp_path}", "--batches=3",
           "--config.data.train_dialogues=12", "--config.data.eval_dialogues=4"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["what"] == "pipeline" and result["batches"] == 3
    assert result["audio_seconds_per_second_per_core"] > 0
    assert result["blocks_per_second"] > 0
