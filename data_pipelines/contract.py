"""The data contract: one fixed-shape BlockSequence per dialogue.

This is a leaf module (numpy only). Both `data_pipelines` (the producers) and `omni_jax`
(the consumers) import it; it imports neither. It holds:
  * the label kinds and the state-token names,
  * the timing rules (where a transition label stands, how fast a stop must come, when
    the synthesizer starts) in one place,
  * the field table of a BlockSequence and a validator that every producer's tests use.

Shapes: K blocks, S = sample_rate * block_ms / 1000 samples per block,
N = tokens_per_block, P = prompt_len, H = heard_tokens_per_block.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any, Mapping

import numpy as np


class ContractError(ValueError):
    """A record breaks the BlockSequence contract; the message names the field."""


class LabelKind(enum.IntEnum):
    """What a label position is, which selects its loss weight."""

    IGNORE = 0  # no loss (padding, prompt, positions a variant does not supervise)
    TEXT = 1  # a text token of a reply or transcript
    THINK = 2  # a think position (explicit: <think> target; negative_ce: the negative term)
    SHIFT = 3  # explicit: <shift> at listen->speak and speak->listen
    START = 4  # negative_ce: <start_speak>
    END = 5  # negative_ce: <end_speak>


# Special tokens. The tokenizer reserves these ids so that every tokenizer agrees on them.
PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
THINK, SHIFT, START_SPEAK, END_SPEAK = "<think>", "<shift>", "<start_speak>", "<end_speak>"
STATE_TOKENS = (THINK, SHIFT, START_SPEAK, END_SPEAK)
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
# State tokens take the ids right after the control tokens (user-defined symbols in
# sentencepiece come first, in order).
STATE_TOKEN_IDS = {name: 4 + i for i, name in enumerate(STATE_TOKENS)}
THINK_ID, SHIFT_ID, START_SPEAK_ID, END_SPEAK_ID = (STATE_TOKEN_IDS[t] for t in STATE_TOKENS)
CONTROL_TOKEN_IDS = {PAD: PAD_ID, UNK: UNK_ID, BOS: BOS_ID, EOS: EOS_ID}
# Every id below this is a control or state token; text pieces start here.
FIRST_TEXT_ID = max(STATE_TOKEN_IDS.values()) + 1

THINKING_VARIANTS = ("negative_ce", "explicit", "implicit")


@dataclasses.dataclass(frozen=True)
class TimingRules:
    """Every timing rule of the renderer, written down once.

    Block k covers audio time [k*B, (k+1)*B) with B = block_ms. In block k the model reads
    the microphone audio of block k, emits N tokens and, while speaking, one block of
    speech. Rules:
      * heard(t) = floor(t / B): the block whose audio contains time t.
      * Output of block k is heard from block k+1: the model's assistant stream at block k
        is the speech played in block k-1, and its echo reaches the microphone at block k
        plus the acoustic delay (`echo_delay` samples, at most one block, times
        `echo_gain`). Both are made on device by `omni_jax.audio.feedback` from the kept
        log-mel of `speech_target` (the same function the free-running engine applies to
        the model's own mel), so a record carries the microphone without the echo.
      * A reply to a user turn that ends at t: the start transition label stands at block
        d = heard(t) + response_delay_blocks; its text tokens follow in the next slots.
      * The synthesizer's speech starts in the block that emits the
        `synth_delay_tokens`-th text token (v2: 4 tokens of text before speech).
      * `speaking[k]` is the state after block k's output: True from the block of the start
        transition up to, not including, the block of the end transition.
      * The end transition stands one block after the last block of speech or text.
      * Barge-in: a trigger word that ends at t stops the reply at block
        heard(t) + stop_delay_blocks (the end transition label there, speech cut from
        there); a stop is in time when it lies within stop_window_blocks after heard(t).
      * Streaming transcript (ASR): a word's tokens stand no earlier than
        heard(word end) + asr_lag_blocks.
    """

    block_ms: int = 80
    response_delay_blocks: int = 2
    synth_delay_tokens: int = 4
    stop_delay_blocks: int = 1
    stop_window_blocks: int = 3
    asr_lag_blocks: int = 1

    def __post_init__(self):
        for name in ("response_delay_blocks", "stop_delay_blocks", "asr_lag_blocks"):
            if getattr(self, name) < 0:
                raise ContractError(f"timing.{name} must be >= 0, got {getattr(self, name)}")
        if self.synth_delay_tokens < 1:
            raise ContractError(
                f"timing.synth_delay_tokens must be >= 1, got {self.synth_delay_tokens}")
        if not 0 <= self.stop_delay_blocks <= self.stop_window_blocks:
            raise ContractError(
                "timing.stop_delay_blocks must lie in [0, timing.stop_window_blocks], got "
                f"{self.stop_delay_blocks} and {self.stop_window_blocks}")
        if self.block_ms <= 0:
            raise ContractError(f"timing.block_ms must be > 0, got {self.block_ms}")

    @classmethod
    def from_config(cls, config) -> "TimingRules":
        """`config.audio.block_ms` and the `config.data.timing` fields; an impossible value
        raises ContractError naming `timing.FIELD`."""
        return cls(block_ms=int(config.audio.block_ms),
                   **{f.name: int(config.data.timing[f.name])
                      for f in dataclasses.fields(cls) if f.name != "block_ms"})

    def heard(self, t_s: float) -> int:
        """The block whose audio contains time t_s (seconds)."""
        return int(math.floor(t_s * 1000.0 / self.block_ms + 1e-9))

    def block_start_s(self, block: int) -> float:
        return block * self.block_ms / 1000.0

    def speech_start_block(self, turn_end_s: float, tokens_per_block: int) -> int:
        """The block in which a reply to a turn ending at `turn_end_s` starts speaking: its
        start transition plus the blocks of its first synth_delay_tokens text tokens (a reply
        of at least that many tokens)."""
        return (self.heard(turn_end_s) + self.response_delay_blocks
                + self.synth_delay_tokens // tokens_per_block)


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    name: str
    shape: tuple[str, ...]  # symbolic dims: K, S, N, P
    dtype: np.dtype
    doc: str


FIELDS = (
    FieldSpec("env_audio", ("K", "S"), np.dtype(np.float32),
              "microphone stream: user, third speakers, noise, reverb (the model's own echo "
              "is mixed in on device, see echo_gain)"),
    FieldSpec("echo_gain", (), np.dtype(np.float32),
              "gain of the model's own speech in the microphone (0 = no echo)"),
    FieldSpec("echo_delay", (), np.dtype(np.int32),
              "acoustic delay of that echo in samples, 0..S"),
    FieldSpec("tokens", ("K", "N"), np.dtype(np.int32), "LLM input tokens (teacher forcing)"),
    FieldSpec("labels", ("K", "N"), np.dtype(np.int32), "LLM targets"),
    FieldSpec("label_kind", ("K", "N"), np.dtype(np.int8), "LabelKind of each target"),
    FieldSpec("speaking", ("K",), np.dtype(np.bool_), "state after the block's output"),
    FieldSpec("speech_target", ("K", "S"), np.dtype(np.float32),
              "what the synthesizer must say in that block"),
    FieldSpec("speech_mask", ("K",), np.dtype(np.bool_), "where the speech loss applies"),
    FieldSpec("block_mask", ("K",), np.dtype(np.bool_), "True on real blocks, False on padding"),
    FieldSpec("prompt_tokens", ("P",), np.dtype(np.int32),
              "text prompt before block 0 (task, persona, text to read), PAD-padded"),
    FieldSpec("prompt_mask", ("P",), np.dtype(np.bool_), "True on real prompt tokens"),
    FieldSpec("heard_tokens", ("K", "H"), np.dtype(np.int32),
              "text tokens of the words people (user, third speakers) say in the microphone, "
              "in the block where each word ends, PAD after them (the encoder's auxiliary "
              "CTC target; later blocks take what does not fit)"),
)
FIELD_NAMES = tuple(f.name for f in FIELDS)
# Metadata that travels with a record but is never batched into arrays.
METADATA_FIELDS = ("events", "scenario")
# A batch's count of bad samples dropped before each element (skip policy), shape (B,).
SKIPPED = "skipped"


@dataclasses.dataclass(frozen=True)
class Dims:
    """The sizes a BlockSequence is checked against."""

    num_blocks: int  # K
    samples_per_block: int  # S
    tokens_per_block: int  # N
    prompt_len: int  # P
    heard_tokens_per_block: int = 4  # H (the default of configs older than the field)

    @classmethod
    def from_config(cls, config) -> "Dims":
        return cls(
            num_blocks=config.data.num_blocks,
            samples_per_block=samples_per_block(config.audio.sample_rate, config.audio.block_ms),
            tokens_per_block=config.data.tokens_per_block,
            prompt_len=config.data.prompt_len,
            heard_tokens_per_block=config.data.get("heard_tokens_per_block", 4),
        )

    def shape_of(self, field: FieldSpec, batch: tuple[int, ...] = ()) -> tuple[int, ...]:
        sizes = {"K": self.num_blocks, "S": self.samples_per_block,
                 "N": self.tokens_per_block, "P": self.prompt_len,
                 "H": self.heard_tokens_per_block}
        return batch + tuple(sizes[d] for d in field.shape)


def samples_per_block(sample_rate: int, block_ms: int) -> int:
    samples = sample_rate * block_ms / 1000.0
    if samples != int(samples):
        raise ContractError(
            f"block_ms={block_ms} at sample_rate={sample_rate} is not a whole number of samples")
    return int(samples)


def validate(record: Mapping[str, Any], dims: Dims, *, batched: bool = False,
             vocab_size: int | None = None, where: str = "record") -> None:
    """Checks one BlockSequence (or a batch of them) against the contract.

    Raises ContractError naming `where` and the first broken field. Checks shapes, dtypes,
    finiteness, label/kind consistency, masks and the speaking/speech relation.
    """

    def fail(field: str, msg: str):
        raise ContractError(f"{where}: field '{field}': {msg}")

    missing = [n for n in FIELD_NAMES if n not in record]
    if missing:
        fail(missing[0], f"missing (record has {sorted(record)})")
    batch: tuple[int, ...] = ()
    if batched:
        first = np.asarray(record["env_audio"])
        if first.ndim < 1:
            fail("env_audio", "batched record has no batch dimension")
        batch = first.shape[:1]
    arrays = {}
    for spec in FIELDS:
        value = record[spec.name]
        if not isinstance(value, np.ndarray):
            fail(spec.name, f"expected a numpy array, got {type(value).__name__}")
        expected = dims.shape_of(spec, batch)
        if value.shape != expected:
            fail(spec.name, f"shape {value.shape} != expected {expected} {spec.shape}")
        if value.dtype != spec.dtype:
            fail(spec.name, f"dtype {value.dtype} != expected {spec.dtype}")
        arrays[spec.name] = value

    for name in ("env_audio", "speech_target"):
        if not np.all(np.isfinite(arrays[name])):
            fail(name, "contains NaN or Inf")
        peak = float(np.max(np.abs(arrays[name]), initial=0.0))
        if peak > 1.0 + 1e-6:
            fail(name, f"peak amplitude {peak:.3f} outside [-1, 1] (clipping)")

    kinds = arrays["label_kind"]
    valid_kinds = [int(k) for k in LabelKind]
    if not np.isin(kinds, valid_kinds).all():
        fail("label_kind", f"values outside {valid_kinds}: {np.unique(kinds).tolist()}")
    for name in ("tokens", "labels", "prompt_tokens", "heard_tokens"):
        ids = arrays[name]
        if ids.size and ids.min() < 0:
            fail(name, f"negative token id {int(ids.min())}")
        if vocab_size is not None and ids.size and ids.max() >= vocab_size:
            fail(name, f"token id {int(ids.max())} >= vocab_size {vocab_size}")

    block_mask = arrays["block_mask"]
    if np.any(block_mask[..., 1:] & ~block_mask[..., :-1]):
        fail("block_mask", "real blocks must precede padding blocks")
    supervised = kinds != LabelKind.IGNORE
    if np.any(supervised & ~block_mask[..., None]):
        fail("label_kind", "supervised label on a padding block")
    if np.any(arrays["speaking"] & ~block_mask):
        fail("speaking", "speaking on a padding block")
    if np.any(arrays["speech_mask"] & ~block_mask):
        fail("speech_mask", "speech loss on a padding block")
    gain = arrays["echo_gain"]
    if not np.all(np.isfinite(gain)) or np.any(gain < 0):
        fail("echo_gain", f"must be finite and >= 0, got {gain.tolist()}")
    delay = arrays["echo_delay"]
    if np.any(delay < 0) or np.any(delay > dims.samples_per_block):
        fail("echo_delay", f"must be 0..{dims.samples_per_block} samples (one block), got "
                           f"{delay.tolist()}")
    pad = ~block_mask
    for name in ("env_audio", "speech_target"):
        if np.any(arrays[name][pad] != 0.0):
            fail(name, "non-zero audio on a padding block")
    # Speech may only be asked of the synthesizer where the model speaks.
    speech_energy = np.abs(arrays["speech_target"]).max(axis=-1)
    if np.any((speech_energy > 0) & ~arrays["speaking"]):
        fail("speech_target", "speech in a block where speaking is False")
    if np.any((speech_energy > 0) & ~arrays["speech_mask"]):
        fail("speech_mask", "speech_target has speech where speech_mask is False")

    # Label ids must agree with their kinds for the state kinds.
    labels = arrays["labels"]
    for kind, token in ((LabelKind.SHIFT, SHIFT), (LabelKind.START, START_SPEAK),
                        (LabelKind.END, END_SPEAK)):
        sel = kinds == kind
        if np.any(labels[sel] != STATE_TOKEN_IDS[token]):
            fail("labels", f"a {kind.name} label is not {token}")
    text_labels = labels[kinds == LabelKind.TEXT]
    if np.isin(text_labels, [PAD_ID, BOS_ID, EOS_ID, *STATE_TOKEN_IDS.values()]).any():
        fail("labels", "a TEXT label is a control or state token")

    heard = arrays["heard_tokens"]
    if np.isin(heard, [UNK_ID, BOS_ID, EOS_ID, *STATE_TOKEN_IDS.values()]).any():
        fail("heard_tokens", "a heard token is a control or state token")
    heard_real = heard != PAD_ID
    if np.any(heard_real[..., 1:] & ~heard_real[..., :-1]):
        fail("heard_tokens", "a block's heard tokens must precede its padding")
    if np.any(heard_real & ~block_mask[..., None]):
        fail("heard_tokens", "heard tokens on a padding block")

    prompt_mask = arrays["prompt_mask"]
    # Real prompt tokens come first, then padding.
    if np.any(prompt_mask[..., 1:] & ~prompt_mask[..., :-1]):
        fail("prompt_mask", "real prompt tokens must precede padding")
    if np.any(arrays["prompt_tokens"][~prompt_mask] != PAD_ID):
        fail("prompt_tokens", "padding positions must hold PAD")
    if np.any(arrays["prompt_tokens"][prompt_mask] == PAD_ID):
        fail("prompt_tokens", "a real prompt position holds PAD")


def empty_record(dims: Dims) -> dict[str, np.ndarray]:
    """An all-padding record of the right shapes (a producer's starting point)."""
    return {spec.name: np.zeros(dims.shape_of(spec), spec.dtype) for spec in FIELDS}
