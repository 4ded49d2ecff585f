"""what=step: latency of the jitted streaming `step` at a batch of independent streams
after warm-up: p50/p99 in ms and rtf = compute time per block / block duration; then
`realtime_streams`: the largest batch whose step still takes at most one block
(p50 <= block_ms), found by doubling the batch and then bisecting. Caches hold the
config's llm.max_len and the step reads their written prefix (`kv_cache.attend_bucket`).

`cache_sweep` (--max_lens): the step at each llm.max_len, before (`cache_update=per_layer`,
the whole cache read and carried through the layer scan) and after (`once`, the written
prefix read, one write after the scan), in one run, at the start of a stream and with the
cache full (a stream past its window)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from omni_jax.benchmarks import common
from omni_jax.models import kv_cache
from omni_jax.models.omni import DuplexModel, positions_per_block

# The two cache forms the sweep compares: (model.llm.cache_update, read the written prefix).
CACHE_FORMS = {"before": ("per_layer", False), "after": ("once", True)}
FILLS = ("start", "full")  # a stream just after its prompt; a stream past its window


def realtime_streams(time_step: Callable[[int], float], budget_s: float,
                     max_batch: int) -> dict:
    """The largest batch b <= max_batch with time_step(b) <= budget_s, assuming the step
    time grows with the batch: double from 1 until a batch is too slow (or max_batch is
    reached), then bisect between the last fast and the first slow batch. Every batch is
    timed at most once.

    Returns {'streams': b (0 if batch 1 is already too slow), 'step_s': its time or None,
    'timings': {batch: seconds} of every batch tried}.
    """
    timings: dict[int, float] = {}

    def fits(batch: int) -> bool:
        if batch not in timings:
            timings[batch] = float(time_step(batch))
        return timings[batch] <= budget_s

    if max_batch < 1 or not fits(1):
        return dict(streams=0, step_s=timings.get(1), timings=timings)
    fast, slow = 1, None
    while slow is None and fast < max_batch:
        candidate = min(2 * fast, max_batch)
        if fits(candidate):
            fast = candidate
        else:
            slow = candidate
    while slow is not None and slow - fast > 1:
        middle = (fast + slow) // 2
        if fits(middle):
            fast = middle
        else:
            slow = middle
    return dict(streams=fast, step_s=timings[fast], timings=timings)


def streaming_step_timer(config, fill: str = "start", prefix: bool = True
                         ) -> Callable[[int, int], list[float]]:
    """`time_steps(batch, repeats)`: seconds of `repeats` calls of the jitted streaming step
    (carry donated, as in serving) at `batch` independent streams, after warm-up. The LLM
    cache holds llm.max_len positions (what a serving stream can use); `fill` "start"
    times a stream from its prompt on, "full" one whose cache is full (every slot written);
    `prefix` reads only the written prefix (as the engine does), else the whole cache."""
    if fill not in FILLS:
        raise ValueError(f"fill {fill!r} is not one of {FILLS}")
    dm = DuplexModel.from_config(config)
    params = dm.init(jax.random.key(0))
    step = jax.jit(dm.step, donate_argnums=1, static_argnums=3)

    def time_steps(batch: int, repeats: int) -> list[float]:
        inputs = common.synthetic_batch(config, batch, num_blocks=1)
        carry = dm.init_state(params, inputs["prompt_tokens"], None)
        capacity = carry["llm"]["k"].shape[2]
        if fill == "full":
            carry["llm"]["index"] = carry["llm"]["index"] + capacity
        last = int(carry["llm"]["index"].max()) + (repeats + common.WARMUP_STEPS) * \
            positions_per_block(config)
        attend_slots = kv_cache.attend_bucket(last, capacity) if prefix else None
        block = jax.device_put(dict(  # the user speaks, the assistant is silent
            env_audio=inputs["env_audio"][:, 0], tokens=inputs["tokens"][:, 0],
            asst_audio=np.zeros_like(inputs["env_audio"][:, 0])))

        def call():
            nonlocal carry
            carry, out = step(params, carry, block, attend_slots)
            return out

        return common.time_calls(call, repeats, warmup=common.WARMUP_STEPS)

    return time_steps


def cache_sweep(config, max_lens, batch: int, repeats: int) -> list[dict]:
    """p50/p99 per (max_len, form, fill): the cost against the cache's capacity."""
    rows = []
    for max_len in max_lens:
        for form, (update, prefix) in CACHE_FORMS.items():
            swept = config.copy_and_resolve_references()
            swept.model.llm.max_len, swept.model.llm.window = int(max_len), 0
            swept.model.llm.cache_update = update
            for fill in FILLS:
                times = streaming_step_timer(swept, fill, prefix)(batch, repeats)
                rows.append(dict(max_len=int(max_len), form=form, cache_update=update,
                                 fill=fill, p50_ms=common.percentile_ms(times, 50),
                                 p99_ms=common.percentile_ms(times, 99)))
                print(f"max_len {max_len:5d} {form:6s} ({update:9s}) {fill:5s}: p50 "
                      f"{rows[-1]['p50_ms']:7.2f} ms  p99 {rows[-1]['p99_ms']:7.2f} ms")
    return rows


def run(config, batch: int = 1, repeats: int = 200, max_streams: int = 0,
        search_repeats: int = 20, max_lens=(), sweep_batch: int = 8) -> dict:
    """Per-block latency at `batch`; with max_streams > 0 also the real-time stream count;
    with `max_lens` the before/after sweep over cache capacities at `sweep_batch`."""
    time_steps = streaming_step_timer(config)
    times = time_steps(batch, repeats)
    p50 = common.percentile_ms(times, 50)
    block_ms = config.audio.block_ms
    result = dict(what="step", config=config.name, batch=batch, repeats=repeats, p50_ms=p50,
                  p99_ms=common.percentile_ms(times, 99), block_ms=block_ms,
                  rtf=p50 / block_ms, device=str(jax.devices()[0].device_kind))
    if max_streams > 0:
        search = realtime_streams(
            lambda b: float(np.median(time_steps(b, search_repeats))), block_ms / 1000.0,
            max_streams)
        streams = search["streams"]
        result.update(realtime_streams=streams, realtime_max_batch=max_streams,
                      realtime_search=[[b, s * 1000.0] for b, s in
                                       sorted(search["timings"].items())])
        if streams:
            at_streams = time_steps(streams, repeats)  # compiled already in the search
            result.update(realtime_p50_ms=common.percentile_ms(at_streams, 50),
                          realtime_p99_ms=common.percentile_ms(at_streams, 99))
            print(f"real time: {streams} streams, step p50 "
                  f"{result['realtime_p50_ms']:.2f} ms, p99 {result['realtime_p99_ms']:.2f} "
                  f"ms per {block_ms} ms block")
    if max_lens:
        result.update(cache_sweep=cache_sweep(config, max_lens, sweep_batch, repeats),
                      sweep_batch=sweep_batch)
    return result
