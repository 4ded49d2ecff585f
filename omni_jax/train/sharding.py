"""Device mesh, logical-axis rules and the shardings of parameters and batches.

The model names its array dimensions logically (`embed`, `mlp`, `heads`, ...; see
`omni_jax.models.layers`); `config.mesh.rules` maps those names to the mesh axes
('data', 'fsdp', 'tensor'). Everything here turns that table into `NamedSharding`s:

  mesh = make_mesh(config)                             # Auto axes, sized by config.mesh.*
  rules = logical_rules(config)
  with activate(mesh, rules):                          # activation constraints resolve
      state, shardings = state.init_train_state(model.init, optimizer, mesh, rules, rng)
      batch = global_batch(local_numpy_batch, mesh)    # this process's rows -> global array

Parallelism is configuration: the same code runs on one device, on 8 fake CPU devices and
on several hosts (each host feeds its own rows through `global_batch`).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from data_pipelines import config_checks
from data_pipelines.config_checks import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # the batch dimension is split over both data-parallel axes

Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]


def mesh_shape(config, num_devices: int) -> dict[str, int]:
    """The mesh axis sizes of `config.mesh` (-1 = the rest) for `num_devices` devices; a
    ConfigError names the `config.mesh` field that cannot be met."""
    check = config_checks.check
    sizes = {axis: int(config.mesh[axis]) for axis in MESH_AXES}
    free = [a for a, s in sizes.items() if s == -1]
    if len(free) > 1:
        raise ConfigError(f"config.mesh.{free[1]}: only one mesh axis may be -1, got {free}")
    for axis, size in sizes.items():
        check(size == -1 or size >= 1, f"mesh.{axis}", f"must be >= 1 or -1, got {size}")
    fixed = math.prod(s for s in sizes.values() if s != -1)
    if free:
        check(num_devices % fixed == 0, f"mesh.{free[0]}",
              f"{num_devices} devices are not divisible by the other axes' product {fixed}")
        sizes[free[0]] = num_devices // fixed
    check(math.prod(sizes.values()) == num_devices, "mesh",
          f"axes {sizes} need {math.prod(sizes.values())} devices, but {num_devices} exist")
    return sizes


def check_batch(config, num_devices: int) -> None:
    """The global batch must split evenly over the batch axes (data x fsdp)."""
    sizes = mesh_shape(config, num_devices)
    shards = math.prod(sizes[a] for a in BATCH_AXES)
    batch = int(config.data.pipeline.batch_size)
    if batch % shards:
        raise ConfigError(f"config.data.pipeline.batch_size: {batch} is not divisible by "
                          f"data x fsdp = {shards}")


def make_mesh(config, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The ('data', 'fsdp', 'tensor') mesh over `devices` (default: every global device).

    Axis sizes come from `mesh_shape`, which raises a ConfigError naming the
    config.mesh field when they do not match the device count. Axes are Auto (the
    compiler propagates shardings; `jax.make_mesh` defaults to Explicit now).
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = mesh_shape(config, len(devices))
    shape = tuple(sizes[a] for a in MESH_AXES)
    return jax.make_mesh(shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3,
                         devices=devices)


def logical_rules(config) -> Rules:
    """config.mesh.rules as the hashable tuple Flax expects; unknown mesh axes are errors."""
    rules = []
    for i, (name, target) in enumerate(config.mesh.rules):
        if isinstance(target, (list, tuple)):
            target = tuple(target)
            axes = target
        else:
            axes = () if target is None else (target,)
        unknown = [a for a in axes if a not in MESH_AXES]
        if unknown:
            raise ConfigError(
                f"config.mesh.rules[{i}] ({name!r}): unknown mesh axes {unknown}; "
                f"known {list(MESH_AXES)}")
        rules.append((str(name), target))
    return tuple(rules)


@contextlib.contextmanager
def activate(mesh: Mesh, rules: Rules) -> Iterator[None]:
    """Makes `nn.with_logical_constraint` inside the model resolve against `mesh`.

    Functions must be traced (jitted and first called) inside this context: Flax reads
    the rules at trace time, and the mesh makes bare PartitionSpecs meaningful.
    """
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield


def _fit(spec: PartitionSpec, shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
    """Drops mesh axes from dimensions they do not divide (e.g. 2 kv heads on tensor=4):
    such a dimension stays replicated rather than failing to compile."""
    fitted = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = () if axes is None else (axes if isinstance(axes, tuple) else (axes,))
        if dim % math.prod(mesh.shape[a] for a in names) != 0:
            logging.debug("replicating a dimension of %d not divisible by %s", dim, names)
            axes = None
        fitted.append(axes)
    return PartitionSpec(*fitted)


def strip_boxes(tree: Any) -> Any:
    """The values inside `nn.Partitioned` boxes, without the sharding constraint that
    `nn.unbox` applies under an active mesh (which fails on abstract or host values)."""
    return jax.tree.map(lambda x: x.value if isinstance(x, nn.Partitioned) else x, tree,
                        is_leaf=lambda x: isinstance(x, nn.Partitioned))


def param_shardings(abstract_boxed: Any, mesh: Mesh, rules: Rules) -> Any:
    """NamedShardings (an unboxed tree) from the logical axis names of boxed parameters.

    `abstract_boxed` is e.g. `jax.eval_shape(model.init, rng)`: a tree with
    `nn.LogicallyPartitioned` boxes; leaves without a box are replicated.
    """
    logical = nn.get_partition_spec(abstract_boxed)
    mesh_specs = nn.logical_to_mesh(logical, rules)
    shapes = strip_boxes(abstract_boxed)
    return jax.tree.map(lambda spec, x: NamedSharding(mesh, _fit(spec, x.shape, mesh)),
                        mesh_specs, shapes,
                        is_leaf=lambda x: isinstance(x, PartitionSpec))


def replicated(tree: Any, mesh: Mesh) -> Any:
    """A fully replicated sharding for every leaf (step counters, optimizer scalars)."""
    return jax.tree.map(lambda _: NamedSharding(mesh, PartitionSpec()), tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension over ('data', 'fsdp'); the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's rows of every field -> global arrays sharded by `batch_sharding`.

    Each process passes its own slice of the global batch (the pipeline shards records by
    process); the global batch size is the local one times the number of batch shards
    held by other processes, which JAX infers from the sharding.
    """
    sharding = batch_sharding(mesh)
    return {name: jax.make_array_from_process_local_data(sharding, np.asarray(value))
            for name, value in local_batch.items()}


def _path_name(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                    for k in path)


def replicated_report(abstract_params: Any, shardings: Any,
                      threshold_bytes: int) -> list[tuple[str, int]]:
    """(path, bytes) of every parameter of at least `threshold_bytes` that `shardings`
    leaves fully replicated, largest first: memory a missing rule wastes on every device."""
    shapes = strip_boxes(abstract_params)
    sizes = jax.tree.map(lambda x: math.prod(x.shape) * np.dtype(x.dtype).itemsize, shapes)
    flat_sizes = jax.tree_util.tree_flatten_with_path(sizes)[0]
    flat_shardings = jax.tree.leaves(shardings)
    if len(flat_sizes) != len(flat_shardings):
        raise ValueError(f"{len(flat_sizes)} parameters but {len(flat_shardings)} shardings")
    report = [(_path_name(path), int(size))
              for (path, size), sharding in zip(flat_sizes, flat_shardings)
              if size >= threshold_bytes and sharding.is_fully_replicated]
    return sorted(report, key=lambda item: -item[1])
