"""Benchmarks print one JSON object as their last line, with the documented keys."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_pipeline_benchmark_prints_json(tmp_path):
    cmd = [sys.executable, "-m", "omni_jax.benchmarks", "--config=configs/tiny.py",
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
    from omni_jax.benchmarks import params

    counts = params.run(salmonn_omni_8b.get_config())
    base_llm = counts["llm"] - counts["lora"]
    assert abs(base_llm - 8.03e9) / 8.03e9 < 0.02  # Llama-3-8B
    assert 0.6e9 < counts["encoder"] < 1.0e9  # 32-layer d=2048 Mamba
    assert 0.4e9 < counts["synth"] < 0.6e9  # CosyVoice2-0.5B-sized
    assert counts["lora"] > 0 and counts["total"] == sum(
        counts[k] for k in ("encoder", "connector", "llm", "synth"))


@pytest.mark.slow  # ~1 min: the real-time search compiles the step at several batch sizes
def test_step_and_train_forms_benchmarks_report_their_keys():
    from configs import tiny
    from omni_jax.benchmarks import step, train_forms

    config = tiny.get_config()
    config.data.num_blocks = 2
    config.data.prompt_len = 4
    config.model.encoder.num_layers = config.model.llm.num_layers = 1
    config.model.synth.num_layers = 1
    result = step.run(config, batch=1, repeats=5, max_lens=[40], sweep_batch=1)
    assert result["p99_ms"] >= result["p50_ms"] > 0
    sweep = {(row["form"], row["fill"]): row for row in result["cache_sweep"]}
    assert set(sweep) == {(f, fill) for f in step.CACHE_FORMS for fill in step.FILLS}
    assert all(row["p99_ms"] >= row["p50_ms"] > 0 and row["max_len"] == 40
               for row in sweep.values())
    assert result["rtf"] == result["p50_ms"] / 80
    forms = train_forms.run(config, batch=1, repeats=1)
    assert forms["scan_ms"] > 0 and forms["parallel_ms"] > 0


def test_scan_benchmark_times_every_form_and_names_the_configured_one():
    from configs import tiny
    from omni_jax.benchmarks import scan
    from omni_jax.models.mamba import resolve_scan

    config = tiny.get_config()
    config.data.num_blocks, config.data.pipeline.batch_size = 8, 1
    config.model.encoder.width, config.model.encoder.state_size = 16, 4
    result = scan.run(config, repeats=1, chunks=(0, 4))
    assert result["frames"] == 16 and result["streams"] == 2
    assert set(result["ms"]) == {"associative/0", "associative/4", "sequential/0",
                                 "sequential/4"}
    assert all(ms > 0 for ms in result["ms"].values())
    assert result["fastest"] in result["ms"]
    # tiny's own setting: "auto" (sequential on a CPU) in chunks of 16, not among those timed
    assert result["configured"] == f"{resolve_scan('auto')}/16"
    assert result["configured_ms"] is None


def test_speech_path_benchmarks_report_cost_latency_and_intelligibility():
    from configs import tiny
    from omni_jax.benchmarks import intelligibility, vocoder

    config = tiny.get_config()
    config.data.num_blocks, config.data.pipeline.batch_size = 4, 2
    result = vocoder.run(config, batch=2, repeats=5)
    assert result["delay_ms"] == 35.0 and result["lookahead_ms"] == 20
    assert result["block_p99_ms"] >= result["block_p50_ms"] > 0
    assert result["block_fraction"] == pytest.approx(result["block_p50_ms"] / 80)
    assert result["train_feedback_p50_ms"] > 0
    heard = intelligibility.run(config, num=1)
    assert heard["sentences"] == 1 and set(heard["wer"]) == {
        f"{lm}/{path}" for lm in ("world", "words") for path in
        ("reference", "speech_path", "griffin_lim", "random_phase")}
    low, high = heard["wer_ci95"]["world/speech_path"]
    assert low <= heard["wer"]["world/speech_path"] <= high
    assert heard["minus_reference_ci95"]["world/reference"] == (0.0, 0.0, 0.0)


# ---- train, compile, FLOPs and the real-time search ----------------------------------------

# Quick XLA backend settings for the subprocess checks: the compiled programs only need to
# exist (their memory, FLOPs and keys are checked, never their speed).
_FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
_ONE_LAYER = [f"--config.model.{part}.num_layers=1" for part in ("encoder", "llm", "synth")]


def _run_benchmark(args, devices=None):
    from helpers import runner

    env = runner.env(devices)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {_FAST_XLA}".strip()
    cmd = [sys.executable, "-m", "omni_jax.benchmarks", "--config=configs/tiny.py", *args]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_devices_flag_takes_effect_after_every_benchmark_module_is_imported():
    # The command line imports every benchmark module (and so JAX and the project) before
    # it reads --devices: none of those imports may start JAX's backend.
    from helpers import runner

    code = ("from omni_jax.benchmarks import __main__, common\n"
            "common.force_host_devices(['--devices=3'])\n"
            "print(len(common.benchmark_devices(3)))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=runner.env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["3"]


@pytest.mark.slow  # ~25 s; tests/test_sharding.py compiles the sharded step in CI
def test_compile_check_on_8_fake_devices_reports_memory_and_replicated_params():
    result = _run_benchmark(["--what=compile", "--devices=8", *_ONE_LAYER], devices=8)
    assert result["device_count"] == result["devices"] == 8
    mesh = result["mesh"]
    assert mesh["data"] * mesh["fsdp"] * mesh["tensor"] == 8
    memory = result["bytes_per_device"]
    for kind in ("argument", "output", "temp", "total"):
        assert memory[kind] > 0, kind
    assert 0 < result["state_bytes_per_device"] <= memory["argument"]
    assert result["fits_80gb"] and result["state_fits_80gb"]
    assert result["remat"] == "none" and result["dtype"] == "float32"
    assert set(result["remat_per_part"]) == {"encoder", "llm", "synth"}
    # tiny.py is data-parallel only: every large parameter is replicated, largest first.
    replicated = result["replicated_params"]
    assert replicated and all(size >= result["replicated_threshold_bytes"]
                              for _, size in replicated)
    assert [size for _, size in replicated] == sorted((s for _, s in replicated), reverse=True)
    assert any(path.startswith("params/llm/") for path, _ in replicated)


@pytest.mark.slow  # ~30 s; the analytic-vs-compiled FLOP count of a real training step
def test_train_run_reports_throughput_and_mfu():
    result = _run_benchmark(["--what=train", "--batch=2", "--repeats=20",
                             "--peak_matmul_size=128", "--config.data.num_blocks=4",
                             "--config.data.prompt_len=2", *_ONE_LAYER])
    for key in ("steps_per_s", "tokens_per_s", "flops_per_step", "measured_peak_flops",
                "mfu_measured_peak", "achieved_flops_per_s_per_device"):
        assert result[key] > 0, key
    assert {"vendor_peak_flops", "mfu_vendor_peak", "device_kind", "device_count",
            "xla_cost_flops", "analytic_over_xla_cost"} <= set(result)
    assert result["vendor_peak_flops"] is None and result["mfu_vendor_peak"] is None  # CPU
    assert result["llm_length"] == 2 + 4 * 3  # prompt + K blocks x [env, asst, token]
    assert result["tokens_per_s"] == pytest.approx(2 * 14 * result["steps_per_s"])
    # FLOP counts, not timings: the analytic dots match the compiled program's dots.
    assert result["hlo_loops_without_trip_count"] == 0
    assert 0.8 < result["analytic_over_hlo_dots"] < 1.25


def test_llm_flops_equal_a_hand_count():
    from configs import tiny
    from omni_jax.benchmarks import flops

    config = tiny.get_config()
    config.data.prompt_len, config.data.num_blocks = 2, 3  # T = 2 + 3 x 3 = 11 positions
    llm = config.model.llm
    llm.num_layers, llm.width, llm.num_heads, llm.num_kv_heads, llm.mlp_dim = 2, 16, 4, 2, 32
    vocab = config.data.tokenizer.vocab_size
    positions = 2 * 11  # batch 2
    # Per position and layer: q 2*16*16, k and v 2*16*8 each, o 2*16*16, SwiGLU 3 x 2*16*32.
    projections = 512 + 256 + 256 + 512 + 3072
    attention = 4 * 16 * (2 * 11 * 12 // 2)  # QK^T + AV over the causal half, per layer
    head = 2 * 16 * vocab * (2 * 3 * 1)  # at the token positions only: batch x K x N
    expected = 2 * (positions * projections + attention) + head
    assert flops.llm_forward_flops(config, batch=2).total == expected
    # LoRA rank 2 on q (16 -> 16) and v (16 -> 8): 2 * rank * (in + out) per position, in
    # each of the 2 layers.
    llm.lora_rank, llm.lora_targets = 2, ("q", "v")
    lora = 2 * positions * (4 * 32 + 4 * 24)
    assert flops.llm_forward_flops(config, batch=2).total == expected + lora
    parts = flops.train_step_flops(config, batch=2)
    assert parts["train_step"] == 3 * parts["forward"]
    assert parts["forward"] == sum(parts[k] for k in ("encoder", "connector", "llm", "synth"))


def test_hlo_flop_count_multiplies_loop_bodies_by_their_trip_counts():
    import jax
    import jax.numpy as jnp

    from omni_jax.benchmarks import flops

    def loss(w_LxDxD, x_BxD):
        x_BxD, _ = jax.lax.scan(lambda x, w: (jnp.tanh(x @ w), None), x_BxD, w_LxDxD)
        return x_BxD.sum()

    compiled = jax.jit(jax.grad(loss)).lower(jnp.zeros((6, 32, 32)), jnp.zeros((4, 32))).compile()
    counted = flops.hlo_dot_flops(compiled.as_text())
    # Forward x @ w, backward dx and dw: three 4x32x32 matmuls per layer, 6 layers.
    assert counted["flops"] == 3 * 6 * 2 * 4 * 32 * 32
    assert counted["loops"] >= 1 and counted["loops_without_trip_count"] == 0
    assert flops.xla_cost_flops(compiled) < counted["flops"]  # XLA counts each body once


def test_vendor_peaks():
    from omni_jax.benchmarks import flops

    assert flops.vendor_peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert flops.vendor_peak_flops("NVIDIA H200") == 989e12
    assert flops.vendor_peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert flops.vendor_peak_flops("TPU v4") == 275e12
    assert flops.vendor_peak_flops("TPU v5 lite") == 197e12
    assert flops.vendor_peak_flops("TPU v5p") == 459e12
    assert flops.vendor_peak_flops("NVIDIA H100 PCIe") is None
    assert flops.vendor_peak_flops("cpu") is None


def test_realtime_stream_search_finds_the_largest_fast_batch():
    from omni_jax.benchmarks import step

    calls = []

    def linear(batch):  # 2 ms + 1 ms per stream
        calls.append(batch)
        return 0.002 + 0.001 * batch

    found = step.realtime_streams(linear, budget_s=0.080, max_batch=4096)
    assert found["streams"] == 78 and found["step_s"] == pytest.approx(0.080)
    assert len(calls) == len(set(calls)) <= 16  # doubling to 128, then bisecting 64..128
    assert calls[:8] == [1, 2, 4, 8, 16, 32, 64, 128]
    # Batch 1 already too slow; the cap reached before the budget; an exact boundary.
    assert step.realtime_streams(lambda b: 0.1, 0.08, 64)["streams"] == 0
    assert step.realtime_streams(lambda b: 1e-3 * b, 0.08, 50)["streams"] == 50
    assert step.realtime_streams(lambda b: 0.01 * b, 0.08, 1000)["streams"] == 8
    assert step.realtime_streams(lambda b: 0.01 * (b > 33), 0.005, 1000)["streams"] == 33


def test_per_part_remat_policies_default_to_the_global_one():
    from configs import tiny
    from omni_jax import configuration
    from omni_jax.models.encoder import StreamingEncoder
    from omni_jax.models.llm import LLM
    from omni_jax.models.synthesizer import Synthesizer

    config = tiny.get_config()
    config.model.remat = "dots"
    config.model.llm.remat = "full"
    configuration.validate(config)
    assert LLM.from_config(config).remat == "full"
    assert StreamingEncoder.from_config(config).remat == "dots"
    assert Synthesizer.from_config(config).remat == "dots"
    config.model.synth.remat = "sometimes"
    with pytest.raises(configuration.ConfigError, match="model.synth.remat"):
        configuration.validate(config)
