"""Losses: hand-computed numbers per label kind and variant, masking, empty parts, the
mel target and finite gradients."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from data_pipelines.contract import LabelKind as LK
from omni_jax.audio.frontend import LOG_FLOOR
from omni_jax.train import losses

B, K, N, V, F, M = 2, 3, 2, 7, 8, 80
S = 1280  # 80 ms at 16 kHz


def _config(thinking="explicit", think_form="paper"):
    c = default.get_config()
    c.model.thinking = thinking
    c.loss.think_form = think_form
    c.loss.speech = 1.0  # the hand-computed totals below weigh speech 1
    return c


def _example(seed=0):
    """Random outputs, and labels with every kind present on real blocks."""
    rng = np.random.default_rng(seed)
    kinds = np.array([[[LK.TEXT, LK.THINK], [LK.SHIFT, LK.START], [LK.END, LK.IGNORE]],
                      [[LK.THINK, LK.THINK], [LK.TEXT, LK.TEXT], [LK.SHIFT, LK.IGNORE]]],
                     np.int8)
    outputs = dict(logits=jnp.asarray(rng.normal(size=(B, K, N, V)) * 2, jnp.float32),
                   mel=jnp.asarray(rng.normal(size=(B, K, F, M)) - 5.0, jnp.float32),
                   speak_logit=jnp.asarray(rng.normal(size=(B, K)), jnp.float32))
    speech_target = (0.1 * rng.normal(size=(B, K, S))).astype(np.float32)
    batch = dict(labels=jnp.asarray(rng.integers(0, V, size=(B, K, N)), jnp.int32),
                 label_kind=jnp.asarray(kinds),
                 speaking=jnp.asarray([[False, True, True], [True, False, False]]),
                 speech_target=jnp.asarray(speech_target),
                 speech_mask=jnp.asarray([[False, True, True], [True, False, False]]),
                 block_mask=jnp.ones((B, K), bool))
    return outputs, batch


def _np_logp(outputs, batch):
    logits = np.asarray(outputs["logits"], np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return np.take_along_axis(logp, np.asarray(batch["labels"])[..., None], -1)[..., 0]


def _ce_of(outputs, batch, *kinds):
    sel = np.isin(np.asarray(batch["label_kind"]), kinds)
    return float(-_np_logp(outputs, batch)[sel].mean())


def _speech(outputs, batch, config):
    target = np.asarray(losses.mel_target(batch["speech_target"], config))
    diff = (np.asarray(outputs["mel"]) - target)[np.asarray(batch["speech_mask"])]
    return float(np.abs(diff).mean() + np.square(diff).mean())


def test_explicit_parts_hand_computed():
    config = _config("explicit")
    outputs, batch = _example()
    total, parts = losses.compute_losses(outputs, batch, config)
    text, think, shift = (_ce_of(outputs, batch, k) for k in (LK.TEXT, LK.THINK, LK.SHIFT))
    speech = _speech(outputs, batch, config)
    np.testing.assert_allclose(parts["text"], text, rtol=1e-5)
    np.testing.assert_allclose(parts["think"], think, rtol=1e-5)
    np.testing.assert_allclose(parts["shift"], shift, rtol=1e-5)
    np.testing.assert_allclose(parts["speech"], speech, rtol=1e-5)
    np.testing.assert_allclose(total, text + 0.1 * think + shift + speech, rtol=1e-5)
    np.testing.assert_allclose(parts["loss"], total)
    assert set(losses.part_names(config)) == {"text", "speech", "think", "shift"}


def test_accuracy_per_kind():
    config = _config("explicit")
    outputs, batch = _example()
    pred = np.asarray(outputs["logits"]).argmax(-1)
    # Make the first TEXT label right and the other wrong: accuracy 1/3 over 3 TEXT slots.
    labels = np.asarray(batch["labels"]).copy()
    text = np.argwhere(np.asarray(batch["label_kind"]) == LK.TEXT)
    for i, idx in enumerate(map(tuple, text)):
        labels[idx] = pred[idx] if i == 0 else (pred[idx] + 1) % V
    batch["labels"] = jnp.asarray(labels)
    _, parts = losses.compute_losses(outputs, batch, config)
    np.testing.assert_allclose(parts["acc_text"], 1 / 3, rtol=1e-6)


def test_negative_ce_paper_is_lambda_times_ce():
    config = _config("negative_ce", "paper")
    outputs, batch = _example()
    total, parts = losses.compute_losses(outputs, batch, config)
    think_ce = _ce_of(outputs, batch, LK.THINK)
    transition = _ce_of(outputs, batch, LK.START, LK.END)
    np.testing.assert_allclose(parts["think"], think_ce, rtol=1e-5)
    np.testing.assert_allclose(parts["transition"], transition, rtol=1e-5)
    expected = (_ce_of(outputs, batch, LK.TEXT) + transition - 0.1 * think_ce
                + _speech(outputs, batch, config))
    np.testing.assert_allclose(total, expected, rtol=1e-5)
    assert losses.loss_weights(config)["think"] == -0.1


def test_negative_ce_unlikelihood_hand_computed_and_bounded():
    config = _config("negative_ce", "unlikelihood")
    config.loss.lambda_think = -0.5
    outputs, batch = _example()
    total, parts = losses.compute_losses(outputs, batch, config)
    sel = np.asarray(batch["label_kind"]) == LK.THINK
    p = np.exp(_np_logp(outputs, batch)[sel])
    unlikelihood = float(np.mean(-np.log(1 - p)))
    np.testing.assert_allclose(parts["think"], unlikelihood, rtol=1e-5)
    assert float(parts["think"]) >= 0
    expected = (_ce_of(outputs, batch, LK.TEXT) + _ce_of(outputs, batch, LK.START, LK.END)
                + 0.5 * unlikelihood + _speech(outputs, batch, config))
    np.testing.assert_allclose(total, expected, rtol=1e-5)

    # p(label) -> 1: clipped, finite, at most -log(UL_EPS).
    logits = np.zeros((B, K, N, V), np.float32)
    np.put_along_axis(logits, np.asarray(batch["labels"])[..., None], 200.0, -1)
    outputs["logits"] = jnp.asarray(logits)
    _, parts = losses.compute_losses(outputs, batch, config)
    assert 0 <= float(parts["think"]) <= -math.log(losses.UL_EPS) + 1e-3


def test_log1mexp_matches_naive_where_naive_is_accurate():
    logp = jnp.asarray([-30.0, -5.0, -1.0, -0.7, -0.1, -1e-3], jnp.float32)
    expected = np.log1p(-np.exp(np.asarray(logp, np.float64)))
    np.testing.assert_allclose(losses.log1mexp(logp), expected, rtol=1e-5)


def test_implicit_speak_head_bce():
    config = _config("implicit")
    outputs, batch = _example()
    total, parts = losses.compute_losses(outputs, batch, config)
    z = np.asarray(outputs["speak_logit"], np.float64)
    y = np.asarray(batch["speaking"], np.float64)
    bce = np.mean(np.log1p(np.exp(-z)) * y + np.log1p(np.exp(z)) * (1 - y))
    np.testing.assert_allclose(parts["speak"], bce, rtol=1e-5)
    np.testing.assert_allclose(parts["acc_speak"], np.mean((z > 0) == (y > 0)), rtol=1e-6)
    expected = (_ce_of(outputs, batch, LK.TEXT) + 0.1 * _ce_of(outputs, batch, LK.THINK)
                + bce + _speech(outputs, batch, config))
    np.testing.assert_allclose(total, expected, rtol=1e-5)


@pytest.mark.parametrize("thinking", ["explicit", "negative_ce", "implicit"])
def test_empty_parts_are_zero_not_nan(thinking):
    config = _config(thinking, "unlikelihood")
    outputs, batch = _example()
    batch["label_kind"] = jnp.zeros_like(batch["label_kind"])  # all IGNORE
    batch["speech_mask"] = jnp.zeros_like(batch["speech_mask"])
    batch["block_mask"] = jnp.zeros_like(batch["block_mask"])
    total, parts = losses.compute_losses(outputs, batch, config)
    assert float(total) == 0.0
    for name, value in parts.items():
        assert float(value) == 0.0, name


def test_block_mask_and_speech_mask_mask_everything():
    config = _config("implicit")
    outputs, batch = _example()
    batch["block_mask"] = jnp.asarray([[True, True, False], [True, True, True]])
    batch["speech_mask"] = jnp.asarray([[False, True, True], [True, False, False]])
    _, before = losses.compute_losses(outputs, batch, config)

    # Garbage (even NaN logits) on the padding block and where speech_mask is False.
    changed = dict(outputs)
    changed["logits"] = outputs["logits"].at[0, 2].set(jnp.nan)
    changed["speak_logit"] = outputs["speak_logit"].at[0, 2].set(50.0)
    changed["mel"] = outputs["mel"].at[0, 2].set(99.0).at[1, 1:].set(-99.0)
    changed_batch = dict(batch)
    changed_batch["labels"] = batch["labels"].at[0, 2].set(3)
    changed_batch["speaking"] = batch["speaking"].at[0, 2].set(False)
    _, after = losses.compute_losses(changed, changed_batch, config)
    for name in before:
        np.testing.assert_allclose(after[name], before[name], rtol=1e-6, err_msg=name)


def test_mel_target_of_silence_is_the_floor():
    silence = jnp.zeros((1, 2, S), jnp.float32)
    mel = losses.mel_target(silence, _config())
    assert mel.shape == (1, 2, F, M)
    np.testing.assert_allclose(mel, math.log(LOG_FLOOR), rtol=1e-6)


@pytest.mark.parametrize("thinking,form", [("explicit", "paper"), ("negative_ce", "paper"),
                                           ("negative_ce", "unlikelihood"),
                                           ("implicit", "paper")])
def test_gradients_are_finite_and_flow(thinking, form):
    config = _config(thinking, form)
    outputs, batch = _example()
    # Extreme logits at some positions: the unlikelihood clip must keep gradients finite.
    outputs["logits"] = outputs["logits"].at[1, 0].multiply(100.0)
    grads = jax.jit(jax.grad(lambda o: losses.compute_losses(o, batch, config)[0]))(outputs)
    for name, g in grads.items():
        assert np.all(np.isfinite(g)), name
    assert float(jnp.abs(grads["logits"]).sum()) > 0
    assert float(jnp.abs(grads["mel"]).sum()) > 0
    assert (float(jnp.abs(grads["speak_logit"]).sum()) > 0) == (thinking == "implicit")


@pytest.mark.parametrize("thinking", ["explicit", "negative_ce", "implicit"])
def test_output_names_are_the_parts(thinking):
    config = _config(thinking)
    _, parts = losses.compute_losses(*_example(), config)
    assert set(parts) == set(losses.output_names(config))
    assert len(losses.output_names(config)) == len(parts)


def _ctc_by_enumeration(logits_TxV, label, blank=0):
    """-log of the summed probability of every frame path that collapses to `label`."""
    import itertools
    logp = logits_TxV - np.log(np.exp(logits_TxV).sum(-1, keepdims=True))
    total = 0.0
    for path in itertools.product(range(logits_TxV.shape[1]), repeat=logits_TxV.shape[0]):
        merged = [p for i, p in enumerate(path) if i == 0 or p != path[i - 1]]
        if [p for p in merged if p != blank] == list(label):
            total += math.exp(sum(logp[t, p] for t, p in enumerate(path)))
    return -math.log(total)


def test_ctc_labels_move_padding_behind_in_order():
    heard = jnp.asarray([[[5, 6], [0, 0], [7, 0]], [[0, 0], [0, 0], [0, 0]]], jnp.int32)
    labels, paddings = losses.ctc_labels(heard)
    assert labels.tolist() == [[5, 6, 7, 0, 0, 0], [0] * 6]
    assert paddings.tolist() == [[0, 0, 0, 1, 1, 1], [1] * 6]


def test_ctc_loss_hand_computed_per_heard_token():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, 5, 4)).astype(np.float32)
    # Row 0: tokens 2, 2, 3 heard over 4 real blocks (the 5th is padding); row 1: nothing
    # heard, so it adds nothing.
    heard = np.zeros((2, 5, 2), np.int32)
    heard[0, 1] = [2, 0]
    heard[0, 3] = [2, 3]
    block_mask = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], bool)
    got = float(losses.ctc_loss(jnp.asarray(logits), jnp.asarray(heard), jnp.asarray(block_mask)))
    expected = _ctc_by_enumeration(logits[0, :4].astype(np.float64), [2, 2, 3]) / 3
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_ctc_part_weighs_into_the_total_and_trains_the_head():
    config = _config()
    config.model.encoder.ctc_head, config.loss.ctc = True, 0.5
    outputs, batch = _example()
    rng = np.random.default_rng(1)
    outputs["heard_logits"] = jnp.asarray(rng.normal(size=(B, K, V)), jnp.float32)
    batch["heard_tokens"] = jnp.asarray([[[3, 4], [0, 0], [5, 0]], [[0, 0], [6, 0], [0, 0]]],
                                        jnp.int32)
    total, parts = losses.compute_losses(outputs, batch, config)
    unweighted = config.copy_and_resolve_references()
    unweighted.loss.ctc = 0.0
    total0, _ = losses.compute_losses(outputs, batch, unweighted)
    np.testing.assert_allclose(float(total - total0), 0.5 * float(parts["ctc"]), rtol=1e-5)
    assert float(parts["ctc"]) > 0 and "ctc" in losses.output_names(config)
    grads = jax.grad(lambda o: losses.compute_losses(o, batch, config)[0])(outputs)
    assert np.all(np.isfinite(grads["heard_logits"]))
    assert float(jnp.abs(grads["heard_logits"]).sum()) > 0
