"""what=train: the training step (the Trainer's state, optimizer, shardings and loss on
synthetic batches of the contract's shapes): steps/s, tokens/s (LLM positions = batch x
sequence length) and MFU = analytic model FLOPs (`flops.train_step_flops`) per second and
device over the peak, both measured here (a large matmul) and from the vendor table when it
knows the device. Cross-checked against XLA's cost analysis and a loop-aware HLO count."""

from __future__ import annotations

import numpy as np

from omni_jax.benchmarks import common, flops
from omni_jax.train.trainer import computed


def run(config, batch: int = 0, steps: int = 10, peak_matmul_size: int = 0) -> dict:
    """Steps/s, tokens/s and MFU of the training step on synthetic batches (batch 0 = the
    config's data.pipeline.batch_size; median of `steps` steps after a warm-up step)."""
    config = config.copy_and_resolve_references()
    batch = batch or config.data.pipeline.batch_size
    config.data.pipeline.batch_size = batch
    trainer = common.make_trainer(config)
    state = trainer.init_state()
    batch_arrays = trainer.global_batch(common.synthetic_batch(config, batch))
    compiled, lower_s, compile_s = common.compile_train_step(trainer, batch_arrays)
    parts = None

    def call():
        nonlocal state, parts
        state, parts = compiled(state, batch_arrays)
        return state, parts

    times = common.time_calls(call, steps, warmup=1)
    loss = computed(parts)["loss"]
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
        compile_s=lower_s + compile_s, step_ms=step_s * 1000.0, steps_per_s=1.0 / step_s,
        tokens_per_s=batch * length / step_s, loss=loss,
        flops_per_step=analytic["train_step"],
        flops_per_step_parts={k: analytic[k] for k in
                              ("encoder", "connector", "llm", "synth", "frontend")},
        achieved_flops_per_s_per_device=achieved,
        measured_peak_flops=measured["peak_flops"], peak_matmul=measured,
        mfu_measured_peak=achieved / measured["peak_flops"],
        vendor_peak_flops=vendor, vendor_peak_source="vendor spec, dense bfloat16",
        mfu_vendor_peak=achieved / vendor if vendor else None,
        **flops.compiled_check(compiled, analytic, num_devices))
    print(f"train {config.name}: {result['steps_per_s']:.3f} steps/s, "
          f"{result['tokens_per_s']:.0f} tokens/s, {analytic['train_step'] / 1e9:.2f} GFLOP "
          f"per step, MFU {result['mfu_measured_peak']:.3f} of the measured peak "
          f"{measured['peak_flops'] / 1e9:.1f} GFLOP/s"
          + (f", {result['mfu_vendor_peak']:.4f} of the vendor's {vendor / 1e12:.0f} TFLOP/s"
             if vendor else ""))
    return result
