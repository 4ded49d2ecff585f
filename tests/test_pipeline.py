"""The Grain pipeline: valid fixed-shape batches, determinism, sharding, resumption, skips."""

import numpy as np
import pytest

from configs import tiny
from data_pipelines import contract, corpus, pipeline
from data_pipelines.sources import timelines

TRAIN, EVAL = 16, 8


def small_config(**pipeline_overrides):
    config = tiny.get_config()
    config.data.train_dialogues = TRAIN
    config.data.eval_dialogues = EVAL
    config.data.pipeline.batch_size = 4
    config.data.pipeline.update(pipeline_overrides)
    return config


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The small corpus (shared with test_corpus through the session's base temp dir)."""
    config = small_config()
    workdir = tmp_path_factory.getbasetemp() / "small_world"
    tokenizer = corpus.build_tokenizer(config, corpus.tokenizer_path(config, workdir))
    source = timelines.open_source(config, workdir, "train")
    return config, tokenizer, source


def take(ds, count):
    iterator = iter(ds)
    return [next(iterator) for _ in range(count)]


def assert_batches_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_batches_are_valid_and_fixed_shape(world):
    config, tokenizer, source = world
    dims = contract.Dims.from_config(config)
    batches = take(pipeline.make_dataset(config, "train", tokenizer, seed=0, source=source), 3)
    for i, batch in enumerate(batches):
        contract.validate(batch, dims, batched=True, vocab_size=tokenizer.vocab_size,
                          where=f"batch {i}")
        assert batch["env_audio"].shape == (4, config.data.num_blocks, 1280)
        assert set(batch) == set(contract.FIELD_NAMES) | {pipeline.SKIPPED}
        assert batch[pipeline.SKIPPED].tolist() == [0, 0, 0, 0]
        assert batch["block_mask"].any(axis=1).all()  # no all-padding records


def test_same_seed_same_batches_and_other_seed_differs(world):
    config, tokenizer, source = world

    def batches(seed):
        return take(pipeline.make_dataset(config, "train", tokenizer, seed=seed,
                                          source=source, keep_metadata=True), 2)

    first, again, other = batches(1), batches(1), batches(2)
    for a, b in zip(first, again):
        assert_batches_equal(a, b)
    assert not np.array_equal(first[0]["record_index"], other[0]["record_index"])
    assert not np.array_equal(first[0]["env_audio"], other[0]["env_audio"])


def test_processes_read_disjoint_records_that_cover_the_split(world):
    config, tokenizer, source = world
    seen = []
    for process_index in range(2):
        ds = pipeline.make_dataset(config, "train", tokenizer, seed=0, source=source,
                                   process_index=process_index, process_count=2,
                                   num_epochs=1, keep_metadata=True)
        batches = list(ds)
        indices = np.concatenate([b["record_index"] for b in batches])
        assert all(b["env_audio"].shape[0] == 2 for b in batches)  # per-process batch = 4 / 2
        seen.append(set(indices.tolist()))
        assert len(seen[-1]) == indices.size == TRAIN // 2
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(range(TRAIN))


def test_epochs_are_reshuffled_and_each_record_appears_once_per_epoch(world):
    config, tokenizer, source = world
    ds = pipeline.make_dataset(config, "train", tokenizer, seed=0, source=source,
                               num_epochs=2, keep_metadata=True)
    batches = list(ds)
    order = np.concatenate([b["record_index"] for b in batches])
    epochs = np.concatenate([b["epoch"] for b in batches])
    assert epochs.tolist() == [0] * TRAIN + [1] * TRAIN
    assert sorted(order[:TRAIN]) == sorted(order[TRAIN:]) == list(range(TRAIN))
    assert order[:TRAIN].tolist() != order[TRAIN:].tolist()


def test_restored_iterator_resumes_at_the_next_batch(world, tmp_path):
    config, tokenizer, source = world
    ds = pipeline.make_dataset(config, "train", tokenizer, seed=3, source=source,
                               keep_metadata=True)
    iterator = iter(ds)
    for _ in range(5):  # past the end of the first epoch (16 records / 4)
        next(iterator)
    pipeline.save_iterator_state(iterator, tmp_path / "state.json")
    expected = next(iterator)
    expected_after = next(iterator)

    fresh = iter(pipeline.make_dataset(config, "train", tokenizer, seed=3, source=source,
                                       keep_metadata=True))
    pipeline.restore_iterator_state(fresh, tmp_path / "state.json")
    assert_batches_equal(next(fresh), expected)
    assert_batches_equal(next(fresh), expected_after)
    assert expected["epoch"].tolist() == [1] * 4


class _BrokenSource(timelines.TimelineSource):
    """The train split with record 5's audio truncated."""

    BROKEN = 5

    def __init__(self, source):
        records = [dict(source.record(i)) for i in range(len(source))]
        records[self.BROKEN]["event_audio"] = records[self.BROKEN]["event_audio"][:-10]
        super().__init__(records, name="broken/train")


def test_skip_policy_drops_and_counts_the_broken_record(world):
    config, tokenizer, source = world
    config = small_config()
    config.data.on_bad_sample = "skip"
    ds = pipeline.make_dataset(config, "train", tokenizer, seed=0, source=_BrokenSource(source),
                               num_epochs=2, keep_metadata=True)
    batches = list(ds)
    indices = np.concatenate([b["record_index"] for b in batches])
    assert _BrokenSource.BROKEN not in indices
    assert sum(int(b[pipeline.SKIPPED].sum()) for b in batches) == 2  # once per epoch
    assert len(batches) == (2 * TRAIN - 2) // 4  # the partial last batch is dropped
    dims = contract.Dims.from_config(config)
    for batch in batches:
        contract.validate(batch, dims, batched=True, vocab_size=tokenizer.vocab_size)


def test_raise_policy_names_the_broken_record(world):
    config, tokenizer, source = world
    assert config.data.on_bad_sample == "raise"
    ds = pipeline.make_dataset(config, "train", tokenizer, seed=0, source=_BrokenSource(source),
                               num_epochs=1)
    with pytest.raises(pipeline.BadSampleError,
                       match=r"train record 5 .*broken/train\[5\].*field 'event_audio'"):
        list(ds)


def test_worker_processes_give_the_same_batches(world):
    config, tokenizer, source = world
    in_process = take(pipeline.make_dataset(config, "train", tokenizer, seed=0,
                                            source=source), 3)
    config = small_config(worker_count=2, prefetch_buffer=1)
    iterator = iter(pipeline.make_dataset(config, "train", tokenizer, seed=0, source=source))
    try:
        for expected in in_process:
            assert_batches_equal(next(iterator), expected)
    finally:
        iterator.close()
