"""Checkpoints of the train state and the Grain iterator position, with fallback.

  ckpt = Checkpointer.from_config(config, workdir / "checkpoints")
  ckpt.save(step, state, data_iterator)          # orbax decides (interval, preemption)
  ckpt.save(step, state, data_iterator, force=True)
  state = ckpt.restore(abstract_state=target, data_iterator=it)   # newest good step
  ckpt.wait(); ckpt.close()

  reader = Checkpointer(workdir / "checkpoints", read_only=True)   # creates nothing
  params = reader.restore_params(abstract_params)  # only the state's params subtree

Each step directory holds a Composite of two items: `state` (any pytree of arrays, written
sharded by orbax; restored onto the target shardings given, so a checkpoint written on one
mesh restores onto another) and `data` (Grain's own iterator handler: one JSON file per
process). If the newest checkpoint cannot be read (truncated or missing files, bad
metadata), a warning names it, it is moved to `<directory>/corrupt/`, and the previous
step is tried, and so on down the list. `restore_params` reads the `params` field of the
state alone (an Orbax partial restore: the optimizer state and the iterator are not read),
with the same fallback.

`PreemptionGuard` turns SIGTERM into a flag the training loop polls so it can save and
exit cleanly.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path
from typing import Any

import grain
import grain.checkpoint  # registers CheckpointSave/CheckpointRestore with orbax
import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from data_pipelines import serialize

STATE, DATA = "state", "data"
CORRUPT_DIR = "corrupt"

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """No readable checkpoint where one was required; the message names the directory."""


class _IteratorSnapshot:
    """The iterator's position when `save` was called, in the form Grain's handler writes
    for non-`DatasetIterator` items (bytes). Taking it eagerly keeps an async save from
    recording a later position, and tolerates numpy scalars in the state."""

    def __init__(self, iterator):
        state = iterator.get_state()
        if not isinstance(state, bytes):
            state = json.dumps(state, default=serialize.json_default, indent=1).encode()
        self._state = state

    def get_state(self) -> bytes:
        return self._state


def _preservation_policy(keep_last: int, keep_every: int):
    policies = ocp.checkpoint_managers
    keep = policies.LatestN(keep_last) if keep_last > 0 else policies.PreserveAll()
    if keep_every > 0:
        keep = policies.AnyPreservationPolicy([keep, policies.EveryNSteps(keep_every)])
    return keep


class Checkpointer:
    """`orbax.checkpoint.CheckpointManager` over {state, data iterator} items."""

    def __init__(self, directory, *, keep_last: int = 3, keep_every: int = 0,
                 async_save: bool = True, save_interval_steps: int = 1,
                 read_only: bool = False):
        """`read_only`: for reading a run (serving): nothing is created, `save` is refused.
        The fallback past an unreadable step still moves that step to corrupt/."""
        self.directory = Path(directory).absolute()
        self.read_only = read_only
        if read_only:
            options = ocp.CheckpointManagerOptions(save_interval_steps=0, create=False,
                                                   read_only=True)
        else:
            options = ocp.CheckpointManagerOptions(
                save_interval_steps=save_interval_steps,
                preservation_policy=_preservation_policy(keep_last, keep_every),
                enable_async_checkpointing=async_save,
                create=True,
            )
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        self.restored_step: int | None = None

    @classmethod
    def from_config(cls, config, directory, save_interval_steps: int = 1) -> Checkpointer:
        c = config.checkpoint
        return cls(directory, keep_last=int(c.keep_last), keep_every=int(c.keep_every),
                   async_save=bool(c.async_save), save_interval_steps=save_interval_steps)

    # ---- saving ----------------------------------------------------------------------------

    def should_save(self, step: int) -> bool:
        """Orbax's decision: the save interval, the first save, or a preemption sync point."""
        return self._manager.should_save(step)

    def save(self, step: int, state: Any, data_iterator=None, force: bool = False) -> bool:
        """Saves when due (or `force`); returns whether a save started. Async saves return
        once the arrays are copied off the devices: `state` may be donated right after."""
        if self.read_only:
            raise CheckpointError(f"{self.directory} was opened read-only; not saving")
        step = int(step)
        if step in self._manager.all_steps():
            return False  # e.g. the final save of a run that just saved this step
        if not (force or self._manager.should_save(step)):
            return False
        items = {STATE: ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items[DATA] = grain.checkpoint.CheckpointSave(_IteratorSnapshot(data_iterator))
        return self._manager.save(step, args=ocp.args.Composite(**items), force=True)

    def wait(self) -> None:
        """Blocks until every pending async save is on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- restoring -------------------------------------------------------------------------

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def restore(self, step: int | None = None, abstract_state: Any = None,
                shardings: Any = None, data_iterator=None) -> Any:
        """The state saved at `step` (default: the newest readable one).

        `abstract_state`: the target tree (arrays or ShapeDtypeStructs); leaves are restored
        with `shardings` (a matching tree) or, failing that, the leaf's own sharding. Without
        it, arrays come back with the shardings they were saved with (same topology only).
        `data_iterator`, when given, is set to the saved position in place.
        With `step=None`, an unreadable checkpoint is skipped (warning, moved aside) for the
        previous one; an explicit `step` is restored or raises.
        """
        target = _restore_target(abstract_state, shardings)

        def read(candidate: int) -> Any:
            items = {STATE: ocp.args.StandardRestore(target)}
            if data_iterator is not None:
                items[DATA] = grain.checkpoint.CheckpointRestore(data_iterator)
            return self._manager.restore(candidate, args=ocp.args.Composite(**items))[STATE]

        return self._newest_readable(read, step)

    def restore_params(self, abstract_params: Any, step: int | None = None) -> Any:
        """The `params` field of the state saved at `step` (default: the newest readable
        step; the fallback of `restore`), and nothing else of the checkpoint.

        `abstract_params`: the unboxed params tree (arrays or ShapeDtypeStructs, e.g.
        `jax.eval_shape(model.init, rng)` unboxed); each leaf is restored with its own
        sharding (e.g. `SingleDeviceSharding`), or replicated on the first device.
        """
        item = {"params": jax.tree.map(_on_device, abstract_params)}
        restore_args = ocp.checkpoint_utils.construct_restore_args(item)

        def read(candidate: int) -> Any:
            # A handler of its own: restoring through the manager would bind its `state`
            # item to PyTree args, and a later `save`/`restore` (Standard args) would fail.
            with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as reader:
                restored = reader.restore(
                    self.directory / str(candidate) / STATE,
                    args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args,
                                                partial_restore=True))
            return restored["params"]

        return self._newest_readable(read, step)

    def _newest_readable(self, read, step: int | None) -> Any:
        """`read(step)`, or with `step=None` `read` of the newest step that reads, setting
        aside (`_quarantine`) every newer one that does not."""
        if step is not None:
            restored = read(int(step))
            self.restored_step = int(step)
            return restored
        steps = sorted(self._manager.all_steps(), reverse=True)
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        for candidate in steps:
            try:
                restored = read(candidate)
            except Exception as e:  # noqa: BLE001 - any read failure means "corrupt"
                log.warning("checkpoint step %d in %s is unreadable (%s: %s); trying the "
                            "previous one", candidate, self.directory, type(e).__name__,
                            str(e)[:300])
                self._quarantine(candidate)
                continue
            self.restored_step = candidate
            return restored
        raise CheckpointError(f"no readable checkpoint in {self.directory} (tried steps "
                              f"{steps}; unreadable ones moved to {CORRUPT_DIR}/)")

    def _quarantine(self, step: int) -> None:
        """Moves an unreadable step out of the way: a resumed run will save it again, and
        orbax refuses to overwrite an existing step. Kept, not deleted: a read error may
        have been transient."""
        if jax.process_index() == 0:
            source = self.directory / str(step)
            if source.exists():
                dest = self.directory / CORRUPT_DIR / str(step)
                suffix = 0
                while dest.exists():
                    suffix += 1
                    dest = self.directory / CORRUPT_DIR / f"{step}.{suffix}"
                dest.parent.mkdir(exist_ok=True)
                source.rename(dest)
                log.warning("moved unreadable checkpoint %s to %s", source, dest)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"checkpoint_quarantine_{step}")
        self._manager.reload()


def _on_device(x) -> jax.ShapeDtypeStruct:
    """`x`'s shape and dtype with its own sharding, or the first device's."""
    sharding = getattr(x, "sharding", None)
    if sharding is None:
        sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)


def _restore_target(abstract_state, shardings):
    if abstract_state is None:
        if shardings is not None:
            raise ValueError("restore(shardings=...) needs abstract_state for the shapes")
        return None
    if shardings is None:
        return jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s),
        abstract_state, shardings)


class PreemptionGuard:
    """SIGTERM -> `should_stop`; the training loop saves a checkpoint and exits cleanly.

      with PreemptionGuard() as guard:
          for step in ...:
              ...
              if guard.should_stop_at(step):
                  ckpt.save(step, state, it, force=True); ckpt.wait(); break

    With several processes, a local flag could stop hosts at different steps (and hang
    the collective save); `should_stop_at` then also asks JAX's preemption sync point,
    which agrees on one step across hosts once any host was signalled.
    """

    def __init__(self, signals=(signal.SIGTERM,)):
        self._signals = tuple(signals)
        self._previous: dict[int, Any] = {}
        self._event = threading.Event()

    @property
    def should_stop(self) -> bool:
        return self._event.is_set()

    def should_stop_at(self, step: int) -> bool:
        """The local flag (one process) or the hosts' agreed preemption step (several)."""
        if jax.process_count() == 1:
            return self.should_stop
        try:
            return multihost_utils.reached_preemption_sync_point(int(step))
        except RuntimeError:  # preemption service not running: fall back to the flag
            return self.should_stop

    def _handle(self, signum, frame) -> None:
        del frame
        log.warning("received signal %d: will checkpoint and stop", signum)
        self._event.set()

    def install(self) -> PreemptionGuard:
        """Installs the handlers (main thread only; elsewhere a warning, nothing else).

        With several processes SIGTERM is left to JAX's preemption service (a Python
        handler would replace its notifier); `should_stop_at` asks that service instead.
        """
        if jax.process_count() > 1:
            log.info("multi-process run: SIGTERM is left to JAX's preemption service")
            return self
        for sig in self._signals:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError as e:  # not the main thread
                log.warning("cannot install a handler for signal %d: %s", sig, e)
        return self

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def __enter__(self) -> PreemptionGuard:
        return self.install()

    def __exit__(self, *exc) -> None:
        self.uninstall()
