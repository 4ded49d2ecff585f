r"""Subprocess side of the trainer tests: runs one scenario and writes its findings as JSON.

  python tests/helpers/trainer_worker.py --mode=MODE --config=tests/helpers/tiny_trainer.py \
      --workdir=DIR --out=DIR/result.json [--config.FIELD=VALUE ...]

Modes (each a fresh JAX runtime; the tests compare what they write):
  grads      the Trainer's loss and gradients on one synthetic global batch (no optimizer
             step: the cheapest compile); with several devices in one process, also those
             of a one-device Trainer beside it. Process 0 writes gradients (.npz).
  fit        Trainer.fit on fixed synthetic global batches, each process feeding its rows
             (also under launch/local.py); process 0 writes the final loss and params (.npz).
  sharded    the Trainer on the config's mesh (8 fake devices) against a one-device Trainer
             in the same process: two steps on the same batches.
  nonfinite  good steps, then NaN audio until NonFiniteError; what the checkpoints hold.
  resume     real pipeline: 2N steps in one go against N steps, a stop (SIGTERM), a new
             Trainer restoring state and iterator, and N more.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Trainer config file.")
_MODE = flags.DEFINE_enum("mode", None, ["grads", "fit", "sharded", "nonfinite", "resume"],
                         "Scenario.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory.")
_OUT = flags.DEFINE_string("out", None, "Where to write the JSON result.")

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _host_tree(tree) -> dict:
    """Every leaf as a numpy array keyed by its path (gathered across processes)."""
    import jax
    from jax.experimental import multihost_utils

    if jax.process_count() > 1:
        tree = multihost_utils.process_allgather(tree, tiled=True)
    leaves = jax.tree_util.tree_leaves_with_path(jax.device_get(tree))
    return {jax.tree_util.keystr(path): leaf for path, leaf in leaves}


def _host_params(state) -> dict:
    return _host_tree(state.params)


def _max_abs_diff(a: dict, b: dict) -> float:
    import numpy as np

    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k] - b[k]), initial=0.0)) for k in a)


def _bitwise_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].tobytes() == b[k].tobytes() for k in a)


def _digest(batch: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(batch):
        h.update(name.encode())
        h.update(batch[name].tobytes())
    return h.hexdigest()[:16]


class _Recorder:
    """Wraps a batch iterator: records a digest of each batch, optionally sends this
    process SIGTERM when drawing batch `stop_at` (a preemption at a known step), and
    passes the Grain iterator's state through so that fit still checkpoints it."""

    def __init__(self, iterator, stop_at: int | None = None):
        self._iterator, self._stop_at = iterator, stop_at
        self.digests: list[str] = []

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self._iterator)
        self.digests.append(_digest(batch))
        if len(self.digests) == self._stop_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return batch

    def get_state(self):
        return self._iterator.get_state()

    def set_state(self, state):
        self._iterator.set_state(state)


def _synthetic_stream(config, nan_from: int | None = None):
    """This process's rows of global batch i (seed i), forever; NaN audio from `nan_from`."""
    import itertools

    import jax
    import numpy as np
    import tiny_trainer

    rows = config.data.pipeline.batch_size // jax.process_count()
    mine = slice(jax.process_index() * rows, (jax.process_index() + 1) * rows)
    for i in itertools.count():
        batch = tiny_trainer.synthetic_batch(config, seed=i, rows=mine)
        if nan_from is not None and i >= nan_from:
            batch["env_audio"] = np.full_like(batch["env_audio"], np.nan)
        yield batch


def _loss_and_grads(trainer, state, batch) -> tuple[float, dict]:
    """The Trainer's own loss function, differentiated under its mesh and shardings."""
    import jax
    import numpy as np

    from omni_jax.train import sharding

    with sharding.activate(trainer.mesh, trainer.rules):
        fn = jax.jit(jax.value_and_grad(trainer._loss_fn, has_aux=True),
                     in_shardings=(trainer.state_shardings.params, trainer.batch_sharding))
        (loss, _), grads = fn(state.params, trainer.global_batch(batch))
    return float(np.asarray(loss.addressable_data(0))), _host_tree(grads)


def _one_device_reference(config, workdir: Path):
    import jax

    from omni_jax.train.trainer import Trainer

    reference = config.copy_and_resolve_references()
    reference.mesh.data = reference.mesh.fsdp = reference.mesh.tensor = 1
    return Trainer(reference, workdir, devices=jax.devices()[:1])


# ---- modes ------------------------------------------------------------------------------

def grads(config, workdir: Path) -> dict:
    import jax
    import numpy as np

    from omni_jax.train import distributed
    from omni_jax.train.trainer import Trainer

    distributed.maybe_initialize(config)
    trainer = Trainer(config, workdir / "main")
    batch = next(_synthetic_stream(config))
    loss, g = _loss_and_grads(trainer, trainer.init_state(), batch)
    out = dict(loss=loss, mesh=dict(trainer.mesh.shape), processes=jax.process_count(),
               grad_max_abs=max(float(np.max(np.abs(v))) for v in g.values()))
    if jax.process_index() == 0:
        np.savez(workdir / "grads.npz", **g)
    if jax.process_count() == 1 and jax.device_count() > 1:
        single = _one_device_reference(config, workdir / "single")
        ref_loss, ref = _loss_and_grads(single, single.init_state(),
                                        next(_synthetic_stream(config)))
        out.update(reference_loss=ref_loss, grads_max_diff=_max_abs_diff(g, ref))
    return out



def fit(config, workdir: Path) -> dict:
    import jax
    import numpy as np

    from omni_jax.train import distributed
    from omni_jax.train.trainer import Trainer

    distributed.maybe_initialize(config)
    trainer = Trainer(config, workdir)
    result = trainer.fit(trainer.restore_or_init(), _synthetic_stream(config))
    params = _host_params(result.state)
    if jax.process_index() == 0:
        np.savez(workdir / "params.npz", **params)
    return dict(step=result.step, loss=result.last_metrics["loss"],
                processes=jax.process_count(), devices=jax.device_count(),
                checkpoints=trainer.checkpointer.all_steps())


def sharded(config, workdir: Path) -> dict:
    import jax
    import numpy as np

    from omni_jax.train.trainer import Trainer, computed

    trainers = dict(sharded=Trainer(config, workdir / "sharded"),
                    single=_one_device_reference(config, workdir / "single"))
    states = {name: t.init_state() for name, t in trainers.items()}
    out = dict(mesh={name: dict(t.mesh.shape) for name, t in trainers.items()})
    shardings = jax.tree.leaves(jax.tree.map(lambda x: x.sharding, states["sharded"].params))
    out["sharded_leaves"] = sum(not s.is_fully_replicated for s in shardings)
    out["init_max_diff"] = _max_abs_diff(_host_params(states["sharded"]),
                                         _host_params(states["single"]))
    stream = _synthetic_stream(config)
    parts = {name: [] for name in trainers}
    for _ in range(2):
        batch = next(stream)
        for name, t in trainers.items():
            states[name], p = t.train_step(states[name], t.global_batch(batch))
            parts[name].append(computed(p))
    out["parts"] = parts
    params = {name: _host_params(s) for name, s in states.items()}
    out["params_max_diff"] = _max_abs_diff(params["sharded"], params["single"])
    out["params_max_abs"] = max(float(np.max(np.abs(v))) for v in params["single"].values())
    return out


def nonfinite(config, workdir: Path) -> dict:
    from omni_jax.train.trainer import NonFiniteError, Trainer, computed

    good = 2
    config.train.profile_steps = 1  # and a profiler trace of step 2 (the first is compiled)
    trainer = Trainer(config, workdir)
    out = dict(error=None)
    try:
        trainer.fit(trainer.init_state(), _synthetic_stream(config, nan_from=good))
    except NonFiniteError as e:
        out["error"] = str(e)
    ckpt = trainer.checkpointer
    out["checkpoints"], out["latest"] = ckpt.all_steps(), ckpt.latest_step()
    out["profile_files"] = sorted(p.name for p in (workdir / "profile").rglob("*")
                                  if p.is_file())

    def restore(step=None):
        return ckpt.restore(step, abstract_state=trainer.abstract_state,
                            shardings=trainer.state_shardings)

    last_good, latest = restore(good), restore()
    out["latest_equals_last_good"] = _bitwise_equal(_host_params(latest),
                                                    _host_params(last_good))
    # The step itself: a NaN batch changes no parameter and counts one non-finite step.
    before = _host_params(last_good)
    nan_batch = next(_synthetic_stream(config, nan_from=0))
    after, parts = trainer.train_step(last_good, trainer.global_batch(nan_batch))
    out["step_keeps_params"] = _bitwise_equal(_host_params(after), before)
    out["step_parts"] = computed(parts)
    return out


def resume(config, workdir: Path) -> dict:
    import jax

    from data_pipelines import corpus, pipeline
    from omni_jax.train.trainer import Trainer

    # What omni_jax.main.prepare_data does (importing main would define its flags twice).
    corpus.ensure_corpus(config, workdir)
    tokenizer = corpus.build_tokenizer(config, corpus.tokenizer_path(config, workdir))
    half = int(config.train.steps) // 2

    def run(name: str, stop_at: int | None = None):
        trainer = Trainer(config, workdir / name)
        dataset = pipeline.make_dataset(config, "train", tokenizer, seed=config.seed,
                                        workdir=workdir)
        grain_iterator = iter(dataset)
        state = trainer.restore_or_init(grain_iterator)
        start = int(jax.device_get(state.step))
        recorder = _Recorder(grain_iterator, stop_at)
        result = trainer.fit(state, recorder)
        return dict(start=start, step=result.step, stopped_early=result.stopped_early,
                    digests=recorder.digests, next=_digest(next(grain_iterator)),
                    params=_host_params(result.state))

    straight = run("straight")
    first = run("resumed", stop_at=half)
    second = run("resumed")
    return dict(
        straight={k: v for k, v in straight.items() if k != "params"},
        first={k: v for k, v in first.items() if k != "params"},
        second={k: v for k, v in second.items() if k != "params"},
        params_bitwise_equal=_bitwise_equal(straight["params"], second["params"]),
        params_max_diff=_max_abs_diff(straight["params"], second["params"]),
        first_differs=not _bitwise_equal(first["params"], second["params"]))


def main(argv):
    del argv
    import jax

    workdir = Path(_WORKDIR.value)
    workdir.mkdir(parents=True, exist_ok=True)
    modes = dict(grads=grads, fit=fit, sharded=sharded, nonfinite=nonfinite, resume=resume)
    result = modes[_MODE.value](_CONFIG.value, workdir)
    if jax.process_index() == 0:
        Path(_OUT.value).write_text(json.dumps(result, indent=1, sort_keys=True))
    print(f"WORKER DONE {jax.process_index()}", flush=True)


if __name__ == "__main__":
    app.run(main)
