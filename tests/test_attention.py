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
    """Chunks read the earlier keys (read only) and return their own: written by the
    caller, they give the parallel output."""
    layer = attention.SelfAttention(num_heads=4, num_kv_heads=2, head_dim=8, rope_theta=1e4)
    b, t = 2, 7
    x_BxTxD = normal(b, t, 32)
    positions_BxT = np.broadcast_to(np.arange(t) + 3, (b, t))
    mask_1xTxT = attention.causal_mask(t)[None]
    params = jax.jit(layer.init)(KEY, x_BxTxD, positions_BxT, mask_1xTxT)
    expected, _ = jax.jit(layer.apply)(params, x_BxTxD, positions_BxT, mask_1xTxT)

    @jax.jit
    def step(x_BxLxD, positions_BxL, cached):
        written, length = cached["k"].shape[1], x_BxLxD.shape[1]
        mask_1xLxC = jnp.concatenate([jnp.ones((1, length, written), bool),
                                     attention.causal_mask(length)[None]], axis=-1)
        return layer.apply(params, x_BxLxD, positions_BxL, mask_1xLxC, cached)

    cached = empty_cache(b, 0, 2, 8)
    outputs, start = [], 0
    for length in (2, 1, 4):  # chunks of different lengths
        chunk = slice(start, start + length)
        y, new = step(x_BxTxD[:, chunk], positions_BxT[:, chunk], cached)
        assert jax.tree.map(jnp.shape, new) == {"k": (b, length, 2, 8), "v": (b, length, 2, 8)}
        cached = {n: np.concatenate([cached[n], new[n]], axis=1) for n in ("k", "v")}
        outputs.append(y)
        start += length
    np.testing.assert_allclose(np.concatenate(outputs, axis=1), expected, atol=1e-5)


def test_moved_prompt_reads_as_keys_at_shifted_positions():
    """The prompt-shifted queries over the first keys equal those keys rotated forward by
    the shift (RoPE is linear): how a sliding cache moves its prompt without rewriting it."""
    head_dim, shift = 8, 37
    q_1x1x2xQ, k_1x3x1xQ, v_1x3x1xQ = normal(1, 1, 2, head_dim), normal(1, 3, 1, head_dim), \
        normal(1, 3, 1, head_dim)
    q_pos, k_pos = np.array([[50]]), np.array([[0, 1, 45]])  # two prompt keys, one late
    q_rot = attention.rope(q_1x1x2xQ, q_pos, 1e4)
    k_rot = attention.rope(k_1x3x1xQ, k_pos, 1e4)
    mask = np.ones((1, 1, 3), bool)
    moved = attention.attend(q_rot, k_rot, v_1x3x1xQ, mask,
                             attention.rope(q_1x1x2xQ, q_pos - shift, 1e4), num_prompt=2)
    k_moved = attention.rope(k_1x3x1xQ, k_pos + np.array([[shift, shift, 0]]), 1e4)
    np.testing.assert_allclose(moved, attention.attend(q_rot, k_moved, v_1x3x1xQ, mask),
                               atol=1e-5)
    assert not np.allclose(moved, attention.attend(q_rot, k_rot, v_1x3x1xQ, mask), atol=1e-3)


def test_cached_cross_attention_matches_parallel():
    layer = attention.CrossAttention(num_heads=4, num_kv_heads=1, head_dim=8)
    b, blocks, per_block = 2, 3, 2
    x_BxTxD, memory_BxUxE = normal(b, blocks * per_block, 32), normal(b, blocks, 12)
    block_T = np.arange(blocks * per_block) // per_block
    mask_1xTxU = (np.arange(blocks)[None, :] <= block_T[:, None])[None]
    params = jax.jit(layer.init)(KEY, x_BxTxD, memory_BxUxE, mask_1xTxU)
    expected, _ = jax.jit(layer.apply)(params, x_BxTxD, memory_BxUxE, mask_1xTxU)
    apply = jax.jit(layer.apply)

    cached = empty_cache(b, 0, 1, 8)
    outputs = []
    for i in range(blocks):  # the memory grows by one entry per block
        mask_1x1xU = np.ones((1, 1, i + 1), bool)
        y, new = apply(params, x_BxTxD[:, i * per_block:(i + 1) * per_block],
                       memory_BxUxE[:, i:i + 1], mask_1x1xU, cached)
        cached = {n: np.concatenate([cached[n], new[n]], axis=1) for n in ("k", "v")}
        outputs.append(y)
    np.testing.assert_allclose(np.concatenate(outputs, axis=1), expected, atol=1e-5)
    # Without new memory the cached keys are read as they are.
    y, none = apply(params, x_BxTxD[:, -1:], None, mask_1x1xU, cached)
    np.testing.assert_allclose(y, expected[:, -1:], atol=1e-5)
    assert none is None
