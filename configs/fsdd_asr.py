"""Streaming ASR on real speech: spoken digit strings from the Free Spoken Digit Dataset.

User turns are strings of one to five digits, each string joined from FSDD clips of one
speaker (8 kHz recordings resampled to 16 kHz) with 50-300 ms pauses; word times are exact
(one clip is one word). One speaker is held out: the eval split hears only that speaker,
the train split never does, so the figure is speaker-independent. Training also never reads
FSDD's official test takes (0-4 of every speaker), which the `asr@test` suite scores. The
assistant transcribes while listening (the `asr` scenario, explicit thinking); nothing else
is generated.

  python -m omni_jax.main --config=configs/fsdd_asr.py \\
      --config.data.real_dir=/path/to/free-spoken-digit-dataset --workdir=DIR

`real_dir` is the folder that holds `recordings/<digit>_<speaker>_<take>.wav`. Override
the held-out speaker with `--config.data.holdout_speaker=george` (FSDD speakers: george,
jackson, lucas, nicolas, theo, yweweler), real noise with `--config.data.augment.noise_dir`.
Expected result: see docs/RESULTS.md (eval WER on the held-out speaker).

Variants: `short` (a quick smoke run: 100 steps, 200 dialogues).
"""

import ml_collections

from configs import tiny


def get_config(arg=None):
    c = tiny.get_config()
    c.name = "fsdd_asr"
    c.data.source = "fsdd"  # user turns: FSDD digit strings (scenarios.real_speech.FsddBank)
    c.data.real_dir = ""  # the FSDD folder (required: holds recordings/)
    c.data.holdout_speaker = "theo"  # the eval split's only speaker; never in train
    c.data.fsdd = ml_collections.ConfigDict(dict(
        min_digits=1,  # digits per string
        max_digits=5,
        pause_s=(0.05, 0.3),  # silence between digits
    ))
    for scenario in c.data.scenarios:
        c.data.scenarios[scenario] = 0.0
    c.data.scenarios.asr = 1.0
    c.data.num_blocks = 80  # 6.4 s: up to three digit strings
    c.data.train_dialogues = 3000
    c.data.eval_dialogues = 200
    c.data.on_bad_sample = "skip"  # a broken clip is skipped and counted, not fatal
    # FSDD is clean close-talk speech: add mild noise and room reverb; no own echo (the
    # assistant does not speak in ASR).
    c.data.augment.noise_prob = 0.3
    c.data.augment.snr_db = (10.0, 30.0)
    c.data.augment.reverb_prob = 0.2
    c.data.augment.echo_prob = 0.0
    c.data.augment.gain_db = (-6.0, 0.0)
    c.loss.speech = 0.0  # no speech targets in ASR
    c.eval.splits = ("eval", "test")  # held-out speaker; FSDD's official test takes 0-4
    c.train.steps = 800
    c.train.warmup_steps = 100
    c.train.eval_every = 400
    c.train.checkpoint_every = 200
    if arg == "short":
        c.data.train_dialogues = 200
        c.data.eval_dialogues = 20
        c.train.steps = 100
        c.train.warmup_steps = 10
        c.train.eval_every = 100
    elif arg:
        raise ValueError(f"unknown fsdd_asr variant {arg!r}; known: short")
    return c
