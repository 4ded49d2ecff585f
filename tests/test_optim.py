"""Optimizer: schedule, clipping, freezing (no update, no state), pattern errors, the
non-finite guard, and the training stages on a real DuplexModel parameter tree."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import common, default, tiny
from omni_jax.models.omni import DuplexModel
from omni_jax.train import optim, state as state_lib


def _config(**train):
    c = default.get_config()
    c.train.steps, c.train.warmup_steps, c.train.learning_rate = 100, 10, 1e-2
    c.train.weight_decay, c.train.grad_clip = 0.0, 1.0
    for key, value in train.items():
        c.train[key] = value
    return c


def _params():
    rng = np.random.default_rng(0)
    leaf = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)  # noqa: E731
    return {"params": {
        "encoder": {"proj": {"kernel": leaf(3, 4), "bias": leaf(4)}},
        "connector": {"fc1": {"kernel": leaf(4, 4), "bias": leaf(4)}},
        "llm": {"attn": {"q": {"kernel": leaf(4, 4), "lora_a": leaf(4, 2)}},
                "norm": {"scale": leaf(4)}},
    }}


def _adam_mu(opt_state):
    is_adam = lambda x: isinstance(x, optax.ScaleByAdamState)  # noqa: E731
    (adam,) = [s for s in jax.tree.leaves(opt_state, is_leaf=is_adam) if is_adam(s)]
    return adam.mu


def _step_fn(optimizer):
    """A jitted step from whole-tree gradients (the trainer differentiates the trainable
    subtree alone; here the frozen leaves' gradients are built and cut off)."""
    return jax.jit(lambda state, grads, loss: state_lib.apply_gradients(
        state, optimizer.split(grads)[0], optimizer, loss))


def test_param_paths_drop_the_collection_name():
    paths = optim.param_paths(_params())
    assert "llm/attn/q/lora_a" in paths and "encoder/proj/kernel" in paths
    assert len(paths) == 7


def test_schedule_warmup_then_cosine_to_zero():
    schedule = optim.make_schedule(_config())
    np.testing.assert_allclose(schedule(0), 0.0)
    np.testing.assert_allclose(schedule(5), 0.5e-2, rtol=1e-6)
    np.testing.assert_allclose(schedule(10), 1e-2, rtol=1e-6)
    # Halfway through the decay (55 of 10..100) the cosine is at half the peak.
    np.testing.assert_allclose(schedule(55), 0.5e-2, rtol=1e-5)
    np.testing.assert_allclose(schedule(100), 0.0, atol=1e-9)
    with pytest.raises(ValueError, match="warmup_steps"):
        optim.make_schedule(_config(warmup_steps=100))


def test_first_adam_step_is_clipped_and_scheduled():
    # grad_clip scales a big gradient to norm 1; Adam's first step is lr * sign(g) (roughly)
    # whatever the scale, so clipping is checked on the clipped gradient itself.
    config = _config(warmup_steps=0, grad_clip=1.0)
    params = _params()
    grads = jax.tree.map(lambda p: jnp.full_like(p, 100.0), params)
    clip = optax.clip_by_global_norm(1.0)
    clipped, _ = clip.update(grads, clip.init(params))
    np.testing.assert_allclose(optax.global_norm(clipped), 1.0, rtol=1e-5)

    optimizer = optim.make_optimizer(config, params)
    state = state_lib.create(params, optimizer)
    state = _step_fn(optimizer)(state, grads, jnp.float32(1.0))
    mu = _adam_mu(state.opt_state)
    # The first moment holds (1 - b1) * the *clipped* gradient.
    np.testing.assert_allclose(optax.global_norm(mu), 0.1, rtol=1e-4)
    delta = jax.tree.map(lambda a, b: a - b, state.params, params)
    np.testing.assert_allclose(delta["params"]["encoder"]["proj"]["kernel"], -1e-2, rtol=1e-3)


def test_frozen_params_unchanged_and_without_state():
    config = _config(frozen=(r"encoder/.*", r"llm/(?!.*lora_).*"))
    params = _params()
    optimizer = optim.make_optimizer(config, params)
    state = state_lib.create(params, optimizer)
    step = _step_fn(optimizer)
    for i in range(3):
        grads = jax.tree.map(lambda p: jnp.full_like(p, 1e4 * (i + 1)), params)
        state = step(state, grads, jnp.float32(1.0))
    new = state.params["params"]
    old = params["params"]
    for frozen in (("encoder", "proj", "kernel"), ("encoder", "proj", "bias"),
                   ("llm", "attn", "q", "kernel"), ("llm", "norm", "scale")):
        a, b = new, old
        for key in frozen:
            a, b = a[key], b[key]
        np.testing.assert_array_equal(a, b, err_msg="/".join(frozen))
    assert not np.array_equal(new["connector"]["fc1"]["kernel"], old["connector"]["fc1"]["kernel"])
    assert not np.array_equal(new["llm"]["attn"]["q"]["lora_a"], old["llm"]["attn"]["q"]["lora_a"])
    # Adam moments exist for the trainable leaves only, and split/merge are inverses.
    mu_paths = set(optim.param_paths(_adam_mu(state.opt_state)))
    assert mu_paths == {"connector/fc1/kernel", "connector/fc1/bias", "llm/attn/q/lora_a"}
    trainable, frozen = optimizer.split(params)
    assert set(optim.param_paths(trainable)) == mu_paths
    assert len(optim.param_paths(frozen)) == 4
    merged = optimizer.merge(trainable, frozen)
    assert jax.tree.structure(merged) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(merged), jax.tree.leaves(params)):
        assert a is b


def test_trainable_mask_and_unmatched_pattern_errors():
    params = _params()
    mask = optim.trainable_mask(params, ("encoder/.*",))
    assert not mask["params"]["encoder"]["proj"]["kernel"]
    assert mask["params"]["connector"]["fc1"]["kernel"]
    with pytest.raises(ValueError, match="encoderr"):
        optim.make_optimizer(_config(frozen=("encoder/.*", "encoderr/.*")), params)
    with pytest.raises(ValueError, match="match no parameter path"):
        optim.trainable_mask(params, "encoder")  # a prefix is not a whole-path match


def test_weight_decay_skips_norms_and_biases():
    assert optim.decays("llm/layers/layer_0/attn/q/kernel")
    assert optim.decays("llm/embedding/embedding") and optim.decays("llm/attn/q/lora_b")
    assert optim.decays("encoder/encoder_layers/conv_kernel")
    for path in ("llm/norm/scale", "connector/fc1/bias", "encoder/encoder_layers/A_log",
                 "encoder/encoder_layers/D", "encoder/encoder_layers/dt_bias",
                 "llm/layers/layer_1/cross_gate", "synth/out_bias"):
        assert not optim.decays(path), path
    # With zero gradients only decayed leaves move.
    config = _config(warmup_steps=0, weight_decay=0.5)
    params = _params()
    optimizer = optim.make_optimizer(config, params)
    state = state_lib.create(params, optimizer)
    zeros = jax.tree.map(jnp.zeros_like, params)
    state = _step_fn(optimizer)(state, zeros, jnp.float32(1.0))
    new, old = state.params["params"], params["params"]
    np.testing.assert_array_equal(new["llm"]["norm"]["scale"], old["llm"]["norm"]["scale"])
    np.testing.assert_array_equal(new["encoder"]["proj"]["bias"], old["encoder"]["proj"]["bias"])
    np.testing.assert_allclose(new["encoder"]["proj"]["kernel"],
                               old["encoder"]["proj"]["kernel"] * (1 - 1e-2 * 0.5), rtol=1e-6)


@pytest.mark.parametrize("bad", ["grad", "loss"])
def test_nonfinite_step_is_skipped_and_counted(bad):
    params = _params()
    optimizer = optim.make_optimizer(_config(warmup_steps=0), params)
    step = _step_fn(optimizer)
    good_grads = jax.tree.map(jnp.ones_like, params)
    state = step(state_lib.create(params, optimizer), good_grads, jnp.float32(1.0))
    before = state

    grads, loss = good_grads, jnp.float32(1.0)
    if bad == "grad":
        grads = jax.tree.map(lambda g: g, good_grads)
        grads["params"]["connector"]["fc1"]["bias"] = good_grads["params"]["connector"]["fc1"][
            "bias"].at[0].set(jnp.nan)
    else:
        loss = jnp.float32(jnp.inf)
    for i in range(2):
        state = step(state, grads, loss)
        assert int(optim.consecutive_nonfinite(state.opt_state)) == i + 1
    assert int(optim.nonfinite_count(state.opt_state)) == 2
    assert int(state.step) == 3
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(before.params)):
        np.testing.assert_array_equal(a, b)
    inner_after, inner_before = state.opt_state.inner, before.opt_state.inner
    for a, b in zip(jax.tree.leaves(inner_after), jax.tree.leaves(inner_before)):
        np.testing.assert_array_equal(a, b)

    state = step(state, good_grads, jnp.float32(1.0))  # a good step resets the run
    assert int(optim.consecutive_nonfinite(state.opt_state)) == 0
    assert int(optim.nonfinite_count(state.opt_state)) == 2
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state.params))


def _real_param_paths():
    c = tiny.get_config("cross_attention,implicit")
    c.model.encoder.num_layers, c.model.encoder.width = 2, 32
    c.model.llm.num_layers, c.model.llm.width, c.model.llm.mlp_dim = 2, 64, 128
    c.model.synth.num_layers, c.model.synth.width = 1, 32
    c.model.llm.lora_rank = 4
    c.data.prompt_len = 3
    dm = DuplexModel.from_config(c)
    shapes = jax.eval_shape(dm.init, jax.random.key(0))  # no compute: the tree is enough
    return shapes, set(optim.param_paths(shapes))


def test_stage_patterns_on_the_real_model():
    shapes, paths = _real_param_paths()

    def trainable(stage):
        mask = optim.trainable_mask(shapes, common.stage_frozen_patterns(stage))
        flat = jax.tree_util.tree_flatten_with_path(mask)[0]
        return {optim._path_str(p) for p, on in flat if on}

    lora = {p for p in paths if p.rsplit("/", 1)[-1] in ("lora_a", "lora_b")}
    cross = {p for p in paths if "/cross_" in p}
    connector = {p for p in paths if p.startswith("connector/")}
    head = {p for p in paths if p.startswith("speak_head/")}
    synth = {p for p in paths if p.startswith("synth/")}
    assert lora and cross and connector and head and synth
    assert trainable("stage1") == lora | cross | connector | head
    assert trainable("stage2") == lora | cross | connector | head | synth
    assert trainable("dpo") == trainable("stage2")
    assert trainable("full") == paths
    with pytest.raises(ValueError, match="stage3"):
        common.stage_frozen_patterns("stage3")
