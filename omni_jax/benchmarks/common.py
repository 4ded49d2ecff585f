"""What several benchmarks share: batches of the contract's shapes, timing, devices.

  batch = synthetic_batch(config, 8)          # numpy, every contract field
  shapes = abstract_batch(config, 8)          # ShapeDtypeStructs, nothing allocated
  times = time_calls(fn, repeats, warmup=1)   # seconds per call, each waited for
  p50 = percentile_ms(times, 50)
  force_host_devices(sys.argv[1:])            # --devices=N fake CPU devices, before JAX starts
  config, mesh, source = fit_mesh(config, 8)  # the config's mesh, or data=1 x fsdp
  trainer = make_trainer(config)              # nothing saved, nothing allocated
  compiled, lower_s, compile_s = compile_train_step(trainer, shapes)
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from data_pipelines import contract
from omni_jax import configuration
from omni_jax.train import sharding
from omni_jax.train.trainer import Trainer

WARMUP_STEPS = 5  # untimed calls of the streaming step before timing
_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


# ---- batches -------------------------------------------------------------------------------

def _dims(config, num_blocks: int | None) -> contract.Dims:
    dims = contract.Dims.from_config(config)
    return dims if num_blocks is None else dataclasses.replace(dims, num_blocks=num_blocks)


def synthetic_batch(config, batch: int, seed: int = 0, num_blocks: int | None = None
                    ) -> dict[str, np.ndarray]:
    """A global numpy batch of the contract's fields and shapes (`num_blocks` blocks, default
    the config's): noise audio, random text tokens and labels, speaking in the second half
    of every sequence."""
    dims = _dims(config, num_blocks)
    rng = np.random.default_rng(seed)
    first_text, vocab = contract.FIRST_TEXT_ID, config.data.tokenizer.vocab_size
    k = dims.num_blocks
    out = {spec.name: np.zeros(dims.shape_of(spec, (batch,)), spec.dtype)
           for spec in contract.FIELDS}
    speaking_BxK = np.broadcast_to(np.arange(k) >= k // 2, (batch, k))

    def noise():
        return np.clip(0.1 * rng.standard_normal(out["env_audio"].shape), -1, 1)

    def text(field):
        return rng.integers(first_text, vocab, out[field].shape).astype(np.int32)

    out.update(
        env_audio=noise().astype(np.float32),
        echo_gain=np.full(batch, 0.5, np.float32),
        echo_delay=np.full(batch, 480, np.int32),
        speech_target=np.where(speaking_BxK[..., None], noise(), 0.0).astype(np.float32),
        tokens=text("tokens"), labels=text("labels"),
        label_kind=np.full(out["label_kind"].shape, contract.LabelKind.TEXT, np.int8),
        speaking=speaking_BxK.copy(), speech_mask=speaking_BxK.copy(),
        block_mask=np.ones((batch, k), bool),
        prompt_tokens=text("prompt_tokens"),
        prompt_mask=np.ones(out["prompt_mask"].shape, bool))
    return out


def abstract_batch(config, batch: int) -> dict[str, jax.ShapeDtypeStruct]:
    """ShapeDtypeStructs of a global batch (nothing allocated)."""
    dims = contract.Dims.from_config(config)
    return {spec.name: jax.ShapeDtypeStruct(dims.shape_of(spec, (batch,)), spec.dtype)
            for spec in contract.FIELDS}


# ---- timing --------------------------------------------------------------------------------

def time_calls(call: Callable[[], Any], repeats: int, warmup: int = 0) -> list[float]:
    """Seconds of each of `repeats` calls of `call()`, each waited for
    (`jax.block_until_ready` on what it returns), after `warmup` untimed calls (the first
    compiles). A stateful step threads its state through a closure."""
    for _ in range(warmup):
        jax.block_until_ready(call())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - start)
    return times


def percentile_ms(seconds: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(seconds) * 1000.0, q))


# ---- devices -------------------------------------------------------------------------------

def force_host_devices(argv: Sequence[str]) -> None:
    """--devices=N in `argv`: N fake CPU devices. XLA reads the flag when its CPU client
    starts, so this must run before anything asks JAX for a device (importing jax is fine;
    config files are loaded later, while the flags are parsed)."""
    count = None
    for i, arg in enumerate(argv):
        if arg.startswith("--devices="):
            count = arg.split("=", 1)[1]
        elif arg == "--devices" and i + 1 < len(argv):
            count = argv[i + 1]
    if count and int(count) > 0:
        kept = [f for f in os.environ.get("XLA_FLAGS", "").split()
                if not f.startswith(_DEVICE_COUNT_FLAG)]
        os.environ["XLA_FLAGS"] = " ".join(kept + [f"{_DEVICE_COUNT_FLAG}={int(count)}"])


def benchmark_devices(num_devices: int = 0) -> list[jax.Device]:
    """The first `num_devices` CPU devices, or (0) every device JAX sees."""
    if not num_devices:
        return jax.devices()
    devices = jax.devices("cpu")
    if len(devices) < num_devices:
        raise RuntimeError(
            f"{num_devices} devices wanted, JAX sees {len(devices)}: XLA_FLAGS="
            f"{_DEVICE_COUNT_FLAG}={num_devices} must be set before JAX starts "
            "(python -m omni_jax.benchmarks --devices=N does that)")
    return devices[:num_devices]


def fit_mesh(config, num_devices: int):
    """The config's mesh if it resolves for `num_devices`; otherwise the config with
    data=1, fsdp=the rest (keeping the config's tensor size when it divides). Returns
    (config, {'data', 'fsdp', 'tensor'}, 'config' or 'default')."""
    try:
        return config, sharding.mesh_shape(config, num_devices), "config"
    except configuration.ConfigError:
        tensor = int(config.mesh.tensor)
        tensor = tensor if tensor >= 1 and num_devices % tensor == 0 else 1
        config = config.copy_and_resolve_references()
        config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, num_devices // tensor, tensor
        return config, sharding.mesh_shape(config, num_devices), "default"


# ---- the training step: shared by train and compile ---------------------------------------

def make_trainer(config, devices: Sequence[jax.Device] | None = None) -> Trainer:
    """A Trainer that saves nothing (its checkpoint directory is a removed temp dir): its
    mesh, optimizer, `abstract_state`, `state_shardings` and jitted step, nothing allocated."""
    with tempfile.TemporaryDirectory() as workdir:
        trainer = Trainer(config, workdir, devices)
        trainer.checkpointer.close()
    return trainer


def compile_train_step(trainer: Trainer, batch) -> tuple[Any, float, float]:
    """(the trainer's jitted step compiled ahead of time on its abstract state and `batch`
    (arrays or ShapeDtypeStructs), lowering seconds, compile seconds)."""
    step = trainer.jitted_train_step()
    with sharding.activate(trainer.mesh, trainer.rules):
        start = time.perf_counter()
        lowered = step.lower(trainer.abstract_state, batch)
        lower_s = time.perf_counter() - start
        start = time.perf_counter()
        compiled = lowered.compile()
        compile_s = time.perf_counter() - start
    return compiled, lower_s, compile_s
