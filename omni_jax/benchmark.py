"""Benchmarks that print figures; the last line of output is one JSON object (always with
`device_kind` and `device_count`).

  python -m omni_jax.benchmark --config=configs/tiny.py --what=pipeline
  python -m omni_jax.benchmark --config=configs/salmonn_omni_8b.py --what=params
  python -m omni_jax.benchmark --config=configs/tiny.py --what=step
  python -m omni_jax.benchmark --config=configs/tiny.py --what=train_forms
  python -m omni_jax.benchmark --config=configs/tiny.py --what=train
  python -m omni_jax.benchmark --config=configs/tiny.py --what=compile --devices=8

what=pipeline     the Grain pipeline's throughput (corpus and tokenizer are built under
                  --workdir first if missing; that time is not counted).
what=params       parameter counts per component and in total, from `jax.eval_shape`
                  (nothing is allocated, so any config works, the paper-size one included).
what=step         latency of the jitted streaming `step` at batch --batch (default 1) after
                  warm-up: p50/p99 in ms and rtf = compute time per block / block duration;
                  then `realtime_streams`: the largest batch of independent streams whose
                  step still takes at most one block (p50 <= block_ms), found by doubling
                  the batch and then bisecting. Caches hold the config's llm.max_len.
what=train_forms  one training forward+backward in scan form and in parallel form.
what=train        the training step (the Trainer's state, optimizer, shardings and loss on
                  synthetic batches of the contract's shapes): steps/s, tokens/s (LLM
                  positions = batch x sequence length) and MFU = analytic model FLOPs
                  (`omni_jax.flops`) per second and device over the peak, both measured here
                  (a large matmul) and from the vendor table when it knows the device.
                  Cross-checked against XLA's cost analysis and a loop-aware HLO count.
what=compile      the training step compiled ahead of time on abstract shapes (nothing is
                  allocated) on --devices fake CPU devices: compile time, per-device memory
                  (`memory_analysis`), whether it fits an 80 GB device, and every large
                  parameter left fully replicated; --compare_remat adds a table of memory
                  under each remat policy and compute dtype.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
DEVICE_MEMORY_BYTES = 80e9  # an 80 GB accelerator (H100 / A100 80GB), counted in 1e9 bytes
MIB = 1 << 20
WARMUP_STEPS = 5


def define_flags():
    """Command-line flags, defined only when run as a program (importing stays free)."""
    config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                    lock_config=True)
    flags.DEFINE_enum("what", "pipeline",
                      ["pipeline", "params", "step", "train_forms", "train", "compile"],
                      "What to measure.")
    flags.DEFINE_string("workdir", "", "Where the corpus lives; '' = a temp dir.")
    flags.DEFINE_integer("batches", 20, "Batches timed after one warm-up batch.")
    flags.DEFINE_integer("repeats", 200,
                         "Timed calls (step); steps = repeats / 20 (train_forms, train).")
    flags.DEFINE_integer("batch", 0, "Batch size; 0 = 1 for step and train_forms, the "
                         "config's data.pipeline.batch_size for train and compile.")
    flags.DEFINE_integer("max_streams", 1024, "step: the largest batch the real-time search "
                         "tries (0 skips the search).")
    flags.DEFINE_integer("search_repeats", 20, "step: timed calls per batch in the search.")
    flags.DEFINE_integer("peak_matmul_size", 0,
                         "train: side of the peak-measuring matmul (0 = by platform).")
    flags.DEFINE_integer("devices", 0, "compile: fake CPU devices (sets XLA_FLAGS before "
                         "JAX starts); 0 = the devices JAX sees.")
    flags.DEFINE_integer("replicated_threshold", 0, "compile: report replicated parameters "
                         "of at least this many bytes (0 = min(1 MiB, 0.1% of all)).")
    flags.DEFINE_bool("compare_remat", False, "compile: also compile under each remat "
                      "policy x compute dtype and print per-device memory.")
    flags.DEFINE_list("remat_policies", [], "compare_remat: policies (default: all).")
    flags.DEFINE_list("dtypes", [], "compare_remat: compute dtypes (default: all).")


# ---- pipeline, params --------------------------------------------------------------------

def bench_pipeline(config, workdir: str, num_batches: int) -> dict:
    from data_pipelines import pipeline

    result = pipeline.pipeline_throughput(config, workdir, num_batches)
    return dict(what="pipeline", config=config.name, **result)


def bench_params(config) -> dict:
    import jax

    from omni_jax.models.omni import DuplexModel

    shapes = jax.eval_shape(DuplexModel.from_config(config).init, jax.random.key(0))
    per_part = {name: sum(x.size for x in jax.tree.leaves(tree))
                for name, tree in shapes["params"].items()}
    lora = sum(x.size for path, x in jax.tree_util.tree_leaves_with_path(shapes)
               if "lora" in jax.tree_util.keystr(path))
    return dict(what="params", config=config.name, total=sum(per_part.values()),
                lora=lora, **per_part)


def _percentile_ms(seconds: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(seconds) * 1000.0, q))


# ---- streaming step ----------------------------------------------------------------------

def realtime_streams(time_step: Callable[[int], float], budget_s: float,
                     max_batch: int) -> dict:
    """The largest batch b <= max_batch with time_step(b) <= budget_s, assuming the step
    time grows with the batch: double from 1 until a batch is too slow (or max_batch is
    reached), then bisect between the last fast and the first slow batch. Every batch is
    timed at most once.

    Returns {'streams': b (0 if batch 1 is already too slow), 'step_s': its time or None,
    'timings': {batch: seconds} of every batch tried}.
    """
    timings: dict[int, float] = {}

    def fits(batch: int) -> bool:
        if batch not in timings:
            timings[batch] = float(time_step(batch))
        return timings[batch] <= budget_s

    if max_batch < 1 or not fits(1):
        return dict(streams=0, step_s=timings.get(1), timings=timings)
    fast, slow = 1, None
    while slow is None and fast < max_batch:
        candidate = min(2 * fast, max_batch)
        if fits(candidate):
            fast = candidate
        else:
            slow = candidate
    while slow is not None and slow - fast > 1:
        middle = (fast + slow) // 2
        if fits(middle):
            fast = middle
        else:
            slow = middle
    return dict(streams=fast, step_s=timings[fast], timings=timings)


def streaming_step_timer(config) -> Callable[[int, int], list[float]]:
    """`time_steps(batch, repeats)`: seconds of `repeats` calls of the jitted streaming step
    (carry donated, as in serving) at `batch` independent streams, after warm-up. The LLM
    cache holds llm.max_len positions (what a serving stream can use)."""
    import jax
    import numpy as np

    from omni_jax.models.omni import DuplexModel, positions_per_block

    dm = DuplexModel.from_config(config)
    params = dm.init(jax.random.key(0))
    capacity_blocks = ((config.model.llm.max_len - config.data.prompt_len)
                       // positions_per_block(config))
    start_stream = jax.jit(dm.init_state, static_argnums=2)
    step = jax.jit(dm.step, donate_argnums=1)

    def time_steps(batch: int, repeats: int) -> list[float]:
        inputs = dm.dummy_batch(batch, 1)
        carry = start_stream(params, inputs["prompt_tokens"], capacity_blocks)
        rng = np.random.default_rng(0)
        block = dict(env_audio=rng.normal(size=inputs["env_audio"][:, 0].shape) * 0.1,
                     asst_audio=np.zeros(inputs["asst_audio"][:, 0].shape),
                     tokens=np.asarray(inputs["tokens"][:, 0]))
        block = jax.tree.map(lambda x: jax.device_put(x.astype(
            np.int32 if x.dtype.kind == "i" else np.float32)), block)
        for _ in range(WARMUP_STEPS):  # compile and warm up
            carry, out = step(params, carry, block)
        jax.block_until_ready(out)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            carry, out = step(params, carry, block)
            jax.block_until_ready(out)
            times.append(time.perf_counter() - start)
        return times

    return time_steps


def bench_step(config, batch: int, repeats: int, max_streams: int = 0,
               search_repeats: int = 20) -> dict:
    """Per-block latency at `batch`; with max_streams > 0 also the real-time stream count."""
    import jax
    import numpy as np

    time_steps = streaming_step_timer(config)
    times = time_steps(batch, repeats)
    p50 = _percentile_ms(times, 50)
    block_ms = config.audio.block_ms
    result = dict(what="step", config=config.name, batch=batch, repeats=repeats, p50_ms=p50,
                  p99_ms=_percentile_ms(times, 99), block_ms=block_ms, rtf=p50 / block_ms,
                  device=str(jax.devices()[0].device_kind))
    if max_streams > 0:
        search = realtime_streams(
            lambda b: float(np.median(time_steps(b, search_repeats))), block_ms / 1000.0,
            max_streams)
        streams = search["streams"]
        result.update(realtime_streams=streams, realtime_max_batch=max_streams,
                      realtime_search=[[b, s * 1000.0] for b, s in
                                       sorted(search["timings"].items())])
        if streams:
            at_streams = time_steps(streams, repeats)  # compiled already in the search
            result.update(realtime_p50_ms=_percentile_ms(at_streams, 50),
                          realtime_p99_ms=_percentile_ms(at_streams, 99))
            print(f"real time: {streams} streams, step p50 "
                  f"{result['realtime_p50_ms']:.2f} ms, p99 {result['realtime_p99_ms']:.2f} "
                  f"ms per {block_ms} ms block")
    return result


# ---- training forms ----------------------------------------------------------------------

def bench_train_forms(config, batch: int, repeats: int) -> dict:
    """Forward+backward of a stand-in loss (token cross-entropy + mel L1) in both forms."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from omni_jax.models.omni import DuplexModel

    dm = DuplexModel.from_config(config)
    params = dm.init(jax.random.key(0))
    k = config.data.num_blocks
    shapes = dm.dummy_batch(batch, k)
    rng = np.random.default_rng(0)
    data = dict(env_audio=0.1 * rng.normal(size=shapes["env_audio"].shape),
                asst_audio=0.1 * rng.normal(size=shapes["asst_audio"].shape),
                tokens=rng.integers(4, 100, size=shapes["tokens"].shape),
                prompt_tokens=rng.integers(4, 100, size=shapes["prompt_tokens"].shape))
    data = {n: jnp.asarray(v, shapes[n].dtype) for n, v in data.items()}

    def loss(forward):
        def fn(p):
            out = forward(p, data)
            logp = jax.nn.log_softmax(out["logits"])
            ce = -jnp.take_along_axis(logp, data["tokens"][..., None], axis=-1).mean()
            return ce + jnp.abs(out["mel"]).mean()
        return jax.jit(jax.value_and_grad(fn))

    timings = {}
    for name, forward in (("scan", dm.scan_forward), ("parallel", dm.parallel_forward)):
        fn = loss(forward)
        jax.block_until_ready(fn(params))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(fn(params))
            times.append(time.perf_counter() - start)
        timings[name] = _percentile_ms(times, 50)
    return dict(what="train_forms", config=config.name, batch=batch, num_blocks=k,
                scan_ms=timings["scan"], parallel_ms=timings["parallel"],
                scan_over_parallel=timings["scan"] / timings["parallel"],
                device=str(jax.devices()[0].device_kind))


# ---- the training step: shared by train and compile --------------------------------------

def synthetic_batch(config, batch: int, seed: int = 0) -> dict:
    """A global numpy batch of the contract's fields and shapes: noise audio, random text
    tokens and labels, speaking in the second half of every sequence."""
    import numpy as np

    from data_pipelines import contract

    dims = contract.Dims.from_config(config)
    rng = np.random.default_rng(seed)
    first_text = 4 + len(contract.STATE_TOKENS)  # after the control and state tokens
    vocab = config.data.tokenizer.vocab_size
    k = dims.num_blocks
    out = {spec.name: np.zeros(dims.shape_of(spec, (batch,)), spec.dtype)
           for spec in contract.FIELDS}
    speaking_BxK = np.broadcast_to(np.arange(k) >= k // 2, (batch, k))

    def noise():
        return np.clip(0.1 * rng.standard_normal(out["env_audio"].shape), -1, 1)

    out.update(
        env_audio=noise().astype(np.float32), asst_audio=noise().astype(np.float32),
        speech_target=np.where(speaking_BxK[..., None], noise(), 0.0).astype(np.float32),
        tokens=rng.integers(first_text, vocab, out["tokens"].shape).astype(np.int32),
        labels=rng.integers(first_text, vocab, out["labels"].shape).astype(np.int32),
        label_kind=np.full(out["label_kind"].shape, contract.LabelKind.TEXT, np.int8),
        speaking=speaking_BxK.copy(), speech_mask=speaking_BxK.copy(),
        block_mask=np.ones((batch, k), bool),
        prompt_tokens=rng.integers(first_text, vocab, out["prompt_tokens"].shape
                                   ).astype(np.int32),
        prompt_mask=np.ones(out["prompt_mask"].shape, bool))
    return out


def abstract_batch(config, batch: int) -> dict:
    """ShapeDtypeStructs of a global batch (nothing allocated)."""
    import jax

    from data_pipelines import contract

    dims = contract.Dims.from_config(config)
    return {spec.name: jax.ShapeDtypeStruct(dims.shape_of(spec, (batch,)), spec.dtype)
            for spec in contract.FIELDS}


def abstract_train_state(trainer):
    """(abstract boxed params, param shardings, abstract train state, state shardings),
    as `Trainer.init_state` builds them, from `jax.eval_shape` only: no parameter is
    allocated, so this works for the paper-size config on any machine."""
    import flax.linen as nn
    import jax

    from omni_jax.train import optim, sharding
    from omni_jax.train import trainer as trainer_lib

    with sharding.activate(trainer.mesh, trainer.rules):
        boxed = jax.eval_shape(trainer.model.init, jax.random.key(0))
        param_shardings = sharding.param_shardings(boxed, trainer.mesh, trainer.rules)

        def init(rng):
            params = nn.meta.unbox(trainer.model.init(rng))
            params = jax.lax.with_sharding_constraint(params, param_shardings)
            return optim.init_train_state(params, trainer.optimizer)

        state = jax.eval_shape(init, jax.random.key(0))
    state_shardings = trainer_lib._state_shardings(state, param_shardings, trainer.mesh)
    return boxed, param_shardings, state, state_shardings


def _flops_check(compiled, analytic: dict, num_devices: int) -> dict:
    """XLA's own FLOP figures of the compiled step (per device) against the analytic ones."""
    from omni_jax import flops

    xla = flops.xla_cost_flops(compiled)
    hlo = flops.hlo_dot_flops(compiled.as_text())
    per_device = analytic["train_step"] / num_devices
    comparable = analytic["hlo_comparable"] / num_devices
    return dict(
        xla_cost_flops=xla,
        analytic_over_xla_cost=per_device / xla if xla else None,
        hlo_dot_flops=hlo["flops"], hlo_loops=hlo["loops"],
        hlo_loops_without_trip_count=hlo["loops_without_trip_count"],
        analytic_over_hlo_dots=comparable / hlo["flops"] if hlo["flops"] else None)


# ---- train ----------------------------------------------------------------------------------

def bench_train(config, batch: int = 0, steps: int = 10, peak_matmul_size: int = 0) -> dict:
    """Steps/s, tokens/s and MFU of the training step on synthetic batches."""
    import jax
    import numpy as np

    from omni_jax import flops
    from omni_jax.train import sharding
    from omni_jax.train.trainer import Trainer

    config = config.copy_and_resolve_references()
    batch = batch or config.data.pipeline.batch_size
    config.data.pipeline.batch_size = batch
    with tempfile.TemporaryDirectory() as workdir:
        trainer = Trainer(config, workdir)
        trainer.checkpointer.close()  # nothing is saved
        state = trainer.init_state()
        _, _, abstract_state, state_shardings = abstract_train_state(trainer)
        batch_arrays = trainer.global_batch(synthetic_batch(config, batch))
        step = trainer.jitted_train_step(state_shardings)
        start = time.perf_counter()
        with sharding.activate(trainer.mesh, trainer.rules):
            compiled = step.lower(abstract_state, batch_arrays).compile()
        compile_s = time.perf_counter() - start
        state, parts = compiled(state, batch_arrays)  # warm-up
        jax.block_until_ready((state, parts))
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            state, parts = compiled(state, batch_arrays)
            jax.block_until_ready((state, parts))
            times.append(time.perf_counter() - start)
        loss = float(parts["loss"])
        num_devices = trainer.mesh.size
        device = trainer.mesh.devices.flat[0]
    step_s = float(np.median(times))
    analytic = flops.train_step_flops(config, batch)
    length = flops.llm_length(config)
    achieved = analytic["train_step"] / step_s / num_devices
    measured = flops.measure_peak_flops(device, config.model.dtype, peak_matmul_size or None)
    vendor = flops.vendor_peak_flops(device.device_kind)
    result = dict(
        what="train", config=config.name, batch=batch, steps=steps,
        dtype=config.model.dtype, remat=config.model.remat, llm_length=length,
        compile_s=compile_s, step_ms=step_s * 1000.0, steps_per_s=1.0 / step_s,
        tokens_per_s=batch * length / step_s, loss=loss,
        flops_per_step=analytic["train_step"],
        flops_per_step_parts={k: analytic[k] for k in
                              ("encoder", "connector", "llm", "synth", "frontend")},
        achieved_flops_per_s_per_device=achieved,
        measured_peak_flops=measured["peak_flops"], peak_matmul=measured,
        mfu_measured_peak=achieved / measured["peak_flops"],
        vendor_peak_flops=vendor, vendor_peak_source="vendor spec, dense bfloat16",
        mfu_vendor_peak=achieved / vendor if vendor else None,
        **_flops_check(compiled, analytic, num_devices))
    print(f"train {config.name}: {result['steps_per_s']:.3f} steps/s, "
          f"{result['tokens_per_s']:.0f} tokens/s, {analytic['train_step'] / 1e9:.2f} GFLOP "
          f"per step, MFU {result['mfu_measured_peak']:.3f} of the measured peak "
          f"{measured['peak_flops'] / 1e9:.1f} GFLOP/s"
          + (f", {result['mfu_vendor_peak']:.4f} of the vendor's {vendor / 1e12:.0f} TFLOP/s"
             if vendor else ""))
    return result


# ---- compile -------------------------------------------------------------------------------

def fit_mesh(config, num_devices: int):
    """The config's mesh if it resolves for `num_devices`; otherwise the config with
    data=1, fsdp=the rest (keeping the config's tensor size when it divides). Returns
    (config, {'data', 'fsdp', 'tensor'}, 'config' or 'default')."""
    from omni_jax import configuration

    try:
        return config, configuration.mesh_shape(config, num_devices), "config"
    except configuration.ConfigError:
        tensor = int(config.mesh.tensor)
        tensor = tensor if tensor >= 1 and num_devices % tensor == 0 else 1
        config = config.copy_and_resolve_references()
        config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, num_devices // tensor, tensor
        return config, configuration.mesh_shape(config, num_devices), "default"


def _shard_bytes(abstract_tree, shardings) -> int:
    """Bytes one device holds of a tree of ShapeDtypeStructs placed by `shardings`."""
    import math

    import jax
    import numpy as np

    sizes = jax.tree.map(lambda x, s: math.prod(s.shard_shape(x.shape))
                         * np.dtype(x.dtype).itemsize, abstract_tree, shardings)
    return int(sum(jax.tree.leaves(sizes)))


def compile_train_step(config, devices, replicated_threshold: int | None = 0) -> dict:
    """Lowers and compiles the training step on abstract shapes over `devices`; memory per
    device from `memory_analysis`, plus (unless replicated_threshold is None) the fully
    replicated parameters of at least that many bytes (0 = min(1 MiB, 0.1% of all))."""
    import jax
    import numpy as np

    from omni_jax import flops
    from omni_jax.train import sharding
    from omni_jax.train.trainer import Trainer

    batch = config.data.pipeline.batch_size
    with tempfile.TemporaryDirectory() as workdir:
        trainer = Trainer(config, workdir, devices)
        trainer.checkpointer.close()
    boxed, param_shardings, state, state_shardings = abstract_train_state(trainer)
    step = trainer.jitted_train_step(state_shardings)
    with sharding.activate(trainer.mesh, trainer.rules):
        start = time.perf_counter()
        lowered = step.lower(state, abstract_batch(config, batch))
        lower_s = time.perf_counter() - start
        start = time.perf_counter()
        compiled = lowered.compile()
        compile_s = time.perf_counter() - start
    memory = compiled.memory_analysis()
    per_device = dict(
        argument=int(memory.argument_size_in_bytes), output=int(memory.output_size_in_bytes),
        temp=int(memory.temp_size_in_bytes),
        generated_code=int(memory.generated_code_size_in_bytes),
        alias=int(memory.alias_size_in_bytes))
    # Donated state is aliased: its output reuses the argument buffers.
    per_device["total"] = (per_device["argument"] + per_device["output"] - per_device["alias"]
                           + per_device["temp"] + per_device["generated_code"])
    state_bytes = _shard_bytes(state, state_shardings)
    param_bytes = int(sum(x.size * np.dtype(x.dtype).itemsize
                          for x in jax.tree.leaves(sharding.strip_boxes(boxed))))
    num_params = int(sum(x.size for x in jax.tree.leaves(sharding.strip_boxes(boxed))))
    m = config.model
    result = dict(
        config=config.name, devices=len(devices), batch=batch,
        mesh={axis: int(size) for axis, size in trainer.mesh.shape.items()},
        dtype=m.dtype, remat=m.remat,
        remat_per_part={part: m[part].get("remat", "") or m.remat
                        for part in ("encoder", "llm", "synth")},
        lower_s=lower_s, compile_s=compile_s, bytes_per_device=per_device,
        state_bytes_per_device=state_bytes, params=num_params, param_bytes=param_bytes,
        fits_80gb=per_device["total"] <= DEVICE_MEMORY_BYTES,
        state_fits_80gb=state_bytes <= DEVICE_MEMORY_BYTES,
        **_flops_check(compiled, flops.train_step_flops(config, batch), len(devices)))
    if replicated_threshold is not None:
        threshold = replicated_threshold or min(MIB, param_bytes // 1000)
        report = sharding.replicated_report(boxed, param_shardings, threshold)
        result.update(replicated_threshold_bytes=threshold,
                      replicated_params=[[path, size] for path, size in report],
                      replicated_bytes=sum(size for _, size in report))
    return result


def bench_compile(config, num_devices: int = 0, replicated_threshold: int = 0,
                  compare_remat: bool = False, remat_policies=(), dtypes=()) -> dict:
    """`compile_train_step` on `num_devices` CPU devices (0 = every device JAX sees)."""
    import jax

    from omni_jax import configuration

    devices = jax.devices("cpu") if num_devices else jax.devices()
    if len(devices) < num_devices:
        raise RuntimeError(
            f"{num_devices} devices wanted, JAX sees {len(devices)}: XLA_FLAGS="
            f"--xla_force_host_platform_device_count={num_devices} must be set before JAX "
            "starts (python -m omni_jax.benchmark --devices=N does that)")
    devices = devices[:num_devices or len(devices)]
    config, mesh, source = fit_mesh(config, len(devices))
    print(f"mesh over {len(devices)} devices: " + " ".join(f"{a}={s}" for a, s in mesh.items())
          + ("" if source == "config" else " (the config's mesh does not fit: default "
             "mapping, override with --config.mesh.data/fsdp/tensor)"))
    result = dict(what="compile", mesh_source=source,
                  **compile_train_step(config, devices, replicated_threshold))
    _print_compile(result)
    if compare_remat:
        table = []
        for dtype in dtypes or configuration.DTYPES:
            for remat in remat_policies or configuration.REMAT_POLICIES:
                variant = config.copy_and_resolve_references()
                variant.model.dtype, variant.model.remat = dtype, remat
                for part in ("encoder", "llm", "synth"):  # the knob acts on every part
                    if "remat" in variant.model[part]:
                        variant.model[part].remat = ""
                row = compile_train_step(variant, devices, replicated_threshold=None)
                table.append(dict(dtype=dtype, remat=remat, compile_s=row["compile_s"],
                                  **{f"{k}_bytes": v for k, v in
                                     row["bytes_per_device"].items()}))
                print(f"  {dtype:9s} {remat:14s} temp {row['bytes_per_device']['temp'] / 1e9:9.3f}"
                      f" GB  total {row['bytes_per_device']['total'] / 1e9:9.3f} GB  "
                      f"compile {row['compile_s']:.1f} s", flush=True)
        result["remat_table"] = table
    return result


def _print_compile(result: dict) -> None:
    memory = result["bytes_per_device"]
    print(f"compiled {result['config']} (dtype {result['dtype']}, remat {result['remat']}, "
          f"per part {result['remat_per_part']}) in {result['compile_s']:.1f} s "
          f"(lowering {result['lower_s']:.1f} s)")
    print("per device: " + ", ".join(f"{k} {v / 1e9:.3f} GB" for k, v in memory.items())
          + f"; train state {result['state_bytes_per_device'] / 1e9:.3f} GB")
    print(f"fits {DEVICE_MEMORY_BYTES / 1e9:.0f} GB per device: {result['fits_80gb']} "
          f"(train state alone: {result['state_fits_80gb']})")
    if not result["fits_80gb"] and result["mesh"]["fsdp"] == 1:
        print("  parameters are not sharded (mesh.fsdp=1): try --config.mesh.data=1 "
              "--config.mesh.fsdp=-1")
    replicated = result.get("replicated_params", [])
    print(f"{len(replicated)} fully replicated parameters >= "
          f"{result.get('replicated_threshold_bytes', 0)} bytes, "
          f"{result.get('replicated_bytes', 0) / 1e9:.3f} GB in all"
          + (":" if replicated else ""))
    for path, size in replicated[:20]:
        print(f"  {size / MIB:10.1f} MiB  {path}")
    if len(replicated) > 20:
        print(f"  ... and {len(replicated) - 20} more")


# ---- entry point ---------------------------------------------------------------------------

def _force_host_devices(argv: list[str]) -> None:
    """--devices=N: N fake CPU devices. XLA reads the flag when its CPU client starts, so
    it is set here, before anything touches JAX (config files may import it)."""
    count = None
    for i, arg in enumerate(argv):
        if arg.startswith("--devices="):
            count = arg.split("=", 1)[1]
        elif arg == "--devices" and i + 1 < len(argv):
            count = argv[i + 1]
    if count and int(count) > 0:
        kept = [f for f in os.environ.get("XLA_FLAGS", "").split()
                if not f.startswith("--xla_force_host_platform_device_count")]
        os.environ["XLA_FLAGS"] = " ".join(
            kept + [f"--xla_force_host_platform_device_count={int(count)}"])


def main(argv):
    del argv
    import jax

    from omni_jax import configuration

    config = configuration.validate(FLAGS.config)
    steps = max(1, FLAGS.repeats // 20)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = FLAGS.workdir or tmp
        if FLAGS.what == "pipeline":
            result = bench_pipeline(config, workdir, FLAGS.batches)
        elif FLAGS.what == "params":
            result = bench_params(config)
        elif FLAGS.what == "step":
            result = bench_step(config, FLAGS.batch or 1, FLAGS.repeats, FLAGS.max_streams,
                                FLAGS.search_repeats)
        elif FLAGS.what == "train_forms":
            result = bench_train_forms(config, FLAGS.batch or 1, steps)
        elif FLAGS.what == "train":
            result = bench_train(config, FLAGS.batch, steps, FLAGS.peak_matmul_size)
        else:
            if FLAGS.batch:
                config.data.pipeline.batch_size = FLAGS.batch
            result = bench_compile(config, FLAGS.devices, FLAGS.replicated_threshold,
                                   FLAGS.compare_remat, FLAGS.remat_policies, FLAGS.dtypes)
    devices = jax.devices("cpu") if FLAGS.what == "compile" and FLAGS.devices else jax.devices()
    result.update(machine=platform.machine(), cpu_count=os.cpu_count(),
                  device_kind=str(devices[0].device_kind),
                  device_count=FLAGS.devices or len(devices))
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    _force_host_devices(sys.argv[1:])
    define_flags()
    app.run(main)
