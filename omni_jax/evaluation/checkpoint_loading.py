"""Load a trained run from its workdir, for evaluation and serving tools.

  run = load_run("runs/tiny")        # config, tokenizer, newest readable params, step
  engine = DuplexEngine(run.model, run.params, run.config)

A workdir written by `omni_jax.main` holds `config.json` (the resolved config),
`tokenizer.model` (unless `data.tokenizer.path` names another file) and `checkpoints/`
(Orbax, `omni_jax.train.checkpoint`). Nothing is created, trained or initialised here: a
missing piece is a `RunLoadError` naming the workdir and the piece.

The model is served on ONE device: the config's mesh is reset to 1x1x1 (a run trained on a
mesh of 8 restores onto one device; Orbax reshards on read), so the parameters must fit
one device's memory.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import jax
import ml_collections

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"


class RunLoadError(RuntimeError):
    """A workdir that cannot be served; the message names the workdir and what is wrong."""


@dataclasses.dataclass
class LoadedRun:
    workdir: Path
    config: ml_collections.ConfigDict
    tokenizer: Any  # data_pipelines.tokenizer.Tokenizer
    params: Any  # the train state's params ({'params': ...}), on one device
    step: int  # the checkpoint step the params come from
    model: Any  # omni_jax.models.omni.DuplexModel

    @property
    def config_name(self) -> str:
        return str(self.config.get("name", ""))


def _tuples(value):
    """JSON lists -> tuples, recursively: every sequence field of the configs is a tuple
    (`mesh.rules`, `train.frozen`, the augmentation ranges), and FrozenConfigDict hashing
    and the validator's pair checks expect them."""
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    return value


def config_from_json(text: str, where: str = CONFIG_FILE) -> ml_collections.ConfigDict:
    """The ConfigDict that `config.to_json_best_effort()` wrote."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise RunLoadError(f"{where}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise RunLoadError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    return ml_collections.ConfigDict(_tuples(raw))


def load_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
    path = Path(workdir) / CONFIG_FILE
    if not path.is_file():
        raise RunLoadError(f"{workdir}: no {CONFIG_FILE} (is this a run directory written by "
                           "omni_jax.main?)")
    return config_from_json(path.read_text(), where=str(path))


def serving_config(config) -> ml_collections.ConfigDict:
    """A copy of `config` for one device: mesh 1x1x1, no multi-host initialisation."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, 1, 1
    config.distributed.initialize = False
    return config


def load_tokenizer(config, workdir: str | os.PathLike):
    from data_pipelines import corpus
    from data_pipelines.tokenizer import Tokenizer, TokenizerError

    path = corpus.tokenizer_path(config, workdir)
    if not path.is_file():
        raise RunLoadError(f"{workdir}: no tokenizer at {path} (data.tokenizer.path="
                           f"{config.data.tokenizer.path!r})")
    try:
        return Tokenizer.load(path)
    except TokenizerError as e:
        raise RunLoadError(f"{workdir}: {e}") from None


def load_run(workdir: str | os.PathLike, device: jax.Device | None = None) -> LoadedRun:
    """Config, tokenizer and the newest readable checkpoint's params of a run.

    An unreadable newest checkpoint falls back to the previous one (the Checkpointer's
    policy, which moves the bad one to checkpoints/corrupt/); no readable one is an error.
    """
    from omni_jax import configuration
    from omni_jax.train import checkpoint
    from omni_jax.train.trainer import Trainer

    workdir = Path(workdir)
    if not workdir.is_dir():
        raise RunLoadError(f"{workdir}: no such run directory")
    config = serving_config(load_config(workdir))
    try:
        configuration.validate(config, num_devices=1)
    except configuration.ConfigError as e:
        raise RunLoadError(f"{workdir}/{CONFIG_FILE}: {e}") from None
    tokenizer = load_tokenizer(config, workdir)
    # Checked before building the Trainer: its Checkpointer would create an empty folder,
    # and restore_or_init would silently hand back random parameters.
    ckpt_dir = workdir / CHECKPOINT_DIR
    if not ckpt_dir.is_dir() or not any(p.name.isdigit() for p in ckpt_dir.iterdir()):
        raise RunLoadError(f"{workdir}: no checkpoint under {ckpt_dir}")
    trainer = Trainer(config, workdir, devices=[device or jax.devices()[0]])
    try:
        state = trainer.restore_or_init()
        step = trainer.checkpointer.restored_step
    except checkpoint.CheckpointError as e:
        raise RunLoadError(f"{workdir}: {e}") from None
    finally:
        trainer.checkpointer.close()
    if step is None:  # e.g. every step dir was unfinished: nothing was restored
        raise RunLoadError(f"{workdir}: no readable checkpoint under {ckpt_dir}")
    log.info("loaded %s: config %r, checkpoint step %d", workdir, config.name, step)
    return LoadedRun(workdir=workdir, config=config, tokenizer=tokenizer,
                     params=state.params, step=int(step), model=trainer.model)
