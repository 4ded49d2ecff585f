"""Optimizer: AdamW + warmup/cosine schedule + clipping over the *trainable* parameters
only, freezing by path regex, and a guard that skips non-finite steps. (The paper's
training stages are freeze patterns in `configs/common.py`; the train state is
`omni_jax.train.state`.)

Frozen parameters are not differentiated at all: `Optimizer.split` cuts the parameter tree
into (trainable, frozen) subtrees, the trainer differentiates the loss with respect to the
trainable one alone (the frozen one is a closed-over constant, so XLA builds none of its
weight-gradient matmuls nor any backward pass below the first trainable layer), and the
transformation below sees only trainable leaves:
  skip_nonfinite                        a step with a non-finite loss or gradient changes
                                        nothing and is counted (consecutive and total)
    clip_by_global_norm                 the norm of the trainable gradients
    adamw(schedule, mask)               decay only on matrices (kernels, embeddings, LoRA)

Paths. A parameter's path is its keys under the 'params' collection joined by '/', e.g.
'llm/layers/layer_0/attn/q/kernel'. A freeze pattern is a Python regex that must match a
*whole* path (`re.fullmatch`: 'encoder/.*', not 'encoder'); a pattern that matches no path
is an error naming it, so that a typo can never silently train everything.

  trainable, frozen = optimizer.split(params)
  grads = jax.grad(lambda t: loss(optimizer.merge(t, frozen)))(trainable)
  params, opt_state = optimizer.apply(params, grads, opt_state, loss=loss)
`state.apply_gradients` does the last line on a TrainState.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

# ---- paths and masks --------------------------------------------------------------------

def _key_name(key) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _joined(names) -> str:
    """Key names -> the '/'-joined parameter path, without the 'params' collection."""
    names = [str(name) for name in names]
    return "/".join(names[1:] if names[:1] == ["params"] else names)


def _path_str(path) -> str:
    return _joined(_key_name(k) for k in path)


def _map_paths(fn, tree):
    """tree_map with the '/'-joined path (under 'params') as the first argument."""
    return jax.tree_util.tree_map_with_path(lambda p, x: fn(_path_str(p), x), tree)


def param_paths(params) -> tuple[str, ...]:
    """Every parameter path, in flattening order (boxes are unboxed first)."""
    leaves = jax.tree_util.tree_flatten_with_path(nn.meta.unbox(params))[0]
    return tuple(_path_str(path) for path, _ in leaves)


def _as_patterns(patterns) -> tuple[str, ...]:
    # A bare string is one pattern, not a sequence of one-character patterns.
    return (patterns,) if isinstance(patterns, str) else tuple(patterns or ())


def check_patterns(params, patterns) -> None:
    """Raises ValueError naming every pattern that matches no parameter path."""
    paths = param_paths(params)
    unmatched = [p for p in _as_patterns(patterns)
                 if not any(re.fullmatch(p, path) for path in paths)]
    if unmatched:
        raise ValueError(
            f"train.frozen patterns match no parameter path: {unmatched} (a pattern must "
            f"match a whole path, e.g. 'encoder/.*'); some paths: {list(paths[:8])}")


def is_frozen(path: str, patterns: Sequence[str]) -> bool:
    return any(re.fullmatch(p, path) for p in patterns)


def trainable_mask(params, patterns) -> Any:
    """A pytree of bools like `params` (unboxed): True where the parameter trains."""
    patterns = _as_patterns(patterns)
    check_patterns(params, patterns)
    return _map_paths(lambda path, _: not is_frozen(path, patterns), nn.meta.unbox(params))


def decays(path: str) -> bool:
    """Weight decay on matrices only: kernels, embeddings and LoRA factors; never on norm
    scales, biases, gates or the SSM's A_log/D (stacked layers make ndim a poor guide)."""
    leaf = path.rsplit("/", 1)[-1]
    return leaf.endswith("kernel") or leaf == "embedding" or leaf.startswith("lora_")


# ---- the optimizer ----------------------------------------------------------------------

def make_schedule(config) -> optax.Schedule:
    """Linear warmup from 0 to train.learning_rate, then cosine decay to 0 at train.steps."""
    t = config.train
    if not 0 <= t.warmup_steps < t.steps:
        raise ValueError(f"train.warmup_steps must lie in [0, train.steps={t.steps}), "
                         f"got {t.warmup_steps}")
    return optax.warmup_cosine_decay_schedule(0.0, t.learning_rate, t.warmup_steps, t.steps,
                                              end_value=0.0)


class NonFiniteState(NamedTuple):
    inner: Any
    consecutive: jax.Array  # int32: non-finite steps in a row (0 after a good step)
    total: jax.Array  # int32: non-finite steps since the start


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.stack(leaves).all() if leaves else jnp.asarray(True)


def skip_nonfinite(inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """Like `optax.apply_if_finite`, but also checks the loss (`loss=` extra argument) and
    never gives up and applies a bad step: stopping is the trainer's decision
    (`consecutive_nonfinite` vs train.max_consecutive_nonfinite)."""
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        zero = jnp.zeros((), jnp.int32)
        return NonFiniteState(inner.init(params), zero, zero)

    def update_fn(updates, state, params=None, *, loss=None, **extra_args):
        ok = _all_finite(updates)
        if loss is not None:
            ok &= jnp.all(jnp.isfinite(loss))
        new_updates, new_inner = inner.update(updates, state.inner, params, **extra_args)
        # Select, not cond: both sides are cheap and `where` keeps shardings simple.
        new_updates = jax.tree.map(lambda u: jnp.where(ok, u, jnp.zeros_like(u)), new_updates)
        new_inner = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new_inner, state.inner)
        bad = (~ok).astype(jnp.int32)
        return new_updates, NonFiniteState(new_inner, (state.consecutive + 1) * bad,
                                           state.total + bad)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """The optimizer of a model with frozen parts: `tx` acts on the trainable subtree only
    (no gradient, no moment, no norm term for a frozen leaf); `frozen` are the whole-path
    patterns that decide the split."""

    tx: optax.GradientTransformationExtraArgs
    frozen: tuple[str, ...]

    def split(self, tree) -> tuple[dict, dict]:
        """(trainable, frozen): the leaves of a params-shaped tree (parameters, gradients,
        shardings), each as a nested dict of its own leaves only."""
        flat = traverse_util.flatten_dict(tree)
        trainable, frozen = {}, {}
        for keys, leaf in flat.items():
            (frozen if is_frozen(_joined(keys), self.frozen) else trainable)[keys] = leaf
        return traverse_util.unflatten_dict(trainable), traverse_util.unflatten_dict(frozen)

    @staticmethod
    def merge(trainable: dict, frozen: dict) -> dict:
        """The inverse of `split`."""
        return traverse_util.unflatten_dict({**traverse_util.flatten_dict(trainable),
                                             **traverse_util.flatten_dict(frozen)})

    def init(self, params) -> Any:
        """Optimizer state for the trainable leaves of `params` (unboxed)."""
        return self.tx.init(self.split(params)[0])

    def apply(self, params, trainable_grads, opt_state, loss: jax.Array | None = None):
        """(new params, new state) from the gradients of the trainable leaves; frozen
        leaves are passed through untouched (bitwise)."""
        trainable, frozen = self.split(params)
        updates, opt_state = self.tx.update(trainable_grads, opt_state, trainable, loss=loss)
        return self.merge(optax.apply_updates(trainable, updates), frozen), opt_state


def make_optimizer(config, params) -> Optimizer:
    """AdamW for `config.train` with `config.train.frozen` frozen; see the module docstring.
    `params` (boxed or not) is only used to check the freeze patterns. train.grad_clip <= 0
    disables clipping."""
    t = config.train
    patterns = _as_patterns(t.frozen)
    check_patterns(params, patterns)
    clip = optax.clip_by_global_norm(t.grad_clip) if t.grad_clip > 0 else optax.identity()
    adamw = optax.adamw(make_schedule(config), weight_decay=t.weight_decay,
                        mask=lambda tree: _map_paths(lambda path, _: decays(path), tree))
    return Optimizer(skip_nonfinite(optax.chain(clip, adamw)), patterns)


def nonfinite_count(opt_state: NonFiniteState) -> jax.Array:
    """Non-finite (skipped) steps since the start."""
    return opt_state.total


def consecutive_nonfinite(opt_state: NonFiniteState) -> jax.Array:
    """Non-finite steps in a row; the trainer stops at train.max_consecutive_nonfinite."""
    return opt_state.consecutive
