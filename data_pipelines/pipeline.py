"""The Grain input pipeline: Timelines -> fixed-shape numpy batches of BlockSequences.

  source (random access Timelines)
    -> per-process shard       equal-size strided slice of record indices, disjoint per process
    -> shuffle                 seeded, reshuffled each epoch
    -> repeat                  num_epochs (None: forever)
    -> render + augment        rng = seeds.rng(seed, "render", record index, epoch)
    -> crop/pad to K blocks    config.data.pipeline.crop
    -> mp_prefetch             config.data.pipeline.worker_count processes (0: in-process)
    -> count skips, batch      per-process batch = batch_size / process_count

Every element's randomness depends only on (seed, record index, epoch) and the element order
only on (seed, process), so batches are identical for any worker count. Shuffling works on
record indices, so a Timeline is only read and deserialised when it is rendered.

Batches hold the `contract.FIELD_NAMES` arrays with a leading batch dimension B, plus
  skipped  (B,) int32: bad records dropped right before each element (`on_bad_sample=skip`);
           `batch["skipped"].sum()` counts the batch's skips. The trainer pops it.
and, with keep_metadata=True, `record_index` (B,) int64, `epoch` (B,) int64 and the
`contract.METADATA_FIELDS` (`scenario`, `events`) as (B,) str arrays.

A bad record (a ValueError while reading or rendering it: RecordError, RenderError, ...)
raises `BadSampleError` naming the split, record index and scenario with
`on_bad_sample=raise`; with `skip` it is dropped and counted as above.

Grain's multiprocess workers read absl flags: entry points run under `absl.app.run`; when
flags are not parsed (tests, notebooks) `make_dataset` marks them parsed with defaults.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

import grain
import numpy as np
from absl import flags, logging

from data_pipelines import augment as augment_lib
from data_pipelines import contract, corpus, preferences, render, serialize
from data_pipelines.scenarios import seeds
from data_pipelines.sources import timelines
from data_pipelines.timeline import Timeline

RENDER_STREAM = 1  # rng stream tag of the shuffle seed (rendering uses seeds.rng "render")
SKIPPED = contract.SKIPPED
_BAD = "__bad_record__"  # marker key of an element whose record was skipped
_NO_PAIR = "__no_pair__"  # marker key of a dialogue without a decision (pairs only)


class BadSampleError(ValueError):
    """A record that cannot be read or rendered; names the split, record index, scenario."""


class _RenderRecord:
    """(position, record index) -> rendered element; pickles into Grain workers."""

    def __init__(self, config, split: str, source: Sequence[Timeline], tokenizer, seed: int,
                 shard_len: int, augment: bool, keep_metadata: bool, pairs: bool = False,
                 observed=None):
        self.source = source
        self.pairs = pairs
        self.observed = observed
        self.split = split
        self.tokenizer = tokenizer
        self.seed = seed
        self.shard_len = shard_len
        self.keep_metadata = keep_metadata
        self.policy = config.data.on_bad_sample
        self.crop = config.data.pipeline.crop
        self.thinking = config.model.thinking
        self.dims = contract.Dims.from_config(config)
        self.timing = contract.TimingRules.from_config(config)
        self.augment = (augment_lib.AugmentConfig.from_config(config) if augment
                        else augment_lib.AugmentConfig.none())

    def __call__(self, position: int, record_index: int) -> dict[str, Any]:
        epoch = position // self.shard_len
        rng = seeds.rng(self.seed, "render", record_index, epoch)
        timeline = None
        try:
            timeline = self.source[record_index]
            if self.pairs:
                return self._pair(timeline, rng, record_index, epoch)
            record = render.render_fixed(
                timeline, dims=self.dims, timing=self.timing, thinking=self.thinking,
                tokenizer=self.tokenizer, rng=rng, augment=self.augment, crop=self.crop)
        except preferences.NoDecision:
            return {_NO_PAIR: record_index}
        except ValueError as e:
            scenario = timeline.scenario if timeline is not None else "unknown"
            message = (f"{self.split} record {record_index} (scenario {scenario}, epoch "
                       f"{epoch}): {type(e).__name__}: {e}")
            if self.policy == "raise":
                raise BadSampleError(message) from e
            logging.warning("skipping bad %s", message)
            return {_BAD: record_index}
        return self._element(record, {name: record[name] for name in contract.FIELD_NAMES},
                             record_index, epoch)

    def _pair(self, timeline: Timeline, rng, record_index: int, epoch: int) -> dict[str, Any]:
        observed_K = None
        if self.observed is not None:
            observed_K = self.observed.get(record_index)
            if observed_K is None:
                raise preferences.NoDecision(f"record {record_index}: the model's behaviour "
                                             "was not observed")
        pair = preferences.render_pair(
            timeline, dims=self.dims, timing=self.timing, thinking=self.thinking,
            tokenizer=self.tokenizer, rng=rng, augment=self.augment, observed_K=observed_K)
        chosen, rejected = pair["chosen"], pair["rejected"]
        element = {name: np.stack([chosen[name], rejected[name]])
                   for name in contract.FIELD_NAMES}
        element[preferences.DECISION_BLOCK] = np.int32(pair["decision_block"])
        if self.keep_metadata:
            element.update(pair_kind=pair["kind"], pair_how=pair["how"])
        return self._element(chosen, element, record_index, epoch)

    def _element(self, record, element: dict, record_index: int, epoch: int) -> dict:
        if self.keep_metadata:
            element.update(scenario=record["scenario"], events=record["events"],
                           record_index=np.int64(record_index), epoch=np.int64(epoch))
        return element


class _CountSkipsIterDataset(grain.IterDataset):
    """Drops skipped-record markers and writes how many preceded each element."""

    def __init__(self, parent: grain.IterDataset, max_consecutive: int):
        super().__init__(parent)
        self._max_consecutive = max_consecutive

    def __iter__(self) -> grain.DatasetIterator:
        return _CountSkipsIterator(self._parent.__iter__(), self._max_consecutive)

    def __str__(self) -> str:
        return "CountSkipsIterDataset"


class _CountSkipsIterator(grain.DatasetIterator):

    def __init__(self, parent: grain.DatasetIterator, max_consecutive: int):
        super().__init__(parent)
        self._max_consecutive = max_consecutive
        self._pending = 0  # markers seen since the last element (part of the state)

    def __next__(self) -> dict[str, Any]:
        passed = 0  # dialogues without a decision (pairs): not bad, not counted
        while True:
            element = next(self._parent)
            if _NO_PAIR in element:
                passed += 1
                if passed >= self._max_consecutive:
                    raise BadSampleError(f"{passed} consecutive dialogues made no preference "
                                         "pair: is data.scenarios set to pair scenarios "
                                         f"({', '.join(preferences.PAIR_SCENARIOS)})?")
                continue
            if _BAD not in element:
                element[SKIPPED] = np.int32(self._pending)
                self._pending = 0
                return element
            self._pending += 1
            if self._pending >= self._max_consecutive:
                raise BadSampleError(f"{self._pending} consecutive records were bad (a whole "
                                     "shard's worth): nothing left to train on")

    def get_state(self) -> dict[str, Any]:
        return dict(parent=self._parent.get_state(), pending_skips=self._pending)

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])
        self._pending = int(state["pending_skips"])


def _collate(elements: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    return {key: np.stack([e[key] for e in elements]) for key in elements[0]}


def _shard(num_records: int, process_index: int, process_count: int) -> grain.MapDataset:
    """Record indices of this process: equal-size strided shards (drops the remainder)."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} outside [0, {process_count})")
    per_process = num_records // process_count
    if per_process == 0:
        raise ValueError(f"{num_records} records cannot feed {process_count} processes")
    stop = per_process * process_count
    return grain.MapDataset.range(num_records)[process_index:stop:process_count]


def _ensure_absl_flags_parsed():
    # Grain reads its settings from absl flags (also in its workers); outside
    # `absl.app.run` they are unparsed, and reading them raises.
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def make_dataset(config, split: str, tokenizer, *, seed: int, process_index: int = 0,
                 process_count: int = 1, source: Sequence[Timeline] | None = None,
                 num_epochs: int | None = None, keep_metadata: bool = False,
                 augment: bool = True, workdir: str | os.PathLike | None = None,
                 pairs: bool | None = None, observed=None) -> grain.IterDataset:
    """The per-process batch stream of `split` (see the module docstring).

    `source` defaults to `sources.timelines.open_source(config, workdir, split)`.
    `num_epochs` None means `config.data.pipeline.num_epochs` (-1: forever); the last
    partial batch of a finite run is dropped. `keep_metadata` adds record_index, epoch,
    scenario and events to each batch; `augment=False` renders the clean environment (plus
    the scenario's echo). `pairs` (default: `train.objective == "dpo"`) makes each element a
    preference pair (`data_pipelines.preferences`): every contract field stacked as
    [chosen, rejected] on a second axis (Bx2x...), plus `decision_block` (B,) int32;
    dialogues without a decision are passed over. `observed` (on-policy pairs): record index
    -> the model's own speaking_K; the rejected side is then its failure, and a dialogue it
    got right (or one not observed) is passed over. An iterator state restores only into a
    dataset made with the same arguments and worker_count (the batches themselves do not
    depend on worker_count).
    """
    p = config.data.pipeline
    if p.batch_size % process_count:
        raise ValueError(f"config.data.pipeline.batch_size {p.batch_size} is not divisible "
                         f"by {process_count} processes")
    if source is None:
        if workdir is None:
            raise ValueError("make_dataset needs a source or a workdir to open one")
        source = timelines.open_source(config, workdir, split)
    if num_epochs is None and p.num_epochs != -1:
        num_epochs = p.num_epochs

    indices = _shard(len(source), process_index, process_count)
    shard_len = len(indices)
    if p.shuffle:
        shuffle_seed = int(np.random.SeedSequence([seed, RENDER_STREAM]).generate_state(1)[0])
        indices = indices.shuffle(seed=shuffle_seed)
    indices = indices.repeat(num_epochs)
    if pairs is None:
        pairs = config.train.get("objective", "sft") == "dpo"
    renderer = _RenderRecord(config, split, source, tokenizer, seed, shard_len, augment,
                             keep_metadata, pairs, observed)
    batch_size = p.batch_size // process_count
    # Threads overlap the numpy work (much of it releases the GIL) with reading.
    read_options = grain.ReadOptions(num_threads=2, prefetch_buffer_size=2 * batch_size)
    ds = indices.map_with_index(renderer).to_iter_dataset(read_options)
    if p.worker_count > 0:
        _ensure_absl_flags_parsed()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=p.worker_count,
            per_worker_buffer_size=max(1, p.prefetch_buffer) * batch_size))
    ds = _CountSkipsIterDataset(ds, max_consecutive=max(shard_len, 1))
    return ds.batch(batch_size, drop_remainder=True, batch_fn=_collate)


def save_iterator_state(iterator: grain.DatasetIterator, path: str | os.PathLike) -> None:
    """Writes the iterator's state as JSON (what grain's orbax handler stores, too)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(iterator.get_state(), default=serialize.json_default, indent=1))


def restore_iterator_state(iterator: grain.DatasetIterator, path: str | os.PathLike) -> None:
    """Sets a fresh iterator of the same dataset to resume at the saved position."""
    iterator.set_state(json.loads(Path(path).read_text()))


def _cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its live child processes (workers)."""
    total = time.process_time()
    try:
        import psutil  # optional: without it, only this process's CPU time counts
    except ImportError:
        return total
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def pipeline_throughput(config, workdir: str | os.PathLike, num_batches: int) -> dict:
    """Times `num_batches` train batches after one warm-up batch.

    `audio_seconds` counts the real (unpadded) environment audio the batches hold.
    Per core = that audio divided by the CPU seconds the pipeline used (this process's
    threads plus its worker processes), so it is independent of how many cores ran.
    """
    tokenizer = corpus.build_tokenizer(config, corpus.tokenizer_path(config, workdir))
    ds = make_dataset(config, "train", tokenizer, seed=config.seed, workdir=workdir)
    iterator = iter(ds)
    next(iterator)  # warm-up: worker start, first reads
    wall_start, cpu_start = time.perf_counter(), _cpu_seconds()
    real_blocks = all_blocks = skipped = 0
    for _ in range(num_batches):
        batch = next(iterator)
        real_blocks += int(batch["block_mask"].sum())
        all_blocks += batch["block_mask"].size
        skipped += int(batch[SKIPPED].sum())
    seconds = time.perf_counter() - wall_start
    cpu_seconds = _cpu_seconds() - cpu_start
    if hasattr(iterator, "close"):
        iterator.close()
    audio_seconds = real_blocks * config.audio.block_ms / 1000.0
    return dict(
        audio_seconds_per_second_per_core=audio_seconds / max(cpu_seconds, 1e-9),
        audio_seconds_per_second=audio_seconds / seconds,
        blocks_per_second=all_blocks / seconds,
        cores_used=cpu_seconds / seconds,
        audio_seconds=audio_seconds, batches=num_batches, seconds=seconds,
        cpu_seconds=cpu_seconds, skipped=skipped, worker_count=config.data.pipeline.worker_count)
