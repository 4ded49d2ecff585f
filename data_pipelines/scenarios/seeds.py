"""Random generators by domain: one function, `rng(seed, domain, *ids)`, for every stream.

numpy's `SeedSequence` pads a short key with zeros, so `default_rng([0, 0])` is
`default_rng([0, 0, 0])`, and a value of 2**32 or more becomes two words: keys of different
lengths (a dialogue `[seed, split, index]`, a render `[seed, 1, record, epoch]`, a suite
`[seed, draw]`) can name the same stream. Here every key has the same length: the seed,
a fixed id of its DOMAIN, then exactly NUM_IDS ids (a domain takes a fixed number of them,
`DOMAINS[name][1]`, the rest are zeros), each written as two 32-bit words. Keys of two
domains differ in the domain word, two keys of one domain in their ids, so no two calls
with different arguments share a stream.

  rng(seed, "train", index)                      dialogue `index` of the train split
  rng(seed, "eval", index)                       dialogue `index` of the eval split
  rng(seed, "render", record, epoch)             rendering and augmenting one record
  rng(seed, "suite", suite_index, draw)          one draw of an evaluation suite's cases
  rng(seed, "inspect", scenario_id, i)           data_pipelines.inspect's examples

A new use adds a domain here with an id of its own. An id, once given, never changes: it
would regenerate every stream of that domain.
"""

from __future__ import annotations

import numpy as np

# name -> (fixed domain id, number of ids a key of the domain takes)
DOMAINS: dict[str, tuple[int, int]] = {
    "train": (1, 1),
    "eval": (2, 1),
    "render": (3, 2),
    "suite": (4, 2),
    "inspect": (5, 2),
}
NUM_IDS = 3  # ids per key after the seed and the domain (a domain's unused ones are 0)
_WORD = 2 ** 32
_LIMIT = 2 ** 64


def key(seed: int, domain: str, *ids: int) -> tuple[int, ...]:
    """The fixed-length entropy of `rng(seed, domain, *ids)`: 2 * (2 + NUM_IDS) words."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown rng domain {domain!r}; known: {sorted(DOMAINS)}")
    domain_id, arity = DOMAINS[domain]
    if len(ids) != arity:
        raise ValueError(f"rng domain {domain!r} takes {arity} ids, got {len(ids)}: {ids}")
    values = (seed, domain_id, *ids) + (0,) * (NUM_IDS - arity)
    words = []
    for value in values:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"rng keys are integers, got {value!r} in {values}")
        value = int(value)
        if not 0 <= value < _LIMIT:
            raise ValueError(f"rng key entries must be in [0, 2**64), got {value}")
        words += [value % _WORD, value // _WORD]
    return tuple(words)


def rng(seed: int, domain: str, *ids: int) -> np.random.Generator:
    """The generator of (seed, domain, ids): distinct for any two distinct argument lists."""
    return np.random.default_rng(np.array(key(seed, domain, *ids), dtype=np.uint32))
