"""The smallest Trainer setup the trainer tests use, and synthetic batches for it.

Usable as a config file (`--config=tests/helpers/tiny_trainer.py`) and as a module: the
model is configs.tiny cut to one layer per part and widths of 32-64, over 32 blocks (the
fewest that the ASR and TTS scenarios, the only ones enabled, fit into) with a batch of 4.
"""

from __future__ import annotations

import numpy as np

from configs import tiny
from data_pipelines import contract


def get_config(arg=None):
    c = tiny.get_config()
    c.name = "tiny_trainer_test"
    for part in ("encoder", "llm", "synth"):
        c.model[part].num_layers = 1
    c.model.encoder.width = 32
    c.model.llm.width, c.model.llm.mlp_dim = 64, 128
    c.model.synth.width, c.model.synth.mlp_dim = 32, 64
    c.data.num_blocks = 32
    # The same speech path, fewer phase iterations: tests check the path, not its fidelity.
    c.model.synth.streaming.iterations = 4
    for name in c.data.scenarios:
        c.data.scenarios[name] = 1.0 if name in ("asr", "tts") else 0.0
    c.data.train_dialogues = 8
    c.data.eval_dialogues = 0  # no evaluation split: nothing to generate or evaluate
    c.data.pipeline.batch_size = 4
    c.train.steps = 4
    c.train.warmup_steps = 1
    c.train.log_every = 1
    c.train.eval_every = 0
    c.train.checkpoint_every = 1
    c.train.max_consecutive_nonfinite = 2
    c.checkpoint.keep_last = 20  # every step of a short test run stays
    c.eval.suites = "asr"  # the main job's suites path, as small as it gets
    c.eval.cases = 2
    c.eval.pictures = 1
    if arg:
        for item in arg.split(","):  # e.g. "mesh=2x2x2"
            key, value = item.split("=")
            if key == "mesh":
                c.mesh.data, c.mesh.fsdp, c.mesh.tensor = map(int, value.split("x"))
            else:
                raise ValueError(f"unknown tiny_trainer option {key!r}")
    return c


def synthetic_batch(config, seed: int, rows: slice | None = None) -> dict[str, np.ndarray]:
    """A contract-valid global batch (random lengths, audio, prompts and explicit-variant
    labels), the same for a given seed everywhere; `rows` picks one process's share."""
    dims = contract.Dims.from_config(config)
    b, k, n, p = (config.data.pipeline.batch_size, dims.num_blocks, dims.tokens_per_block,
                  dims.prompt_len)
    rng = np.random.default_rng(seed)
    vocab = config.data.tokenizer.vocab_size
    first_text = 4 + len(contract.STATE_TOKENS)  # after the control and state tokens
    batch = {spec.name: np.zeros(dims.shape_of(spec, (b,)), spec.dtype)
             for spec in contract.FIELDS}
    for i in range(b):
        length = int(rng.integers(k // 2, k + 1))  # real blocks, then padding
        real = np.arange(k) < length
        speaking = rng.random(k) < 0.5
        speaking &= real
        kinds = rng.choice([contract.LabelKind.IGNORE, contract.LabelKind.TEXT,
                            contract.LabelKind.THINK, contract.LabelKind.SHIFT], (k, n))
        kinds[~real] = contract.LabelKind.IGNORE
        labels = rng.integers(first_text, vocab, (k, n))
        labels[kinds == contract.LabelKind.THINK] = contract.STATE_TOKEN_IDS[contract.THINK]
        labels[kinds == contract.LabelKind.SHIFT] = contract.STATE_TOKEN_IDS[contract.SHIFT]
        prompt_len = int(rng.integers(1, p + 1))
        audio = lambda mask: np.where(  # noqa: E731
            mask[:, None], 0.1 * rng.standard_normal((k, dims.samples_per_block)), 0.0)
        batch["env_audio"][i] = audio(real)
        batch["echo_gain"][i] = rng.uniform(0.0, 1.0)
        batch["echo_delay"][i] = rng.integers(0, dims.samples_per_block + 1)
        batch["speech_target"][i] = audio(speaking)
        batch["tokens"][i] = rng.integers(first_text, vocab, (k, n))
        batch["labels"][i] = labels
        batch["label_kind"][i] = kinds
        batch["speaking"][i] = batch["speech_mask"][i] = speaking
        batch["block_mask"][i] = real
        batch["prompt_mask"][i] = np.arange(p) < prompt_len
        batch["prompt_tokens"][i] = np.where(np.arange(p) < prompt_len,
                                             rng.integers(first_text, vocab, p), 0)
    if rows is not None:
        batch = {name: value[rows] for name, value in batch.items()}
    return batch
