"""Standalone runner of an exported duplex model (`python -m omni_jax.serving.export` writes it).

  python EXPORT_DIR/run_exported.py EXPORT_DIR input.wav [more.wav ...]
      [--out=result.json] [--speech_out=speech.wav] [--mel_out=mel.npz]
      [--prompt="answer the user"] [--echo_gain=0.5 --echo_delay_ms=30]

The exporter copies this file into the export folder as `run_exported.py`. It imports only
numpy, jax, soundfile and sentencepiece: no omni_jax, no flax, so an export folder runs
wherever those are installed (tests/test_export.py checks `sys.modules` after a run).

Export folder (format "omni_jax.export/2"):
  manifest.json      what the model is (rates, block size, ids, shapes, the speech path)
  init_state.jaxexport  serialized `jax.export`: (*params, prompt_tokens_BxP) -> [*carry]
  step.jaxexport     serialized `jax.export`: (*params, *carry, env_audio_BxS, echo_gain_B,
                     echo_delay_B) -> ([*carry], tokens_BxN, raw_tokens_BxN, speaking_B,
                     speak_prob_B, mel_BxFxM, speech_BxS, heard_BxS, asst_audio_BxS)
  params.npz         parameter leaves, key "%06d" % i = argument i; dtypes numpy cannot store
                     (bfloat16) are kept as same-width unsigned ints, viewed back on load
  tokenizer.model    the run's sentencepiece model

The carry (the streaming engine's whole loop state: the model's caches, the next input
token, the speak/listen state, the speech path's vocoder and assistant stream) is a flat
list of arrays in the order of `manifest["carry"]`; a caller threads it from one call to
the next and never needs its structure. The batch size B and the carry's capacity
(`max_blocks` blocks after the prompt) are fixed at export time; a longer input is an error,
not a silent overrun of the caches.

Streaming (`stream`): each file is read (stereo downmixed, resampled to the model's rate by
band-limited FFT resampling), padded with silence to whole blocks, and fed block by block.
Everything else happens inside the exported step, exactly as in `omni_jax.duplex.engine`
(it is the engine's `block_step`): greedy tokens over the tokenizer's ids fed back BOS
first, the thinking variant's state machine, and the model's own speech (its kept log-mel
through the speech path's streaming vocoder, `manifest["speech"]`) fed back as its
assistant stream and, with `--echo_gain`, heard in the microphone `--echo_delay_ms` later
(at most one block).
`--speech_out` writes that played speech; `--mel_out` keeps the raw log-mel of every block
with the speaking flags, for an offline vocoder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

FORMAT = "omni_jax.export/2"
MANIFEST = "manifest.json"
PARAMS_FILE = "params.npz"
TOKENIZER_FILE = "tokenizer.model"
INIT_FILE = "init_state.jaxexport"
STEP_FILE = "step.jaxexport"
RUNNER_FILE = "run_exported.py"
# Files whose sha256 the manifest records (params.npz is zip-CRC-checked on read instead).
HASHED_FILES = (INIT_FILE, STEP_FILE, TOKENIZER_FILE)
# The step's results after the carry, in order (the engine's record names).
OUTPUT_NAMES = ("tokens", "raw_tokens", "speaking", "speak_prob", "mel", "speech",
                "env_audio", "asst_audio")
MANIFEST_KEYS = ("format", "batch", "max_blocks", "sample_rate", "block_ms",
                 "samples_per_block", "tokens_per_block", "prompt_len", "prompt_tokens",
                 "thinking", "token_ids", "first_text_id", "speech", "params", "carry",
                 "files")


class ExportError(RuntimeError):
    """An export folder that cannot be used; the message names the file and the problem."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(export_dir: str | Path) -> dict:
    path = Path(export_dir) / MANIFEST
    if not path.is_file():
        raise ExportError(f"{path}: missing (is {export_dir} an export folder written by "
                          "`python -m omni_jax.serving.export`?)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExportError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise ExportError(f"{path}: expected a JSON object, got {type(manifest).__name__}")
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    if missing:
        raise ExportError(f"{path}: missing keys {missing}")
    if manifest["format"] != FORMAT:
        raise ExportError(f"{path}: format {manifest['format']!r}, this runner reads {FORMAT!r}")
    return manifest


def _stored_dtype(name: str) -> np.dtype:
    return jnp.dtype(name)  # jnp knows bfloat16 and the float8 types as well as numpy's


def load_params(path: Path, specs: list[dict]) -> list[np.ndarray]:
    """The parameter leaves in argument order, checked against the manifest's specs."""
    if not path.is_file():
        raise ExportError(f"{path}: missing")
    leaves = []
    try:
        with np.load(path, allow_pickle=False) as stored:
            if len(stored.files) != len(specs):
                raise ExportError(f"{path}: {len(stored.files)} arrays, the manifest lists "
                                  f"{len(specs)} parameters")
            for i, spec in enumerate(specs):
                key = f"{i:06d}"
                if key not in stored.files:
                    raise ExportError(f"{path}: no array {key!r} ({spec['name']})")
                array = stored[key]
                dtype = _stored_dtype(spec["dtype"])
                if array.dtype != dtype:  # a dtype numpy cannot store, kept as raw bits
                    array = array.view(dtype)
                if list(array.shape) != list(spec["shape"]):
                    raise ExportError(f"{path}: {spec['name']} has shape {list(array.shape)}, "
                                      f"the manifest says {spec['shape']}")
                leaves.append(array)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise ExportError(f"{path}: unreadable ({e})") from None
    except (KeyError, TypeError) as e:  # a parameter spec without name/shape/known dtype
        raise ExportError(f"{path}: the manifest's 'params' entry is malformed ({e!r})") from None
    return leaves


def verify_files(export_dir: Path, manifest: dict) -> None:
    """Every hashed file exists and matches the manifest's sha256."""
    files = manifest["files"]
    for name in HASHED_FILES:
        path = export_dir / name
        if not path.is_file():
            raise ExportError(f"{path}: missing")
        if not isinstance(files, dict) or name not in files:
            raise ExportError(f"{export_dir / MANIFEST}: 'files' gives no sha256 of {name}")
        # Checked before deserializing: corrupt bytes must not reach the flatbuffer reader.
        if sha256_of(path) != files[name]:
            raise ExportError(f"{path}: content differs from the manifest's sha256 (corrupt "
                              "or from another export)")


def load_exported(path: Path):
    try:
        return jax.export.deserialize(bytearray(path.read_bytes()))
    except Exception as e:  # noqa: BLE001 - any failure here means an unusable file
        raise ExportError(f"{path}: not a serialized jax.export function ({e})") from None


class ExportedModel:
    """An export folder loaded: `init_state(prompt) -> carry`, `step(carry, ...)`."""

    def __init__(self, export_dir: str | Path):
        self.export_dir = Path(export_dir)
        if not self.export_dir.is_dir():
            raise ExportError(f"{self.export_dir}: no such export folder")
        self.manifest = m = read_manifest(self.export_dir)
        verify_files(self.export_dir, m)
        try:
            self.batch, self.max_blocks = int(m["batch"]), int(m["max_blocks"])
            self.sample_rate, self.block_ms = int(m["sample_rate"]), int(m["block_ms"])
            self.samples_per_block = int(m["samples_per_block"])
            self.tokens_per_block = int(m["tokens_per_block"])
            self.prompt_len = int(m["prompt_len"])
        except (TypeError, ValueError) as e:
            raise ExportError(f"{self.export_dir / MANIFEST}: bad value ({e})") from None
        self.params = [jnp.asarray(x) for x in
                       load_params(self.export_dir / PARAMS_FILE, m["params"])]
        self._init = load_exported(self.export_dir / INIT_FILE)
        self._step = load_exported(self.export_dir / STEP_FILE)
        num_inputs = len(self.params) + len(m["carry"]) + 3
        if len(self._step.in_avals) != num_inputs:
            raise ExportError(f"{self.export_dir / STEP_FILE}: takes {len(self._step.in_avals)} "
                              f"arrays, the manifest implies {num_inputs}")
        self._init_jit = jax.jit(self._init.call)
        # The old carry is donated: the caches are updated in place, not copied per block.
        self._step_jit = jax.jit(self._step.call, donate_argnums=(1,))

    def init_state(self, prompt_tokens_BxP) -> list[jax.Array]:
        prompt_BxP = jnp.asarray(prompt_tokens_BxP, jnp.int32)
        if prompt_BxP.shape != (self.batch, self.prompt_len):
            raise ValueError(f"prompt tokens of shape {prompt_BxP.shape}, the export takes "
                             f"{(self.batch, self.prompt_len)}")
        return list(self._init_jit(self.params, prompt_BxP))

    def step(self, carry: list, env_audio_BxS, echo_gain_B, echo_delay_B):
        """One block: (new carry, {name: array} of `OUTPUT_NAMES`)."""
        carry, *outputs = self._step_jit(
            self.params, list(carry), jnp.asarray(env_audio_BxS, jnp.float32),
            jnp.asarray(echo_gain_B, jnp.float32), jnp.asarray(echo_delay_B, jnp.int32))
        return list(carry), dict(zip(OUTPUT_NAMES, outputs))


def stream(model: ExportedModel, env_audio_BxT: np.ndarray,
           prompt_tokens_BxP: np.ndarray | None = None, echo_gain: float = 0.0,
           echo_delay_ms: float = 0.0) -> dict[str, np.ndarray]:
    """Free-running greedy streaming of B audio streams (B = the export's batch).

    Returns numpy arrays, batch-major (BxK...), named as `OUTPUT_NAMES`: tokens (canonical)
    and raw_tokens BxKxN, speaking and speak_prob BxK, mel BxKxFxM, speech, env_audio (the
    microphone as heard, echo included) and asst_audio (the stream fed back) BxKxS."""
    m = model.manifest
    b, s = model.batch, model.samples_per_block
    if model.tokens_per_block != 1:
        raise ExportError("free-running needs tokens_per_block == 1, the export has "
                          f"{model.tokens_per_block}")
    env_BxT = np.asarray(env_audio_BxT, np.float32)
    if env_BxT.ndim != 2 or env_BxT.shape[0] != b:
        raise ValueError(f"audio of shape {env_BxT.shape}, expected ({b}, samples)")
    num_blocks = max(1, -(-env_BxT.shape[1] // s))
    if num_blocks > model.max_blocks:
        raise ValueError(f"{num_blocks} blocks ({num_blocks * model.block_ms / 1000:.1f} s) "
                         f"exceed the export's max_blocks={model.max_blocks}; re-export with "
                         "a larger --max_seconds")
    delay = int(round(echo_delay_ms * model.sample_rate / 1000))
    if not echo_gain >= 0 or not 0 <= delay <= s:
        raise ValueError(f"echo: gain {echo_gain} must be >= 0 and delay {echo_delay_ms} ms "
                         f"within 0..{model.block_ms} ms")
    env_BxKxS = np.pad(env_BxT, ((0, 0), (0, num_blocks * s - env_BxT.shape[1])))
    env_BxKxS = env_BxKxS.reshape(b, num_blocks, s)
    if prompt_tokens_BxP is None:
        prompt_tokens_BxP = np.tile(np.asarray(m["prompt_tokens"], np.int32), (b, 1))
    carry = model.init_state(prompt_tokens_BxP)
    gain_B, delay_B = np.full(b, echo_gain, np.float32), np.full(b, delay, np.int32)
    records = []
    for k in range(num_blocks):
        carry, out = model.step(carry, env_BxKxS[:, k], gain_B, delay_B)
        records.append(out)
    host = jax.device_get(records)  # one transfer, after the loop
    return {name: np.stack([np.asarray(r[name]) for r in host], axis=1)
            for name in OUTPUT_NAMES}


# ---- audio and text ------------------------------------------------------------------------

def resample(audio_T: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling by FFT (zero-padding or cutting the spectrum)."""
    audio_T = np.asarray(audio_T, np.float32)
    if orig_rate == target_rate or audio_T.size == 0:
        return audio_T
    length = round(audio_T.shape[0] * target_rate / orig_rate)
    spectrum = np.fft.rfft(audio_T.astype(np.float64))
    bins = length // 2 + 1
    spectrum = (spectrum[:bins] if bins <= spectrum.shape[0]
                else np.pad(spectrum, (0, bins - spectrum.shape[0])))
    return (np.fft.irfft(spectrum, n=length) * (length / audio_T.shape[0])).astype(np.float32)


def read_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Mono float32 at `sample_rate` (channels averaged)."""
    import soundfile as sf

    try:
        audio_TxCh, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # noqa: BLE001 - soundfile raises several types
        raise ValueError(f"{path}: unreadable audio ({e})") from None
    return resample(audio_TxCh.mean(axis=1), int(rate), sample_rate)


class TextDecoder:
    """Ids -> text with the export's sentencepiece model; control and state ids dropped."""

    def __init__(self, path: Path, first_text_id: int):
        import sentencepiece as spm

        try:
            self._sp = spm.SentencePieceProcessor(model_file=str(path))
        except Exception as e:  # noqa: BLE001 - sentencepiece raises RuntimeError / OSError
            raise ExportError(f"{path}: not a sentencepiece model ({e})") from None
        self.first_text_id = first_text_id

    def encode(self, text: str) -> list[int]:
        return list(self._sp.encode(text)) if text.strip() else []

    def decode(self, ids) -> str:
        size = self._sp.get_piece_size()
        return self._sp.decode([int(i) for i in ids if self.first_text_id <= i < size])


def run_files(export: str | Path | ExportedModel, wav_paths: list,
              prompt: str | None = None, echo_gain: float = 0.0, echo_delay_ms: float = 0.0
              ) -> tuple[dict, dict[str, np.ndarray]]:
    """Streams up to `batch` files at once (shorter ones padded with silence, missing
    streams silent) through an export folder (or one already loaded): (a JSON-ready summary
    per file, `stream`'s arrays)."""
    model = export if isinstance(export, ExportedModel) else ExportedModel(export)
    m = model.manifest
    if not 1 <= len(wav_paths) <= model.batch:
        raise ValueError(f"{len(wav_paths)} files, the export streams 1..{model.batch} at once "
                         "(export with a larger --batch)")
    decoder = TextDecoder(model.export_dir / TOKENIZER_FILE, int(m["first_text_id"]))
    prompt_tokens = None
    if prompt is not None:
        ids = decoder.encode(prompt)
        if len(ids) > model.prompt_len:
            raise ValueError(f"--prompt has {len(ids)} tokens, the export takes at most "
                             f"{model.prompt_len}")
        prompt_tokens = np.full((model.batch, model.prompt_len), m["token_ids"]["<pad>"],
                                np.int32)
        prompt_tokens[:, :len(ids)] = ids
    audio = [read_audio(p, model.sample_rate) for p in wav_paths]
    env_BxT = np.zeros((model.batch, max(a.shape[0] for a in audio)), np.float32)
    for i, a in enumerate(audio):
        env_BxT[i, :a.shape[0]] = a
    result = stream(model, env_BxT, prompt_tokens, echo_gain, echo_delay_ms)
    streams = []
    for i, path in enumerate(wav_paths):
        num_blocks = max(1, -(-audio[i].shape[0] // model.samples_per_block))
        tokens_KxN = result["tokens"][i, :num_blocks]
        streams.append({
            "input": str(path), "num_blocks": num_blocks, "tokens": tokens_KxN.tolist(),
            "raw_tokens": result["raw_tokens"][i, :num_blocks].tolist(),
            "speaking": result["speaking"][i, :num_blocks].tolist(),
            "text": decoder.decode(tokens_KxN.reshape(-1))})
    summary = {"export_dir": str(model.export_dir), "config_name": m.get("config_name"),
               "checkpoint_step": m.get("checkpoint_step"), "block_ms": model.block_ms,
               "sample_rate": model.sample_rate,
               "assistant_feedback": m["speech"]["vocoder"], "echo_gain": echo_gain,
               "echo_delay_ms": echo_delay_ms, "streams": streams}
    return summary, result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export_dir")
    parser.add_argument("wavs", nargs="+", help="audio files (any rate, mono or stereo)")
    parser.add_argument("--out", help="write the result JSON here (default: stdout only)")
    parser.add_argument("--speech_out", help="write the played speech here (a wav; with "
                        "several inputs, one per input: NAME_0.wav, NAME_1.wav, ...)")
    parser.add_argument("--mel_out", help="write mel BxKxFxM and speaking BxK (npz) here")
    parser.add_argument("--echo_gain", type=float, default=0.0,
                        help="the model hears its own speech at this gain (default 0)")
    parser.add_argument("--echo_delay_ms", type=float, default=0.0,
                        help="... this late (0 to one block)")
    parser.add_argument("--prompt", help="text prompt (default: the export's own)")
    args = parser.parse_args(argv)
    try:
        summary, result = run_files(args.export_dir, args.wavs, args.prompt, args.echo_gain,
                                    args.echo_delay_ms)
    except (ExportError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for item in summary["streams"]:
        print(f"{item['input']}: {item['text']!r}")
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1))
    if args.mel_out:
        np.savez(args.mel_out, mel=result["mel"], speaking=result["speaking"])
    if args.speech_out:
        import soundfile as sf

        for i, item in enumerate(summary["streams"]):
            path = Path(args.speech_out)
            if len(summary["streams"]) > 1:
                path = path.with_name(f"{path.stem}_{i}{path.suffix or '.wav'}")
            speech_T = result["speech"][i, :item["num_blocks"]].reshape(-1)
            sf.write(str(path), speech_T, summary["sample_rate"], subtype="FLOAT")
    return 0


if __name__ == "__main__":
    sys.exit(main())
