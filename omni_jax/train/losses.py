"""Training losses for the three thinking variants, and the metrics that come with them.

`compute_losses(outputs, batch, config) -> (total, parts)` is pure and jit-friendly;
`config` is static (closed over). `outputs` is what `DuplexModel.parallel_forward` (or
`scan_forward`) returns; `batch` holds the contract's fields with a leading batch dim.

Normalisation. Every part is a mean over *its own* supervised positions in the whole
(global) batch: a token-level mean over the positions of one label kind, a mean over
speech frames x mel bins, a mean over real blocks. The total is `sum(weight * part)`
(`loss_weights`). Per-part means keep a weight meaningful whatever the kind's frequency
(THINK positions outnumber SHIFT ones ~50:1; pooled token means would let them dominate).
A part with no positions in the batch is exactly 0 (never NaN) and has zero gradient.
Everything is masked by `block_mask` as well as by its own kind or mask.

Parts (all in `parts`, every one logged; names are identifiers so that they can be
`clu.metrics.Collection` fields):
  loss        the total
  text        CE on TEXT labels                                   (weight loss.text)
  speech      mel L1 + L2 vs the log-mel of speech_target where speech_mask (loss.speech)
  explicit    think: CE on THINK (loss.think); shift: CE on SHIFT (loss.shift)
  negative_ce transition: CE on START/END (loss.transition);
              think: at THINK positions (label = the state's transition token)
                paper         CE, weight lambda_think (< 0: unbounded below)
                unlikelihood  -log(1 - p(label)), weight |lambda_think| (>= 0, bounded)
  implicit    speak: BCE of speak_logit vs speaking on real blocks (loss.speak_head);
              think: CE on THINK (loss.think)
  ctc         with model.encoder.ctc_head: CTC of heard_logits (one frame per real block)
              against heard_tokens in order, blank = PAD; a mean per heard token
              (loss.ctc)
Metrics (not in the total): speech_l1, speech_l2, acc_<part> = top-1 accuracy on that
part's positions (negative_ce acc_think: how often the unwanted transition token is still
the argmax; it should fall), acc_speak = speak-head accuracy.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from data_pipelines.contract import PAD_ID, LabelKind
from omni_jax.audio.frontend import LogMelFrontend
from omni_jax.models import omni

# `loss.think_form`: the negative_ce think term as the paper writes it, or bounded.
THINK_FORMS = ("paper", "unlikelihood")

# Unlikelihood: p(label) is clipped to 1 - UL_EPS, so one position costs at most
# -log(UL_EPS) ~ 13.8 and the gradient stays finite.
UL_EPS = 1e-6
_MAX_LOGP = math.log1p(-UL_EPS)

# Label kinds of each token part (a part may pool several kinds).
_TOKEN_PARTS = {
    "explicit": {"text": (LabelKind.TEXT,), "think": (LabelKind.THINK,),
                 "shift": (LabelKind.SHIFT,)},
    "negative_ce": {"text": (LabelKind.TEXT,), "transition": (LabelKind.START, LabelKind.END),
                    "think": (LabelKind.THINK,)},
    "implicit": {"text": (LabelKind.TEXT,), "think": (LabelKind.THINK,)},
}


def loss_weights(config) -> dict[str, float]:
    """Part name -> its weight in the total, for `config.model.thinking`."""
    loss, variant = config.loss, config.model.thinking
    weights = {"text": loss.text, "speech": loss.speech}
    if variant == "explicit":
        weights.update(think=loss.think, shift=loss.shift)
    elif variant == "negative_ce":
        think = loss.lambda_think if loss.think_form == "paper" else abs(loss.lambda_think)
        weights.update(transition=loss.transition, think=think)
    elif variant == "implicit":
        weights.update(think=loss.think, speak=loss.speak_head)
    else:
        raise ValueError(f"unknown model.thinking {variant!r}")
    if omni.has_ctc_head(config):
        weights["ctc"] = loss.ctc
    return {name: float(w) for name, w in weights.items()}


def part_names(config) -> tuple[str, ...]:
    """The loss parts of the total for this config (the progress line's breakdown)."""
    return tuple(loss_weights(config))


def output_names(config) -> tuple[str, ...]:
    """Every key of `compute_losses`' parts for this config (a metrics Collection's fields)."""
    names = ["loss", *part_names(config), "speech_l1", "speech_l2"]
    names += [f"acc_{name}" for name in _TOKEN_PARTS[config.model.thinking]]
    if config.model.thinking == "implicit":
        names.append("acc_speak")
    return tuple(names)


def mel_target(speech_target_BxKxS: jax.Array, config) -> jax.Array:
    """The log-mel the synthesizer must produce: the frontend over the whole sequence (so a
    block's first frames see the previous block's tail, as the streaming frontend does)."""
    b, k, s = speech_target_BxKxS.shape
    mel_BxFxM = LogMelFrontend.from_config(config)(speech_target_BxKxS.reshape(b, k * s))
    return mel_BxFxM.reshape(b, k, mel_BxFxM.shape[1] // k, -1)


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of x where mask; exactly 0 (and zero gradient) when the mask is empty.
    `where`, not `x * mask`: a masked-out inf/NaN must not leak into the sum."""
    mask = jnp.broadcast_to(mask, x.shape)
    total = jnp.sum(jnp.where(mask, x, 0.0))
    return total / jnp.maximum(jnp.sum(mask), 1).astype(x.dtype)


def log1mexp(logp: jax.Array) -> jax.Array:
    """log(1 - exp(logp)) for logp < 0, stably (Maechler 2012): expm1 near 0, log1p below
    -log 2. logp is clipped to log(1 - UL_EPS) first so that p -> 1 stays finite."""
    x = jnp.minimum(logp, _MAX_LOGP)
    return jnp.where(x > -math.log(2.0), jnp.log(-jnp.expm1(x)), jnp.log1p(-jnp.exp(x)))


def token_terms(logits_BxKxNxV: jax.Array, labels_BxKxN: jax.Array):
    """Per-position log p(label) and whether the argmax is the label."""
    logp_BxKxNxV = jax.nn.log_softmax(logits_BxKxNxV.astype(jnp.float32), axis=-1)
    logp_BxKxN = jnp.take_along_axis(logp_BxKxNxV, labels_BxKxN[..., None], axis=-1)[..., 0]
    hit_BxKxN = jnp.argmax(logits_BxKxNxV, axis=-1) == labels_BxKxN
    return logp_BxKxN, hit_BxKxN.astype(jnp.float32)


def ctc_labels(heard_tokens_BxKxH: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(labels_BxL, label_paddings_BxL), L = K*H: each row's real tokens first, in order
    (a stable sort moves the PAD slots between blocks to the end)."""
    b = heard_tokens_BxKxH.shape[0]
    tokens_BxL = heard_tokens_BxKxH.reshape(b, -1)
    is_pad_BxL = tokens_BxL == PAD_ID
    order_BxL = jnp.argsort(is_pad_BxL, axis=1, stable=True)
    labels_BxL = jnp.take_along_axis(tokens_BxL, order_BxL, axis=1)
    return labels_BxL, jnp.take_along_axis(is_pad_BxL, order_BxL, axis=1).astype(jnp.float32)


def ctc_loss(heard_logits_BxKxV: jax.Array, heard_tokens_BxKxH: jax.Array,
             block_mask_BxK: jax.Array) -> jax.Array:
    """CTC per heard token over the batch: sum of the sequences' CTC losses / their tokens;
    a sequence with no heard token adds nothing (0 when the batch has none)."""
    labels_BxL, label_paddings_BxL = ctc_labels(heard_tokens_BxKxH)
    logit_paddings_BxK = 1.0 - block_mask_BxK.astype(jnp.float32)
    per_seq_B = optax.ctc_loss(heard_logits_BxKxV.astype(jnp.float32), logit_paddings_BxK,
                               labels_BxL, label_paddings_BxL, blank_id=PAD_ID)
    num_tokens_B = jnp.sum(1.0 - label_paddings_BxL, axis=1)
    per_seq_B = jnp.where(num_tokens_B > 0, per_seq_B, 0.0)
    return jnp.sum(per_seq_B) / jnp.maximum(jnp.sum(num_tokens_B), 1.0)


def compute_losses(outputs: dict, batch: dict, config) -> tuple[jax.Array, dict]:
    """(total, parts): see the module docstring for the parts and their normalisation."""
    variant = config.model.thinking
    weights = loss_weights(config)
    block_BxK = batch["block_mask"].astype(bool)
    kind_BxKxN = batch["label_kind"].astype(jnp.int32)
    logp_BxKxN, hit_BxKxN = token_terms(outputs["logits"], batch["labels"])
    ce_BxKxN = -logp_BxKxN
    parts = {}

    for name, kinds in _TOKEN_PARTS[variant].items():
        mask_BxKxN = jnp.isin(kind_BxKxN, jnp.asarray(kinds, jnp.int32)) & block_BxK[..., None]
        term_BxKxN = ce_BxKxN
        if variant == "negative_ce" and name == "think" and config.loss.think_form != "paper":
            term_BxKxN = -log1mexp(logp_BxKxN)  # unlikelihood: -log(1 - p) >= 0
        parts[name] = masked_mean(term_BxKxN, mask_BxKxN)
        parts[f"acc_{name}"] = masked_mean(hit_BxKxN, mask_BxKxN)

    # Speech: L1 + L2 on log-mel frames of the blocks that carry speech.
    mel_BxKxFxM = outputs["mel"].astype(jnp.float32)
    target_BxKxFxM = jax.lax.stop_gradient(mel_target(batch["speech_target"], config))
    diff_BxKxFxM = mel_BxKxFxM - target_BxKxFxM
    speech_BxK = batch["speech_mask"].astype(bool) & block_BxK
    speech_mask_BxKx1x1 = speech_BxK[:, :, None, None]
    parts["speech_l1"] = masked_mean(jnp.abs(diff_BxKxFxM), speech_mask_BxKx1x1)
    parts["speech_l2"] = masked_mean(jnp.square(diff_BxKxFxM), speech_mask_BxKx1x1)
    parts["speech"] = parts["speech_l1"] + parts["speech_l2"]

    if variant == "implicit":
        logit_BxK = outputs["speak_logit"].astype(jnp.float32)
        speaking_BxK = batch["speaking"].astype(bool)
        bce_BxK = optax.sigmoid_binary_cross_entropy(logit_BxK, speaking_BxK.astype(jnp.float32))
        parts["speak"] = masked_mean(bce_BxK, block_BxK)
        parts["acc_speak"] = masked_mean(((logit_BxK > 0) == speaking_BxK).astype(jnp.float32),
                                         block_BxK)

    if "ctc" in weights:
        parts["ctc"] = ctc_loss(outputs["heard_logits"], batch["heard_tokens"], block_BxK)

    total = sum(w * parts[name] for name, w in weights.items())
    parts["loss"] = total
    return total, parts
