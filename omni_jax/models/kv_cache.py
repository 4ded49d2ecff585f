"""The layout of a streaming key/value cache: a pinned prompt, then a ring (a sliding window).

A cache of C = `prompt + window` slots per row. Positions 0..prompt-1 (the text prompt)
stay in slots 0..prompt-1 for good; every later position p goes to ring slot
`prompt + (p - prompt) % window`, overwriting the position `window` before it. A step
appends a chunk of L positions starting at the row's `index`: its queries read the cache
as it was before the step (read-only, every layer) plus the chunk itself (causally), and
the chunk's keys and values are written once afterwards. So a chunk starting at `index`
sees the prompt and the positions index - window .. index + L - 1, and the cache never
grows: a stream runs forever in bounded memory.

Positions. Keys are stored rotated (RoPE) at their own positions, so between a query and a
window key only the true offset matters, at most `window + L - 1`: what training saw when
`window` fits the training sequence. The prompt would drift ever further behind; instead
it is read as if it stood right before the oldest window position, i.e. the query is
rotated back by `prompt_shift` = max(0, index - window - prompt) for the prompt's keys
(rotation is linear: q(p - s) . k(j) = q(p) . k(j + s)). Until the ring first wraps the
shift is 0 and the cache is exactly the plain growing cache.

Every row keeps its own `index` (B int32): rows are independent streams that may start at
different times (serving slots join and leave). `parallel` gives the same visibility and
shifts for a whole sequence at once (the reference a windowed stream must equal).

The written prefix. Until a row wraps, slots at or past its index hold nothing; a step may
read only the first `attend_slots` slots (`attend_bucket`) so that its cost follows what
is written, not the capacity. Shape letters: `omni_jax.models`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

MIN_BUCKET = 64  # the smallest prefix a step reads (slots); buckets double from here


@dataclasses.dataclass(frozen=True)
class RingLayout:
    """`prompt` pinned slots and a ring of `window` slots after them."""

    prompt: int
    window: int

    def __post_init__(self):
        if self.prompt < 0 or self.window < 1:
            raise ValueError(f"a cache needs prompt >= 0 and window >= 1 slots, got "
                             f"prompt={self.prompt}, window={self.window}")

    @property
    def capacity(self) -> int:
        return self.prompt + self.window

    def slots(self, positions_BxL: jax.Array) -> jax.Array:
        """The slot each position is written to."""
        ring_BxL = self.prompt + (positions_BxL - self.prompt) % self.window
        return jnp.where(positions_BxL < self.prompt, positions_BxL, ring_BxL)

    def slot_positions(self, index_B: jax.Array, num_slots: int | None = None) -> jax.Array:
        """BxC: the position held by each of the first `num_slots` slots of every row
        before a step at `index_B`, -1 where a slot holds nothing yet."""
        slot_C = jnp.arange(self.capacity if num_slots is None else num_slots)
        last_Bx1 = index_B[:, None] - 1
        ring_BxC = last_Bx1 - (last_Bx1 - slot_C[None]) % self.window
        pos_BxC = jnp.where(slot_C[None] < self.prompt, slot_C[None], ring_BxC)
        return jnp.where((pos_BxC >= 0) & (pos_BxC < index_B[:, None])
                         & ((slot_C[None] < self.prompt) | (pos_BxC >= self.prompt)),
                         pos_BxC, -1)

    def visible(self, key_pos_BxC: jax.Array, index_B: jax.Array) -> jax.Array:
        """Bx1xC: which cached keys a chunk starting at `index_B` reads (every query of the
        chunk reads the same cached keys; the chunk's own keys are causal)."""
        seen_BxC = (key_pos_BxC >= 0) & ((key_pos_BxC < self.prompt)
                                        | (key_pos_BxC >= index_B[:, None] - self.window))
        return seen_BxC[:, None]

    def prompt_shift(self, index_B: jax.Array) -> jax.Array:
        """B: how far the prompt's keys are moved forward for a chunk at `index_B`."""
        return jnp.maximum(0, index_B - self.window - self.prompt)

    def parallel(self, length: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        """(mask TxT, prompt shift T) of a whole sequence streamed as the prompt (one chunk)
        and then chunks of `chunk` positions: what `step` computes, position by position."""
        pos_T = np.arange(length)
        start_T = np.where(pos_T < self.prompt, 0,
                           self.prompt + (pos_T - self.prompt) // chunk * chunk)
        same_chunk_TxT = start_T[:, None] == start_T[None, :]
        cached_TxT = (pos_T[None, :] < start_T[:, None]) & (
            (pos_T[None, :] < self.prompt) | (pos_T[None, :] >= start_T[:, None] - self.window))
        mask_TxT = (same_chunk_TxT & (pos_T[None, :] <= pos_T[:, None])) | cached_TxT
        return mask_TxT, np.maximum(0, start_T - self.window - self.prompt)


def attend_bucket(written: int, capacity: int) -> int:
    """The prefix of slots a step reads when at most `written` slots hold entries: the
    smallest MIN_BUCKET * 2^i >= written, capped at the capacity (a handful of shapes, so a
    handful of compiles over a stream's life)."""
    if written >= capacity:
        return capacity
    bucket = MIN_BUCKET
    while bucket < written:
        bucket *= 2
    return min(bucket, capacity)


def write_rows(cache_YxBxCxGxQ: jax.Array, new_YxBxLxGxQ: jax.Array,
               slots_BxL: jax.Array) -> jax.Array:
    """Writes each row's L new entries at its own slots (one scatter; in place when the
    cache is donated)."""
    rows_Bx1 = jnp.arange(slots_BxL.shape[0])[:, None]
    return cache_YxBxCxGxQ.at[:, rows_Bx1, slots_BxL].set(
        new_YxBxLxGxQ.astype(cache_YxBxCxGxQ.dtype), mode="promise_in_bounds")
