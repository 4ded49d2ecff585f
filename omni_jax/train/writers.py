"""What training writes: a `clu.metrics.Collection` of averaged loss parts, TensorFlow-free
metric writers, and the one-line progress report.

Writers. `make_writer(workdir, process_index)` gives every process the same interface
(write_scalars, write_texts, write_hparams, flush, close) but only process 0 writes:
  * TensorBoard event files in `workdir`: clu's `SummaryWriter` when TensorFlow imports
    (clu.metric_writers needs it), else tensorboardX;
  * `workdir/metrics.jsonl`: one JSON object per write, `{"step": ..., NAME: value, ...}`,
    always (easy to read back for plots and reports: `pandas.read_json(path, lines=True)`).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from clu import metrics as clu_metrics

JSONL_NAME = "metrics.jsonl"


def train_collection(names: Sequence[str]) -> type[clu_metrics.Collection]:
    """A Collection averaging each named scalar over the steps it is merged over. Names are
    the keys of `compute_losses`' parts (see `losses.output_names`). Use:
        step_metrics = Metrics.single_from_model_output(**parts)     # inside the jitted step
        acc = step_metrics if acc is None else acc.merge(step_metrics)
        averages = acc.compute()                                     # at log time
    """
    return clu_metrics.Collection.create(
        **{name: clu_metrics.Average.from_output(name) for name in names})


# ---- writers ----------------------------------------------------------------------------

def _scalar(value) -> float:
    return float(np.asarray(value))


class JsonlWriter:
    """Appends one JSON line per write (NaN/Inf are written as Python's json does)."""

    def __init__(self, path: str):
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def _write(self, record: dict):
        self._file.write(json.dumps(record) + "\n")

    def write_scalars(self, step: int, scalars: Mapping[str, Any]):
        self._write({"step": int(step), **{k: _scalar(v) for k, v in scalars.items()}})

    def write_texts(self, step: int, texts: Mapping[str, str]):
        self._write({"step": int(step), **{k: str(v) for k, v in texts.items()}})

    def write_hparams(self, hparams: Mapping[str, Any]):
        self._write({"hparams": {k: _jsonable(v) for k, v in hparams.items()}})

    def flush(self):
        self._file.flush()

    def close(self):
        self._file.close()


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


class TensorboardXWriter:
    """TensorBoard event files without TensorFlow."""

    def __init__(self, logdir: str):
        import tensorboardX  # imported only where it is used

        self._writer = tensorboardX.SummaryWriter(logdir=logdir, flush_secs=30)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]):
        for tag, value in scalars.items():
            self._writer.add_scalar(tag, _scalar(value), global_step=int(step))

    def write_texts(self, step: int, texts: Mapping[str, str]):
        for tag, text in texts.items():
            self._writer.add_text(tag, str(text), global_step=int(step))

    def write_hparams(self, hparams: Mapping[str, Any]):
        text = json.dumps({k: _jsonable(v) for k, v in hparams.items()}, indent=1)
        self._writer.add_text("hparams", text, global_step=0)

    def flush(self):
        self._writer.flush()

    def close(self):
        self._writer.close()


class MultiWriter:
    """Forwards every call to each writer (an empty list writes nothing)."""

    def __init__(self, writers: Sequence[Any]):
        self.writers = tuple(writers)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]):
        for w in self.writers:
            w.write_scalars(step, scalars)

    def write_texts(self, step: int, texts: Mapping[str, str]):
        for w in self.writers:
            w.write_texts(step, texts)

    def write_hparams(self, hparams: Mapping[str, Any]):
        for w in self.writers:
            w.write_hparams(hparams)

    def flush(self):
        for w in self.writers:
            w.flush()

    def close(self):
        for w in self.writers:
            w.close()


def _tensorboard_writer(workdir: str):
    try:  # clu.metric_writers imports TensorFlow at package import
        from clu import metric_writers
    except ImportError:
        return TensorboardXWriter(workdir)
    return metric_writers.SummaryWriter(workdir)


def make_writer(workdir: str, process_index: int = 0) -> MultiWriter:
    """TensorBoard + JSONL writer on process 0; a writer that writes nothing elsewhere."""
    if process_index != 0:
        return MultiWriter([])
    os.makedirs(workdir, exist_ok=True)
    return MultiWriter([_tensorboard_writer(workdir),
                        JsonlWriter(os.path.join(workdir, JSONL_NAME))])


def read_jsonl(path: str) -> list[dict]:
    """The records a JsonlWriter wrote, in order."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ---- the progress line ------------------------------------------------------------------

def _num(x) -> str:
    x = _scalar(x)
    if not math.isfinite(x):
        return str(x)
    return f"{x:.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def format_duration(seconds) -> str:
    """45s, 1m57s, 2h03m; '?' when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def progress_line(step: int, total_steps: int, parts: Mapping[str, Any], steps_per_sec: float,
                  examples_per_sec: float, eta_seconds: float | None,
                  keys: Sequence[str] | None = None) -> str:
    """'step 120/600 loss 3.21 (text 2.1 speech 0.9 think 0.2) 4.1 steps/s 33 ex/s ETA 1m57s'.
    `parts['loss']` leads; then `keys` (default: every other part, in order) in brackets."""
    keys = [k for k in (keys if keys is not None else parts) if k != "loss"]
    line = f"step {int(step)}/{int(total_steps)}"
    if "loss" in parts:
        line += f" loss {_num(parts['loss'])}"
    if keys:
        line += " (" + " ".join(f"{k} {_num(parts[k])}" for k in keys) + ")"
    return (f"{line} {_num(steps_per_sec)} steps/s {_num(examples_per_sec)} ex/s "
            f"ETA {format_duration(eta_seconds)}")


class Throughput:
    """Steps/s and examples/s between calls, and an ETA (host-side wall clock)."""

    def __init__(self, batch_size: int, total_steps: int):
        self.batch_size, self.total_steps = batch_size, total_steps
        self._t, self._step = None, None

    def update(self, step: int, now: float | None = None) -> tuple[float, float, float | None]:
        """(steps/s, examples/s, eta seconds) since the previous call (nan at the first)."""
        now = time.perf_counter() if now is None else now
        if self._t is None or step <= self._step or now <= self._t:
            self._t, self._step = now, step
            return math.nan, math.nan, None
        rate = (step - self._step) / (now - self._t)
        self._t, self._step = now, step
        return rate, rate * self.batch_size, max(self.total_steps - step, 0) / rate
