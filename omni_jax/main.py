"""The main job: corpus and tokenizer if missing, training, periodic evaluation,
checkpoints, and a report.

  python -m omni_jax.main --config=configs/tiny.py --workdir=DIR               # train
  python -m omni_jax.main --config=configs/tiny.py --workdir=DIR --mode=eval   # evaluate

A rerun with the same workdir resumes from the newest good checkpoint (state and data
position). The run ends by writing DIR/report.json and DIR/report.md. TensorBoard events
and DIR/metrics.jsonl hold the training curves: the training loss parts, `eval/PART` every
`train.eval_every` steps and `suites/SUITE/KEY` (headlines, intervals, best baseline) every
`train.suites_every` steps and after the last (`python -m omni_jax.evaluation.curves`
draws them).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import jax
from absl import app, flags
from jax.experimental import multihost_utils
from ml_collections import config_flags

from data_pipelines import corpus, pipeline
from data_pipelines.sources import timelines
from omni_jax import configuration
from omni_jax.evaluation import on_policy
from omni_jax.evaluation import suites as eval_suites
from omni_jax.train import distributed, writers
from omni_jax.train.trainer import Trainer

FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags, defined only when run as a program (importing stays free)."""
    config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "Run directory.", required=True)
    flags.DEFINE_enum("mode", "train", ["train", "eval"],
                      "Train (and evaluate) or only evaluate the latest checkpoint.")


def prepare_data(config, workdir: Path):
    """Tokenizer and corpus under `workdir` (built once, by process 0). A run started from
    another (`train.init_from`) takes that run's tokenizer: its parameters speak it."""
    if jax.process_index() == 0:
        init_from = config.train.get("init_from")
        target = corpus.tokenizer_path(config, workdir)
        if init_from and not target.exists():
            source = Path(init_from).expanduser() / corpus.TOKENIZER_FILE
            if source.is_file():
                shutil.copyfile(source, target)
        corpus.build_tokenizer(config, corpus.tokenizer_path(config, workdir))
        corpus.ensure_corpus(config, workdir)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("omni_jax_data_ready")
    return corpus.build_tokenizer(config, corpus.tokenizer_path(config, workdir))


def observe_policy(trainer, config, workdir: Path, tokenizer) -> dict:
    """On-policy DPO pairs: the starting model's own behaviour on the train split's pair
    dialogues (`omni_jax.evaluation.on_policy`), observed by process 0 and cached in the
    run directory."""
    path = workdir / on_policy.FILE
    if jax.process_index() == 0 and not path.is_file():
        on_policy.write(path, on_policy.observe(
            trainer.model, trainer.initial_params(), config, tokenizer,
            timelines.open_source(config, workdir, "train"),
            max_dialogues=int(config.train.dpo_on_policy_dialogues)))
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("omni_jax_on_policy_ready")
    return on_policy.load(path)


def evaluate(trainer, config, workdir: Path, tokenizer, params) -> dict:
    """Loss parts on the whole evaluation split (held-out voices, no random augmentation)."""
    if not config.data.eval_dialogues:
        return {}
    dataset = pipeline.make_dataset(
        config, "eval", tokenizer, seed=config.seed, process_index=jax.process_index(),
        process_count=jax.process_count(), num_epochs=1, augment=False, workdir=workdir)
    totals, batches = {}, 0
    for local in dataset:
        parts = jax.device_get(trainer.eval_step(params, trainer.global_batch(local)))
        for k, v in parts.items():
            totals[k] = totals.get(k, 0.0) + float(v)
        batches += 1
    return {k: v / batches for k, v in totals.items()} if batches else {}


def run_suites(trainer, config, workdir: Path, tokenizer, params, step: int) -> dict:
    """The evaluation suites (`omni_jax.evaluation.suites`) on the held-out voices; pictures,
    wavs and per-case results under DIR/eval/step_N/."""
    return eval_suites.run_suites(trainer.model, params, config, tokenizer,
                             out_dir=workdir / "eval" / f"step_{step}", workdir=workdir)


def _cell(value) -> str:
    return "n/a" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def write_report(workdir: Path, config, step: int, train_parts: dict, eval_parts: dict,
                 extra: dict, suites: dict | None = None) -> None:
    suites = suites or {}
    report = dict(step=step, config=config.name, thinking=config.model.thinking,
                  fusion=config.model.fusion, encoder=config.model.encoder.kind,
                  train=train_parts, eval=eval_parts, suites=suites, **extra)
    (workdir / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    lines = [f"# Report: {config.name} at step {step}", "",
             f"thinking `{config.model.thinking}`, fusion `{config.model.fusion}`, encoder "
             f"`{config.model.encoder.kind}`", ""]
    for title, parts in (("Training (last logged window)", train_parts),
                         ("Evaluation split (held-out voices)", eval_parts)):
        if parts:
            lines += [f"## {title}", "", "| metric | value |", "|---|---|"]
            lines += [f"| {k} | {v:.4g} |" for k, v in sorted(parts.items())]
            lines.append("")
    if suites:
        lines += ["## Suites (free-running, held-out voices)", "",
                  f"Per-case results, pictures and wavs: `eval/step_{step}/SUITE/`.", ""]
        for name, scores in suites.items():
            lines += [f"### {name}", "", "| metric | value |", "|---|---|"]
            lines += [f"| {k} | {_cell(v)} |" for k, v in sorted(scores.items())]
            lines.append("")
    lines += ["## Run", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(extra.items())]
    (workdir / "report.md").write_text("\n".join(lines) + "\n")


def run(config, workdir: str, mode: str = "train") -> dict:
    distributed.maybe_initialize(config)
    distributed.use_compilation_cache(config)
    configuration.validate(config, num_devices=jax.device_count())
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:  # what this run is, for evaluation and serving tools
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
    started = time.time()
    tokenizer = prepare_data(config, workdir)
    trainer = Trainer(config, workdir)
    observed = None
    if trainer.objective == "dpo" and config.train.dpo_on_policy and mode == "train":
        observed = observe_policy(trainer, config, workdir, tokenizer)
    dataset = pipeline.make_dataset(
        config, "train", tokenizer, seed=config.seed, process_index=jax.process_index(),
        process_count=jax.process_count(), workdir=workdir, observed=observed)
    data_iterator = iter(dataset)
    state = trainer.restore_or_init(data_iterator)
    if mode == "eval" and trainer.checkpointer.restored_step is None:
        raise SystemExit(f"--mode=eval: no readable checkpoint under {workdir / 'checkpoints'}"
                         " (train first, or point --workdir at a trained run)")
    writer = writers.make_writer(str(workdir), jax.process_index())

    def periodic_eval(s) -> dict:
        out = {f"eval/{k}": v
               for k, v in evaluate(trainer, config, workdir, tokenizer, s.params).items()}
        every, at = int(config.train.suites_every), int(jax.device_get(s.step))
        if every and at % every == 0 and at < config.train.steps and jax.process_count() == 1:
            out.update(eval_suites.scalars(
                run_suites(trainer, config, workdir, tokenizer, s.params, at)))
        return out

    train_parts, stopped_early, skipped = {}, False, 0
    if mode == "train":
        result = trainer.fit(state, data_iterator, eval_fn=periodic_eval, writer=writer)
        state, train_parts = result.state, result.last_metrics
        stopped_early, skipped = result.stopped_early, result.skipped_samples
    step = int(jax.device_get(state.step))
    # A preempted run has seconds left: the checkpoint is saved; evaluation can wait.
    eval_parts = ({} if stopped_early else
                  evaluate(trainer, config, workdir, tokenizer, state.params))
    suite_scores, suites_note = {}, ""
    if stopped_early:
        suites_note = "stopped early: run --mode=eval"
    elif jax.process_count() > 1:  # the engine runs on one host's devices
        suites_note = "multi-process run: evaluate with --mode=eval on one process"
    else:
        suite_scores = run_suites(trainer, config, workdir, tokenizer, state.params, step)
        writer.write_scalars(step, eval_suites.scalars(suite_scores))
    writer.close()
    extra = dict(devices=jax.device_count(), processes=jax.process_count(),
                 wall_seconds=round(time.time() - started, 1), stopped_early=stopped_early,
                 skipped_samples=skipped, tokenizer_vocab=tokenizer.vocab_size)
    if suites_note:
        extra["suites_note"] = suites_note
    if jax.process_index() == 0:
        write_report(workdir, config, step, train_parts, eval_parts, extra, suite_scores)
        print(f"report: {workdir / 'report.md'}", flush=True)
    return dict(step=step, train=train_parts, eval=eval_parts, suites=suite_scores, **extra)


def main(argv):
    del argv
    run(FLAGS.config, FLAGS.workdir, FLAGS.mode)


if __name__ == "__main__":
    define_flags()
    app.run(main)
