"""Small shared primitives: logically partitioned projections, RMSNorm, activation
constraints, compute dtypes, and layer stacking with named remat policies.

Parameters are always float32 and carry logical axis names (`embed`, `mlp`, `heads`, `kv`,
`state`, `conv`, `mel`, `vocab`, and `layers` for scanned stacks) through
`nn.with_logical_partitioning`; the config's rules table maps them to mesh axes. Outside a
mesh with rules, the annotations and `constrain` are no-ops.

`DTYPES` (compute dtype names) and `REMAT_POLICIES` (remat policy names) own the allowed
values of `model.dtype` and `model.remat` / `model.<part>.remat`. Shape letters: see
`omni_jax.models`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

LogicalAxes = Sequence[str | None]

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def part_remat(model_cfg, part: str) -> str:
    """The remat policy of one part's layer stack ('encoder', 'llm' or 'synth'):
    `model.<part>.remat` when set, else the global `model.remat`."""
    return model_cfg[part].get("remat", "") or model_cfg.remat


def check_choices(**fields: tuple[str, object]) -> None:
    """`model.NAME=(value, known)` pairs: a value outside `known` is a ValueError naming it."""
    for name, (value, known) in fields.items():
        if value not in known:
            raise ValueError(f"model.{name}: {value!r} is not one of {list(known)}")


def check_heads(part: str, width: int, num_heads: int, num_kv_heads: int) -> None:
    """Attention shapes of `model.PART`: heads split the width into even (RoPE) halves and
    key/value heads divide the query heads."""
    if width % num_heads or (width // num_heads) % 2:
        raise ValueError(f"model.{part}.num_heads: {num_heads} heads must split width "
                         f"{width} into heads of even size (RoPE)")
    if num_heads % num_kv_heads:
        raise ValueError(f"model.{part}.num_kv_heads: {num_kv_heads} does not divide "
                         f"{num_heads} heads")


def compute_dtype(name) -> jnp.dtype:
    """'float32' | 'bfloat16' (or a dtype) -> the jnp dtype."""
    if isinstance(name, str):
        if name not in DTYPES:
            raise ValueError(f"unknown dtype {name!r}; known {list(DTYPES)}")
        return DTYPES[name]
    return jnp.dtype(name)


def constrain(x: jax.Array, logical_axes: LogicalAxes) -> jax.Array:
    """Sharding constraint on an activation, by logical axis names."""
    return nn.with_logical_constraint(x, tuple(logical_axes))


def param(module: nn.Module, name: str, init, shape, axes: LogicalAxes) -> jax.Array:
    """A float32 parameter annotated with logical axis names."""
    return module.param(name, nn.with_logical_partitioning(init, tuple(axes)), shape,
                        jnp.float32)


class Dense(nn.Module):
    """y = x . kernel (+ bias), contracting the trailing `axis` dims of x with the leading
    dims of a kernel whose logical axes are `axes` (contracted dims first, then outputs).

    Unlike nn.DenseGeneral, the kernel is created (and annotated) at its full rank, so
    the annotation stays valid under a mesh; the initializer still sees the 2-D
    (fan_in, fan_out) view.
    """

    features: int | tuple[int, ...]
    axes: tuple[str | None, ...]
    axis: int | tuple[int, ...] = -1
    use_bias: bool = False
    dtype: jnp.dtype = jnp.float32
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = (self.features,) if isinstance(self.features, int) else tuple(self.features)
        axis = (self.axis,) if isinstance(self.axis, int) else tuple(self.axis)
        axis = tuple(a % x.ndim for a in axis)
        in_shape = tuple(x.shape[a] for a in axis)

        def init(key, shape, dtype):
            flat = (math.prod(in_shape), math.prod(features))
            return self.kernel_init(key, flat, dtype).reshape(shape)

        kernel = param(self, "kernel", init, in_shape + features, self.axes)
        y = jax.lax.dot_general(x.astype(self.dtype), kernel.astype(self.dtype),
                                ((axis, tuple(range(len(axis)))), ((), ())))
        if self.use_bias:
            bias = param(self, "bias", nn.initializers.zeros, features,
                         self.axes[len(axis):])
            y = y + bias.astype(self.dtype)
        return y


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last axis (D), computed in float32; `eps` is added to
    the mean square (the LLM uses 1e-5, the encoder and synthesizer 1e-6)."""

    dtype: jnp.dtype = jnp.float32
    eps: float = 1e-6
    axis_name: str = "embed"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = param(self, "scale", nn.initializers.ones, (x.shape[-1],), (self.axis_name,))
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (x32 * scale).astype(self.dtype)


def stack_layers(layer_cls: type[nn.Module], num_layers: int, remat: str = "none",
                 num_broadcast_args: int = 0) -> type[nn.Module]:
    """`layer_cls(carry, xs, *broadcast) -> (carry, ys)` scanned over a `layers` axis.

    Params (and `xs`/`ys`, e.g. per-layer streaming states) are stacked along a leading
    axis Y of size `num_layers`; the `num_broadcast_args` extra arguments are shared by
    every layer. `remat` names the rematerialization policy applied to each layer.
    """
    if remat not in REMAT_POLICIES:
        raise ValueError(f"unknown remat policy {remat!r}; known {list(REMAT_POLICIES)}")
    if remat != "none":
        # prevent_cse=False is safe (and faster) inside a scan.
        layer_cls = nn.remat(layer_cls, policy=REMAT_POLICIES[remat], prevent_cse=False)
    return nn.scan(layer_cls, variable_axes={"params": 0}, split_rngs={"params": True},
                   in_axes=(0,) + (nn.broadcast,) * num_broadcast_args, length=num_layers,
                   metadata_params={nn.PARTITION_NAME: "layers"})


def stacked(tree, num_layers: int):
    """Zeros shaped like `tree` with a leading `layers` axis Y of size `num_layers`: the
    per-layer states of a stack."""
    return jax.tree.map(lambda x: jnp.zeros((num_layers,) + x.shape, x.dtype), tree)
