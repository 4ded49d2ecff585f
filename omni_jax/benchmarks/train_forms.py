"""what=train_forms: one training forward+backward of a stand-in loss (token
cross-entropy + mel L1) in scan form and in parallel form."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from omni_jax.benchmarks import common
from omni_jax.models.omni import DuplexModel

INPUTS = ("env_audio", "tokens", "prompt_tokens")


def run(config, batch: int = 1, repeats: int = 10) -> dict:
    """Median ms per forward+backward in each form (compiled and warmed up first)."""
    dm = DuplexModel.from_config(config)
    params = dm.init(jax.random.key(0))
    k = config.data.num_blocks
    data = {name: jnp.asarray(value) for name, value in
            common.synthetic_batch(config, batch).items() if name in INPUTS}
    data["asst_audio"] = jnp.zeros_like(data["env_audio"])  # the fed-back stream: silent

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
        timings[name] = common.percentile_ms(
            common.time_calls(lambda: fn(params), repeats, warmup=1), 50)
    return dict(what="train_forms", config=config.name, batch=batch, num_blocks=k,
                scan_ms=timings["scan"], parallel_ms=timings["parallel"],
                scan_over_parallel=timings["scan"] / timings["parallel"],
                device=str(jax.devices()[0].device_kind))
