"""Serving export: a trained run -> a folder that streams audio with numpy + jax only.

  python -m omni_jax.serving.export --workdir=RUN --out=EXPORT_DIR
      [--batch=1] [--max_seconds=60] [--prompt="answer the user"]
      [--platforms=cpu,cuda] [--overwrite]
  python EXPORT_DIR/run_exported.py EXPORT_DIR input.wav --out=result.json

The streaming engine's greedy block (`DuplexEngine.block_step`: the model's step, argmax
over the tokenizer's ids, the speak/listen state machine, and the speech path of
`omni_jax.audio.feedback`, i.e. the vocoder, the assistant stream and the echo) is serialized
with `jax.export` over FLAT lists of arrays (the parameter and state pytrees hold Flax boxes
that `jax.export` cannot serialize, and a runner without model code could not rebuild them):

  init_state  (*params, prompt_tokens_BxP) -> [*state]
  step        (*params, *state, env_audio_BxS, echo_gain_B, echo_delay_B)
              -> ([*state], tokens_BxN, raw_tokens_BxN, speaking_B, speak_prob_B,
                  mel_BxFxM, speech_BxS, heard_BxS, asst_audio_BxS)

i.e. `DuplexEngine.initial_state(params, prompt, max_blocks)` and `block_step` with the
pytrees flattened in `jax.tree.leaves` order; `manifest.json` names every leaf (its key
path), shape and dtype. What the runner does with them is described in
`omni_jax/serving/export_runner.py`, which is copied in as `run_exported.py`.

Fixed at export time: the batch B (`--batch`), and `max_blocks` = ceil(max_seconds /
block_ms) blocks after the prompt (the LLM and synthesizer caches are sized for it, at most
the model's window `model.llm.window`, past which they slide). Beyond the trained length
the model runs untested; the manifest records `training_blocks`, `positions` and
`llm_max_len`. Parameters are stored as they were restored (same dtypes).
By default the functions are lowered for both CPU and CUDA, so one folder serves either.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from data_pipelines import contract, corpus, render, world
from omni_jax.audio.feedback import Feedback
from omni_jax.duplex.engine import DuplexEngine
from omni_jax.models.omni import positions_per_block
from omni_jax.serving import export_runner
from omni_jax.serving.export_runner import ExportError
from omni_jax.serving.runs import RunLoadError, load_run

log = logging.getLogger(__name__)

DEFAULT_MAX_SECONDS = 60.0
DEFAULT_PLATFORMS = ("cpu", "cuda")


def _spec(name: str, x) -> dict:
    return {"name": name, "shape": [int(d) for d in x.shape],
            "dtype": str(jnp.dtype(x.dtype))}


def _leaf_specs(tree) -> list[dict]:
    return [_spec(jax.tree_util.keystr(path), x)
            for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _storable(array: np.ndarray) -> np.ndarray:
    """`array`, or its bits as unsigned ints when numpy cannot store the dtype (bfloat16)."""
    if array.dtype.type.__module__ == "numpy":
        return array
    return array.view(np.dtype(f"uint{8 * array.dtype.itemsize}"))


def flat_functions(model, params, batch: int, max_blocks: int, vocab_size: int | None = None):
    """(init_state, step) of the greedy engine over flat leaf lists, and the loop state's
    abstract pytree (without the sampling key: greedy needs none)."""
    engine = DuplexEngine(model, params, model.config, temperature=0.0,
                          vocab_size=vocab_size)
    param_treedef = jax.tree.structure(params)
    prompt_len = int(model.config.data.prompt_len)
    prompt_spec = jax.ShapeDtypeStruct((batch, prompt_len), jnp.int32)

    def initial(params, prompt_tokens_BxP):
        state = engine.initial_state(params, prompt_tokens_BxP, max_blocks)
        state.pop("key")
        return state

    def init_state(param_leaves, prompt_tokens_BxP):
        return jax.tree.leaves(initial(param_treedef.unflatten(param_leaves),
                                       prompt_tokens_BxP))

    state_shapes = jax.eval_shape(initial, params, prompt_spec)
    state_treedef = jax.tree.structure(state_shapes)

    def step(param_leaves, state_leaves, env_audio_BxS, echo_gain_B, echo_delay_B):
        state = dict(state_treedef.unflatten(state_leaves), key=jax.random.key(0))
        state, record = engine.block_step(param_treedef.unflatten(param_leaves), state,
                                          env_audio_BxS,
                                          dict(gain=echo_gain_B, delay=echo_delay_B))
        state.pop("key")
        return (jax.tree.leaves(state), *(record[name] for name in export_runner.OUTPUT_NAMES))

    return init_state, step, state_shapes


def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """`out_dir` may be written: absent, empty, or (with overwrite) an earlier export."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ExportError(f"{out_dir}: exists and is not a folder")
        if any(out_dir.iterdir()):
            if not overwrite:
                raise ExportError(f"{out_dir}: not empty (pass --overwrite to replace an "
                                  "earlier export)")
            if not (out_dir / export_runner.MANIFEST).is_file():
                raise ExportError(f"{out_dir}: not empty and holds no "
                                  f"{export_runner.MANIFEST}; refusing to replace a folder "
                                  "that is not an export")


def _temporary_dir(out_dir: Path) -> Path:
    """A fresh folder beside `out_dir`, renamed into place when the export is complete."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def lower(model, params, batch: int, max_blocks: int, platforms,
          vocab_size: int | None = None) -> dict:
    """The `jax.export.Exported` init_state and step, with the specs the manifest lists."""
    init_fn, step_fn, state_shapes = flat_functions(model, params, batch, max_blocks,
                                                    vocab_size)
    config = model.config
    s = int(config.audio.sample_rate) * int(config.audio.block_ms) // 1000
    p = int(config.data.prompt_len)
    specs = {
        "params": [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in jax.tree.leaves(params)],
        "carry": jax.tree.leaves(state_shapes),
        "prompt": jax.ShapeDtypeStruct((batch, p), jnp.int32),
        "audio": jax.ShapeDtypeStruct((batch, s), jnp.float32),
        "echo_gain": jax.ShapeDtypeStruct((batch,), jnp.float32),
        "echo_delay": jax.ShapeDtypeStruct((batch,), jnp.int32),
    }
    init_exported = jax.export.export(jax.jit(init_fn), platforms=tuple(platforms))(
        specs["params"], specs["prompt"])
    step_exported = jax.export.export(jax.jit(step_fn), platforms=tuple(platforms))(
        specs["params"], specs["carry"], specs["audio"], specs["echo_gain"],
        specs["echo_delay"])
    # The runner feeds step's state back in: a dtype or shape drift would fail at block 2.
    carry_out = step_exported.out_avals[:len(specs["carry"])]
    if [(a.shape, a.dtype) for a in carry_out] != [(c.shape, c.dtype) for c in specs["carry"]]:
        raise ExportError("the model's step changes the carry's shapes or dtypes; a fixed "
                          "streaming state is required")
    return {"init_state": init_exported, "step": step_exported,
            "carry_shapes": state_shapes, "specs": specs}


def _function_specs(lowered: dict) -> dict:
    """The manifest's description of the two functions' arguments and results."""
    specs = lowered["specs"]
    outputs = lowered["step"].out_avals[len(specs["carry"]):]
    params_in = {"name": "params", "leaves": len(specs["params"])}
    carry_io = {"name": "carry", "leaves": len(specs["carry"])}
    return {
        "init_state": {"file": export_runner.INIT_FILE,
                       "inputs": [params_in, _spec("prompt_tokens_BxP", specs["prompt"])],
                       "outputs": [carry_io]},
        "step": {"file": export_runner.STEP_FILE,
                 "inputs": [params_in, carry_io, _spec("env_audio_BxS", specs["audio"]),
                            _spec("echo_gain_B", specs["echo_gain"]),
                            _spec("echo_delay_B", specs["echo_delay"])],
                 "outputs": [carry_io] + [_spec(name, aval) for name, aval in
                                          zip(export_runner.OUTPUT_NAMES, outputs)]},
    }


def export_loaded(run, out_dir: str | os.PathLike, *, batch: int = 1,
                  max_seconds: float = DEFAULT_MAX_SECONDS, prompt: str | None = None,
                  platforms=DEFAULT_PLATFORMS, overwrite: bool = False) -> Path:
    """Writes the export folder of a `LoadedRun` (`runs.load_run`)."""
    config = run.config
    out_dir = Path(out_dir)
    check_out_dir(out_dir, overwrite)  # before the slow part
    if batch < 1:
        raise ExportError(f"batch must be >= 1, got {batch}")
    block_ms, sample_rate = int(config.audio.block_ms), int(config.audio.sample_rate)
    max_blocks = int(np.ceil(max_seconds * 1000 / block_ms))
    if max_blocks < 1:
        raise ExportError(f"max_seconds must be > 0, got {max_seconds}")
    prompt = world.PROMPT_DIALOGUE if prompt is None else prompt
    try:
        prompt_tokens, _ = render.encode_prompt(run.tokenizer, prompt,
                                                int(config.data.prompt_len), where="--prompt")
    except render.PromptError as e:
        raise ExportError(f"{e} (data.prompt_len of {run.workdir})") from None
    positions = int(config.data.prompt_len) + max_blocks * positions_per_block(config)
    if positions > config.model.llm.max_len or max_blocks > config.data.num_blocks:
        log.warning("max_blocks=%d (%d positions) is beyond the trained length (%d blocks, "
                    "llm.max_len %d): the caches slide (untested past training)", max_blocks, positions,
                    config.data.num_blocks, config.model.llm.max_len)
    lowered = lower(run.model, run.params, batch, max_blocks, platforms,
                    vocab_size=int(run.tokenizer.vocab_size))
    mel = lowered["step"].out_avals[len(lowered["specs"]["carry"])
                                    + export_runner.OUTPUT_NAMES.index("mel")]
    speech_path = Feedback.from_config(config)
    manifest = {
        "format": export_runner.FORMAT, "config_name": run.config_name,
        "workdir": str(run.workdir), "checkpoint_step": run.step,
        "jax_version": jax.__version__, "platforms": list(platforms),
        "thinking": config.model.thinking, "fusion": config.model.fusion,
        "batch": batch, "max_seconds": max_blocks * block_ms / 1000,
        "max_blocks": max_blocks, "training_blocks": int(config.data.num_blocks),
        "positions": positions, "llm_max_len": int(config.model.llm.max_len),
        "sample_rate": sample_rate, "block_ms": block_ms,
        "samples_per_block": contract.samples_per_block(sample_rate, block_ms),
        "tokens_per_block": int(config.data.tokens_per_block),
        "prompt_len": int(config.data.prompt_len),
        "mel_frames_per_block": int(mel.shape[1]), "n_mels": int(mel.shape[2]),
        "vocab_size": int(config.data.tokenizer.vocab_size),
        "tokenizer_vocab_size": int(run.tokenizer.vocab_size),
        "prompt": prompt, "prompt_tokens": [int(t) for t in prompt_tokens],
        "token_ids": dict(contract.CONTROL_TOKEN_IDS),
        "state_token_ids": dict(contract.STATE_TOKEN_IDS),
        "first_text_id": contract.FIRST_TEXT_ID,
        "speech": {"vocoder": f"streaming_{config.model.synth.streaming.kind}",
                   "delay_ms": speech_path.delay_ms,
                   "lookahead_ms": getattr(speech_path.vocoder, "lookahead_ms", None),
                   "max_echo_delay_samples": contract.samples_per_block(sample_rate, block_ms)},
        "functions": _function_specs(lowered),
        "params": _leaf_specs(run.params), "carry": _leaf_specs(lowered["carry_shapes"]),
    }

    check_out_dir(out_dir, overwrite)  # again: it may have changed meanwhile
    tmp = _temporary_dir(out_dir)
    try:
        (tmp / export_runner.INIT_FILE).write_bytes(lowered["init_state"].serialize())
        (tmp / export_runner.STEP_FILE).write_bytes(lowered["step"].serialize())
        param_leaves = jax.device_get(jax.tree.leaves(run.params))
        np.savez(tmp / export_runner.PARAMS_FILE,
                 **{f"{i:06d}": _storable(np.asarray(x)) for i, x in enumerate(param_leaves)})
        shutil.copyfile(corpus.tokenizer_path(config, run.workdir),
                        tmp / export_runner.TOKENIZER_FILE)
        shutil.copyfile(export_runner.__file__, tmp / export_runner.RUNNER_FILE)
        manifest["files"] = {name: export_runner.sha256_of(tmp / name)
                             for name in export_runner.HASHED_FILES}
        (tmp / export_runner.MANIFEST).write_text(json.dumps(manifest, indent=1))
        if out_dir.exists():
            shutil.rmtree(out_dir)  # an empty folder or (with overwrite) an earlier export
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported %s (step %d) to %s: batch %d, %d blocks", run.workdir, run.step,
             out_dir, batch, max_blocks)
    return out_dir


def export_run(workdir: str | os.PathLike, out_dir: str | os.PathLike, **kwargs) -> Path:
    """Loads the run in `workdir` (`RunLoadError` if it is not one) and exports it."""
    check_out_dir(Path(out_dir), bool(kwargs.get("overwrite", False)))
    return export_loaded(load_run(workdir), out_dir, **kwargs)


def define_flags():
    """Command-line flags, defined only when run as a program (importing stays free)."""
    flags.DEFINE_string("workdir", None, "Run directory (written by omni_jax.main).",
                        required=True)
    flags.DEFINE_string("out", None, "Export folder to write.", required=True)
    flags.DEFINE_integer("batch", 1, "Streams per call (fixed in the export).")
    flags.DEFINE_float("max_seconds", DEFAULT_MAX_SECONDS,
                       "Longest input the exported state can hold (sizes the caches).")
    flags.DEFINE_string("prompt", None, "Default text prompt (default world.PROMPT_DIALOGUE).")
    flags.DEFINE_list("platforms", list(DEFAULT_PLATFORMS), "jax.export lowering platforms.")
    flags.DEFINE_bool("overwrite", False, "Replace an earlier export in --out.")


def main(argv) -> None:
    del argv
    f = flags.FLAGS
    try:
        out = export_run(f.workdir, f.out, batch=f.batch, max_seconds=f.max_seconds,
                         prompt=f.prompt, platforms=f.platforms, overwrite=f.overwrite)
    except (RunLoadError, ExportError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    runner = out / export_runner.RUNNER_FILE
    print(f"exported to {out}; run: python {runner} {out} input.wav", flush=True)


if __name__ == "__main__":
    define_flags()
    app.run(main)
