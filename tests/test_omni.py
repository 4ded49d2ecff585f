"""The duplex model: block-by-block `step` == `lax.scan` forward == parallel forward,
causality, fixed-size state, for both fusions, both encoder kinds and every thinking variant."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from omni_jax import configuration
from omni_jax.models.omni import DuplexModel

NUM_BLOCKS = 4
# Every fusion x encoder-kind pair, and every thinking variant at least once; CI runs one,
# the other three are `slow` (30-45 s each on 2 cores; the causality test below covers the
# other fusion and encoder kind in CI).
VARIANTS = [
    "interleave,mamba,explicit,ctc",
    pytest.param("interleave,transformer,negative_ce", marks=pytest.mark.slow),
    pytest.param("cross_attention,mamba,implicit", marks=pytest.mark.slow),
    pytest.param("cross_attention,transformer,explicit", marks=pytest.mark.slow),
]


def _small(arg):
    c = tiny.get_config(arg)
    c.model.encoder.num_layers, c.model.encoder.width = 2, 32
    c.model.llm.num_layers, c.model.llm.width, c.model.llm.mlp_dim = 2, 64, 128
    c.model.synth.num_layers, c.model.synth.width = 1, 32
    c.data.prompt_len = 3
    return c


def _batch(dm, seed=0, batch=2):
    rng = np.random.default_rng(seed)
    shapes = dm.dummy_batch(batch, NUM_BLOCKS)
    audio = lambda: jnp.asarray(0.1 * rng.normal(size=shapes["env_audio"].shape), jnp.float32)
    ids = lambda key: jnp.asarray(rng.integers(4, 300, size=shapes[key].shape), jnp.int32)
    return dict(env_audio=audio(), asst_audio=audio(), tokens=ids("tokens"),
                prompt_tokens=ids("prompt_tokens"))


def _close(a, b, atol=1e-4):
    for key in a:
        np.testing.assert_allclose(np.asarray(a[key]), np.asarray(b[key]), atol=atol,
                                   err_msg=key)


@pytest.mark.parametrize("arg", VARIANTS)
def test_step_equals_scan_equals_parallel(arg):
    dm = DuplexModel.from_config(_small(arg))
    params = dm.init(jax.random.key(0))
    batch = _batch(dm)
    parallel = jax.jit(dm.parallel_forward)(params, batch)
    scanned = jax.jit(dm.scan_forward)(params, batch)
    _close(parallel, scanned)

    carry = dm.init_state(params, batch["prompt_tokens"], NUM_BLOCKS)
    shapes = jax.tree.map(lambda x: (x.shape, x.dtype), carry)
    step = jax.jit(dm.step)
    stepped = []
    for k in range(NUM_BLOCKS):
        block = {name: batch[name][:, k] for name in ("env_audio", "asst_audio", "tokens")}
        carry, out = step(params, carry, block)
        assert jax.tree.map(lambda x: (x.shape, x.dtype), carry) == shapes  # never grows
        stepped.append(out)
    stepped = jax.tree.map(lambda *xs: jnp.stack(xs, axis=1), *stepped)
    _close(parallel, stepped)

    v = dm.config.data.tokenizer.vocab_size
    assert parallel["logits"].shape == (2, NUM_BLOCKS, 1, v)
    assert parallel["mel"].shape == (2, NUM_BLOCKS, 8, 80)
    implicit = dm.config.model.thinking == "implicit"
    assert bool(jnp.any(parallel["speak_logit"] != 0)) == implicit
    # The CTC head (compared in all three forms above) exists only when configured, and
    # transcribes the environment stream alone: the assistant stream does not move it.
    assert ("heard_logits" in parallel) == ("ctc" in arg)
    if "ctc" in arg:
        assert parallel["heard_logits"].shape == (2, NUM_BLOCKS, v)
        quiet = dict(batch, asst_audio=batch["asst_audio"] * 0.0)
        np.testing.assert_allclose(jax.jit(dm.parallel_forward)(params, quiet)["heard_logits"],
                                   parallel["heard_logits"], atol=1e-5)


# CI: the fusion and encoder kind that step == scan == parallel leaves to `slow`.
@pytest.mark.parametrize("arg", [pytest.param("interleave,mamba", marks=pytest.mark.slow),
                                 "cross_attention,transformer"])
def test_later_blocks_never_change_earlier_outputs(arg):
    dm = DuplexModel.from_config(_small(arg))
    params = dm.init(jax.random.key(1))
    forward = jax.jit(dm.parallel_forward)
    batch = _batch(dm, seed=1)
    base = forward(params, batch)
    i = 1
    changed = dict(batch)
    for name in ("env_audio", "asst_audio"):
        changed[name] = batch[name].at[:, i + 1:].add(0.3)
    changed["tokens"] = batch["tokens"].at[:, i + 1:].set(7)
    out = forward(params, changed)
    for key in ("logits", "mel"):
        np.testing.assert_array_equal(np.asarray(out[key][:, :i + 1]),
                                      np.asarray(base[key][:, :i + 1]), err_msg=key)
        assert not np.allclose(np.asarray(out[key][:, i + 1:]), np.asarray(base[key][:, i + 1:]))


def test_tiny_is_a_few_million_parameters():
    dm = DuplexModel.from_config(tiny.get_config())
    shapes = jax.eval_shape(dm.init, jax.random.key(0))
    count = sum(x.size for x in jax.tree.leaves(shapes))
    assert 2e6 < count < 10e6


@pytest.mark.parametrize("field, value, named", [
    ("model.llm.num_heads", 3, "config.model.llm.num_heads"),
    ("model.synth.llm_layer", 7, "config.model.synth.llm_layer"),
    ("audio.block_ms", 85, "config.audio.block_ms"),
])
def test_impossible_shapes_fail_validation(field, value, named):
    """Entry points validate before they build the model (DuplexModel.from_config does not
    validate: the models package does not import the configuration)."""
    config = tiny.get_config()
    *parents, leaf = field.split(".")
    node = config
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(configuration.ConfigError, match=named):
        configuration.validate(config)


def test_every_parameter_has_logical_axes_and_bf16_keeps_f32_params():
    import flax.linen as nn

    config = _small("interleave,mamba,implicit")
    config.model.dtype = "bfloat16"
    dm = DuplexModel.from_config(config)
    boxed = jax.eval_shape(dm.init, jax.random.key(0))
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
    assert all(len(x.names) == x.value.ndim for x in leaves)
    assert all(x.value.dtype == jnp.float32 for x in leaves)
    params = dm.init(jax.random.key(0))
    batch = _batch(dm)
    parallel = jax.jit(dm.parallel_forward)(params, batch)
    scanned = jax.jit(dm.scan_forward)(params, batch)
    assert parallel["logits"].dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(parallel["logits"])))
    # bf16 rounding differs between the forms; they still agree loosely.
    np.testing.assert_allclose(np.asarray(parallel["mel"]), np.asarray(scanned["mel"]),
                               atol=0.1)
