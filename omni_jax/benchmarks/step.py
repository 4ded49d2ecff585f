"""what=step: latency of the jitted streaming `step` at a batch of independent streams
after warm-up: p50/p99 in ms and rtf = compute time per block / block duration; then
`realtime_streams`: the largest batch whose step still takes at most one block
(p50 <= block_ms), found by doubling the batch and then bisecting. Caches hold the
config's llm.max_len."""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from omni_jax.benchmarks import common
from omni_jax.models.omni import DuplexModel, positions_per_block


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


def streaming_step_timer(config) -> Callable[[int, int], list[float]]:
    """`time_steps(batch, repeats)`: seconds of `repeats` calls of the jitted streaming step
    (carry donated, as in serving) at `batch` independent streams, after warm-up. The LLM
    cache holds llm.max_len positions (what a serving stream can use)."""
    dm = DuplexModel.from_config(config)
    params = dm.init(jax.random.key(0))
    capacity_blocks = ((config.model.llm.max_len - config.data.prompt_len)
                       // positions_per_block(config))
    start_stream = jax.jit(dm.init_state, static_argnums=2)
    step = jax.jit(dm.step, donate_argnums=1)

    def time_steps(batch: int, repeats: int) -> list[float]:
        inputs = common.synthetic_batch(config, batch, num_blocks=1)
        carry = start_stream(params, inputs["prompt_tokens"], capacity_blocks)
        block = jax.device_put(dict(  # the user speaks, the assistant is silent
            env_audio=inputs["env_audio"][:, 0], tokens=inputs["tokens"][:, 0],
            asst_audio=np.zeros_like(inputs["env_audio"][:, 0])))

        def call():
            nonlocal carry
            carry, out = step(params, carry, block)
            return out

        return common.time_calls(call, repeats, warmup=common.WARMUP_STEPS)

    return time_steps


def run(config, batch: int = 1, repeats: int = 200, max_streams: int = 0,
        search_repeats: int = 20) -> dict:
    """Per-block latency at `batch`; with max_streams > 0 also the real-time stream count."""
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
    return result
