"""Low-rank adapters (LoRA, arXiv 2106.09685) on the LLM's dense projections.

`LoraDense` is the projection every attention and MLP matrix of the LLM uses. With
`rank > 0` it adds `scale * (x @ lora_a) @ lora_b`, `scale = alpha / rank`, where `lora_a`
starts He-normal and `lora_b` starts at zero: a fresh adapter leaves the base model's
output bit-for-bit unchanged. Adapter parameters are named `lora_a` / `lora_b`, so a trainer
selects them (or freezes everything else) with a path regex on `lora`. In the shapes below
A is the rank (letters: `omni_jax.models`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from omni_jax.models import layers

TARGETS = ("q", "k", "v", "o", "gate", "up", "down")


@dataclasses.dataclass(frozen=True)
class LoraSpec:
    """Which projections get adapters, and their rank and scaling numerator."""

    rank: int = 0
    alpha: float = 1.0
    targets: tuple[str, ...] = ()

    def __post_init__(self):
        unknown = sorted(set(self.targets) - set(TARGETS))
        if unknown:
            raise ValueError(f"unknown LoRA targets {unknown}; known {list(TARGETS)}")
        if self.rank < 0:
            raise ValueError(f"LoRA rank must be >= 0, got {self.rank}")

    @classmethod
    def from_config(cls, llm_cfg) -> LoraSpec:
        return cls(int(llm_cfg.lora_rank), float(llm_cfg.lora_alpha),
                   tuple(llm_cfg.lora_targets))

    def rank_for(self, target: str) -> int:
        return self.rank if target in self.targets else 0


def _contract(x: jax.Array, w: jax.Array, num_dims: int) -> jax.Array:
    """Contracts the last `num_dims` axes of `x` with the first `num_dims` axes of `w`."""
    return jnp.tensordot(x, w, axes=num_dims)


class LoraDense(nn.Module):
    """A bias-free projection of the last `in_dims` axes onto `features`, plus a LoRA delta.

    `axes` names the kernel's logical axes: the contracted input axes, then the outputs.
    Parameters are float32; the matmuls run in `dtype`.
    """

    features: Sequence[int]
    axes: Sequence[str | None]
    in_dims: int = 1
    rank: int = 0
    alpha: float = 1.0
    dtype: jnp.dtype = jnp.float32
    use_bias: bool = False  # a bias on the base projection (Qwen2's q/k/v), axes = outputs

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_shape = x.shape[-self.in_dims:]
        features = tuple(self.features)
        in_axes, out_axes = tuple(self.axes[:self.in_dims]), tuple(self.axes[self.in_dims:])
        fan_in = tuple(range(self.in_dims))
        kernel_init = nn.initializers.lecun_normal(
            in_axis=fan_in, out_axis=tuple(range(self.in_dims, self.in_dims + len(features))))
        kernel = layers.param(self, "kernel", kernel_init, in_shape + features,
                              in_axes + out_axes)
        x = x.astype(self.dtype)
        y = _contract(x, kernel.astype(self.dtype), self.in_dims)
        if self.use_bias:
            bias = layers.param(self, "bias", nn.initializers.zeros, features, out_axes)
            y = y + bias.astype(self.dtype)
        if self.rank == 0:
            return y
        # The rank axis A is tiny: it is left unsharded (logical name None).
        a_init = nn.initializers.he_normal(in_axis=fan_in, out_axis=-1)
        lora_a = layers.param(self, "lora_a", a_init, in_shape + (self.rank,),
                              in_axes + (None,))  # (inputs..., A)
        lora_b = layers.param(self, "lora_b", nn.initializers.zeros,
                              (self.rank,) + features, (None,) + out_axes)  # (A, outputs...)
        delta = _contract(_contract(x, lora_a.astype(self.dtype), self.in_dims),
                          lora_b.astype(self.dtype), 1)
        return y + delta * jnp.asarray(self.alpha / self.rank, self.dtype)
