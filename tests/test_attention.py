"""Attention primitives: masks, RoPE, grouped-query attention, cached and cross forms."""

import jax
import jax.numpy as jnp
import numpy as np

from omni_jax.models import attention

RNG = np.random.default_rng(0)  # numpy inputs: no per-op XLA compiles
KEY = jax.random.key(0, impl="rbg")  # compiles far faster than threefry on CPU


def normal(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def empty_cache(*shape_BxCxGxQ):
    return {"k": np.zeros(shape_BxCxGxQ, np.float32), "v": np.zeros(shape_BxCxGxQ, np.float32)}


def test_masks():
    np.testing.assert_array_equal(attention.causal_mask(3), np.tril(np.ones((3, 3), bool)))
    np.testing.assert_array_equal(attention.block_causal_mask(2, 2), [[1, 1, 0, 0],
                                                                      [1, 1, 0, 0],
                                                                      [1, 1, 1, 1],
                                                                      [1, 1, 1, 1]])
    # Two new positions written at slots 2 and 3 of a 5-slot cache.
    np.testing.assert_array_equal(attention.cached_mask(jnp.int32(2), 2, 5)[0],
                                  [[1, 1, 1, 0, 0],
                                   [1, 1, 1, 1, 0]])


def test_rope_depends_only_on_offset():
    q_1x1x1xQ, k_1x1x1xQ = normal(2, 1, 1, 1, 16)

    @jax.jit
    def score(m, n):
        rq = attention.rope(q_1x1x1xQ, jnp.array([[m]]), 10000.0)
        rk = attention.rope(k_1x1x1xQ, jnp.array([[n]]), 10000.0)
        return jnp.sum(rq * rk)

    for m, n in [(0, 0), (5, 2), (3, 9), (100, 37)]:
        for shift in (1, 17, 1000):
            np.testing.assert_allclose(score(m + shift, n + shift), score(m, n), rtol=1e-4,
                                       atol=1e-4)
    assert abs(score(5, 2) - score(5, 3)) > 1e-3  # it does depend on the offset
    rotated = attention.rope(q_1x1x1xQ, jnp.array([[7]]), 10000.0)
    np.testing.assert_allclose(jnp.linalg.norm(rotated), jnp.linalg.norm(q_1x1x1xQ), rtol=1e-5)


def test_grouped_query_attention_matches_repeated_heads():
    b, t, s, h, g, k = 2, 5, 7, 6, 2, 8
    q_BxTxHxQ, (k_BxCxGxQ, v_BxCxGxQ) = normal(b, t, h, k), normal(2, b, s, g, k)
    mask_BxTxC = RNG.random((b, t, s)) < 0.6
    mask_BxTxC[:, :, 0] = True
    out = jax.jit(attention.attend)(q_BxTxHxQ, k_BxCxGxQ, v_BxCxGxQ, mask_BxTxC)

    # Reference: every query head h reads kv head h // (H / G), keys repeated explicitly.
    k_BxCxHxQ = np.repeat(np.asarray(k_BxCxGxQ), h // g, axis=2)
    v_BxCxHxQ = np.repeat(np.asarray(v_BxCxGxQ), h // g, axis=2)
    logits = np.einsum("bthk,bshk->bhts", q_BxTxHxQ, k_BxCxHxQ) / np.sqrt(k)
    logits = np.where(mask_BxTxC[:, None], logits, -np.inf)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    expected = np.einsum("bhts,bshk->bthk", probs, v_BxCxHxQ)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_query_without_visible_keys_gets_zeros():
    q, k, v = normal(3, 1, 2, 2, 4)
    mask = np.array([[[False, False], [True, False]]])
    out = jax.jit(attention.attend)(q, k, v, mask)
    np.testing.assert_array_equal(out[:, 0], 0.0)
    np.testing.assert_allclose(out[0, 1], v[0, 0], atol=1e-6)  # one visible key: its value


def test_cached_self_attention_matches_parallel():
    layer = attention.SelfAttention(num_heads=4, num_kv_heads=2, head_dim=8, rope_theta=1e4)
    b, t, slots = 2, 7, 10
    x_BxTxD = normal(b, t, 32)
    positions_BxT = np.broadcast_to(np.arange(t) + 3, (b, t))
    mask_1xTxT = attention.causal_mask(t)[None]
    params = jax.jit(layer.init)(KEY, x_BxTxD, positions_BxT, mask_1xTxT)
    expected, no_cache = jax.jit(layer.apply)(params, x_BxTxD, positions_BxT, mask_1xTxT)
    assert no_cache is None

    @jax.jit
    def step(x_BxLxD, positions_BxL, cache, index):
        mask_1xLxC = attention.cached_mask(index, x_BxLxD.shape[1], slots)
        return layer.apply(params, x_BxLxD, positions_BxL, mask_1xLxC, cache, index)

    cache = empty_cache(b, slots, 2, 8)
    outputs, start = [], 0
    for length in (2, 1, 4):  # chunks of different lengths, one cache
        chunk = slice(start, start + length)
        y, cache = step(x_BxTxD[:, chunk], positions_BxT[:, chunk], cache, start)
        assert jax.tree.map(jnp.shape, cache) == {"k": (b, slots, 2, 8), "v": (b, slots, 2, 8)}
        outputs.append(y)
        start += length
    np.testing.assert_allclose(np.concatenate(outputs, axis=1), expected, atol=1e-5)


def test_cached_cross_attention_matches_parallel():
    layer = attention.CrossAttention(num_heads=4, num_kv_heads=1, head_dim=8)
    b, blocks, per_block, slots = 2, 3, 2, 4
    x_BxTxD, memory_BxUxE = normal(b, blocks * per_block, 32), normal(b, blocks, 12)
    block_T = np.arange(blocks * per_block) // per_block
    mask_1xTxU = (np.arange(blocks)[None, :] <= block_T[:, None])[None]
    params = jax.jit(layer.init)(KEY, x_BxTxD, memory_BxUxE, mask_1xTxU)
    expected, _ = jax.jit(layer.apply)(params, x_BxTxD, memory_BxUxE, mask_1xTxU)
    apply = jax.jit(layer.apply)

    cache = empty_cache(b, slots, 1, 8)
    outputs = []
    for i in range(blocks):  # the memory grows by one entry per block
        mask_1x1xU = (np.arange(slots) <= i)[None, None]
        y, cache = apply(params, x_BxTxD[:, i * per_block:(i + 1) * per_block],
                         memory_BxUxE[:, i:i + 1], mask_1x1xU, cache, i)
        outputs.append(y)
    np.testing.assert_allclose(np.concatenate(outputs, axis=1), expected, atol=1e-5)
    # Without new memory the cached keys are reused as they are.
    y, same = apply(params, x_BxTxD[:, -1:], None, mask_1x1xU, cache, blocks)
    np.testing.assert_allclose(y, expected[:, -1:], atol=1e-5)
    jax.tree.map(np.testing.assert_array_equal, same, cache)
