"""Metrics: the averaging Collection, the TF-free writer (JSONL + TensorBoard events read
back), process-0-only writing, the progress line and throughput."""

import glob
import math
import os
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from omni_jax.train import writers


def _read_events(path):
    """Parses a TFRecord event file with tensorboardX's protos (no TensorFlow needed)."""
    from tensorboardX.proto import event_pb2

    events = []
    with open(path, "rb") as f:
        while header := f.read(12):  # uint64 length + uint32 length crc
            (length,) = struct.unpack("<Q", header[:8])
            data = f.read(length)
            f.read(4)  # data crc
            events.append(event_pb2.Event.FromString(data))
    return events


def test_collection_averages_over_updates():
    Metrics = writers.train_collection(["loss", "text"])

    @jax.jit
    def step_metrics(x):
        return Metrics.single_from_model_output(loss=x, text=2 * x)

    acc = None
    for x in (1.0, 2.0, 6.0):
        m = step_metrics(jnp.float32(x))
        acc = m if acc is None else acc.merge(m)
    out = acc.compute()
    np.testing.assert_allclose(out["loss"], 3.0)
    np.testing.assert_allclose(out["text"], 6.0)
    assert set(out) == {"loss", "text"}


def test_writer_jsonl_and_tensorboard(tmp_path):
    workdir = str(tmp_path / "run")
    writer = writers.make_writer(workdir, process_index=0)
    writer.write_hparams({"lr": 1e-3, "frozen": ("encoder/.*",)})
    writer.write_scalars(10, {"loss": jnp.float32(2.5), "acc_text": np.float64(0.25)})
    writer.write_scalars(20, {"loss": 1.5})
    writer.write_texts(20, {"sample": "hello"})
    writer.flush()
    writer.close()

    records = writers.read_jsonl(os.path.join(workdir, writers.JSONL_NAME))
    assert records[0] == {"hparams": {"lr": 1e-3, "frozen": ["encoder/.*"]}}
    assert records[1] == {"step": 10, "loss": 2.5, "acc_text": 0.25}
    assert records[2] == {"step": 20, "loss": 1.5}
    assert records[3] == {"step": 20, "sample": "hello"}

    (event_file,) = glob.glob(os.path.join(workdir, "events.out.tfevents.*"))
    scalars = [(e.step, v.tag, v.simple_value) for e in _read_events(event_file)
               for v in e.summary.value if v.HasField("simple_value")]
    assert (10, "loss", 2.5) in scalars and (20, "loss", 1.5) in scalars
    assert (10, "acc_text", 0.25) in scalars


def test_only_process_zero_writes(tmp_path):
    workdir = str(tmp_path / "other")
    writer = writers.make_writer(workdir, process_index=1)
    writer.write_scalars(1, {"loss": 1.0})
    writer.write_texts(1, {"a": "b"})
    writer.flush()
    writer.close()
    assert not os.path.exists(workdir)


def test_progress_line_format():
    parts = {"loss": 3.2134, "text": 2.1, "speech": 0.9, "think": 0.2, "acc_text": 0.5}
    line = writers.progress_line(120, 600, parts, 4.1, 33.0, 117.0,
                                 keys=["text", "speech", "think"])
    assert line == ("step 120/600 loss 3.21 (text 2.1 speech 0.9 think 0.2) 4.1 steps/s "
                    "33 ex/s ETA 1m57s")
    line = writers.progress_line(1, 10, {"loss": jnp.float32(-0.5)}, math.nan, math.nan, None)
    assert line == "step 1/10 loss -0.5 nan steps/s nan ex/s ETA ?"


@pytest.mark.parametrize("seconds,text", [(0, "0s"), (59.4, "59s"), (60, "1m00s"),
                                          (3599, "59m59s"), (7380, "2h03m"), (None, "?"),
                                          (math.inf, "?")])
def test_format_duration(seconds, text):
    assert writers.format_duration(seconds) == text


def test_throughput():
    t = writers.Throughput(batch_size=8, total_steps=100)
    rate, ex, eta = t.update(0, now=10.0)
    assert math.isnan(rate) and eta is None
    rate, ex, eta = t.update(20, now=15.0)
    assert (rate, ex, eta) == (4.0, 32.0, 20.0)
