"""Benchmarks that print figures; the last line of output is one JSON object.

  python -m omni_jax.benchmark --config=configs/tiny.py --what=pipeline
  python -m omni_jax.benchmark --config=configs/salmonn_omni_8b.py --what=params
  python -m omni_jax.benchmark --config=configs/tiny.py --what=step
  python -m omni_jax.benchmark --config=configs/tiny.py --what=train_forms

what=pipeline     the Grain pipeline's throughput (corpus and tokenizer are built under
                  --workdir first if missing; that time is not counted).
what=params       parameter counts per component and in total, from `jax.eval_shape`
                  (nothing is allocated, so any config works, the paper-size one included).
what=step         latency of the jitted streaming `step` at batch --batch (default 1) after
                  warm-up: p50/p99 in ms and rtf = compute time per block / block duration.
what=train_forms  one training forward+backward in scan form and in parallel form.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags, defined only when run as a program (importing stays free)."""
    config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                    lock_config=True)
    flags.DEFINE_enum("what", "pipeline", ["pipeline", "params", "step", "train_forms"],
                      "What to measure.")
    flags.DEFINE_string("workdir", "", "Where the corpus lives; '' = a temp dir.")
    flags.DEFINE_integer("batches", 20, "Batches timed after one warm-up batch.")
    flags.DEFINE_integer("repeats", 200, "Timed calls (step) or steps (train_forms).")
    flags.DEFINE_integer("batch", 1, "Batch size for step and train_forms.")


def bench_pipeline(config, workdir: str, num_batches: int) -> dict:
    from data_pipelines import pipeline

    result = pipeline.pipeline_throughput(config, workdir, num_batches)
    return dict(what="pipeline", config=config.name, **result)


def bench_params(config) -> dict:
    import jax

    from omni_jax.models.omni import DuplexModel

    shapes = jax.eval_shape(DuplexModel.from_config(config).init, jax.random.key(0))
    per_part = {name: sum(x.size for x in jax.tree.leaves(tree))
                for name, tree in shapes["params"].items()}
    lora = sum(x.size for path, x in jax.tree_util.tree_leaves_with_path(shapes)
               if "lora" in jax.tree_util.keystr(path))
    return dict(what="params", config=config.name, total=sum(per_part.values()),
                lora=lora, **per_part)


def _percentile_ms(seconds: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(seconds) * 1000.0, q))


def bench_step(config, batch: int, repeats: int) -> dict:
    """Per-block latency of the jitted streaming step (carry donated, as in serving)."""
    import time

    import jax
    import numpy as np

    from omni_jax.models.omni import DuplexModel

    dm = DuplexModel.from_config(config)
    params = dm.init(jax.random.key(0))
    inputs = dm.dummy_batch(batch, 1)
    carry = dm.init_state(params, inputs["prompt_tokens"], repeats + 8)
    rng = np.random.default_rng(0)
    block = dict(env_audio=rng.normal(size=inputs["env_audio"][:, 0].shape) * 0.1,
                 asst_audio=np.zeros(inputs["asst_audio"][:, 0].shape),
                 tokens=np.asarray(inputs["tokens"][:, 0]))
    block = jax.tree.map(lambda x: jax.device_put(x.astype(x.dtype)), block)
    step = jax.jit(dm.step, donate_argnums=1)
    for _ in range(5):  # compile and warm up
        carry, out = step(params, carry, block)
    jax.block_until_ready(out)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        carry, out = step(params, carry, block)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - start)
    p50 = _percentile_ms(times, 50)
    return dict(what="step", config=config.name, batch=batch, repeats=repeats, p50_ms=p50,
                p99_ms=_percentile_ms(times, 99), block_ms=config.audio.block_ms,
                rtf=p50 / config.audio.block_ms, device=str(jax.devices()[0].device_kind))


def bench_train_forms(config, batch: int, repeats: int) -> dict:
    """Forward+backward of a stand-in loss (token cross-entropy + mel L1) in both forms."""
    import time

    import jax
    import jax.numpy as jnp
    import numpy as np

    from omni_jax.models.omni import DuplexModel

    dm = DuplexModel.from_config(config)
    params = dm.init(jax.random.key(0))
    k = config.data.num_blocks
    shapes = dm.dummy_batch(batch, k)
    rng = np.random.default_rng(0)
    data = dict(env_audio=0.1 * rng.normal(size=shapes["env_audio"].shape),
                asst_audio=0.1 * rng.normal(size=shapes["asst_audio"].shape),
                tokens=rng.integers(4, 100, size=shapes["tokens"].shape),
                prompt_tokens=rng.integers(4, 100, size=shapes["prompt_tokens"].shape))
    data = {n: jnp.asarray(v, shapes[n].dtype) for n, v in data.items()}

    def loss(forward):
        def fn(p):
            out = forward(p, data)
            logp = jax.nn.log_softmax(out["logits"])
            ce = -jnp.take_along_axis(logp, data["tokens"][..., None], axis=-1).mean()
            return ce + jnp.abs(out["mel"]).mean()
        return jax.jit(jax.value_and_grad(fn))

    timings = {}
    for name, forward in (("scan", dm.scan_forward), ("parallel", dm.parallel_forward)):
        fn = loss(forward)
        jax.block_until_ready(fn(params))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(fn(params))
            times.append(time.perf_counter() - start)
        timings[name] = _percentile_ms(times, 50)
    return dict(what="train_forms", config=config.name, batch=batch, num_blocks=k,
                scan_ms=timings["scan"], parallel_ms=timings["parallel"],
                scan_over_parallel=timings["scan"] / timings["parallel"],
                device=str(jax.devices()[0].device_kind))


def main(argv):
    del argv
    from omni_jax import configuration

    config = configuration.validate(FLAGS.config)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = FLAGS.workdir or tmp
        if FLAGS.what == "pipeline":
            result = bench_pipeline(config, workdir, FLAGS.batches)
        elif FLAGS.what == "params":
            result = bench_params(config)
        elif FLAGS.what == "step":
            result = bench_step(config, FLAGS.batch, FLAGS.repeats)
        else:
            result = bench_train_forms(config, FLAGS.batch, max(1, FLAGS.repeats // 20))
    result.update(machine=platform.machine(), cpu_count=os.cpu_count())
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    define_flags()
    app.run(main)
