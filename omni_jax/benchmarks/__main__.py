"""The benchmarks' command line: `--what` picks the module that measures (see the package
docstring); the last line printed is one JSON object (always with `device_kind` and
`device_count`).

  python -m omni_jax.benchmarks --config=configs/tiny.py --what=step
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile

import jax
from absl import app, flags
from ml_collections import config_flags

from omni_jax import configuration
from omni_jax.benchmarks import (common, intelligibility, params, pipeline, scan, step,
                                 train, train_forms, vocoder)
from omni_jax.benchmarks import compile as compile_benchmark

FLAGS = flags.FLAGS
WHAT = ("pipeline", "params", "step", "train_forms", "train", "compile", "vocoder",
        "intelligibility", "scan")


def define_flags():
    """Command-line flags, defined only when run as a program (importing stays free)."""
    config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                    lock_config=True)
    flags.DEFINE_enum("what", "pipeline", list(WHAT), "What to measure.")
    flags.DEFINE_string("workdir", "", "Where the corpus lives; '' = a temp dir.")
    flags.DEFINE_integer("batches", 20, "Batches timed after one warm-up batch.")
    flags.DEFINE_integer("repeats", 200,
                         "Timed calls (step); steps = repeats / 20 (train_forms, train).")
    flags.DEFINE_integer("batch", 0, "Batch size; 0 = 1 for step and train_forms, the "
                         "config's data.pipeline.batch_size for train and compile.")
    flags.DEFINE_integer("max_streams", 1024, "step: the largest batch the real-time search "
                         "tries (0 skips the search).")
    flags.DEFINE_integer("search_repeats", 20, "step: timed calls per batch in the search.")
    flags.DEFINE_list("max_lens", ["300", "1024", "4096"],
                      "step: llm.max_len values of the before/after cache sweep ('' = none).")
    flags.DEFINE_integer("sweep_batch", 8, "step: streams per call in the cache sweep.")
    flags.DEFINE_integer("peak_matmul_size", 0,
                         "train: side of the peak-measuring matmul (0 = by platform).")
    flags.DEFINE_integer("sentences", 30, "intelligibility: assistant sentences scored.")
    flags.DEFINE_integer("devices", 0, "compile: fake CPU devices (sets XLA_FLAGS before "
                         "JAX starts); 0 = the devices JAX sees.")
    flags.DEFINE_integer("replicated_threshold", 0, "compile: report replicated parameters "
                         "of at least this many bytes (0 = min(1 MiB, 0.1% of all)).")
    flags.DEFINE_bool("compare_remat", False, "compile: also compile under each remat "
                      "policy x compute dtype and print per-device memory.")
    flags.DEFINE_list("remat_policies", [], "compare_remat: policies (default: all).")
    flags.DEFINE_list("dtypes", [], "compare_remat: compute dtypes (default: all).")


def measure(what: str, config, workdir: str) -> dict:
    """The `what` benchmark's result, its arguments read from the flags."""
    steps = max(1, FLAGS.repeats // 20)
    if what == "pipeline":
        return pipeline.run(config, workdir, FLAGS.batches)
    if what == "params":
        return params.run(config)
    if what == "step":
        return step.run(config, FLAGS.batch or 1, FLAGS.repeats, FLAGS.max_streams,
                        FLAGS.search_repeats, [int(n) for n in FLAGS.max_lens if n],
                        FLAGS.sweep_batch)
    if what == "train_forms":
        return train_forms.run(config, FLAGS.batch or 1, steps)
    if what == "train":
        return train.run(config, FLAGS.batch, steps, FLAGS.peak_matmul_size)
    if what == "vocoder":
        return vocoder.run(config, FLAGS.batch or 1, FLAGS.repeats)
    if what == "intelligibility":
        return intelligibility.run(config, FLAGS.sentences)
    if what == "scan":
        return scan.run(config, FLAGS.batch, steps)
    return compile_benchmark.run(config, FLAGS.devices, FLAGS.replicated_threshold,
                                 FLAGS.compare_remat, FLAGS.remat_policies, FLAGS.dtypes)


def main(argv):
    del argv
    config = FLAGS.config
    if FLAGS.batch and FLAGS.what in ("train", "compile"):
        config.data.pipeline.batch_size = FLAGS.batch
    # train runs on every device JAX sees: the batch must split over its mesh; compile
    # fits a mesh to --devices first (its Trainer checks the batch against that one).
    configuration.validate(config, num_devices=(len(jax.devices()) if FLAGS.what == "train"
                                                else None))
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(FLAGS.what, config, FLAGS.workdir or tmp)
    devices = (common.benchmark_devices(FLAGS.devices) if FLAGS.what == "compile"
               else jax.devices())
    result.update(machine=platform.machine(), cpu_count=os.cpu_count(),
                  device_kind=str(devices[0].device_kind),
                  device_count=FLAGS.devices or len(devices))
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    common.force_host_devices(sys.argv[1:])  # before anything asks JAX for a device
    define_flags()
    app.run(main)
