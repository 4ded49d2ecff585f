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


def test_paper_size_parameter_counts_without_allocation():
    from configs import salmonn_omni_8b
    from omni_jax import benchmark

    counts = benchmark.bench_params(salmonn_omni_8b.get_config())
    base_llm = counts["llm"] - counts["lora"]
    assert abs(base_llm - 8.03e9) / 8.03e9 < 0.02  # Llama-3-8B
    assert 0.6e9 < counts["encoder"] < 1.0e9  # 32-layer d=2048 Mamba
    assert 0.4e9 < counts["synth"] < 0.6e9  # CosyVoice2-0.5B-sized
    assert counts["lora"] > 0 and counts["total"] == sum(
        counts[k] for k in ("encoder", "connector", "llm", "synth"))


def test_step_and_train_forms_benchmarks_report_their_keys():
    from configs import tiny
    from omni_jax import benchmark

    config = tiny.get_config()
    config.data.num_blocks = 2
    config.data.prompt_len = 4
    config.model.encoder.num_layers = config.model.llm.num_layers = 1
    config.model.synth.num_layers = 1
    step = benchmark.bench_step(config, batch=1, repeats=5)
    assert step["p99_ms"] >= step["p50_ms"] > 0
    assert step["rtf"] == step["p50_ms"] / 80
    forms = benchmark.bench_train_forms(config, batch=1, repeats=1)
    assert forms["scan_ms"] > 0 and forms["parallel_ms"] > 0
