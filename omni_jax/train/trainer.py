"""The training loop: any iterator of batches in, a trained and checkpointed state out.

  trainer = Trainer(config, workdir)              # mesh, model, optimizer, jitted steps
  state = trainer.restore_or_init(data_iterator)  # latest good checkpoint, or fresh init
  state = trainer.fit(state, data_iterator, eval_fn=...)

One `jax.jit` holds the whole step (parallel forward, losses, gradients, AdamW with freezing
and the non-finite guard), with `in_shardings`/`out_shardings` from the logical-axis rules
and the train state donated. Batches are numpy dicts of this process's rows (the
contract's fields; `skipped` counts dropped bad samples); `sharding.global_batch` makes
them one global array each. A SIGTERM saves a checkpoint and stops cleanly; a run of
`train.max_consecutive_nonfinite` non-finite steps stops with an error, the last good
checkpoint kept.

`train.init_from` starts a fresh run from another run's parameters (e.g. stage 2 from
stage 1); with `train.objective="dpo"` (stage 3) those parameters are also the frozen
reference, held beside the train state (an argument of the jitted step, never saved), and
batches are preference pairs (`omni_jax.train.preference`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from clu import metrics as clu_metrics
from flax import traverse_util

from data_pipelines import contract, preferences
from omni_jax.audio.feedback import Feedback
from omni_jax.models import pretrained
from omni_jax.models.omni import DuplexModel
from omni_jax.train import checkpoint, losses, optim, preference, sharding, writers
from omni_jax.train import state as state_lib
from omni_jax.train.state import TrainState

log = logging.getLogger(__name__)

BATCH_FIELDS = contract.FIELD_NAMES


class NonFiniteError(RuntimeError):
    """Too many non-finite steps in a row; the last good checkpoint is kept."""


@dataclasses.dataclass
class FitResult:
    state: TrainState
    step: int
    stopped_early: bool  # SIGTERM / preemption
    skipped_samples: int  # bad samples the pipeline dropped (skip policy)
    last_metrics: dict[str, float]


class Trainer:
    """Builds the mesh, the model, the optimizer and the jitted train/eval steps.

    `config` is validated by the entry point (`omni_jax.configuration.validate`); here only
    the mesh and the batch are checked against the devices. `abstract_state` and
    `state_shardings` describe the train state before anything is allocated."""

    def __init__(self, config, workdir: str | os.PathLike,
                 devices: Sequence[jax.Device] | None = None):
        # `devices`: the mesh's devices (default: every global device), e.g. a one-device
        # reference run beside a sharded one in the same process.
        devices = jax.devices() if devices is None else list(devices)
        sharding.check_batch(config, len(devices))
        self.config = config
        self.workdir = Path(workdir)
        self.model = DuplexModel.from_config(config)
        self.feedback = Feedback.from_config(config)
        self.mesh = sharding.make_mesh(config, devices)
        self.rules = sharding.logical_rules(config)
        self.batch_sharding = sharding.batch_sharding(self.mesh)
        self.checkpointer = checkpoint.Checkpointer.from_config(
            config, self.workdir / "checkpoints",
            save_interval_steps=max(1, int(config.train.checkpoint_every)))
        self.optimizer = optim.make_optimizer(config, jax.eval_shape(self.model.init,
                                                                     jax.random.key(0)))
        self.metrics = step_metrics(config)
        self.objective = objective(config)
        # DPO's frozen reference: the `train.init_from` parameters, read once (not trained,
        # not in the train state, so never saved again).
        self.reference_params = None
        self.abstract_state, self.state_shardings = state_lib.abstract_train_state(
            self.model.init, self.optimizer, self.mesh, self.rules)
        self._train_step = None
        self._eval_step = None

    # ---- state ----------------------------------------------------------------------------

    def init_state(self, load_pretrained: bool = True) -> TrainState:
        """Fresh parameters and optimizer state, created sharded (never whole on one device).
        With `model.llm.pretrained_path` set (and `load_pretrained`), the LLM part is then
        read from that checkpoint (omni_jax.models.pretrained)."""
        state, _ = state_lib.init_train_state(self.model.init, self.optimizer, self.mesh,
                                              self.rules, jax.random.key(self.config.seed))
        if load_pretrained and self.config.model.llm.get("pretrained_path"):
            # AdamW's moments start at zero whatever the values, so only params change.
            state = state.replace(params=pretrained.replace_llm_params(state.params, self.config))
        if self.config.train.get("init_from"):
            initial = self.initial_params()
            if self.objective == "dpo":
                # A copy: the state's params are donated to the step, the reference stays.
                initial = jax.tree.map(jnp.copy, initial)
            else:
                self.reference_params = None  # SFT keeps no second copy
            state = state.replace(params=initial)
        return state

    def initial_params(self):
        """The parameters of `train.init_from` (a run directory: its newest readable
        checkpoint), laid out as this run's; read once and kept (DPO's reference)."""
        if self.reference_params is None:
            source = Path(self.config.train.init_from).expanduser()
            if not (source / "checkpoints").is_dir():
                raise checkpoint.CheckpointError(
                    f"train.init_from={source}: no checkpoints folder (a run directory, e.g. "
                    "the stage-2 workdir)")
            _check_same_model(self.config, source)
            reader = checkpoint.Checkpointer(source / "checkpoints", read_only=True)
            try:
                self.reference_params = reader.restore_params(self.abstract_state.params)
            finally:
                reader.close()
            log.info("initial parameters from %s step %d", source, reader.restored_step)
        return self.reference_params

    def restore_or_init(self, data_iterator=None) -> TrainState:
        """The newest readable checkpoint (with the data iterator's position), or init."""
        if self.checkpointer.latest_step() is None:
            return self.init_state()
        # A resumed run takes everything from the checkpoint: nothing is initialised first.
        if not hasattr(data_iterator, "set_state"):
            data_iterator = None
        restored = self.checkpointer.restore(abstract_state=self.abstract_state,
                                             shardings=self.state_shardings,
                                             data_iterator=data_iterator)
        log.info("resumed from %s step %d", self.checkpointer.directory,
                 self.checkpointer.restored_step)
        return restored

    # ---- jitted steps ---------------------------------------------------------------------

    def model_inputs(self, params, batch: dict, step: jax.Array | None = None) -> dict:
        """The batch as the model hears it: the microphone with its own echo and the
        assistant stream, made by `Feedback` from the reference speech; with
        `train.self_feedback` > 0 (and a `step`), that share of the rows is fed the model's
        own mel instead (scheduled feedback: a first, gradient-free forward pass)."""
        inputs = self.feedback.model_inputs(batch)
        share = float(self.config.train.self_feedback)
        if share <= 0 or step is None:
            return inputs
        own_BxKxFxM = self.model.parallel_forward(jax.lax.stop_gradient(params),
                                                  inputs)["mel"].astype(jnp.float32)
        reference_BxKxFxM = self.feedback.reference_mel(batch["speech_target"],
                                                        batch["speech_mask"])
        key = jax.random.fold_in(jax.random.key(self.config.seed), step)
        own_B = jax.random.uniform(key, own_BxKxFxM.shape[:1]) < share
        # Kept where the reference speaks (the reference is the silence log-mel elsewhere).
        own_BxK = own_B[:, None] & batch["speech_mask"]
        kept_BxKxFxM = jnp.where(own_BxK[..., None, None], own_BxKxFxM, reference_BxKxFxM)
        return self.feedback.model_inputs(batch, kept_BxKxFxM)

    def _loss_fn(self, params, batch, step=None, reference=None):
        if self.objective == "dpo":
            def forward(p, rows):
                return self.model.parallel_forward(p, self.feedback.model_inputs(rows))
            return preference.compute_dpo_losses(forward, params, reference, batch,
                                                 self.config)
        outputs = self.model.parallel_forward(params, self.model_inputs(params, batch, step))
        return losses.compute_losses(outputs, batch, self.config)

    def _step(self, state: TrainState, batch: dict, reference=None, *, param_shardings
              ) -> tuple[TrainState, clu_metrics.Collection]:
        # Only the trainable subtree is differentiated: the frozen one is a constant of the
        # loss, so neither its weight gradients nor a backward pass through frozen parts
        # below the first trainable one are ever built.
        trainable, frozen = self.optimizer.split(state.params)
        trainable_shardings, _ = self.optimizer.split(param_shardings)

        def loss_of_trainable(trainable):
            return self._loss_fn(self.optimizer.merge(trainable, frozen), batch, state.step,
                                 reference)

        (loss, parts), grads = jax.value_and_grad(loss_of_trainable, has_aux=True)(trainable)
        # Gradients laid out like their parameters (left to XLA, some came out replicated).
        grads = jax.lax.with_sharding_constraint(grads, trainable_shardings)
        new_state = state_lib.apply_gradients(state, grads, self.optimizer, loss)
        metrics = self.metrics.single_from_model_output(
            **parts, grad_norm=optax.global_norm(grads),
            nonfinite=optim.consecutive_nonfinite(new_state.opt_state))
        return new_state, metrics

    def jitted_train_step(self, state_shardings=None):
        """The jitted train step (state donated); it also lowers on `self.abstract_state`
        (the benchmarks' ahead-of-time compile)."""
        state_shardings = state_shardings or self.state_shardings
        step = functools.partial(self._step, param_shardings=state_shardings.params)
        in_shardings = (state_shardings, self.batch_sharding)
        if self.objective == "dpo":  # (state, batch, reference params)
            in_shardings += (state_shardings.params,)
        return jax.jit(step, in_shardings=in_shardings,
                       out_shardings=(state_shardings, None), donate_argnums=0)

    def train_step(self, state: TrainState, batch: dict
                   ) -> tuple[TrainState, clu_metrics.Collection]:
        """One optimizer step on a global batch (jitted on first use, state donated); the
        step's metrics as a clu Collection (`.compute()` for the values)."""
        if self._train_step is None:
            self._train_step = self.jitted_train_step()
        with sharding.activate(self.mesh, self.rules):
            if self.objective == "dpo":
                return self._train_step(state, batch, self.initial_params())
            return self._train_step(state, batch)

    def eval_step(self, params, batch: dict) -> dict:
        """Loss parts on a global batch, no update."""
        if self._eval_step is None:
            self._eval_step = jax.jit(
                lambda params, batch, reference: self._loss_fn(params, batch, None,
                                                               reference)[1],
                in_shardings=(self.state_shardings.params, self.batch_sharding,
                              self.state_shardings.params if self.objective == "dpo"
                              else None))
        reference = self.initial_params() if self.objective == "dpo" else None
        with sharding.activate(self.mesh, self.rules):
            return self._eval_step(params, batch, reference)

    def global_batch(self, local_batch: dict) -> dict:
        fields = BATCH_FIELDS
        if self.objective == "dpo":
            fields += (preferences.DECISION_BLOCK,)
        return sharding.global_batch({k: local_batch[k] for k in fields}, self.mesh)

    # ---- the loop -------------------------------------------------------------------------

    def fit(self, state: TrainState, data_iterator: Iterator[dict],
            eval_fn: Callable[[TrainState], dict] | None = None,
            writer=None) -> FitResult:
        """Trains until `train.steps` (or SIGTERM); checkpoints, logs and evaluates: every
        `train.eval_every` steps `eval_fn(state)` gives the scalars written at that step
        under the names it chose (the main job's: `eval/PART`, `suites/SUITE/KEY`)."""
        c = self.config.train
        total = int(c.steps)
        step = int(jax.device_get(state.step))
        writer = writer or writers.make_writer(str(self.workdir), jax.process_index())
        throughput = writers.Throughput(self.config.data.pipeline.batch_size, total)
        names = (preference.part_names(self.config) + ("reward_margin", "reward_accuracy")
                 if self.objective == "dpo" else losses.part_names(self.config))
        window = None  # the clu metrics merged since the last log step
        skipped, stopped_early, last = 0, False, {}
        throughput.update(step)
        profile = _ProfileWindow(self.workdir / "profile", step + 1,
                                 int(c.get("profile_steps", 0)))
        # Any iterator trains; a Grain iterator's position is checkpointed with the state.
        saved_iterator = data_iterator if hasattr(data_iterator, "get_state") else None
        with checkpoint.PreemptionGuard() as guard:
            while step < total:
                local = next(data_iterator)
                skipped += int(np.sum(local.get(contract.SKIPPED, 0)))
                profile.before(step)
                state, metrics = self.train_step(state, self.global_batch(local))
                step += 1
                profile.after(step, state)
                window = metrics if window is None else window.merge(metrics)
                if step % c.log_every == 0 or step == total:
                    last = computed(window)
                    window = None
                    self._check_finite(last, step)
                    rate, examples, eta = throughput.update(step)
                    writer.write_scalars(step, dict(last, steps_per_sec=rate,
                                                    examples_per_sec=examples,
                                                    skipped_samples=skipped))
                    if jax.process_index() == 0:
                        print(writers.progress_line(step, total, last, rate, examples, eta,
                                                    keys=names), flush=True)
                if eval_fn is not None and c.eval_every and step % c.eval_every == 0:
                    writer.write_scalars(step, eval_fn(state))
                self.checkpointer.save(step, state, saved_iterator)
                if guard.should_stop_at(step):
                    log.warning("stop requested (SIGTERM): saving step %d and stopping", step)
                    stopped_early = True
                    break
        profile.close(state)  # a run that stops inside the window still ends its trace
        self.checkpointer.save(step, state, saved_iterator, force=True)
        self.checkpointer.wait()
        writer.flush()
        return FitResult(state, step, stopped_early, skipped, last)

    def _check_finite(self, parts: dict, step: int) -> None:
        """Skipped non-finite steps are counted by the optimizer; checked at every log step,
        a run of `train.max_consecutive_nonfinite` of them stops training (skipped steps
        leave the parameters unchanged, so every checkpoint holds good parameters)."""
        limit = int(self.config.train.max_consecutive_nonfinite)
        if parts.get("nonfinite", 0) >= limit:
            self.checkpointer.wait()
            raise NonFiniteError(
                f"{int(parts['nonfinite'])} non-finite steps in a row up to step {step} "
                f"(train.max_consecutive_nonfinite={limit}); last good checkpoint: step "
                f"{self.checkpointer.latest_step()} in {self.checkpointer.directory}")


class _ProfileWindow:
    """A `jax.profiler` trace (TensorBoard's profile plugin, Perfetto) of `num_steps` steps
    from step `first` on (the step after this run's first: its compile is not traced)."""

    def __init__(self, directory: Path, first: int, num_steps: int):
        self.directory, self.first, self.last = directory, first, first + num_steps
        self.active = False

    def before(self, step: int) -> None:
        if step == self.first and self.last > self.first and jax.process_index() == 0:
            jax.profiler.start_trace(str(self.directory))
            self.active = True

    def after(self, step: int, state) -> None:
        if self.active and step >= self.last:
            self.close(state)

    def close(self, state) -> None:
        if self.active:
            jax.block_until_ready(state)
            jax.profiler.stop_trace()
            self.active = False
            log.info("profile of steps %d-%d written to %s", self.first, self.last - 1,
                     self.directory)


def step_metrics(config) -> type[clu_metrics.Collection]:
    """The train step's metrics: every loss part and the gradient norm averaged over the
    steps of a log window; `nonfinite` is a counter, so its latest value (an average of
    1, 2, 3 would hide a run that reached the stop limit)."""
    names = (*(preference.output_names(config) if objective(config) == "dpo"
               else losses.output_names(config)), "grad_norm")
    return clu_metrics.Collection.create(
        nonfinite=clu_metrics.LastValue.from_output("nonfinite"),
        **{name: clu_metrics.Average.from_output(name) for name in names})


def _check_same_model(config, source: Path) -> None:
    """CheckpointError naming the `model.*` fields in which `source`'s config.json differs
    from `config` (its parameters would not fit this model)."""
    saved_path = source / "config.json"
    if not saved_path.is_file():
        return
    model = {"model": json.loads(saved_path.read_text()).get("model", {})}
    a = traverse_util.flatten_dict(model, sep=".")
    b = traverse_util.flatten_dict({"model": json.loads(config.model.to_json_best_effort())},
                                   sep=".")
    differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    if differ:
        shown = ", ".join(f"{k}: {a.get(k)!r} there, {b.get(k)!r} here" for k in differ[:4])
        raise checkpoint.CheckpointError(
            f"train.init_from={source}: its model differs from this config's in "
            f"{len(differ)} field(s) ({shown}); pass the same --config.model.* overrides")


def objective(config) -> str:
    """`train.objective` (configs older than the field train the SFT losses)."""
    return config.train.get("objective", "sft")


def computed(metrics: clu_metrics.Collection) -> dict[str, float]:
    """A metrics collection's values as host floats."""
    return {name: float(value) for name, value in jax.device_get(metrics.compute()).items()}
