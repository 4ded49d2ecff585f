"""Listen to and look at what the pipeline makes: a few dialogues of every scenario.

  python -m data_pipelines.inspect --config=configs/tiny.py --out=DIR

writes, per scenario and dialogue, `SCENARIO_I_env.wav` (the microphone stream),
`SCENARIO_I_asst.wav` (the assistant stream), `SCENARIO_I.png` (a block-by-block timeline)
and `SCENARIO_I.json` (the events), plus `index.md` listing them.

The model's own echo and its assistant stream are made on device from what it plays
(`omni_jax.audio.feedback`), which this layer does not import: here the microphone is
written without the echo and the assistant stream is the reference speech. `python -m
omni_jax.inspect` (same flags) passes `hear` and writes both as the model hears them.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from data_pipelines import audio_io, augment, config_checks, contract, corpus, plot, render
from data_pipelines import scenarios
from data_pipelines.scenarios import seeds

FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags, defined only when run as a program (importing stays free)."""
    config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                    lock_config=True)
    flags.DEFINE_string("out", None, "Output folder.", required=True)
    flags.DEFINE_integer("per_scenario", 2, "Dialogues per scenario.")
    flags.DEFINE_enum("split", "train", ["train", "eval"], "Voices: train or held-out.")


def inspect(config, out: Path, per_scenario: int = 2, split: str = "train",
            hear=None) -> list[Path]:
    """Renders `per_scenario` dialogues of every scenario into `out`; returns the files.

    `hear(record) -> (env_KxS, asst_KxS)`: the microphone and assistant stream as the
    model hears them (default: the record's microphone and its reference speech)."""
    config_checks.validate_data(config)
    # The one model field rendering reads (the model's own are omni_jax.configuration's).
    config_checks.choice(config, "model.thinking", contract.THINKING_VARIANTS)
    out.mkdir(parents=True, exist_ok=True)
    # A real corpus (data.source='corpus') is built under out/corpus unless the config says.
    tokenizer = corpus.build_tokenizer(config, out / "tokenizer.model", workdir=out)
    ctx = scenarios.make_context(config, split, workdir=out)
    dims = contract.Dims.from_config(config)
    timing = contract.TimingRules.from_config(config)
    augment_config = augment.AugmentConfig.from_config(config.data.augment)
    rate = config.audio.sample_rate
    written, index = [], ["# Rendered dialogues", "",
                          f"config `{config.name}`, thinking `{config.model.thinking}`, "
                          f"split `{split}`", ""]
    for name, generate in scenarios.SCENARIOS.items():
        for i in range(per_scenario):
            rng = seeds.rng(config.seed, "inspect", zlib.crc32(name.encode()), i)
            timeline = generate(rng, ctx)
            record = render.render_fixed(
                timeline, dims=dims, timing=timing, thinking=config.model.thinking,
                tokenizer=tokenizer, rng=rng, augment=augment_config,
                crop=config.data.pipeline.crop)
            contract.validate(record, dims, vocab_size=tokenizer.vocab_size,
                              where=f"{name} #{i}")
            stem = out / f"{name}_{i}"
            num_real = int(record["block_mask"].sum())
            streams = (record["env_audio"], record["speech_target"]) if hear is None \
                else hear(record)
            events = json.loads(record["events"])
            for stream, audio_KxS in zip(("env", "asst"), streams):
                audio_T = np.asarray(audio_KxS[:num_real], np.float32).reshape(-1)
                # The echo is not limited (no limiter runs on device): scale a louder
                # stream down for the wav and say by how much.
                peak = float(np.abs(audio_T).max(initial=0.0))
                scale = 1.0 if peak <= 1.0 else 0.999 / peak
                events.setdefault("inspect", {})[f"{stream}_wav_scale"] = round(scale, 6)
                audio_io.write_wav(f"{stem}_{stream}.wav", audio_T * np.float32(scale), rate)
            plot.plot_block_sequence(record, tokenizer.piece_of, f"{stem}.png",
                                     sample_rate=rate, streams=streams)
            Path(f"{stem}.json").write_text(json.dumps(events, indent=2))
            written += [Path(f"{stem}{s}") for s in ("_env.wav", "_asst.wav", ".png", ".json")]
            said = "; ".join(f"{e['role']}: {e['text']}" for e in events["events"] if e["text"])
            index.append(f"- **{name} {i}** ({num_real} blocks) [{stem.name}.png]"
                         f"({stem.name}.png): {said}")
    (out / "index.md").write_text("\n".join(index) + "\n")
    return written


def main(argv, hear=None):
    del argv
    files = inspect(FLAGS.config, Path(FLAGS.out), FLAGS.per_scenario, FLAGS.split, hear)
    print(f"wrote {len(files)} files to {FLAGS.out} (see index.md)")


if __name__ == "__main__":
    define_flags()
    app.run(main)
