"""The train state, and the one way it is created: sharded, or abstract (nothing allocated).

  abstract, shardings = abstract_train_state(model.init, optimizer, mesh, rules)
  state, shardings = init_train_state(model.init, optimizer, mesh, rules, rng)
  state = apply_gradients(state, grads, optimizer, loss)

`model.init(rng)` returns boxed parameters (logical axis names on every leaf). Parameters
are laid out as `config.mesh.rules` say; each optimizer moment like the parameter it
mirrors (found by `optax.tree_utils.tree_map_params`); counters replicated. The optimizer
(`optim.Optimizer`) holds state for the trainable parameters only, and `grads` are theirs.
The trainer, the benchmarks' ahead-of-time compile and the tests all go through these
functions, so what is measured is what trains.
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from omni_jax.train import optim, sharding


@flax.struct.dataclass
class TrainState:
    """What a checkpoint holds. `step` counts every attempted step, skipped ones included
    (the schedule inside `opt_state` advances only on applied steps)."""

    step: jax.Array  # int32 scalar
    params: Any  # unboxed {'params': ...} pytree, as DuplexModel's functions take it
    opt_state: Any


def create(params, optimizer: optim.Optimizer) -> TrainState:
    """Step 0 with fresh optimizer state for `params` (boxed or not)."""
    params = nn.meta.unbox(params)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optimizer.init(params))


def apply_gradients(state: TrainState, trainable_grads, optimizer: optim.Optimizer,
                    loss: jax.Array | None = None) -> TrainState:
    """One optimizer step from the gradients of the trainable parameters
    (`optimizer.split(...)[0]`-shaped); with a non-finite loss or gradient, params and
    optimizer moments stay as they were and the non-finite counters advance (see
    `optim.skip_nonfinite`)."""
    params, opt_state = optimizer.apply(state.params, trainable_grads, state.opt_state, loss)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state)


def state_shardings(abstract_state: TrainState, param_shardings: Any,
                    optimizer: optim.Optimizer, mesh: Mesh) -> TrainState:
    """Params as given; every params-shaped tree inside the optimizer state (Adam's
    moments) laid out like the trainable parameters; everything else replicated."""
    replicated = NamedSharding(mesh, PartitionSpec())
    trainable_shardings, _ = optimizer.split(param_shardings)
    opt_shardings = optax.tree_utils.tree_map_params(
        optimizer.tx, lambda _, shard: shard, abstract_state.opt_state, trainable_shardings,
        transform_non_params=lambda _: replicated)
    return TrainState(step=replicated, params=param_shardings, opt_state=opt_shardings)


InitParams = Callable[[jax.Array], Any]  # rng -> boxed {'params': ...}


def _init(init_params: InitParams, optimizer, param_shardings) -> Callable:
    def init(rng):
        params = nn.meta.unbox(init_params(rng))
        params = jax.lax.with_sharding_constraint(params, param_shardings)
        return create(params, optimizer)
    return init


def abstract_train_state(init_params: InitParams, optimizer: optim.Optimizer,
                         mesh: Mesh, rules: sharding.Rules) -> tuple[TrainState, TrainState]:
    """(the state as ShapeDtypeStructs carrying their shardings, the shardings). Nothing is
    allocated: an ahead-of-time compile or a checkpoint restore target."""
    key = jax.random.key(0)
    with sharding.activate(mesh, rules):
        param_shardings = sharding.param_shardings(jax.eval_shape(init_params, key), mesh,
                                                   rules)
        abstract = jax.eval_shape(_init(init_params, optimizer, param_shardings), key)
    shardings = state_shardings(abstract, param_shardings, optimizer, mesh)
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            abstract, shardings)
    return abstract, shardings


def init_train_state(init_params: InitParams, optimizer: optim.Optimizer,
                     mesh: Mesh, rules: sharding.Rules, rng: jax.Array
                     ) -> tuple[TrainState, TrainState]:
    """(a fresh state created in its sharded layout, its shardings): one jitted init writes
    each shard where it belongs, so no device ever holds the whole model."""
    _, shardings = abstract_train_state(init_params, optimizer, mesh, rules)
    with sharding.activate(mesh, rules):
        state = jax.jit(_init(init_params, optimizer, shardings.params),
                        out_shardings=shardings)(rng)
    return state, shardings
