"""The streaming synthesizer: step == parallel, causality over blocks, fixed cache shapes,
silence at init, bfloat16, logical axes, learnability (with remat) and the ~0.5B size."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from configs import default
from omni_jax.audio.frontend import SILENCE_LOG_MEL
from omni_jax.models.synthesizer import Synthesizer

KEY = jax.random.key(0, impl="rbg")  # compiles far faster than threefry on CPU
BATCH, BLOCKS, PER_BLOCK, LLM_WIDTH, FRAMES, MELS = 2, 5, 2, 16, 4, 12


def synth_cfg(**overrides):
    return ml_collections.ConfigDict(dict(
        num_layers=2, width=32, num_heads=4, num_kv_heads=2, llm_layer=-1,
        vocoder="griffin_lim") | overrides)


def hidden(seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return (scale * rng.standard_normal((BATCH, BLOCKS, PER_BLOCK, LLM_WIDTH))).astype(
        np.float32)


def make(dtype="float32", remat="none"):
    return Synthesizer(synth_cfg(), LLM_WIDTH, MELS, FRAMES, dtype, remat)


@functools.cache
def fresh_params():
    model = make()
    return nn.unbox(jax.jit(model.init)(KEY, model.dummy_inputs(1, 1, PER_BLOCK)))


@functools.cache
def built(dtype="float32"):
    """(model, params with a trained-scale output projection, jitted forward and step)."""
    model = make(dtype)
    # Fresh outputs hug the silence floor; scale the output kernel up so differences show.
    params = jax.tree_util.tree_map_with_path(
        lambda path, p: p * 100.0 if "out_proj" in jax.tree_util.keystr(path) else p,
        fresh_params())
    step = jax.jit(functools.partial(model.apply, method="step"))
    return model, params, jax.jit(model.apply), step


def stream(model, params, step, h_BxKxNxD):
    cache = model.init_cache(BATCH, BLOCKS + 2)
    mels = []
    for k in range(h_BxKxNxD.shape[1]):
        mel_BxFxM, cache = step(params, h_BxKxNxD[:, k], cache)
        mels.append(mel_BxFxM)
    return np.stack(mels, axis=1), cache


def test_step_matches_parallel():
    model, params, forward, step = built()
    h = hidden()
    mel_BxKxFxM = np.asarray(forward(params, h))
    assert mel_BxKxFxM.shape == (BATCH, BLOCKS, FRAMES, MELS)
    assert mel_BxKxFxM.dtype == np.float32
    assert mel_BxKxFxM.std() > 0.1  # the outputs really depend on the inputs
    streamed, _ = stream(model, params, step, h)
    np.testing.assert_allclose(streamed, mel_BxKxFxM, atol=1e-4)


def test_causal_over_blocks():
    _, params, forward, _ = built()
    h = hidden()
    base = np.asarray(forward(params, h))
    for i in range(BLOCKS - 1):
        changed = h.copy()
        changed[:, i + 1:] = hidden(seed=i + 1)[:, i + 1:]
        out = np.asarray(forward(params, changed))
        np.testing.assert_array_equal(out[:, :i + 1], base[:, :i + 1])
        assert not np.allclose(out[:, i + 1], base[:, i + 1])


def test_cache_shapes_are_constant_and_need_no_params():
    model, params, _, step = built()
    cache = make().init_cache(BATCH, BLOCKS + 2)  # unbound module, no parameters
    assert cache["k"].shape == (2, BATCH, BLOCKS + 2, 2, 8)  # Y, B, C, G, Q
    assert set(cache) == set(model.cache_axes())
    shapes = jax.tree.map(lambda x: (x.shape, x.dtype), cache)
    _, final = stream(model, params, step, hidden())
    assert jax.tree.map(lambda x: (x.shape, x.dtype), final) == shapes
    np.testing.assert_array_equal(final["index"], [BLOCKS] * BATCH)  # per row


def test_fresh_init_says_silence():
    _, _, forward, _ = built()
    h = hidden(scale=100.0)  # LLM hidden states can be large: the input norm copes
    np.testing.assert_allclose(forward(fresh_params(), h), SILENCE_LOG_MEL, atol=0.1)


def test_bfloat16_compute_keeps_float32_params():
    _, params, forward32, _ = built()
    model, params16, forward, step = built("bfloat16")
    assert {x.dtype for x in jax.tree.leaves(params16)} == {jnp.dtype("float32")}
    assert model.init_cache(BATCH, 4)["k"].dtype == jnp.bfloat16
    h = hidden()
    reference = np.asarray(forward32(params, h))
    mel = np.asarray(forward(params, h))  # the same float32 parameters, bfloat16 compute
    assert mel.dtype == np.float32
    assert np.abs(mel - reference).max() < 0.1 * reference.std()
    streamed, _ = stream(model, params, step, h)
    assert np.abs(streamed - mel).max() < 0.1 * reference.std()


def test_parameters_carry_logical_axes():
    model = make()
    specs = nn.get_partition_spec(jax.eval_shape(model.init, KEY, model.dummy_inputs()))
    p = specs["params"]
    assert p["in_proj"]["kernel"] == P(None, None, "embed")
    assert p["out_proj"]["kernel"] == P("embed", None, "mel")
    assert p["out_bias"] == P(None, "mel")
    assert p["layers"]["layer"]["attn"]["q"]["kernel"] == P("layers", "embed", "heads", "kv")
    assert p["layers"]["layer"]["mlp"]["up"]["kernel"] == P("layers", "embed", "mlp")


def test_learns_one_example():
    """A few dozen Adam steps fit one random (h, mel) pair, through a rematerialised stack."""
    model, h = make(remat="dots"), hidden()
    target = np.random.default_rng(1).uniform(-10.0, 2.0, (BATCH, BLOCKS, FRAMES, MELS))
    optimizer = optax.adam(0.1)

    def l1(p):
        return jnp.mean(jnp.abs(model.apply(p, h) - target))

    @jax.jit
    def update(p, state):
        loss, grads = jax.value_and_grad(l1)(p)
        updates, state = optimizer.update(grads, state, p)
        return optax.apply_updates(p, updates), state, loss

    params = fresh_params()  # silent: the first L1 is the distance to silence
    state = optimizer.init(params)
    losses = []
    for _ in range(60):
        params, state, loss = update(params, state)
        losses.append(float(loss))
    assert losses[-1] < losses[0] / 5


def test_from_config_uses_the_audio_geometry():
    config = default.get_config()
    model = Synthesizer.from_config(config)
    assert (model.llm_width, model.n_mels, model.frames_per_block) == (256, 80, 8)
    mel = jax.eval_shape(model.init_with_output, KEY, model.dummy_inputs(1, 3))[0]
    assert mel.shape == (1, 3, 8, 80)


@pytest.mark.parametrize("field, value, match", [("num_heads", 5, "num_heads"),
                                                 ("num_kv_heads", 3, "num_kv_heads")])
def test_bad_shapes_name_the_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        Synthesizer(synth_cfg(**{field: value}), LLM_WIDTH, MELS, FRAMES)


def test_half_billion_config():
    """The paper's synthesizer is CosyVoice2-0.5B. Width 1280, 24 layers, 20 heads (head dim
    64), SwiGLU 3840, reading a Llama-3-8B (D = 4096) hidden state: ~0.52B parameters."""
    cfg = synth_cfg(num_layers=24, width=1280, num_heads=20, num_kv_heads=20)
    model = Synthesizer(cfg, 4096, 80, 8)
    shapes = jax.eval_shape(model.init, KEY, model.dummy_inputs())
    count = sum(x.size for x in jax.tree.leaves(nn.unbox(shapes)))
    assert 0.5e9 < count < 0.55e9
