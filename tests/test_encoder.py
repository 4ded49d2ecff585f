"""Streaming encoders: Mamba vs a naive recurrence, streaming == parallel, causality,
constant state shapes, dtypes, remat policies and a paper-size parameter count."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from omni_jax.audio.frontend import LogMelFrontend
from omni_jax.models.encoder import StreamingEncoder
from omni_jax.models.mamba import MambaLayer

B, M, K = 2, 80, 5  # batch, mel bins, blocks
TINY = dict(num_layers=2, width=32, num_heads=4, state_size=8, n_mels=M)


def _mel(blocks=K, seed=0):
    return 3.0 * jax.random.normal(jax.random.key(seed), (B, blocks * 8, M))


@functools.cache
def _params(kind):
    enc = StreamingEncoder(kind=kind, **TINY)
    return nn.unbox(jax.jit(enc.init)(jax.random.key(1), _mel(1)))


def _encoder_and_params(kind, **fields):
    """Params do not depend on dtype, remat or the cache length: one init per kind."""
    return StreamingEncoder(kind=kind, **{**TINY, **fields}), _params(kind)


def _stream(enc, params, mel_BxFxM):
    """Scans `step` over blocks; returns (emb_BxKxD, the state after every block)."""
    blocks_KxBxFxM = mel_BxFxM.reshape(B, -1, enc.frames_per_block, M).swapaxes(0, 1)

    def step(state, mel_BxFxM):
        emb_Bx1xD, state = enc.apply(params, mel_BxFxM, state, method="step")
        return state, (emb_Bx1xD[:, 0], state)

    _, (emb_KxBxD, states) = jax.jit(lambda m: jax.lax.scan(step, enc.init_state(B), m))(
        blocks_KxBxFxM)
    return emb_KxBxD.swapaxes(0, 1), states


def _naive_mamba(p, h_BxLxD, eps=1e-6):
    """Mamba-1 written as the textbook per-step recurrence, in float64 numpy."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    h = np.asarray(h_BxLxD, np.float64)
    x = h / np.sqrt((h ** 2).mean(-1, keepdims=True) + eps) * p["norm"]["scale"]
    x, z = np.split(x @ p["in_proj"]["kernel"], 2, axis=-1)
    kern, length = p["conv_kernel"], h.shape[1]
    x_pad = np.pad(x, ((0, 0), (kern.shape[0] - 1, 0), (0, 0)))
    x = sum(x_pad[:, k:k + length] * kern[k] for k in range(kern.shape[0])) + p["conv_bias"]
    x = x / (1 + np.exp(-x))
    rank, n = p["dt_proj"]["kernel"].shape[0], p["A_log"].shape[1]
    dbc = x @ p["x_proj"]["kernel"]
    dt = np.log1p(np.exp(dbc[..., :rank] @ p["dt_proj"]["kernel"] + p["dt_bias"]))
    b_mat, c_mat = dbc[..., rank:rank + n], dbc[..., rank + n:]
    a = -np.exp(p["A_log"])
    ssm, ys = np.zeros((h.shape[0],) + a.shape), []
    for t in range(length):
        ssm = (np.exp(dt[:, t, :, None] * a) * ssm
               + (dt[:, t] * x[:, t])[..., None] * b_mat[:, t, None, :])
        ys.append(np.einsum("bin,bn->bi", ssm, c_mat[:, t]) + p["D"] * x[:, t])
    y = np.stack(ys, 1) * z / (1 + np.exp(-z))
    return h + y @ p["out_proj"]["kernel"]


@pytest.mark.parametrize("scan,chunk", [("associative", 0), ("sequential", 0),
                                        ("associative", 5), ("sequential", 4)])
def test_mamba_layer_matches_naive_recurrence_and_chunks(scan, chunk):
    # chunk 5 and 4 over 12 frames: a padded last chunk, then streaming calls shorter than
    # the chunk.
    layer = MambaLayer(width=16, state_size=4, conv_kernel=4, expand=2, scan=scan,
                       scan_chunk=chunk)
    h_BxLxD = jax.random.normal(jax.random.key(0), (B, 12, 16))
    params = nn.unbox(jax.jit(layer.init)(jax.random.key(1), h_BxLxD, layer.init_state(B)))
    apply = jax.jit(layer.apply)
    whole, _ = apply(params, h_BxLxD, layer.init_state(B))
    np.testing.assert_allclose(whole, _naive_mamba(params["params"], h_BxLxD), atol=1e-5)

    state, chunks = layer.init_state(B), []
    for start, stop in [(0, 5), (5, 6), (6, 12)]:  # uneven chunks, one of a single frame
        out, state = apply(params, h_BxLxD[:, start:stop], state)
        chunks.append(out)
    np.testing.assert_allclose(jnp.concatenate(chunks, 1), whole, atol=1e-5)


def test_chunked_scan_equals_unchunked_in_values_and_gradients():
    """The chunked, rematerialised scan == the whole-sequence forms (states, outputs and
    the gradients of every input), for both in-chunk forms and a padded last chunk."""
    from omni_jax.models import mamba

    b, length, inner, z = 2, 23, 6, 3
    keys = jax.random.split(jax.random.key(3), 6)
    dt = jax.nn.softplus(jax.random.normal(keys[0], (b, length, inner))) * 0.5
    a = -jnp.exp(jax.random.normal(keys[1], (inner, z)))
    bm, cm = (jax.random.normal(k, (b, length, z)) for k in keys[2:4])
    x = jax.random.normal(keys[4], (b, length, inner))
    ssm0 = jax.random.normal(keys[5], (b, inner, z))

    def reference(dt, a, bm, cm, x, ssm0):  # the unchunked associative form, as before
        decay = jnp.exp(dt[..., None] * a)
        drive = (dt * x)[..., None] * bm[:, :, None, :]
        states = mamba.selective_scan(decay, drive, ssm0, "associative")
        return jnp.einsum("bliz,blz->bli", states, cm), states[:, -1]

    def loss(fn):
        def value(*args):
            y, last = fn(*args)
            return jnp.sum(jnp.sin(y)) + jnp.sum(last ** 2)
        return jax.jit(jax.value_and_grad(value, argnums=tuple(range(6))))

    args = (dt, a, bm, cm, x, ssm0)
    ref_value, ref_grads = loss(reference)(*args)
    ref_y, ref_last = reference(*args)
    for impl in ("associative", "sequential"):
        for chunk in (0, 1, 8, 23, 64):
            fn = functools.partial(mamba.chunked_selective_scan, chunk=chunk, impl=impl)
            y, last = jax.jit(fn)(*args)
            np.testing.assert_allclose(y, ref_y, atol=1e-5, err_msg=f"{impl} {chunk}")
            np.testing.assert_allclose(last, ref_last, atol=1e-5, err_msg=f"{impl} {chunk}")
            value, grads = loss(lambda *a, fn=fn: fn(*a))(*args)
            np.testing.assert_allclose(value, ref_value, rtol=1e-5)
            for g, ref in zip(grads, ref_grads):
                np.testing.assert_allclose(g, ref, rtol=1e-4, atol=1e-4,
                                           err_msg=f"{impl} {chunk}")


def test_auto_scan_picks_the_platform_form():
    from omni_jax.models import mamba

    expected = "sequential" if jax.default_backend() == "cpu" else "associative"
    assert mamba.resolve_scan("auto") == expected
    assert mamba.resolve_scan("associative") == "associative"
    with pytest.raises(ValueError, match="model.encoder.scan"):
        mamba.resolve_scan("parallel")


@pytest.mark.parametrize("kind", ["mamba", "transformer"])
def test_streaming_equals_parallel_with_constant_state(kind):
    enc, params = _encoder_and_params(kind)
    mel = _mel()
    parallel_BxKxD = jax.jit(enc.apply)(params, mel)
    assert parallel_BxKxD.shape == (B, K, TINY["width"])
    streamed_BxKxD, states = _stream(enc, params, mel)
    np.testing.assert_allclose(streamed_BxKxD, parallel_BxKxD, atol=1e-4)
    # lax.scan already forces a fixed carry; also check it is the init_state layout.
    init = jax.tree.map(lambda x: (x.shape, x.dtype), enc.init_state(B))
    after = jax.tree.map(lambda x: (x.shape[1:], x.dtype), states)
    assert after == init
    np.testing.assert_array_equal(states["pos"],  # per row
                                  np.broadcast_to(2 * np.arange(1, K + 1)[:, None], (K, B)))


def test_audio_to_embeddings_streams():
    """Frontend + encoder stepped per 80 ms block of audio equals the whole-utterance path."""
    frontend, (enc, params) = LogMelFrontend(), _encoder_and_params("mamba")
    audio_BxT = 0.1 * jax.random.normal(jax.random.key(2), (B, K * 1280))

    def step(carry, audio_BxS):
        mel_BxFxM, overlap = frontend.step(audio_BxS, carry[0])
        emb_Bx1xD, enc_state = enc.apply(params, mel_BxFxM, carry[1], method="step")
        return (overlap, enc_state), emb_Bx1xD[:, 0]

    carry = (frontend.init_state(B), enc.init_state(B))
    _, emb_KxBxD = jax.jit(lambda a: jax.lax.scan(step, carry, a))(
        audio_BxT.reshape(B, K, 1280).swapaxes(0, 1))
    whole_BxKxD = jax.jit(lambda a: enc.apply(params, frontend(a)))(audio_BxT)
    np.testing.assert_allclose(emb_KxBxD.swapaxes(0, 1), whole_BxKxD, atol=1e-4)


def test_transformer_ring_cache_beyond_window():
    """With a window shorter than the stream, the ring buffer wraps and still matches."""
    enc, params = _encoder_and_params("transformer", max_blocks=2)
    mel = _mel()
    streamed_BxKxD, states = _stream(enc, params, mel)
    apply = jax.jit(enc.apply)
    np.testing.assert_allclose(streamed_BxKxD, apply(params, mel), atol=1e-4)
    assert states["layers"]["k"].shape[3] == 2 * 2  # slots = max_blocks * stack
    # Each of the 2 layers looks back one more block and the convs one more frame: block 4
    # depends on blocks 1..4 only, never on block 0 (a Mamba would remember it).
    changed = mel.at[:, :8].add(1.0)
    np.testing.assert_array_equal(apply(params, changed)[:, 4:], apply(params, mel)[:, 4:])


@pytest.mark.parametrize("kind", ["mamba", "transformer"])
def test_causal_at_block_granularity(kind):
    enc, params = _encoder_and_params(kind)
    apply, mel = jax.jit(enc.apply), _mel()
    base = apply(params, mel)
    for block in range(1, K):
        changed = apply(params, mel.at[:, 8 * block:].add(1.0))
        np.testing.assert_array_equal(changed[:, :block], base[:, :block])
        assert np.abs(changed[:, block] - base[:, block]).max() > 1e-3


@pytest.mark.parametrize("kind", ["mamba", "transformer"])
def test_bfloat16_compute_float32_params(kind):
    enc, params = _encoder_and_params(kind, dtype="bfloat16")
    shapes = jax.eval_shape(enc.init, jax.random.key(0), _mel(1))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(shapes))
    emb = jax.jit(enc.apply)(params, _mel())
    assert emb.dtype == jnp.bfloat16 and np.isfinite(np.asarray(emb, np.float32)).all()
    streamed, _ = _stream(enc, params, _mel())
    np.testing.assert_allclose(np.asarray(streamed, np.float32), np.asarray(emb, np.float32),
                               atol=0.1)


@pytest.mark.parametrize("kind", ["mamba", "transformer"])
def test_remat_policies_agree(kind):
    mel = _mel(2)
    _, params = _encoder_and_params(kind)

    def value_and_grad(remat, p):
        enc = StreamingEncoder(kind=kind, remat=remat, **TINY)
        return jax.value_and_grad(lambda p: jnp.sum(enc.apply(p, mel) ** 2))(p)

    # One jit for all policies: each is traced with its own checkpoint policy, and one
    # compilation is much cheaper on CPU than four.
    (ref_value, ref_grads), *others = jax.jit(
        lambda p: [value_and_grad(r, p) for r in ("none", "full", "dots", "dots_no_batch")]
    )(params)
    for value, grads in others:
        np.testing.assert_allclose(value, ref_value, rtol=1e-5)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                     grads, ref_grads)


def test_from_config_and_paper_size_param_count():
    config = default.get_config()
    enc = StreamingEncoder.from_config(config)
    assert (enc.width, enc.frames_per_block, enc.n_mels) == (128, 8, 80)
    big = StreamingEncoder.from_config(config, num_layers=32, width=2048, state_size=16,
                                       expand=2)
    shapes = jax.eval_shape(big.init, jax.random.key(0), jnp.zeros((1, 8, 80)))
    count = sum(x.size for x in jax.tree.leaves(nn.unbox(shapes)))
    assert 0.8e9 < count < 0.9e9, count  # 32 x 26.4M Mamba layers + convs and stacking
    assert nn.get_partition_spec(shapes)["params"]["encoder_layers"]["in_proj"]["kernel"] \
        == jax.sharding.PartitionSpec("layers", "embed", "mlp")
