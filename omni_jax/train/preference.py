"""Stage 3: direct preference optimisation (DPO, sigmoid form) on duplex behaviour.

A batch holds B preference pairs (`data_pipelines.preferences`): every contract field as
Bx2x... ([chosen, rejected]) and `decision_block` (B,). Both sides run through the policy
and through a frozen reference (the stage-2 parameters) as 2B rows of one forward each.

Behaviour log-probability of a row, summed over the supervised token positions of the
blocks from its pair's decision block on (block_mask and label_kind != IGNORE):
  log p(label)             text and state tokens (<think>, <shift>, <start_speak>, ...)
  log(1 - p(label))        negative_ce THINK positions (label = the transition it must
                           not take: the probability of staying)
  log sigmoid(+-logit)     implicit: the speak head's state in each of those blocks
The speech (a regression, no likelihood) is not scored.

  reward_side = beta * (logp_policy(side) - logp_reference(side))
  dpo         = mean over pairs of -log sigmoid(reward_chosen - reward_rejected)
  loss        = dpo + loss.dpo_sft * (the SFT loss of `losses.compute_losses` on the
                chosen rows)

With policy == reference every margin is 0 and dpo = log 2.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from data_pipelines import preferences
from data_pipelines.contract import LabelKind
from omni_jax.train import losses

OBJECTIVES = ("sft", "dpo")  # train.objective: the SFT losses, or stage 3's pairs
# Metrics of a DPO step besides `loss` and the parts (all means over pairs).
METRICS = ("reward_chosen", "reward_rejected", "reward_margin", "reward_accuracy",
           "logp_chosen", "logp_rejected")
NUM_SIDES = 2  # chosen, rejected


def part_names(config) -> tuple[str, ...]:
    return ("dpo", "sft") if config.loss.dpo_sft else ("dpo",)


def output_names(config) -> tuple[str, ...]:
    return ("loss", *part_names(config), *METRICS)


def pair_rows(batch: dict) -> dict:
    """Bx2x... pair fields -> 2B rows (chosen and rejected of a pair side by side)."""
    return {name: value.reshape((-1, *value.shape[2:])) for name, value in batch.items()
            if name != preferences.DECISION_BLOCK}


def sequence_logp(outputs: dict, rows: dict, decision_block_R: jax.Array, config
                  ) -> jax.Array:
    """Behaviour log-probability of each of R rows from its decision block on (see the
    module docstring); outputs and rows as `losses.compute_losses` takes them."""
    logp_RxKxN, _ = losses.token_terms(outputs["logits"], rows["labels"])
    kind_RxKxN = rows["label_kind"].astype(jnp.int32)
    if config.model.thinking == "negative_ce":
        logp_RxKxN = jnp.where(kind_RxKxN == LabelKind.THINK, losses.log1mexp(logp_RxKxN),
                               logp_RxKxN)
    k = kind_RxKxN.shape[1]
    after_RxK = (jnp.arange(k)[None, :] >= decision_block_R[:, None]) & rows["block_mask"]
    mask_RxKxN = (kind_RxKxN != LabelKind.IGNORE) & after_RxK[..., None]
    total_R = jnp.sum(jnp.where(mask_RxKxN, logp_RxKxN, 0.0), axis=(1, 2))
    if config.model.thinking == "implicit":
        logit_RxK = outputs["speak_logit"].astype(jnp.float32)
        sign_RxK = jnp.where(rows["speaking"], 1.0, -1.0)
        total_R += jnp.sum(jnp.where(after_RxK, jax.nn.log_sigmoid(sign_RxK * logit_RxK), 0.0),
                           axis=1)
    return total_R


def dpo_loss(policy_Bx2: jax.Array, reference_Bx2: jax.Array, beta: float
             ) -> tuple[jax.Array, dict]:
    """Sigmoid DPO over B pairs of [chosen, rejected] sequence log-probabilities."""
    reward_Bx2 = beta * (policy_Bx2 - reference_Bx2)
    margin_B = reward_Bx2[:, 0] - reward_Bx2[:, 1]
    loss = jnp.mean(optax.losses.sigmoid_binary_cross_entropy(margin_B, jnp.ones_like(margin_B)))
    metrics = dict(reward_chosen=jnp.mean(reward_Bx2[:, 0]),
                   reward_rejected=jnp.mean(reward_Bx2[:, 1]),
                   reward_margin=jnp.mean(margin_B),
                   reward_accuracy=jnp.mean((margin_B > 0).astype(jnp.float32)),
                   logp_chosen=jnp.mean(policy_Bx2[:, 0]),
                   logp_rejected=jnp.mean(policy_Bx2[:, 1]))
    return loss, metrics


def compute_dpo_losses(forward, params, reference_params, batch: dict, config
                       ) -> tuple[jax.Array, dict]:
    """(total, parts) of a pair batch. `forward(params, rows) -> outputs` runs the model on
    2B rows (the trainer's: feedback from each row's own speech, then the parallel form);
    the reference's outputs carry no gradient."""
    rows = pair_rows(batch)
    decision_R = jnp.repeat(batch[preferences.DECISION_BLOCK], NUM_SIDES)
    outputs = forward(params, rows)
    reference_outputs = forward(jax.lax.stop_gradient(reference_params), rows)
    b = batch[preferences.DECISION_BLOCK].shape[0]
    policy_Bx2 = sequence_logp(outputs, rows, decision_R, config).reshape(b, NUM_SIDES)
    reference_Bx2 = jax.lax.stop_gradient(
        sequence_logp(reference_outputs, rows, decision_R, config).reshape(b, NUM_SIDES))
    dpo, parts = dpo_loss(policy_Bx2, reference_Bx2, float(config.loss.dpo_beta))
    parts["dpo"] = total = dpo
    if config.loss.dpo_sft:
        chosen = jax.tree.map(lambda x: x.reshape(b, NUM_SIDES, *x.shape[1:])[:, 0], outputs)
        chosen_rows = {name: value[:, 0] for name, value in batch.items()
                       if name != preferences.DECISION_BLOCK}
        parts["sft"], _ = losses.compute_losses(chosen, chosen_rows, config)
        total = total + float(config.loss.dpo_sft) * parts["sft"]
    parts["loss"] = total
    return total, parts
