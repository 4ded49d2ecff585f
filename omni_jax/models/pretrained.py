"""Starts the LLM from a pretrained Llama- or Qwen2-style checkpoint in the Hugging Face layout.

A checkpoint is a directory holding `*.safetensors` (one file, or shards listed by
`model.safetensors.index.json`) and optionally `config.json`. Files are read with the
`safetensors` library (framework "numpy": no torch, no download): headers first, then the
tensors memory-mapped and read one parameter at a time. F32, F16, F64 and BF16 (the usual
release dtype) are read and cast to float32, the dtype of every parameter here.

Name and shape map (HF tensor -> leaf of `params['llm']`; letters of `omni_jax.models`:
Y layers, D width, H heads, G kv heads, Q = D / H head dim, I mlp dim, V vocab). torch
Linear weights are [out, in]; Flax kernels are [in, out], with the head axes split out:

  model.embed_tokens.weight                     [V, D]   -> embedding/embedding   [V, D]
  model.layers.i.input_layernorm.weight         [D]      -> attn_norm/scale       [D]
  model.layers.i.self_attn.q_proj.weight        [H*Q, D] -> attn/q/kernel         [D, H, Q]
  model.layers.i.self_attn.k_proj.weight        [G*Q, D] -> attn/k/kernel         [D, G, Q]
  model.layers.i.self_attn.v_proj.weight        [G*Q, D] -> attn/v/kernel         [D, G, Q]
  model.layers.i.self_attn.{q,k,v}_proj.bias    [H*Q]... -> attn/{q,k,v}/bias     [H, Q]...
                                                            (Qwen2; needs model.llm.qkv_bias)
  model.layers.i.self_attn.o_proj.weight        [D, H*Q] -> attn/o/kernel         [H, Q, D]
  model.layers.i.post_attention_layernorm.weight [D]     -> mlp_norm/scale        [D]
  model.layers.i.mlp.{gate,up}_proj.weight      [I, D]   -> mlp/{gate,up}/kernel  [D, I]
  model.layers.i.mlp.down_proj.weight           [D, I]   -> mlp/down/kernel       [I, D]
  model.norm.weight                             [D]      -> final_norm/scale      [D]
  lm_head.weight                                [V, D]   -> head/kernel           [D, V]

Layer leaves are stacked by the layer scan (a leading Y/e axis): layer i sits at slot
i // e of `layers/layer_{i % e}` (e = cross_attention_every in the cross_attention fusion,
else 1).
RoPE needs no permutation: `attention.rope` rotates split halves like HF's `rotate_half`.

Policies:
  tied embeddings  `lm_head.weight` absent (or `tie_word_embeddings` in config.json): the
                   head starts as the transposed embedding; the two train separately after.
  vocabulary       model.llm.pretrained_vocab, one of `VOCAB_POLICIES`. "exact": the
                   checkpoint's vocabulary must equal data.tokenizer.vocab_size.
                   "prefix": rows 0..min(V)-1 are copied;
                   model rows past the checkpoint's vocabulary start at the mean of its rows
                   (embedding and head alike), so new tokens start as an average token.
  extra tensors    an error: a tensor this map does not place may change what the network
                   computes (e.g. an o_proj bias). Only `rotary_emb.inv_freq` buffers are
                   skipped (they are recomputed from rope_theta).
  config.json      when present, its shape fields must equal model.llm's (an error names
                   both); `rope_scaling` is an error (no scaled RoPE here); a different
                   `rms_norm_eps` only warns (the norms use llm.NORM_EPS).
  not loaded       LoRA adapters, cross-attention sublayers and their gates keep their fresh
                   initialisation (a fresh adapter and a zero gate leave the function as
                   loaded).
Every failure is a `PretrainedLoadError` naming the directory or file and the tensor.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import jax
import numpy as np
import safetensors

from omni_jax.models.llm import NORM_EPS

log = logging.getLogger(__name__)

INDEX_FILE = "model.safetensors.index.json"
CONFIG_FILE = "config.json"
VOCAB_POLICIES = ("exact", "prefix")  # the allowed values of model.llm.pretrained_vocab
# safetensors dtype names that hold weights we can cast to float32.
FLOAT_DTYPES = ("BF16", "F16", "F32", "F64")
_SKIPPED = re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq")
# config.json field -> model.llm field, compared when config.json is present.
_CONFIG_FIELDS = (("num_hidden_layers", "num_layers"), ("hidden_size", "width"),
                  ("num_attention_heads", "num_heads"), ("num_key_value_heads", "num_kv_heads"),
                  ("intermediate_size", "mlp_dim"), ("rope_theta", "rope_theta"))


class PretrainedLoadError(ValueError):
    """A checkpoint that cannot become this model's LLM; the message names file and tensor."""


# ---- the safetensors files ---------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TensorEntry:
    """One tensor of a checkpoint, from its file's header: file, dtype name, shape."""

    file: Path
    dtype: str  # the safetensors name: F32, BF16, I32, ...
    shape: tuple[int, ...]

    def read(self, name: str) -> np.ndarray:
        """The tensor as float32 (memory-mapped by safetensors, then cast)."""
        if self.dtype not in FLOAT_DTYPES:
            raise PretrainedLoadError(f"{self.file}: tensor {name!r} has dtype {self.dtype}; "
                                      f"only {sorted(FLOAT_DTYPES)} can become float32 weights")
        try:
            with safetensors.safe_open(self.file, framework="numpy") as f:
                return np.asarray(f.get_tensor(name), np.float32)
        except (OSError, safetensors.SafetensorError, TypeError) as e:
            raise PretrainedLoadError(f"{self.file}: tensor {name!r} cannot be read: "
                                      f"{e}") from None


def read_header(file: Path) -> dict[str, TensorEntry]:
    """The tensors of one safetensors file, from its header alone (safetensors checks that
    the header is well formed and that the data covers every tensor)."""
    file = Path(file)
    try:
        with safetensors.safe_open(file, framework="numpy") as f:
            slices = {name: f.get_slice(name) for name in f.keys()}
            return {name: TensorEntry(file, str(s.get_dtype()), tuple(s.get_shape()))
                    for name, s in slices.items()}
    except OSError as e:
        raise PretrainedLoadError(f"{file}: cannot read: {e}") from None
    except safetensors.SafetensorError as e:
        raise PretrainedLoadError(f"{file}: not a readable safetensors file (truncated or "
                                  f"corrupt?): {e}") from None


def checkpoint_tensors(directory) -> dict[str, TensorEntry]:
    """Every tensor of a checkpoint directory: through its index when it has one, else the
    union of its `*.safetensors` files (a name in two files is an error)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise PretrainedLoadError(f"{directory}: no such checkpoint directory")
    index_file = directory / INDEX_FILE
    if index_file.exists():
        try:
            weight_map = json.loads(index_file.read_text())["weight_map"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise PretrainedLoadError(f"{index_file}: unreadable index ({e!r})") from None
        headers, tensors = {}, {}
        for name, file_name in weight_map.items():
            file = directory / file_name
            if file_name not in headers:
                if not file.is_file():
                    raise PretrainedLoadError(f"{index_file}: tensor {name!r} is mapped to "
                                              f"{file_name}, which does not exist in {directory}")
                headers[file_name] = read_header(file)
            if name not in headers[file_name]:
                raise PretrainedLoadError(f"{index_file}: tensor {name!r} is mapped to "
                                          f"{file_name}, which does not hold it")
            tensors[name] = headers[file_name][name]
        return tensors
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise PretrainedLoadError(f"{directory}: no *.safetensors files and no {INDEX_FILE}")
    tensors = {}
    for file in files:
        for name, entry in read_header(file).items():
            if name in tensors:
                raise PretrainedLoadError(f"{directory}: tensor {name!r} is in both "
                                          f"{tensors[name].file.name} and {file.name}")
            tensors[name] = entry
    return tensors


def read_hf_config(directory) -> dict | None:
    """config.json of the checkpoint, or None when it has none."""
    file = Path(directory) / CONFIG_FILE
    if not file.exists():
        return None
    try:
        return json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise PretrainedLoadError(f"{file}: unreadable ({e})") from None


def check_hf_config(hf_config: dict, llm_cfg, where: str = CONFIG_FILE) -> None:
    """config.json against `config.model.llm`: shape fields equal, no unsupported feature."""
    hf = dict(hf_config)
    hf.setdefault("num_key_value_heads", hf.get("num_attention_heads"))
    hf.setdefault("rope_theta", 10000.0)  # HF's default for both Llama and Qwen2
    for hf_field, field in _CONFIG_FIELDS:
        if hf.get(hf_field) is None:
            continue
        ours = llm_cfg[field]
        if not math.isclose(float(hf[hf_field]), float(ours), rel_tol=1e-9):
            raise PretrainedLoadError(f"{where}: {hf_field}={hf[hf_field]} but "
                                      f"config.model.llm.{field}={ours}")
    width, heads = int(llm_cfg.width), int(llm_cfg.num_heads)
    if hf.get("head_dim") not in (None, width // heads):
        raise PretrainedLoadError(f"{where}: head_dim={hf['head_dim']}, but this model's head "
                                  f"dim is width / num_heads = {width // heads}")
    if hf.get("rope_scaling"):
        raise PretrainedLoadError(f"{where}: rope_scaling={hf['rope_scaling']!r} is not "
                                  "supported (attention.rope has no scaling); loading would "
                                  "change what the model computes")
    if hf.get("hidden_act", "silu") != "silu":
        raise PretrainedLoadError(f"{where}: hidden_act={hf['hidden_act']!r}; the MLP is SwiGLU "
                                  "(silu)")
    eps = hf.get("rms_norm_eps")
    if eps is not None and not math.isclose(float(eps), NORM_EPS):
        log.warning("%s: rms_norm_eps=%s, the model's RMSNorm uses %s", where, eps, NORM_EPS)


# ---- the name map ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Placement:
    """One HF tensor and the parameter slot it fills."""

    hf_name: str
    hf_shape: tuple[int | None, ...]  # None: the vocabulary axis (see the vocab policy)
    path: tuple[str, ...]  # leaf of params['llm']
    slot: int | None  # index along the stacked `layers` axis (None: not stacked)
    to_flax: Callable[[np.ndarray], np.ndarray]  # HF layout -> the slot's layout


def _linear_to_heads(num_heads: int, head_dim: int):
    # [H*Q, D] -> [D, H, Q] (or G for H)
    return lambda w: w.T.reshape(-1, num_heads, head_dim)


def _out_proj(num_heads: int, head_dim: int):
    # [D, H*Q] -> [H, Q, D]
    return lambda w: w.T.reshape(num_heads, head_dim, -1)


def _transpose(w):
    return w.T


def _same(w):
    return w


def llm_name_map(llm_cfg, *, fusion: str = "interleave", tied: bool = False) -> list[Placement]:
    """The explicit HF -> Flax map for `config.model.llm` (see the module docstring)."""
    num_layers, width = int(llm_cfg.num_layers), int(llm_cfg.width)
    heads, kv_heads = int(llm_cfg.num_heads), int(llm_cfg.num_kv_heads)
    mlp_dim = int(llm_cfg.mlp_dim)
    head_dim = width // heads
    group = int(llm_cfg.cross_attention_every) if fusion == "cross_attention" else 1
    qkv_bias = bool(llm_cfg.get("qkv_bias", False))
    out = [Placement("model.embed_tokens.weight", (None, width), ("embedding", "embedding"),
                     None, _same),
           Placement("model.norm.weight", (width,), ("final_norm", "scale"), None, _same)]
    if tied:
        out.append(Placement("model.embed_tokens.weight", (None, width), ("head", "kernel"),
                             None, _transpose))
    else:
        out.append(Placement("lm_head.weight", (None, width), ("head", "kernel"), None,
                             _transpose))
    for i in range(num_layers):
        hf, slot, layer = f"model.layers.{i}.", i // group, ("layers", f"layer_{i % group}")

        def put(name, shape, path, fn, hf=hf, slot=slot, layer=layer):
            out.append(Placement(hf + name, shape, layer + path, slot, fn))

        put("input_layernorm.weight", (width,), ("attn_norm", "scale"), _same)
        put("post_attention_layernorm.weight", (width,), ("mlp_norm", "scale"), _same)
        for proj, n in (("q", heads), ("k", kv_heads), ("v", kv_heads)):
            put(f"self_attn.{proj}_proj.weight", (n * head_dim, width), ("attn", proj, "kernel"),
                _linear_to_heads(n, head_dim))
            if qkv_bias:
                put(f"self_attn.{proj}_proj.bias", (n * head_dim,), ("attn", proj, "bias"),
                    lambda b, n=n: b.reshape(n, head_dim))
        put("self_attn.o_proj.weight", (width, heads * head_dim), ("attn", "o", "kernel"),
            _out_proj(heads, head_dim))
        put("mlp.gate_proj.weight", (mlp_dim, width), ("mlp", "gate", "kernel"), _transpose)
        put("mlp.up_proj.weight", (mlp_dim, width), ("mlp", "up", "kernel"), _transpose)
        put("mlp.down_proj.weight", (width, mlp_dim), ("mlp", "down", "kernel"), _transpose)
    return out


# ---- loading -----------------------------------------------------------------------------

def _resize_vocab(rows_VxD: np.ndarray, vocab_size: int) -> np.ndarray:
    """The "prefix" policy: first min(V) rows, then the mean row."""
    out_VxD = np.empty((vocab_size, rows_VxD.shape[1]), np.float32)
    n = min(vocab_size, rows_VxD.shape[0])
    out_VxD[:n] = rows_VxD[:n]
    out_VxD[n:] = rows_VxD.mean(axis=0)
    return out_VxD


def _plan(directory: Path, llm_cfg, vocab_size: int, fusion: str, vocab_policy: str
          ) -> tuple[list[Placement], dict[str, TensorEntry]]:
    """Checks everything that headers can tell (names, shapes, dtypes, config.json) before
    a byte of weights is read; returns the placements and the tensors they read."""
    if vocab_policy not in VOCAB_POLICIES:
        raise PretrainedLoadError(f"vocab policy {vocab_policy!r} is not one of "
                                  f"{list(VOCAB_POLICIES)}")
    tensors = checkpoint_tensors(directory)
    hf_config = read_hf_config(directory)
    if hf_config is not None:
        check_hf_config(hf_config, llm_cfg, str(directory / CONFIG_FILE))
    tied = "lm_head.weight" not in tensors
    if tied and hf_config is not None and hf_config.get("tie_word_embeddings") is False:
        raise PretrainedLoadError(f"{directory}: tensor 'lm_head.weight' is missing and "
                                  f"{CONFIG_FILE} says the embeddings are not tied")
    placements = llm_name_map(llm_cfg, fusion=fusion, tied=tied)
    for p in placements:
        entry = tensors.get(p.hf_name)
        if entry is None:
            raise PretrainedLoadError(f"{directory}: tensor {p.hf_name!r} is missing (needed "
                                      f"for llm/{'/'.join(p.path)})")
        if entry.dtype not in FLOAT_DTYPES:
            raise PretrainedLoadError(f"{entry.file}: tensor {p.hf_name!r} has dtype "
                                      f"{entry.dtype}; only {sorted(FLOAT_DTYPES)} can become "
                                      "float32 weights")
        vocab_rows = entry.shape[0] if entry.shape else -1
        expected = tuple(vocab_rows if n is None else n for n in p.hf_shape)
        if entry.shape != expected:
            raise PretrainedLoadError(f"{entry.file}: tensor {p.hf_name!r} has shape "
                                      f"{list(entry.shape)}, expected {list(expected)} from "
                                      "config.model.llm")
        if None in p.hf_shape and entry.shape[0] != vocab_size and vocab_policy == "exact":
            raise PretrainedLoadError(
                f"{entry.file}: tensor {p.hf_name!r} has a vocabulary of {entry.shape[0]}, "
                f"the model {vocab_size} (data.tokenizer.vocab_size); set "
                "config.model.llm.pretrained_vocab='prefix' to copy the first rows")
    used = {p.hf_name for p in placements}
    extra = sorted(n for n in tensors if n not in used and not _SKIPPED.fullmatch(n))
    if extra:
        hint = ""
        if any(n.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias")) for n in extra):
            hint = " (q/k/v biases: set config.model.llm.qkv_bias=True)"
        shown = ", ".join(f"{n!r} in {tensors[n].file.name}" for n in extra[:5])
        raise PretrainedLoadError(f"{directory}: {len(extra)} tensor(s) this model has no place "
                                  f"for: {shown}{' ...' if len(extra) > 5 else ''}{hint}")
    return placements, tensors


def iter_llm_leaves(directory, llm_cfg, vocab_size: int, *, fusion: str = "interleave",
                    vocab_policy: str = "exact") -> Iterator[tuple[tuple[str, ...], np.ndarray]]:
    """(leaf path in params['llm'], float32 value) for every loaded leaf, one at a time (a
    stacked layer leaf whole), after `_plan` has checked the checkpoint. Peak host memory
    is about one stacked leaf plus one tensor, not the model."""
    directory = Path(directory)
    placements, tensors = _plan(directory, llm_cfg, vocab_size, fusion, vocab_policy)
    by_path: dict[tuple[str, ...], list[Placement]] = {}
    for p in placements:
        by_path.setdefault(p.path, []).append(p)
    for path, group in by_path.items():
        stacked = None
        for p in group:
            value = tensors[p.hf_name].read(p.hf_name)
            if None in p.hf_shape:
                value = _resize_vocab(value, vocab_size)
            value = p.to_flax(value)
            if p.slot is None:
                stacked = value
                break
            if stacked is None:  # filled slot by slot: no list of per-layer copies
                stacked = np.empty((len(group), *value.shape), np.float32)
            stacked[p.slot] = value
        yield path, stacked


def _place_like(old, value: np.ndarray):
    """`value` with `old`'s dtype and, for a jax.Array, its sharding (each device gets only
    its shard: this also works when the array spans several processes)."""
    value = value.astype(old.dtype)
    sharding = getattr(old, "sharding", None)
    if sharding is None:
        return value
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def _copy_containers(tree):
    """Plain nested dicts over the same leaves (the caller's tree stays untouched)."""
    if isinstance(tree, Mapping):
        return {key: _copy_containers(value) for key, value in tree.items()}
    return tree


def load_llm(llm_params: dict, directory, llm_cfg, vocab_size: int, *,
             fusion: str = "interleave", vocab_policy: str = "exact") -> dict:
    """`llm_params` (the LLM's subtree, unboxed) with every pretrained leaf replaced; leaves
    the checkpoint does not hold (LoRA, cross-attention) are returned as they were."""
    new_params = _copy_containers(llm_params)
    count = 0
    for path, value in iter_llm_leaves(directory, llm_cfg, vocab_size, fusion=fusion,
                                       vocab_policy=vocab_policy):
        node = new_params
        for key in path[:-1]:
            if key not in node:
                raise PretrainedLoadError(f"{directory}: the model has no llm/{'/'.join(path)}")
            node = node[key]
        old = node.get(path[-1])
        if old is None:
            raise PretrainedLoadError(f"{directory}: the model has no llm/{'/'.join(path)}")
        if tuple(old.shape) != value.shape:
            raise PretrainedLoadError(f"{directory}: llm/{'/'.join(path)} is {list(old.shape)} "
                                      f"in the model, {list(value.shape)} from the checkpoint")
        node[path[-1]] = _place_like(old, value)
        count += 1
    log.info("loaded %d LLM parameters from %s", count, directory)
    return new_params


def replace_llm_params(params: dict, config, directory=None) -> dict:
    """The full `{'params': ...}` tree with the LLM part loaded from `directory` (default
    `config.model.llm.pretrained_path`) under `config.model.llm.pretrained_vocab`."""
    llm_cfg = config.model.llm
    directory = directory or llm_cfg.get("pretrained_path", "")
    if not directory:
        raise PretrainedLoadError("no checkpoint directory: config.model.llm.pretrained_path "
                                  "is empty")
    tree = dict(params)
    tree["params"] = dict(params["params"])
    tree["params"]["llm"] = load_llm(
        params["params"]["llm"], directory, llm_cfg, int(config.data.tokenizer.vocab_size),
        fusion=config.model.fusion, vocab_policy=llm_cfg.get("pretrained_vocab", "exact"))
    return tree
