"""The decoder LLM: streaming step == parallel form, causality, hidden-layer selection,
dtypes, remat policies, logical axes and the Llama-3-8B parameter count."""

import functools

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from configs import default
from omni_jax.models.attention import causal_mask
from omni_jax.models.llm import LLM, REMAT_POLICIES

KEY = jax.random.key(0, impl="rbg")  # compiles far faster than threefry on CPU
RNG = np.random.default_rng(0)
VOCAB, MEMORY_DIM, BATCH = 100, 24, 2
PROMPT, BLOCKS, PER_BLOCK = 3, 3, 3  # a prompt, then blocks of positions with one memory each
T = PROMPT + BLOCKS * PER_BLOCK


def llm_cfg(**overrides):
    return ml_collections.ConfigDict(dict(
        num_layers=4, width=64, num_heads=4, num_kv_heads=2, mlp_dim=128, rope_theta=1e4,
        max_len=16, cross_attention_every=2, lora_rank=0, lora_alpha=32.0,
        lora_targets=("q", "v")) | overrides)


def inputs(fusion, width=64):
    """Parallel-form inputs: embeddings, positions, causal mask and (cross) the memory with
    its block-causal mask (prompt positions see no memory)."""
    x_BxTxD = RNG.standard_normal((BATCH, T, width)).astype(np.float32)
    args = [x_BxTxD, np.broadcast_to(np.arange(T), (BATCH, T)), causal_mask(T)[None]]
    if fusion == "cross_attention":
        block_T = (np.arange(T) - PROMPT) // PER_BLOCK  # -1 in the prompt
        args += [RNG.standard_normal((BATCH, BLOCKS, MEMORY_DIM)).astype(np.float32),
                 (np.arange(BLOCKS)[None, :] <= block_T[:, None])[None]]
    return args


@functools.cache
def built(fusion):
    """(model, params, jitted forward, jitted step), shared by the tests (compiles are slow)."""
    model = LLM(llm_cfg(), VOCAB, fusion=fusion, memory_dim=MEMORY_DIM, hidden_layer=1)
    params = nn.unbox(jax.jit(model.init)(KEY, **model.dummy_inputs(BATCH, 2)))
    # Open the cross-attention gates (0 at init) so that the memory matters.
    params = jax.tree_util.tree_map_with_path(
        lambda path, p: p + 0.5 if "cross_gate" in jax.tree_util.keystr(path) else p, params)
    forward = jax.jit(model.apply)
    step = jax.jit(functools.partial(model.apply, method="step"))
    return model, params, forward, step


@pytest.fixture(params=["interleave", "cross_attention"])
def setup(request):
    return request.param, *built(request.param)


def test_step_matches_parallel(setup):
    fusion, model, params, forward, step = setup
    args = inputs(fusion)
    logits, hidden = forward(params, *args)
    x_BxTxD, positions_BxT = args[:2]

    cache = model.init_cache(BATCH, max_memory=BLOCKS + 1)
    shapes = jax.tree.map(np.shape, cache)
    chunks = [(slice(0, PROMPT), None)]  # the prompt comes before any memory
    for i in range(BLOCKS):
        start = PROMPT + i * PER_BLOCK
        memory = args[3][:, i:i + 1] if fusion == "cross_attention" else None
        chunks.append((slice(start, start + PER_BLOCK), memory))
    step_logits, step_hidden = [], []
    for chunk, memory in chunks:
        out_logits, out_hidden, cache = step(params, x_BxTxD[:, chunk], positions_BxT[:, chunk],
                                             cache, memory)
        assert jax.tree.map(np.shape, cache) == shapes  # the cache never grows
        step_logits.append(out_logits)
        step_hidden.append(out_hidden)
    np.testing.assert_array_equal(cache["index"], [T] * BATCH)  # per row
    np.testing.assert_allclose(np.concatenate(step_logits, 1), logits, atol=1e-4)
    np.testing.assert_allclose(np.concatenate(step_hidden, 1), hidden, atol=1e-4)


def test_later_inputs_never_change_earlier_logits(setup):
    fusion, _, params, forward, _ = setup
    args = inputs(fusion)
    logits, _ = forward(params, *args)
    t = PROMPT + PER_BLOCK + 1
    changed = list(args)
    changed[0] = args[0].copy()
    changed[0][:, t] += 1.0
    if fusion == "cross_attention":  # the last block's memory: read from its block on
        t = min(t, PROMPT + (BLOCKS - 1) * PER_BLOCK)
        changed[3] = args[3].copy()
        changed[3][:, -1] += 1.0
    new_logits, _ = forward(params, *changed)
    np.testing.assert_allclose(new_logits[:, :t], logits[:, :t], atol=1e-6)
    assert np.abs(new_logits[:, t:] - logits[:, t:]).min(axis=-1).max() > 0


def test_hidden_layer_selection():
    args = inputs("interleave")
    _, params, forward, _ = built("interleave")  # hidden_layer=1
    perturbed = jax.tree_util.tree_map_with_path(  # layers 2.. only (stacked on axis 0)
        lambda path, p: p.at[2:].add(0.1) if "'layers'" in jax.tree_util.keystr(path) else p,
        params)
    (logits, hidden), (new_logits, new_hidden) = forward(params, *args), forward(perturbed, *args)
    np.testing.assert_array_equal(new_hidden, hidden)
    assert not np.allclose(new_logits, logits)

    last = LLM(llm_cfg(), VOCAB, hidden_layer=-1)

    @jax.jit
    def logits_and_head_of_hidden(params):
        logits, hidden = last.apply(params, *args)
        return logits, last.apply(params, hidden, method=lambda m, h: m.head(m.final_norm(h)))

    logits, head = logits_and_head_of_hidden(params)
    np.testing.assert_allclose(head, logits, atol=1e-5)  # -1 is the last layer's output


@pytest.mark.parametrize("fusion", ["interleave", "cross_attention"])
def test_causal_implementations_and_output_index_agree(fusion):
    """No self mask = causal: the reference einsums and jax.nn.dot_product_attention (its
    XLA form; cuDNN's needs a GPU) equal the explicit causal mask; logits and hidden states
    at `output_index` (the loss's positions) equal those positions of the full output."""
    args = inputs(fusion)
    _, params, forward, _ = built(fusion)
    logits, hidden = forward(params, *args)
    unmasked = [*args[:2], None, *args[3:]]
    index = np.array([1, 4, 5, 9, T - 1])
    for implementation in ("reference", "xla"):
        model = LLM(llm_cfg(attention=implementation), VOCAB, fusion=fusion,
                    memory_dim=MEMORY_DIM, hidden_layer=1)
        got_logits, got_hidden = jax.jit(model.apply)(params, *unmasked)
        np.testing.assert_allclose(got_logits, logits, atol=1e-5, err_msg=implementation)
        np.testing.assert_allclose(got_hidden, hidden, atol=1e-5, err_msg=implementation)
        at_logits, at_hidden = jax.jit(functools.partial(model.apply, output_index=index))(
            params, *unmasked)
        np.testing.assert_allclose(at_logits, logits[:, index], atol=1e-5)
        np.testing.assert_allclose(at_hidden, hidden[:, index], atol=1e-5)
    with pytest.raises(ValueError, match="model.llm.attention"):
        LLM(llm_cfg(attention="flash"), VOCAB)


def test_bfloat16_compute_with_float32_params():
    args = inputs("interleave")
    model = LLM(llm_cfg(), VOCAB, dtype="bfloat16", hidden_layer=1)
    _, params, forward, _ = built("interleave")
    assert {p.dtype for p in jax.tree.leaves(params)} == {np.dtype("float32")}
    logits, hidden = jax.jit(model.apply)(params, *args)
    assert logits.dtype == np.float32 and hidden.dtype == jax.numpy.bfloat16
    reference, _ = forward(params, *args)
    np.testing.assert_allclose(logits, reference, atol=0.15)

    cache = model.init_cache(BATCH)
    assert cache["k"].dtype == jax.numpy.bfloat16
    step_logits, _, cache = jax.jit(functools.partial(model.apply, method="step"))(
        params, args[0][:, :PROMPT], args[1][:, :PROMPT], cache)
    np.testing.assert_allclose(step_logits, logits[:, :PROMPT], atol=0.05)


def test_remat_policies_agree():
    args = inputs("interleave")
    _, params, _, _ = built("interleave")

    def loss_and_grads(remat):
        model = LLM(llm_cfg(), VOCAB, remat=remat)
        loss = lambda p: jax.numpy.mean(model.apply(p, *args)[0] ** 2)  # noqa: E731
        return jax.jit(jax.value_and_grad(loss))(params)

    expected_loss, expected_grads = loss_and_grads("none")
    for remat in set(REMAT_POLICIES) - {"none"}:
        loss, grads = loss_and_grads(remat)
        np.testing.assert_array_equal(loss, expected_loss)
        jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-7),
                     grads, expected_grads)


@pytest.mark.parametrize("fusion", ["interleave", "cross_attention"])
def test_every_param_and_cache_entry_has_logical_axes(fusion):
    cfg = llm_cfg(lora_rank=4, lora_targets=("q", "k", "v", "o", "gate", "up", "down"))
    model = LLM(cfg, VOCAB, fusion=fusion, memory_dim=MEMORY_DIM)
    boxed = jax.eval_shape(model.init, KEY, **model.dummy_inputs())["params"]
    is_box = lambda x: isinstance(x, nn.LogicallyPartitioned)  # noqa: E731
    leaves = jax.tree_util.tree_leaves_with_path(boxed, is_leaf=is_box)
    for path, leaf in leaves:
        name = jax.tree_util.keystr(path)
        assert is_box(leaf), name
        assert len(leaf.names) == len(leaf.value.shape), name
        assert (leaf.names[:1] == ("layers",)) == name.startswith("['layers']"), name
    specs = nn.get_partition_spec(boxed)
    assert len(jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, P))) == len(leaves)
    assert boxed["embedding"]["embedding"].names == ("vocab", "embed")
    assert boxed["layers"]["layer_0"]["attn"]["q"]["kernel"].names == (
        "layers", "embed", "heads", "kv")
    cache, cache_axes = model.init_cache(BATCH, 8, 3), model.cache_axes()
    assert cache_axes.keys() == cache.keys()
    assert all(len(cache_axes[name]) == cache[name].ndim for name in cache)


def test_llama3_8b_parameter_count():
    cfg = llm_cfg(num_layers=32, width=4096, num_heads=32, num_kv_heads=8, mlp_dim=14336,
                  rope_theta=500000.0, max_len=8192)
    model = LLM(cfg, 128256)
    shapes = jax.eval_shape(model.init, KEY, **model.dummy_inputs())
    count = sum(x.size for x in jax.tree.leaves(shapes))
    print(f"Llama-3-8B shape: {count:,} parameters")
    assert abs(count - 8.03e9) / 8.03e9 < 0.02
    assert count == 8_030_261_248  # the published Llama-3-8B count, exactly


def test_rejects_impossible_settings():
    with pytest.raises(ValueError, match="cross_attention_every"):
        LLM(llm_cfg(num_layers=3), VOCAB, fusion="cross_attention", memory_dim=8)
    with pytest.raises(ValueError, match="hidden_layer"):
        LLM(llm_cfg(), VOCAB, hidden_layer=4)
    with pytest.raises(ValueError, match="model.remat"):
        LLM(llm_cfg(), VOCAB, remat="some")
    with pytest.raises(ValueError, match="model.llm.num_heads"):
        LLM(llm_cfg(num_heads=3), VOCAB)
    with pytest.raises(ValueError, match="model.llm.num_kv_heads"):
        LLM(llm_cfg(num_kv_heads=3), VOCAB)


def test_from_config_reads_connector_outputs_at_llm_width():
    config = default.get_config()
    config.model.fusion = "cross_attention"
    config.model.encoder.width = 2 * config.model.llm.width  # so that the two differ
    model = LLM.from_config(config)
    assert model.memory_dim == config.model.llm.width
    assert (model.fusion, model.hidden_layer) == ("cross_attention",
                                                  config.model.synth.llm_layer)
    assert model.vocab_size == config.data.tokenizer.vocab_size
