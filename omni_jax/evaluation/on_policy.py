"""On-policy preference pairs: what the model itself does on the training dialogues.

  observed = observe(model, params, config, tokenizer, source)   # record index -> speaking_K

runs the model free (the engine: its own tokens, speech fed back, its echo) on the clean
render of every pair-scenario dialogue of `source` and keeps its speaking state per block.
`data_pipelines.preferences.rejected(observed_K=...)` then makes the rejected side of a pair
the model's own failure at the decision (and passes over dialogues where it behaved), so DPO
pushes down what this model actually does wrong. `write` / `load` keep the result as JSON in
the run directory: a resumed run trains on the same pairs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from data_pipelines import contract, preferences, render
from data_pipelines.timeline import Timeline
from omni_jax.duplex.engine import DuplexEngine

log = logging.getLogger(__name__)

FILE = "on_policy.json"  # in the run directory: {"record index": [speaking per block]}


def observe(model, params, config, tokenizer, source: Sequence[Timeline], *,
            max_dialogues: int = 0, batch_size: int = 16) -> dict[int, np.ndarray]:
    """Record index -> the model's speaking_K (bool) for the pair-scenario dialogues of
    `source` (the first `max_dialogues` of them; 0 = all), greedy, with each dialogue's
    own echo gain and delay."""
    dims = contract.Dims.from_config(config)
    timing = contract.TimingRules.from_config(config)
    engine = DuplexEngine(model, params, config, temperature=0.0,
                          vocab_size=tokenizer.vocab_size)
    sample_rate = int(config.audio.sample_rate)
    observed: dict[int, np.ndarray] = {}

    def run(chunk: list[tuple[int, dict]]) -> None:
        # A full batch every time (the last one padded by repeats): one compiled step.
        padded = [r for _, r in chunk] + [chunk[-1][1]] * (batch_size - len(chunk))
        result = engine.run(
            np.stack([r["env_audio"].reshape(-1) for r in padded]),
            np.stack([r["prompt_tokens"] for r in padded]),
            echo_gain=np.array([float(r["echo_gain"]) for r in padded]),
            echo_delay_s=np.array([int(r["echo_delay"]) / sample_rate for r in padded]))
        for row, (index, _) in enumerate(chunk):
            observed[index] = result.speaking[row].astype(bool)

    chunk: list[tuple[int, dict]] = []
    for index in range(len(source)):
        if max_dialogues and len(observed) + len(chunk) >= max_dialogues:
            break
        timeline = source[index]  # read once
        if timeline.scenario not in preferences.PAIR_SCENARIOS:
            continue
        chunk.append((index, render.render_fixed(
            timeline, dims=dims, timing=timing, thinking=config.model.thinking,
            tokenizer=tokenizer, rng=np.random.default_rng(index), augment=None)))
        if len(chunk) == batch_size:
            run(chunk)
            chunk = []
    if chunk:
        run(chunk)
    return observed


def write(path: Path, observed: dict[int, np.ndarray]) -> None:
    path.write_text(json.dumps({str(k): v.tolist() for k, v in observed.items()}))
    log.info("on-policy behaviour of %d dialogues written to %s", len(observed), path)


def load(path: Path) -> dict[int, np.ndarray]:
    """What `write` wrote: record index -> speaking_K."""
    return {int(k): np.asarray(v, bool) for k, v in json.loads(path.read_text()).items()}
