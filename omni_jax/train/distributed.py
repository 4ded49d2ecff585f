"""Process start-up: `jax.distributed.initialize()` from config.distributed, and the
persistent compilation cache from config.train.compilation_cache_dir.

Call `maybe_initialize(config)` first thing in an entry point, before any JAX computation
(the device list is fixed once a backend exists). With `config.distributed.initialize`
false it does nothing, so single-host runs need no coordinator. Fields left at their
"auto" values (coordinator_address "", num_processes 0, process_id -1) are detected by JAX
from the cluster environment (Slurm, Cloud TPU, GKE, Open MPI).

CPU processes exchange collectives over gloo (JAX's default CPU implementation).
"""

from __future__ import annotations

import logging
import os

import jax

from data_pipelines.config_checks import ConfigError

log = logging.getLogger(__name__)


def initialize_kwargs(config) -> dict:
    """The explicit arguments for `jax.distributed.initialize`; auto-detected ones left out."""
    d = config.distributed
    kwargs = {}
    if d.coordinator_address:
        kwargs["coordinator_address"] = str(d.coordinator_address)
    if int(d.num_processes) > 0:
        kwargs["num_processes"] = int(d.num_processes)
    elif int(d.num_processes) < 0:
        raise ConfigError(f"config.distributed.num_processes: must be >= 0 (0 = auto), "
                          f"got {d.num_processes}")
    if int(d.process_id) >= 0:
        kwargs["process_id"] = int(d.process_id)
        if "num_processes" in kwargs and kwargs["process_id"] >= kwargs["num_processes"]:
            raise ConfigError(f"config.distributed.process_id: {d.process_id} is not below "
                              f"num_processes={d.num_processes}")
    elif int(d.process_id) != -1:
        raise ConfigError(f"config.distributed.process_id: must be >= 0 or -1 (auto), "
                          f"got {d.process_id}")
    return kwargs


def maybe_initialize(config) -> bool:
    """Initialises the JAX distributed runtime when the config asks for it.

    Idempotent: returns True only for the call that actually initialised it.
    """
    if not config.distributed.initialize:
        return False
    if jax.distributed.is_initialized():
        return False
    kwargs = initialize_kwargs(config)
    jax.distributed.initialize(**kwargs)
    index, count = process_info()
    log.info("jax.distributed initialised: process %d of %d, %d local / %d global devices",
             index, count, jax.local_device_count(), jax.device_count())
    return True


def use_compilation_cache(config) -> str | None:
    """Points JAX's persistent compilation cache at `train.compilation_cache_dir` ("" =
    off; "~" expanded), so that a restarted or resumed run loads its compiled steps instead
    of compiling them again (30-100 s each at tiny on a CPU). Every compile that took at
    least `train.compilation_cache_min_s` seconds is kept. Returns the directory used."""
    directory = str(config.train.get("compilation_cache_dir", "") or "")
    if not directory:
        return None
    directory = os.path.expanduser(directory)
    os.makedirs(directory, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(config.train.get("compilation_cache_min_s", 1.0)))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    log.info("persistent compilation cache: %s", directory)
    return directory


def process_info() -> tuple[int, int]:
    """(this process's index, number of processes)."""
    return jax.process_index(), jax.process_count()


def is_primary() -> bool:
    """Whether this process writes logs, reports and other single-writer files."""
    return jax.process_index() == 0
