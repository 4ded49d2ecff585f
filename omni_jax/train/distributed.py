"""Multi-process start-up: `jax.distributed.initialize()` from config.distributed.

Call `maybe_initialize(config)` first thing in an entry point, before any JAX computation
(the device list is fixed once a backend exists). With `config.distributed.initialize`
false it does nothing, so single-host runs need no coordinator. Fields left at their
"auto" values (coordinator_address "", num_processes 0, process_id -1) are detected by JAX
from the cluster environment (Slurm, Cloud TPU, GKE, Open MPI).

CPU processes exchange collectives over gloo (JAX's default CPU implementation).
"""

from __future__ import annotations

import logging

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


def process_info() -> tuple[int, int]:
    """(this process's index, number of processes)."""
    return jax.process_index(), jax.process_count()


def is_primary() -> bool:
    """Whether this process writes logs, reports and other single-writer files."""
    return jax.process_index() == 0
