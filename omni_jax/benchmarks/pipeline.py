"""what=pipeline: the Grain pipeline's throughput (corpus and tokenizer are built under
`workdir` first if missing; that time is not counted)."""

from __future__ import annotations

from data_pipelines import pipeline as data_pipeline


def run(config, workdir: str, num_batches: int) -> dict:
    result = data_pipeline.pipeline_throughput(config, workdir, num_batches)
    return dict(what="pipeline", config=config.name, **result)
