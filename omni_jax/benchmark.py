"""Benchmarks that print figures; the last line of output is one JSON object.

  python -m omni_jax.benchmark --config=configs/tiny.py --what=pipeline

what=pipeline: the Grain pipeline's throughput on this machine (corpus and tokenizer are
built under --workdir first if missing; that time is not counted).
"""

from __future__ import annotations

import json
import os
import platform
import tempfile

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WHAT = flags.DEFINE_enum("what", "pipeline", ["pipeline"], "What to measure.")
_WORKDIR = flags.DEFINE_string("workdir", "", "Where the corpus lives; '' = a temp dir.")
_BATCHES = flags.DEFINE_integer("batches", 20, "Batches timed after one warm-up batch.")


def bench_pipeline(config, workdir: str, num_batches: int) -> dict:
    from data_pipelines import pipeline

    result = pipeline.pipeline_throughput(config, workdir, num_batches)
    return dict(what="pipeline", config=config.name, **result)


def main(argv):
    del argv
    from omni_jax import configuration

    config = configuration.validate(_CONFIG.value)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = _WORKDIR.value or tmp
        if _WHAT.value == "pipeline":
            result = bench_pipeline(config, workdir, _BATCHES.value)
    result.update(machine=platform.machine(), cpu_count=os.cpu_count())
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    app.run(main)
