"""The streaming caches: the ring layout, sliding far past the cache (bounded memory,
outputs equal to the windowed reference), rows as independent streams, the written-prefix
read and the per_layer update equal to the default."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from omni_jax.models.kv_cache import RingLayout, attend_bucket
from omni_jax.models.llm import LLM
from omni_jax.models.synthesizer import Synthesizer

KEY = jax.random.key(0, impl="rbg")
RNG = np.random.default_rng(0)
PROMPT, PER_BLOCK, WINDOW_BLOCKS = 3, 2, 4  # a small window, streamed far past it
WINDOW = WINDOW_BLOCKS * PER_BLOCK
BLOCKS = 25  # 50 positions after the prompt: the ring wraps six times


def test_ring_layout_holds_the_prompt_and_the_last_window():
    layout = RingLayout(prompt=2, window=3)
    assert layout.capacity == 5
    np.testing.assert_array_equal(layout.slots(jnp.arange(9)[None])[0],
                                  [0, 1, 2, 3, 4, 2, 3, 4, 2])
    # Before a step at index 4 (positions 0..3 written) and at 9 (0..8 written).
    np.testing.assert_array_equal(layout.slot_positions(jnp.array([0, 4, 9])),
                                  [[-1, -1, -1, -1, -1], [0, 1, 2, 3, -1], [0, 1, 8, 6, 7]])
    np.testing.assert_array_equal(layout.prompt_shift(jnp.array([4, 9])), [0, 4])
    assert [attend_bucket(w, 1000) for w in (1, 64, 65, 300, 999, 1000, 5000)] == \
        [64, 64, 128, 512, 1000, 1000, 1000]


def test_parallel_layout_is_what_the_stream_sees():
    """RingLayout.parallel, position by position, against slot_positions + visible."""
    layout = RingLayout(PROMPT, WINDOW)
    length = PROMPT + 10 * PER_BLOCK
    mask_TxT, shift_T = layout.parallel(length, PER_BLOCK)
    for start in range(PROMPT, length, PER_BLOCK):
        index = jnp.array([start])
        key_pos = np.asarray(layout.slot_positions(index))[0]
        seen = np.asarray(layout.visible(layout.slot_positions(index), index))[0, 0]
        expected = np.zeros(length, bool)
        expected[key_pos[seen]] = True
        for q in range(start, start + PER_BLOCK):
            row = expected.copy()
            row[start:q + 1] = True
            np.testing.assert_array_equal(mask_TxT[q], row, err_msg=f"query {q}")
            assert shift_T[q] == int(layout.prompt_shift(index)[0])


def llm_cfg(**overrides):
    return ml_collections.ConfigDict(dict(
        num_layers=2, width=32, num_heads=4, num_kv_heads=2, mlp_dim=64, rope_theta=1e4,
        max_len=PROMPT + WINDOW, cross_attention_every=2, lora_rank=0, lora_alpha=32.0,
        lora_targets=("q", "v")) | overrides)


@functools.cache
def built(fusion, cache_update="once"):
    model = LLM(llm_cfg(cache_update=cache_update), 50, fusion=fusion, memory_dim=16,
                prompt_len=PROMPT)
    params = nn.unbox(jax.jit(model.init)(KEY, **model.dummy_inputs(2, 2)))
    params = jax.tree_util.tree_map_with_path(  # open the cross-attention gates
        lambda path, p: p + 0.5 if "cross_gate" in jax.tree_util.keystr(path) else p, params)
    return model, params


def stream(model, params, x_BxTxD, memory_BxKxE, attend_slots=None, cache=None):
    """Prompt, then one chunk (and one memory entry) per block; outputs concatenated."""
    step = jax.jit(functools.partial(model.apply, method="step", attend_slots=attend_slots))
    b = x_BxTxD.shape[0]
    cache = model.init_cache(b, max_memory=WINDOW_BLOCKS + 1) if cache is None else cache
    shapes = jax.tree.map(np.shape, cache)
    logits = []
    starts = [0] + list(range(PROMPT, x_BxTxD.shape[1], PER_BLOCK))
    for i, start in enumerate(starts):
        stop = PROMPT if i == 0 else start + PER_BLOCK
        memory = None if memory_BxKxE is None or i == 0 else memory_BxKxE[:, i - 1:i]
        positions = cache["index"][:, None] + np.arange(stop - start)
        out, _, cache = step(params, x_BxTxD[:, start:stop], positions, cache, memory)
        assert jax.tree.map(np.shape, cache) == shapes  # bounded: the cache never grows
        logits.append(out)
    return np.concatenate(logits, axis=1), cache


def windowed_reference(model, params, x_BxTxD, memory_BxKxE):
    """The parallel form with the sliding window's mask and prompt shift."""
    length = x_BxTxD.shape[1]
    mask_TxT, shift_T = RingLayout(PROMPT, WINDOW).parallel(length, PER_BLOCK)
    b = x_BxTxD.shape[0]
    args = dict(x_BxTxD=x_BxTxD, positions_BxT=np.broadcast_to(np.arange(length), (b, length)),
                mask_BxTxT=mask_TxT[None],
                prompt_shift_BxT=np.broadcast_to(shift_T, (b, length)))
    if memory_BxKxE is not None:  # block k's entry; a block reads the window's blocks
        block_T = np.where(np.arange(length) < PROMPT, -1,
                           (np.arange(length) - PROMPT) // PER_BLOCK)
        entry_U = np.arange(memory_BxKxE.shape[1])
        args.update(memory_BxUxE=memory_BxKxE, memory_mask_BxTxU=(
            (entry_U[None] <= block_T[:, None])
            & (entry_U[None] >= block_T[:, None] - WINDOW_BLOCKS))[None])
    logits, _ = jax.jit(model.apply)(params, **args)
    return logits


def inputs(fusion, b=2):
    length = PROMPT + BLOCKS * PER_BLOCK
    x_BxTxD = RNG.standard_normal((b, length, 32)).astype(np.float32)
    memory = RNG.standard_normal((b, BLOCKS, 16)).astype(np.float32) \
        if fusion == "cross_attention" else None
    return x_BxTxD, memory


@pytest.mark.parametrize("fusion", ["interleave", "cross_attention"])
def test_llm_slides_far_past_its_cache_equal_to_the_windowed_reference(fusion):
    model, params = built(fusion)
    x_BxTxD, memory = inputs(fusion)
    logits, cache = stream(model, params, x_BxTxD, memory)
    assert cache["k"].shape[2] == PROMPT + WINDOW  # 53 positions through 11 slots
    np.testing.assert_array_equal(cache["index"], [x_BxTxD.shape[1]] * 2)
    np.testing.assert_allclose(logits, windowed_reference(model, params, x_BxTxD, memory),
                               atol=2e-5)
    # Until the ring first wraps the reference is the plain causal form.
    plain, _ = jax.jit(model.apply)(params, x_BxTxD, np.broadcast_to(
        np.arange(x_BxTxD.shape[1]), x_BxTxD.shape[:2]), None,
        *(() if memory is None else (np.repeat(memory, 1, axis=1), (
            np.arange(BLOCKS)[None] <= np.where(np.arange(x_BxTxD.shape[1]) < PROMPT, -1,
                                                (np.arange(x_BxTxD.shape[1]) - PROMPT)
                                                // PER_BLOCK)[:, None])[None])))
    fits = PROMPT + WINDOW + PER_BLOCK
    np.testing.assert_allclose(logits[:, :fits], plain[:, :fits], atol=2e-5)
    assert not np.allclose(logits[:, -PER_BLOCK:], plain[:, -PER_BLOCK:], atol=1e-3)


def test_per_layer_update_and_prefix_read_equal_the_default():
    model, params = built("interleave")
    x_BxTxD, _ = inputs("interleave")
    short = x_BxTxD[:, :PROMPT + 3 * PER_BLOCK]  # the written prefix stays under 9 slots
    expected, _ = stream(model, params, short, None)
    prefix, _ = stream(model, params, short, None, attend_slots=PROMPT + 3 * PER_BLOCK)
    np.testing.assert_allclose(prefix, expected, atol=1e-6)
    per_layer_model, _ = built("interleave", "per_layer")
    per_layer, _ = stream(per_layer_model, params, x_BxTxD, None)
    np.testing.assert_allclose(per_layer, stream(model, params, x_BxTxD, None)[0], atol=1e-6)


def test_rows_are_independent_streams():
    """A row that starts later (its index reset while the other runs on) gives what it
    gives alone: serving slots join and leave a running batch."""
    model, params = built("interleave")
    x_BxTxD, _ = inputs("interleave", b=1)
    alone, _ = stream(model, params, x_BxTxD, None)
    other = RNG.standard_normal(x_BxTxD.shape).astype(np.float32)
    _, busy = stream(model, params, np.concatenate([other, other]), None)  # both rows run
    busy = dict(busy, index=busy["index"].at[1].set(0))  # row 1 starts over, row 0 goes on
    # Row 0 runs at positions past its window: it keeps streaming its own input.
    both, _ = stream(model, params, np.concatenate([other, x_BxTxD]), None, cache=busy)
    np.testing.assert_allclose(both[1:], alone, atol=2e-5)


def test_synthesizer_slides_on_the_last_blocks():
    cfg = ml_collections.ConfigDict(dict(num_layers=2, width=32, num_heads=4, llm_layer=-1))
    synth = Synthesizer(cfg, llm_width=16, n_mels=8, frames_per_block=2)
    h_BxKxNxD = RNG.standard_normal((2, 12, 1, 16)).astype(np.float32)
    params = nn.unbox(jax.jit(synth.init)(KEY, h_BxKxNxD[:, :2]))
    kept = 3
    cache = synth.init_cache(2, kept)
    step = jax.jit(functools.partial(synth.apply, method="step"))
    mels = []
    for k in range(h_BxKxNxD.shape[1]):
        mel, cache = step(params, h_BxKxNxD[:, k], cache)
        mels.append(mel)
    # Reference: the parallel form, each block reading the last `kept` blocks and itself.
    k = np.arange(h_BxKxNxD.shape[1])
    band_KxK = (k[None] <= k[:, None]) & (k[None] >= k[:, None] - kept)
    expected, _ = jax.jit(functools.partial(synth.apply, method="_decode"))(
        params, h_BxKxNxD, np.broadcast_to(k, (2, k.size)), band_KxK[None])
    np.testing.assert_allclose(np.stack(mels, axis=1), expected, atol=2e-5)
    np.testing.assert_allclose(mels[kept], synth.apply(params, h_BxKxNxD)[:, kept], atol=2e-5)
    assert not np.allclose(mels[-1], synth.apply(params, h_BxKxNxD)[:, -1], atol=1e-4)
    # Reading the written prefix only (2 of 3 slots while at most 2 are written) agrees.
    prefix_step = jax.jit(functools.partial(synth.apply, method="step", attend_slots=2))
    cache = synth.init_cache(2, kept)
    for k in range(2):
        mel, cache = prefix_step(params, h_BxKxNxD[:, k], cache)
        np.testing.assert_allclose(mel, mels[k], atol=1e-6)


def test_duplex_carry_batch_axes_follow_the_parts_layouts():
    from configs import tiny
    from omni_jax.models.omni import DuplexModel, window_blocks

    config = tiny.get_config()
    axes = DuplexModel.from_config(config).batch_axes()
    assert axes["llm"]["k"] == (1, 1) and axes["llm"]["index"] == (0, 1)  # Y x B x ...
    assert axes["synth"]["index"] == (0, 1)
    assert axes["frontend"] == (0, 2) and axes["encoder"]["pos"] == (0, 2)  # 2B rows
    carry = jax.eval_shape(lambda: DuplexModel.from_config(config).init_carry(1))
    assert carry["synth"]["k"].shape[2] == window_blocks(config)  # None = the window
