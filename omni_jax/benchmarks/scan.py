"""what=scan: one Mamba encoder layer's forward+backward in every selective-scan form
(associative or sequential inside a chunk) and chunk size, at the config's encoder shapes
(2 x batch streams, its frames per training sequence): the figures behind
`model.encoder.scan` ("auto" picks the in-chunk form by platform) and `scan_chunk`."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from omni_jax.benchmarks import common
from omni_jax.models.encoder import StreamingEncoder
from omni_jax.models.mamba import resolve_scan

FORMS = ("associative", "sequential")
CHUNKS = (0, 8, 16, 32, 64)  # 0 = the whole sequence in one chunk


def run(config, batch: int = 0, repeats: int = 5, chunks=CHUNKS) -> dict:
    """Median ms per layer forward+backward for each (form, chunk); the fastest one, and
    what the config's own setting costs."""
    e = config.model.encoder
    batch = batch or config.data.pipeline.batch_size
    streams = 2 * batch  # environment and assistant rows share the encoder
    frames = config.data.num_blocks * e.stack  # the layers run after the subsampling convs
    h_BxLxD = jax.random.normal(jax.random.key(0), (streams, frames, e.width))
    timings = {}
    for form in FORMS:
        for chunk in chunks:
            layer = StreamingEncoder.from_config(config, kind="mamba", scan=form,
                                                 scan_chunk=chunk).layer()
            state = layer.init_state(streams)
            params = nn.unbox(jax.jit(layer.init)(jax.random.key(1), h_BxLxD, state))
            grad = jax.jit(jax.grad(
                lambda p: jnp.mean(jnp.square(layer.apply(p, h_BxLxD, state)[0]))))
            timings[f"{form}/{chunk}"] = common.percentile_ms(
                common.time_calls(lambda: grad(params), repeats, warmup=1), 50)
    fastest = min(timings, key=timings.get)
    configured = f"{resolve_scan(e.scan)}/{int(e.get('scan_chunk', 0))}"
    for name, ms in sorted(timings.items(), key=lambda item: item[1]):
        print(f"scan {name:>16}: {ms:8.1f} ms per layer forward+backward")
    return dict(what="scan", config=config.name, streams=streams, frames=frames,
                inner=e.expand * e.width, state_size=e.state_size, ms=timings,
                fastest=fastest, configured=configured,
                configured_ms=timings.get(configured),
                device=str(jax.devices()[0].device_kind))
