"""what=compile: the training step compiled ahead of time on abstract shapes (nothing is
allocated) on N fake CPU devices: compile time, per-device memory (`memory_analysis`),
whether it fits an 80 GB device, and every large parameter left fully replicated;
`compare_remat` adds a table of memory under each remat policy and compute dtype."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np

from omni_jax.benchmarks import common, flops
from omni_jax.models import layers
from omni_jax.train import sharding

DEVICE_MEMORY_BYTES = 80e9  # an 80 GB accelerator (H100 / A100 80GB), counted in 1e9 bytes
MIB = 1 << 20
PARTS = ("encoder", "llm", "synth")  # the layer stacks with their own remat policy


def _shard_bytes(abstract_tree, shardings) -> int:
    """Bytes one device holds of a tree of ShapeDtypeStructs placed by `shardings`."""
    sizes = jax.tree.map(lambda x, s: math.prod(s.shard_shape(x.shape))
                         * np.dtype(x.dtype).itemsize, abstract_tree, shardings)
    return int(sum(jax.tree.leaves(sizes)))


def compile_train_step(config, devices: Sequence[jax.Device],
                       replicated_threshold: int | None = 0) -> dict:
    """Lowers and compiles the training step on abstract shapes over `devices`; memory per
    device from `memory_analysis`, plus (unless replicated_threshold is None) the fully
    replicated parameters of at least that many bytes (0 = min(1 MiB, 0.1% of all))."""
    batch = config.data.pipeline.batch_size
    trainer = common.make_trainer(config, devices)
    state, state_shardings = trainer.abstract_state, trainer.state_shardings
    compiled, lower_s, compile_s = common.compile_train_step(
        trainer, common.abstract_batch(config, batch))
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
    params = jax.tree.leaves(state.params)
    param_bytes = int(sum(x.size * np.dtype(x.dtype).itemsize for x in params))
    m = config.model
    result = dict(
        config=config.name, devices=len(devices), batch=batch,
        mesh={axis: int(size) for axis, size in trainer.mesh.shape.items()},
        dtype=m.dtype, remat=m.remat,
        remat_per_part={part: m[part].get("remat", "") or m.remat for part in PARTS},
        lower_s=lower_s, compile_s=compile_s, bytes_per_device=per_device,
        state_bytes_per_device=state_bytes, params=int(sum(x.size for x in params)),
        param_bytes=param_bytes,
        fits_80gb=per_device["total"] <= DEVICE_MEMORY_BYTES,
        state_fits_80gb=state_bytes <= DEVICE_MEMORY_BYTES,
        **flops.compiled_check(compiled, flops.train_step_flops(config, batch), len(devices)))
    if replicated_threshold is not None:
        threshold = replicated_threshold or min(MIB, param_bytes // 1000)
        report = sharding.replicated_report(state.params, state_shardings.params, threshold)
        result.update(replicated_threshold_bytes=threshold,
                      replicated_params=[[path, size] for path, size in report],
                      replicated_bytes=sum(size for _, size in report))
    return result


def remat_table(config, devices: Sequence[jax.Device], remat_policies: Sequence[str] = (),
                dtypes: Sequence[str] = ()) -> list[dict]:
    """Per-device memory of the step under each compute dtype x remat policy (default:
    all), the policy set for every part."""
    table = []
    for dtype in dtypes or layers.DTYPES:
        for remat in remat_policies or layers.REMAT_POLICIES:
            variant = config.copy_and_resolve_references()
            variant.model.dtype, variant.model.remat = dtype, remat
            for part in PARTS:  # the knob acts on every part
                if "remat" in variant.model[part]:
                    variant.model[part].remat = ""
            row = compile_train_step(variant, devices, replicated_threshold=None)
            memory = row["bytes_per_device"]
            table.append(dict(dtype=dtype, remat=remat, compile_s=row["compile_s"],
                              **{f"{k}_bytes": v for k, v in memory.items()}))
            print(f"  {dtype:9s} {remat:14s} temp {memory['temp'] / 1e9:9.3f} GB  "
                  f"total {memory['total'] / 1e9:9.3f} GB  compile {row['compile_s']:.1f} s",
                  flush=True)
    return table


def run(config, num_devices: int = 0, replicated_threshold: int = 0,
        compare_remat: bool = False, remat_policies: Sequence[str] = (),
        dtypes: Sequence[str] = ()) -> dict:
    """`compile_train_step` on `num_devices` CPU devices (0 = every device JAX sees), on the
    config's mesh when it fits them (else data=1, fsdp=the rest)."""
    devices = common.benchmark_devices(num_devices)
    config, mesh, source = common.fit_mesh(config, len(devices))
    print(f"mesh over {len(devices)} devices: " + " ".join(f"{a}={s}" for a, s in mesh.items())
          + ("" if source == "config" else " (the config's mesh does not fit: default "
             "mapping, override with --config.mesh.data/fsdp/tensor)"))
    result = dict(what="compile", mesh_source=source,
                  **compile_train_step(config, devices, replicated_threshold))
    _print_compile(result)
    if compare_remat:
        result["remat_table"] = remat_table(config, devices, remat_policies, dtypes)
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
