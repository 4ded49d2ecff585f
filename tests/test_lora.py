"""LoRA adapters: a fresh adapter is the base model exactly; trained ones shift it by
alpha / rank * x A B; parameter names let the trainer select them."""

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import pytest
from flax import traverse_util

from omni_jax.models import lora
from omni_jax.models.attention import causal_mask
from omni_jax.models.llm import LLM

KEY = jax.random.key(0, impl="rbg")  # compiles far faster than threefry on CPU
RNG = np.random.default_rng(0)


def test_lora_dense_delta():
    x_BxTxHxQ = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    layer = lora.LoraDense((7,), ("heads", "kv", "embed"), in_dims=2, rank=3, alpha=6.0)
    params = nn.unbox(jax.jit(layer.init)(KEY, x_BxTxHxQ))["params"]
    assert set(params) == {"kernel", "lora_a", "lora_b"}
    assert params["lora_a"].shape == (4, 5, 3) and params["lora_b"].shape == (3, 7)
    np.testing.assert_array_equal(params["lora_b"], 0.0)
    base = lora.LoraDense((7,), ("heads", "kv", "embed"), in_dims=2)
    apply = jax.jit(layer.apply)
    np.testing.assert_array_equal(apply({"params": params}, x_BxTxHxQ),
                                  base.apply({"params": {"kernel": params["kernel"]}}, x_BxTxHxQ))

    params["lora_b"] = RNG.standard_normal((3, 7)).astype(np.float32)
    expected = (np.einsum("bthk,hkd->btd", x_BxTxHxQ, params["kernel"])
                + 6.0 / 3 * np.einsum("bthk,hkr,rd->btd", x_BxTxHxQ, params["lora_a"],
                                      params["lora_b"]))
    np.testing.assert_allclose(apply({"params": params}, x_BxTxHxQ), expected, rtol=1e-4,
                               atol=1e-4)


def test_fresh_lora_llm_is_the_base_llm_and_trains_apart():
    targets = ("q", "k", "v", "o", "gate", "up", "down")
    cfg = ml_collections.ConfigDict(dict(
        num_layers=2, width=64, num_heads=4, num_kv_heads=2, mlp_dim=128, rope_theta=1e4,
        max_len=16, cross_attention_every=1, lora_rank=4, lora_alpha=8.0, lora_targets=targets))
    adapted = LLM(cfg, 100)
    t = 5
    args = (RNG.standard_normal((2, t, 64)).astype(np.float32),
            np.broadcast_to(np.arange(t), (2, t)), causal_mask(t)[None])
    params = nn.unbox(jax.jit(adapted.init)(KEY, *args))

    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
    lora_paths = [p for p in paths if "lora" in p]
    assert len(lora_paths) == 2 * len(targets)
    for target in targets:
        assert any(f"['{target}']['lora_a']" in p for p in lora_paths), target
        assert any(f"['{target}']['lora_b']" in p for p in lora_paths), target

    flat = traverse_util.flatten_dict(params)
    base_params = traverse_util.unflatten_dict(
        {path: p for path, p in flat.items() if not path[-1].startswith("lora")})
    base = LLM(ml_collections.ConfigDict(dict(cfg, lora_rank=0)), 100)
    forward = jax.jit(adapted.apply)
    logits, hidden = forward(params, *args)
    base_logits, base_hidden = jax.jit(base.apply)(base_params, *args)
    np.testing.assert_array_equal(logits, base_logits)
    np.testing.assert_array_equal(hidden, base_hidden)

    trained = jax.tree_util.tree_map_with_path(
        lambda path, p: p + 0.01 if "lora_b" in jax.tree_util.keystr(path) else p, params)
    assert not np.allclose(forward(trained, *args)[0], logits)


def test_lora_spec():
    spec = lora.LoraSpec(rank=8, alpha=16.0, targets=("q", "v"))
    assert (spec.rank_for("q"), spec.rank_for("k")) == (8, 0)
    with pytest.raises(ValueError, match="unknown LoRA targets"):
        lora.LoraSpec(rank=8, targets=("q", "qkv"))
