"""Load a trained run from its workdir, for evaluation and serving tools.

  run = load_run("runs/tiny")        # config, tokenizer, newest readable params, step
  engine = DuplexEngine(run.model, run.params, run.config)

A workdir written by `omni_jax.main` holds `config.json` (the resolved config),
`tokenizer.model` (unless `data.tokenizer.path` names another file) and `checkpoints/`
(Orbax, `omni_jax.train.checkpoint`). Nothing is created, trained or initialised here: a
missing piece is a `RunLoadError` naming the workdir and the piece.

Only the parameters are read: the model is built from the config, its parameter shapes
come from `jax.eval_shape(model.init)` (nothing is allocated or compiled for them), and the
checkpoint's `params` are restored alone (`Checkpointer.restore_params`; the optimizer state
is not read). The model is served on ONE device: the config's mesh is reset to 1x1x1 and the
parameters are restored onto that device whatever mesh wrote them (Orbax reshards on read),
so they must fit one device's memory.
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

from data_pipelines import corpus
from data_pipelines.tokenizer import Tokenizer, TokenizerError
from omni_jax import configuration
from omni_jax.models.omni import DuplexModel
from omni_jax.train import checkpoint
from omni_jax.train.sharding import strip_boxes

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
    path = corpus.tokenizer_path(config, workdir)
    if not path.is_file():
        raise RunLoadError(f"{workdir}: no tokenizer at {path} (data.tokenizer.path="
                           f"{config.data.tokenizer.path!r})")
    try:
        return Tokenizer.load(path)
    except TokenizerError as e:
        raise RunLoadError(f"{workdir}: {e}") from None


def abstract_params(model: DuplexModel, device: jax.Device) -> Any:
    """The unboxed params tree as ShapeDtypeStructs on `device` (nothing allocated)."""
    shapes = strip_boxes(jax.eval_shape(model.init, jax.random.key(0)))
    sharding = jax.sharding.SingleDeviceSharding(device)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                        shapes)


def load_run(workdir: str | os.PathLike, device: jax.Device | None = None) -> LoadedRun:
    """Config, tokenizer and the newest readable checkpoint's params of a run, on `device`
    (default: the first).

    An unreadable newest checkpoint falls back to the previous one (the Checkpointer's
    policy, which moves the bad one to checkpoints/corrupt/); no readable one is an error.
    """
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise RunLoadError(f"{workdir}: no such run directory")
    config = serving_config(load_config(workdir))
    try:
        configuration.validate(config, num_devices=1)
    except configuration.ConfigError as e:
        raise RunLoadError(f"{workdir}/{CONFIG_FILE}: {e}") from None
    tokenizer = load_tokenizer(config, workdir)
    # Checked first: a run without checkpoints is not a run to serve, and an error names
    # the folder before anything is built.
    ckpt_dir = workdir / CHECKPOINT_DIR
    if not ckpt_dir.is_dir() or not any(p.name.isdigit() for p in ckpt_dir.iterdir()):
        raise RunLoadError(f"{workdir}: no checkpoint under {ckpt_dir}")
    model = DuplexModel.from_config(config)
    target = abstract_params(model, device or jax.devices()[0])
    reader = checkpoint.Checkpointer(ckpt_dir, read_only=True)
    try:
        params = reader.restore_params(target)
    except checkpoint.CheckpointError as e:  # e.g. every step unfinished or unreadable
        raise RunLoadError(f"{workdir}: {e}") from None
    finally:
        reader.close()
    step = reader.restored_step
    log.info("loaded %s: config %r, checkpoint step %d", workdir, config.name, step)
    return LoadedRun(workdir=workdir, config=config, tokenizer=tokenizer, params=params,
                     step=int(step), model=model)
