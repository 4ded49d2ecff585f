"""Pretrained LLM initialisation from a Hugging Face-layout safetensors checkpoint.

Each test writes its own tiny checkpoint (numpy random weights, HF names and [out, in]
layouts), loads it into the project's LLM, and compares the logits with a forward written
here in plain jax.numpy from the HF weights: RMSNorm, rotate-half RoPE, GQA causal
attention, SwiGLU, tied or untied head.
"""

from __future__ import annotations

import json
import struct

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from omni_jax.models import llm as llm_lib
from omni_jax.models import pretrained
from omni_jax.models.attention import causal_mask
from omni_jax.models.pretrained import PretrainedLoadError

safetensors_numpy = pytest.importorskip("safetensors.numpy")

NUM_LAYERS, WIDTH, HEADS, KV_HEADS, MLP_DIM, VOCAB, THETA = 2, 32, 4, 2, 48, 40, 10000.0
HEAD_DIM = WIDTH // HEADS


def llm_config(**overrides) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict({
        "num_layers": NUM_LAYERS, "width": WIDTH, "num_heads": HEADS, "num_kv_heads": KV_HEADS,
        "mlp_dim": MLP_DIM, "rope_theta": THETA, "max_len": 64, "cross_attention_every": 2,
        "lora_rank": 0, "lora_alpha": 1.0, "lora_targets": ("q", "v"), "qkv_bias": False})
    cfg.update(overrides)
    return cfg


def hf_weights(seed: int = 0, *, qkv_bias: bool = False, tied: bool = False,
               vocab: int = VOCAB) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def w(*shape, scale=0.2):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    out = {"model.embed_tokens.weight": w(vocab, WIDTH, scale=1.0),
           "model.norm.weight": 1.0 + w(WIDTH)}
    if not tied:
        out["lm_head.weight"] = w(vocab, WIDTH)
    for i in range(NUM_LAYERS):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = 1.0 + w(WIDTH)
        out[p + "post_attention_layernorm.weight"] = 1.0 + w(WIDTH)
        for proj, heads in (("q", HEADS), ("k", KV_HEADS), ("v", KV_HEADS)):
            out[p + f"self_attn.{proj}_proj.weight"] = w(heads * HEAD_DIM, WIDTH)
            if qkv_bias:
                out[p + f"self_attn.{proj}_proj.bias"] = w(heads * HEAD_DIM, scale=0.5)
        out[p + "self_attn.o_proj.weight"] = w(WIDTH, HEADS * HEAD_DIM)
        out[p + "mlp.gate_proj.weight"] = w(MLP_DIM, WIDTH)
        out[p + "mlp.up_proj.weight"] = w(MLP_DIM, WIDTH)
        out[p + "mlp.down_proj.weight"] = w(WIDTH, MLP_DIM)
    return out


def write_checkpoint(directory, weights, *, shards: int = 1, config: dict | None = None):
    directory.mkdir(parents=True, exist_ok=True)
    names = sorted(weights)
    if shards == 1:
        safetensors_numpy.save_file(weights, str(directory / "model.safetensors"))
    else:
        weight_map = {}
        for k in range(shards):
            file = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
            part = {n: weights[n] for n in names[k::shards]}
            safetensors_numpy.save_file(part, str(directory / file))
            weight_map.update({n: file for n in part})
        (directory / pretrained.INDEX_FILE).write_text(
            json.dumps({"metadata": {}, "weight_map": weight_map}))
    if config is not None:
        (directory / "config.json").write_text(json.dumps(config))
    return directory


# ---- the reference forward, from HF weights ------------------------------------------------

def _rms(x, weight):
    return x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + llm_lib.NORM_EPS) * weight


def _rope_rotate_half(x_TxHxQ, positions_T):
    inv_freq = THETA ** (-jnp.arange(0, HEAD_DIM, 2) / HEAD_DIM)
    freqs_TxJ = positions_T[:, None] * inv_freq[None]
    emb_TxQ = jnp.concatenate([freqs_TxJ, freqs_TxJ], -1)[:, None]  # HF: cat(freqs, freqs)
    x1, x2 = x_TxHxQ[..., :HEAD_DIM // 2], x_TxHxQ[..., HEAD_DIM // 2:]
    rotated = jnp.concatenate([-x2, x1], -1)  # HF rotate_half
    return x_TxHxQ * jnp.cos(emb_TxQ) + rotated * jnp.sin(emb_TxQ)


def reference_logits(w: dict, tokens_T: np.ndarray, *, tied: bool) -> jax.Array:
    t = len(tokens_T)
    positions_T = jnp.arange(t, dtype=jnp.float32)
    x_TxD = jnp.asarray(w["model.embed_tokens.weight"])[tokens_T]
    causal_TxT = jnp.tril(jnp.ones((t, t), bool))
    rep = HEADS // KV_HEADS
    for i in range(NUM_LAYERS):
        p = f"model.layers.{i}."
        h_TxD = _rms(x_TxD, w[p + "input_layernorm.weight"])

        def proj(name, heads, h_TxD=h_TxD, p=p):
            y = h_TxD @ w[p + f"self_attn.{name}_proj.weight"].T
            if p + f"self_attn.{name}_proj.bias" in w:
                y = y + w[p + f"self_attn.{name}_proj.bias"]
            return y.reshape(t, heads, HEAD_DIM)

        q_TxHxQ = _rope_rotate_half(proj("q", HEADS), positions_T)
        k_TxGxQ = _rope_rotate_half(proj("k", KV_HEADS), positions_T)
        v_TxGxQ = proj("v", KV_HEADS)
        # HF repeat_kv: query head h reads kv head h // rep.
        k_TxHxQ, v_TxHxQ = (jnp.repeat(a, rep, axis=1) for a in (k_TxGxQ, v_TxGxQ))
        scores_HxTxT = jnp.einsum("thk,shk->hts", q_TxHxQ, k_TxHxQ) / np.sqrt(HEAD_DIM)
        scores_HxTxT = jnp.where(causal_TxT, scores_HxTxT, -jnp.inf)
        attn_TxHxQ = jnp.einsum("hts,shk->thk", jax.nn.softmax(scores_HxTxT, -1), v_TxHxQ)
        x_TxD = x_TxD + attn_TxHxQ.reshape(t, WIDTH) @ w[p + "self_attn.o_proj.weight"].T
        h_TxD = _rms(x_TxD, w[p + "post_attention_layernorm.weight"])
        gated_TxI = (jax.nn.silu(h_TxD @ w[p + "mlp.gate_proj.weight"].T)
                     * (h_TxD @ w[p + "mlp.up_proj.weight"].T))
        x_TxD = x_TxD + gated_TxI @ w[p + "mlp.down_proj.weight"].T
    head_VxD = w["model.embed_tokens.weight"] if tied else w["lm_head.weight"]
    return _rms(x_TxD, w["model.norm.weight"]) @ head_VxD.T


# ---- the project's LLM -------------------------------------------------------------------

def project_llm(cfg, fusion="interleave", vocab=VOCAB, *, abstract=True):
    """The LLM and its parameters: shapes only by default (every leaf of an interleave LLM
    without LoRA comes from the checkpoint, so the loaded tree is complete and cheap)."""
    model = llm_lib.LLM(cfg, vocab, fusion=fusion, memory_dim=WIDTH if fusion != "interleave"
                        else None)
    init = jax.jit(lambda key: model.init(key, **model.dummy_inputs()))
    params = jax.eval_shape(init, jax.random.key(1)) if abstract else init(jax.random.key(1))
    return model, nn.meta.unbox(params)


def project_logits(model, params, tokens_T):
    t = len(tokens_T)
    x_1xTxD = model.apply(params, jnp.asarray(tokens_T)[None], method=model.embed)
    positions_1xT = jnp.arange(t)[None]
    memory = {}
    if model.cross:  # one (zero) memory entry; a zero gate makes the sublayer a no-op
        memory = {"memory_BxUxE": jnp.zeros((1, 1, WIDTH)),
                  "memory_mask_BxTxU": jnp.ones((1, t, 1), bool)}
    logits_1xTxV, _ = jax.jit(model.apply)(params, x_1xTxD, positions_1xT, causal_mask(t)[None],
                                           **memory)
    return logits_1xTxV[0]


TOKENS = np.array([3, 17, 5, 39, 0, 22, 8, 8, 31, 12])


def load(params, directory, cfg, vocab=VOCAB, **kw):
    return {"params": pretrained.load_llm(params["params"], directory, cfg, vocab, **kw)}


def test_llama_untied_logits_match_reference(tmp_path):
    weights = hf_weights()
    ckpt = write_checkpoint(tmp_path / "llama", weights, config={
        "model_type": "llama", "num_hidden_layers": NUM_LAYERS, "hidden_size": WIDTH,
        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
        "intermediate_size": MLP_DIM, "rope_theta": THETA, "rms_norm_eps": 1e-5,
        "vocab_size": VOCAB, "tie_word_embeddings": False})
    cfg = llm_config()
    model, fresh = project_llm(cfg)
    params = load(fresh, ckpt, cfg)
    np.testing.assert_allclose(project_logits(model, params, TOKENS),
                               reference_logits(weights, TOKENS, tied=False),
                               rtol=1e-4, atol=1e-4)
    assert jax.tree.structure(params) == jax.tree.structure(fresh)


def test_qwen2_bias_tied_sharded_logits_match_reference(tmp_path):
    weights = hf_weights(seed=1, qkv_bias=True, tied=True)
    ckpt = write_checkpoint(tmp_path / "qwen2", weights, shards=3)
    cfg = llm_config(qkv_bias=True)
    model, fresh = project_llm(cfg)
    params = load(fresh, ckpt, cfg)
    np.testing.assert_allclose(project_logits(model, params, TOKENS),
                               reference_logits(weights, TOKENS, tied=True),
                               rtol=1e-4, atol=1e-4)
    # Without qkv_bias the biases have no place: an error that says what to set.
    cfg_no_bias = llm_config()
    with pytest.raises(PretrainedLoadError, match="qkv_bias=True"):
        load({"params": {}}, ckpt, cfg_no_bias)


def test_cross_attention_fusion_places_layers_by_group(tmp_path):
    # Layers scan in groups of cross_attention_every = 2: layer i -> layer_{i % 2}[i // 2].
    weights = hf_weights(seed=2)
    ckpt = write_checkpoint(tmp_path / "ckpt", weights)
    cfg = llm_config()
    model, fresh = project_llm(cfg, fusion="cross_attention")
    params = load(fresh, ckpt, cfg, fusion="cross_attention")
    layer_1 = params["params"]["layers"]["layer_1"]
    np.testing.assert_array_equal(layer_1["mlp"]["up"]["kernel"][0],
                                  weights["model.layers.1.mlp.up_proj.weight"].T)
    # Cross-attention is new: left as it was (here shapes only; its gate starts at 0, so
    # whatever it holds, the loaded function is the pretrained one).
    fresh_cross = fresh["params"]["layers"]["layer_1"]["cross_attn"]
    assert layer_1["cross_attn"] is not fresh_cross
    assert layer_1["cross_attn"]["q"]["kernel"] is fresh_cross["q"]["kernel"]
    params = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype)
                          if isinstance(x, jax.ShapeDtypeStruct) else x, params)
    np.testing.assert_allclose(project_logits(model, params, TOKENS),
                               reference_logits(weights, TOKENS, tied=False),
                               rtol=1e-4, atol=1e-4)


def test_vocabulary_policy(tmp_path):
    weights = hf_weights(seed=3)
    ckpt = write_checkpoint(tmp_path / "ckpt", weights)
    cfg, bigger = llm_config(), VOCAB + 8
    _, fresh = project_llm(cfg, vocab=bigger)
    with pytest.raises(PretrainedLoadError, match="pretrained_vocab='prefix'"):
        load(fresh, ckpt, cfg, vocab=bigger)
    params = load(fresh, ckpt, cfg, vocab=bigger, vocab_policy="prefix")
    table = params["params"]["embedding"]["embedding"]
    source = weights["model.embed_tokens.weight"]
    np.testing.assert_array_equal(table[:VOCAB], source)
    np.testing.assert_allclose(table[VOCAB:], np.broadcast_to(source.mean(0), (8, WIDTH)),
                               rtol=1e-6)
    head = params["params"]["head"]["kernel"]
    np.testing.assert_array_equal(head[:, :VOCAB], weights["lm_head.weight"].T)
    smaller = VOCAB - 8
    params = load(project_llm(cfg, vocab=smaller)[1], ckpt, cfg, vocab=smaller,
                  vocab_policy="prefix")
    np.testing.assert_array_equal(params["params"]["embedding"]["embedding"], source[:smaller])


def _write_raw_safetensors(file, tensors: dict[str, tuple[str, list[int], bytes]]):
    """The format by hand (for dtypes safetensors.numpy cannot write, e.g. BF16)."""
    header, offset, blobs = {}, 0, []
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header).encode()
    file.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def test_bfloat16_checkpoint_reads_as_float32(tmp_path):
    weights = hf_weights(seed=4)
    as_bf16 = {n: w.astype(jnp.bfloat16) for n, w in weights.items()}
    ckpt = tmp_path / "bf16"
    ckpt.mkdir()
    _write_raw_safetensors(ckpt / "model.safetensors", {
        n: ("BF16", list(w.shape), w.tobytes()) for n, w in as_bf16.items()})
    cfg = llm_config()
    params = load(project_llm(cfg)[1], ckpt, cfg)
    np.testing.assert_array_equal(params["params"]["final_norm"]["scale"],
                                  as_bf16["model.norm.weight"].astype(np.float32))


@pytest.mark.parametrize("case, match", [
    ("missing_tensor", r"'model.layers.1.mlp.up_proj.weight' is missing"),
    ("wrong_shape", (r"model.safetensors: tensor 'model.layers.0.self_attn.k_proj.weight' "
                     r"has shape \[32, 32\], expected \[16, 32\]")),
    ("extra_tensor", r"'model.layers.0.self_attn.o_proj.bias' in model.safetensors"),
    ("integer_dtype", r"tensor 'model.norm.weight' has dtype I32"),
    ("config_mismatch", r"config.json: hidden_size=64 but config.model.llm.width=32"),
    ("rope_scaling", r"rope_scaling"),
])
def test_bad_checkpoints_name_the_tensor(tmp_path, case, match):
    weights = hf_weights(seed=5)
    config = None
    if case == "missing_tensor":
        del weights["model.layers.1.mlp.up_proj.weight"]
    elif case == "wrong_shape":
        weights["model.layers.0.self_attn.k_proj.weight"] = np.zeros((WIDTH, WIDTH), np.float32)
    elif case == "extra_tensor":
        weights["model.layers.0.self_attn.o_proj.bias"] = np.zeros(WIDTH, np.float32)
    elif case == "integer_dtype":
        weights["model.norm.weight"] = np.ones(WIDTH, np.int32)
    elif case == "config_mismatch":
        config = {"hidden_size": 64}
    elif case == "rope_scaling":
        config = {"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}
    ckpt = write_checkpoint(tmp_path / case, weights, config=config)
    cfg = llm_config()
    with pytest.raises(PretrainedLoadError, match=match):
        load({"params": {}}, ckpt, cfg)


def test_bad_directories(tmp_path):
    cfg, fresh = llm_config(), {"params": {}}  # these fail before any parameter is touched
    with pytest.raises(PretrainedLoadError, match="no such checkpoint directory"):
        load(fresh, tmp_path / "absent", cfg)
    (tmp_path / "empty").mkdir()
    with pytest.raises(PretrainedLoadError, match=r"no \*.safetensors"):
        load(fresh, tmp_path / "empty", cfg)
    # A sharded index naming a shard that is not there.
    ckpt = write_checkpoint(tmp_path / "sharded", hf_weights(seed=6), shards=2)
    (ckpt / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(PretrainedLoadError,
                       match=r"index.json: tensor '.*' is mapped to model-00002-of-00002"
                             r".safetensors, which does not exist"):
        load(fresh, ckpt, cfg)
    # A truncated file: safetensors rejects it on opening; the error names the file.
    ckpt = write_checkpoint(tmp_path / "truncated", hf_weights(seed=6))
    file = ckpt / "model.safetensors"
    file.write_bytes(file.read_bytes()[:-100])
    with pytest.raises(PretrainedLoadError,
                       match=r"truncated/model.safetensors: not a readable safetensors file"):
        load(fresh, ckpt, cfg)
    # Not a safetensors file at all.
    (ckpt / "model.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainedLoadError,
                       match=r"truncated/model.safetensors: not a readable safetensors file"):
        load(fresh, ckpt, cfg)


def test_replace_llm_params_takes_its_settings_from_the_config(tmp_path):
    config = ml_collections.ConfigDict({
        "model": {"fusion": "interleave", "llm": llm_config(pretrained_vocab="prefix")},
        "data": {"tokenizer": {"vocab_size": VOCAB + 2}}})
    _, fresh = project_llm(config.model.llm, vocab=VOCAB + 2)
    other = {"connector": np.ones(3, np.float32)}
    params = {"params": {"llm": fresh["params"], **other}}
    with pytest.raises(PretrainedLoadError, match="pretrained_path is empty"):
        pretrained.replace_llm_params(params, config)
    config.model.llm.pretrained_path = str(write_checkpoint(tmp_path / "ckpt", hf_weights()))
    loaded = pretrained.replace_llm_params(params, config)
    assert loaded["params"]["connector"] is other["connector"]
    assert loaded["params"]["llm"]["embedding"]["embedding"].shape == (VOCAB + 2, WIDTH)
    assert params["params"]["llm"] is fresh["params"]  # the input tree is left alone


@pytest.mark.slow  # builds a whole (small) Trainer: ~40 s on a busy 2-core CPU
def test_trainer_init_state_loads_the_llm(tmp_path):
    from configs import tiny
    from omni_jax.train.trainer import Trainer

    config = tiny.get_config()
    llm = config.model.llm
    llm.num_layers, llm.width, llm.num_heads, llm.num_kv_heads, llm.mlp_dim = (
        NUM_LAYERS, WIDTH, HEADS, KV_HEADS, MLP_DIM)
    e, s = config.model.encoder, config.model.synth
    e.num_layers, e.width, s.num_layers, s.width, s.mlp_dim = 1, 16, 1, 16, 32
    config.data.tokenizer.vocab_size = VOCAB
    config.data.pipeline.batch_size = 1
    weights = hf_weights(seed=7)
    llm.pretrained_path = str(write_checkpoint(tmp_path / "ckpt", weights))
    state = Trainer(config, tmp_path / "run", devices=jax.devices()[:1]).init_state()
    loaded = state.params["params"]["llm"]
    np.testing.assert_array_equal(loaded["layers"]["layer_0"]["mlp"]["down"]["kernel"][1],
                                  weights["model.layers.1.mlp.down_proj.weight"].T)
    np.testing.assert_array_equal(loaded["head"]["kernel"], weights["lm_head.weight"].T)


def test_config_fields_are_validated():
    from configs import tiny
    from omni_jax import configuration

    config = tiny.get_config()
    assert config.model.llm.pretrained_path == "" and config.model.llm.pretrained_vocab == "exact"
    config.model.llm.pretrained_vocab = "resize"
    with pytest.raises(configuration.ConfigError, match="model.llm.pretrained_vocab"):
        configuration.validate(config)
