"""The one renderer: Timeline -> BlockSequence.

`render` turns any Timeline into a record of `contract.FIELDS` at the timeline's natural
length (K = ceil(duration / block) blocks); `fit_blocks` crops or pads it to the training
length and `render_fixed` does both. All timing follows `contract.TimingRules`.

The token grid has K*N slots (slot p = k*N + n). Rendering first lays out slot *roles*
(idle, text, start transition, end transition) and the per-block speaking state, then a
thinking variant maps roles to input tokens, labels and label kinds:

  slot role   explicit          negative_ce                            implicit
  text        text / TEXT       text / TEXT                            text / TEXT
  start       <shift> / SHIFT   <start_speak> / START                  as idle
  end         <shift> / SHIFT   <end_speak> / END                      as idle
  idle        <think> / THINK   the current state's transition / THINK  <think> / THINK

Inputs are the previous slot's emitted token (BOS first); an idle slot's emitted token is
<think> in every variant (in negative_ce it is input-only).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np

from data_pipelines import augment as augment_lib
from data_pipelines import contract
from data_pipelines import timeline as tl

# config.data.pipeline.crop: how `render_fixed` fits a longer dialogue into K blocks.
CROPS = ("start", "random")
# Reference speech level for the noise SNR when a timeline has no user or third speech.
_DEFAULT_SPEECH_RMS = 0.05

_IDLE, _TEXT, _START, _END = 0, 1, 2, 3  # slot roles


class RenderError(ValueError):
    """A Timeline that cannot be rendered; the message names the scenario and the cause."""


class PromptError(RenderError):
    """A prompt that does not fit in prompt_len tokens; the message names where it is from."""


def natural_num_blocks(timeline: tl.Timeline, timing: contract.TimingRules) -> int:
    """K_real = ceil(duration / block), robust to float noise in the duration."""
    return max(1, math.ceil(timeline.duration_s * 1000.0 / timing.block_ms - 1e-6))


@dataclasses.dataclass
class _Grid:
    """Slot roles and text ids of one timeline, before a thinking variant maps them."""

    role_T: np.ndarray  # int8, one of the slot roles
    text_T: np.ndarray  # int32 text id where role is _TEXT
    speaking_K: np.ndarray  # bool
    tokens_per_block: int

    @classmethod
    def empty(cls, num_blocks: int, tokens_per_block: int) -> "_Grid":
        num_slots = num_blocks * tokens_per_block
        return cls(np.zeros(num_slots, np.int8), np.zeros(num_slots, np.int32),
                   np.zeros(num_blocks, bool), tokens_per_block)

    @property
    def num_blocks(self) -> int:
        return self.speaking_K.size

    def first_free_run(self, start: int, length: int) -> int | None:
        """The first slot >= start that begins `length` free slots, or None."""
        pos = start
        while pos + length <= self.role_T.size:
            busy = np.flatnonzero(self.role_T[pos:pos + length] != _IDLE)
            if busy.size == 0:
                return pos
            pos += int(busy[-1]) + 1
        return None


def _place_speech_turn(turn: tl.AssistantTurn, text_ids: list[int], grid: _Grid,
                       speech_target_T: np.ndarray, timing: contract.TimingRules,
                       samples_per_block: int, where: str) -> dict[str, Any]:
    """Transitions, text slots, speaking state and speech of one SPEAK turn."""
    num_blocks, n = grid.num_blocks, grid.tokens_per_block
    d = timing.heard(turn.start_s) + timing.response_delay_blocks
    stop = None if turn.stop_s is None else timing.heard(turn.stop_s) + timing.stop_delay_blocks
    info: dict[str, Any] = dict(start_block=d, speech_start_block=None, end_block=None,
                                stop_block=stop, cut=False, cancelled=False, truncated=False)
    if stop is not None and stop <= d:
        info.update(cancelled=True)  # stopped before it started: nothing is said
        return info
    if d >= num_blocks:
        info.update(truncated=True)
        return info
    num_text = len(text_ids)
    speech_start = (d * n + min(timing.synth_delay_tokens, num_text)) // n
    speech_end = speech_start + math.ceil(turn.audio.size / samples_per_block) - 1
    text_end = (d * n + num_text) // n
    end = max(speech_end, text_end) + 1
    if stop is not None and stop < end:
        end = stop
        info.update(cut=True)
    last = min(end, num_blocks)  # speaking blocks are [d, last)
    end_slot = min(end * n + 1, grid.role_T.size)  # through the end transition, if it fits
    if grid.speaking_K[d:last].any() or (grid.role_T[d * n:end_slot] != _IDLE).any():
        raise RenderError(f"{where}: SPEAK turn {turn.text[:40]!r} (blocks {d}..{end}) "
                          "overlaps an earlier turn")
    grid.role_T[d * n] = _START
    text_slots = d * n + 1 + np.arange(num_text)
    kept = text_slots < last * n
    grid.role_T[text_slots[kept]] = _TEXT
    grid.text_T[text_slots[kept]] = np.asarray(text_ids, np.int32)[kept]
    if end < num_blocks:
        grid.role_T[end * n] = _END
    grid.speaking_K[d:last] = True
    if speech_start < last:
        num_samples = min(turn.audio.size, (last - speech_start) * samples_per_block)
        offset = speech_start * samples_per_block
        speech_target_T[offset:offset + num_samples] = turn.audio[:num_samples]
        info.update(speech_start_block=speech_start)
    info.update(end_block=end, truncated=end >= num_blocks,
                text_tokens=num_text, text_tokens_kept=int(kept.sum()))
    return info


def _place_transcript(turn: tl.AssistantTurn, tokenizer, grid: _Grid, cursor: int,
                      timing: contract.TimingRules, where: str) -> tuple[dict[str, Any], int]:
    """Each word's tokens in free consecutive slots, never before heard(end) + asr lag."""
    if not turn.words:
        raise RenderError(f"{where}: TRANSCRIBE turn {turn.text[:40]!r} has no word timings")
    n = grid.tokens_per_block
    word_blocks = []
    for word in turn.words:
        for ids in tokenizer.encode_words(word.word):  # nothing for a punctuation-only word
            earliest = (timing.heard(word.end_s) + timing.asr_lag_blocks) * n
            pos = grid.first_free_run(max(cursor, earliest), len(ids))
            if pos is None:
                raise RenderError(
                    f"{where}: TRANSCRIBE word {word.word!r} (ends at {word.end_s:.3f}s) "
                    f"cannot be placed before the end of the timeline ({grid.num_blocks} "
                    "blocks)")
            grid.role_T[pos:pos + len(ids)] = _TEXT
            grid.text_T[pos:pos + len(ids)] = ids
            cursor = pos + len(ids)
            word_blocks.append(pos // n)
    if not word_blocks:
        raise RenderError(f"{where}: TRANSCRIBE turn {turn.text[:40]!r} has no tokens")
    return dict(word_blocks=word_blocks, start_block=word_blocks[0],
                end_block=(cursor - 1) // n), cursor


def _token_streams(grid: _Grid, thinking: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tokens, labels, label_kind), each K x N, for one thinking variant."""
    role, n = grid.role_T, grid.tokens_per_block
    text, transition = role == _TEXT, (role == _START) | (role == _END)
    emitted = np.where(text, grid.text_T, contract.THINK_ID).astype(np.int32)
    kind = np.where(text, contract.LabelKind.TEXT, contract.LabelKind.THINK).astype(np.int8)
    if thinking == "explicit":
        emitted[transition] = contract.SHIFT_ID
        kind[transition] = contract.LabelKind.SHIFT
        labels = emitted
    elif thinking == "negative_ce":
        emitted[role == _START] = contract.START_SPEAK_ID
        emitted[role == _END] = contract.END_SPEAK_ID
        kind[role == _START] = contract.LabelKind.START
        kind[role == _END] = contract.LabelKind.END
        # Idle slots emit nothing; their label is the transition of the current state.
        speaking_T = np.repeat(grid.speaking_K, n)
        idle_label = np.where(speaking_T, contract.END_SPEAK_ID, contract.START_SPEAK_ID)
        labels = np.where(role == _IDLE, idle_label, emitted).astype(np.int32)
    elif thinking == "implicit":
        labels = emitted  # transitions are idle slots: the speak head carries the state
    else:
        raise ValueError(f"thinking {thinking!r} is not one of {contract.THINKING_VARIANTS}")
    tokens = np.concatenate([[contract.BOS_ID], emitted[:-1]]).astype(np.int32)
    shape = (grid.num_blocks, n)
    return tokens.reshape(shape), labels.reshape(shape), kind.reshape(shape)


def _heard_words(event: tl.AudioEvent, sample_rate: int) -> list[tuple[str, float]]:
    """(word, absolute end time) of an event; without word timings, its text's words spread
    evenly over the event (a real recording transcribed without an alignment)."""
    if event.words:
        return [(w.word, event.start_s + w.end_s) for w in event.words]
    words = event.text.split()
    duration = event.duration_s(sample_rate)
    return [(w, event.start_s + duration * (i + 1) / len(words)) for i, w in enumerate(words)]


def _heard_tokens(timeline: tl.Timeline, tokenizer, num_blocks: int, slots: int,
                  timing: contract.TimingRules) -> np.ndarray:
    """heard_tokens_KxH: the tokens of every word the user and third speakers say, in the
    block where the word ends (`timing.heard`), in time order; a block's overflow moves to
    the next free slots (CTC needs the order, not the block). UNK pieces are left out."""
    words = sorted((end_s, word) for event in timeline.events
                   if event.role in (tl.USER, tl.THIRD)
                   for word, end_s in _heard_words(event, timeline.sample_rate))
    heard_T = np.full(num_blocks * slots, contract.PAD_ID, np.int32)
    cursor = 0
    for end_s, word in words:
        ids = [i for piece in tokenizer.encode_words(word) for i in piece if i != contract.UNK_ID]
        cursor = max(cursor, timing.heard(end_s) * slots)
        kept = ids[:max(heard_T.size - cursor, 0)]
        heard_T[cursor:cursor + len(kept)] = kept
        cursor += len(kept)
    return heard_T.reshape(num_blocks, slots)


def _environment(timeline: tl.Timeline, num_samples: int) -> tuple[np.ndarray, float]:
    """The mix of the timeline's events, and the RMS of its user/third speech where active."""
    env_T = np.zeros(num_samples, np.float32)
    speech_T = np.zeros(num_samples, np.float32)
    active_T = np.zeros(num_samples, bool)
    for event in timeline.events:
        start = int(round(event.start_s * timeline.sample_rate))
        audio = event.audio[:max(num_samples - start, 0)] * np.float32(event.gain)
        env_T[start:start + audio.size] += audio
        if event.role in (tl.USER, tl.THIRD):
            speech_T[start:start + audio.size] += audio
            active_T[start:start + audio.size] = True
    speech_rms = augment_lib.rms(speech_T[active_T]) if active_T.any() else 0.0
    return env_T, speech_rms or _DEFAULT_SPEECH_RMS


def _echo_settings(timeline: tl.Timeline, augment: augment_lib.AugmentConfig | None,
                   has_speech: bool, rng: np.random.Generator) -> tuple[float, float, bool]:
    """(gain, delay_s, drawn): the scenario's echo, or a random one under augmentation."""
    if (timeline.meta.get("echo_fixed") or augment is None or augment.echo_prob <= 0
            or not has_speech or rng.random() >= augment.echo_prob):
        return float(timeline.echo_gain), float(timeline.echo_delay_s), False
    gain = round(float(rng.uniform(*augment.echo_gain)), 4)
    delay_s = round(float(rng.uniform(*augment.echo_delay_ms)) / 1000.0, 5)
    return gain, delay_s, True


def encode_prompt(tokenizer, text: str, prompt_len: int, where: str = "prompt"
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The prompt layout of `contract.FIELDS`: (prompt_tokens_P int32, prompt_mask_P bool),
    the text's ids first, then PAD up to `prompt_len`; a blank text is all padding.

    Raises PromptError naming `where` when the text has more than `prompt_len` tokens.
    """
    ids = tokenizer.encode(text) if text.strip() else []
    if len(ids) > prompt_len:
        raise PromptError(f"{where}: prompt has {len(ids)} tokens, more than prompt_len="
                          f"{prompt_len}: {text[:60]!r}")
    tokens_P = np.full(prompt_len, contract.PAD_ID, np.int32)
    tokens_P[:len(ids)] = ids
    return tokens_P, np.arange(prompt_len) < len(ids)


def render(timeline: tl.Timeline, *, dims: contract.Dims, timing: contract.TimingRules,
           thinking: str, tokenizer, rng: np.random.Generator,
           augment: augment_lib.AugmentConfig | None = None) -> dict[str, Any]:
    """The BlockSequence of `timeline` at its natural length K_real (see `fit_blocks`).

    `dims` gives S, N, P and H (its num_blocks is not used here). Raises RenderError naming
    the scenario for a timeline that cannot be rendered.
    """
    where = f"scenario {timeline.scenario!r}"
    if thinking not in contract.THINKING_VARIANTS:
        raise ValueError(f"thinking {thinking!r} is not one of {contract.THINKING_VARIANTS}")
    samples_per_block = dims.samples_per_block
    if timeline.sample_rate * timing.block_ms != samples_per_block * 1000:
        raise RenderError(f"{where}: {timeline.sample_rate} Hz x {timing.block_ms} ms is not "
                          f"{samples_per_block} samples per block")
    num_blocks = natural_num_blocks(timeline, timing)
    num_samples = num_blocks * samples_per_block
    grid = _Grid.empty(num_blocks, dims.tokens_per_block)
    speech_target_T = np.zeros(num_samples, np.float32)

    turn_infos: list[dict[str, Any]] = [{} for _ in timeline.turns]
    order = sorted(range(len(timeline.turns)), key=lambda i: timeline.turns[i].start_s)
    for i in order:  # speech turns first: their slots are fixed by the timing rules
        turn = timeline.turns[i]
        if turn.mode == tl.SPEAK:
            text_ids = [t for word in tokenizer.encode_words(turn.text) for t in word]
            if not text_ids:
                raise RenderError(f"{where}: SPEAK turn {turn.text[:40]!r} has no text tokens")
            turn_infos[i] = _place_speech_turn(turn, text_ids, grid, speech_target_T, timing,
                                               samples_per_block, where)
    cursor = 0
    for i in order:  # transcripts fill free slots around the speech turns
        if timeline.turns[i].mode == tl.TRANSCRIBE:
            turn_infos[i], cursor = _place_transcript(timeline.turns[i], tokenizer, grid,
                                                      cursor, timing, where)
    tokens_KxN, labels_KxN, label_kind_KxN = _token_streams(grid, thinking)

    speech_target_T, speech_scale = augment_lib.limit_peak(speech_target_T)
    env_T, speech_rms = _environment(timeline, num_samples)
    # The model's own echo is mixed in on device from what it plays (omni_jax.audio.feedback).
    echo_gain, echo_delay_s, echo_drawn = _echo_settings(
        timeline, augment, bool(speech_target_T.any()), rng)
    echo_delay = int(round(echo_delay_s * timeline.sample_rate))
    if not 0 <= echo_delay <= samples_per_block:
        raise RenderError(f"{where}: echo delay {echo_delay_s} s is outside 0..{timing.block_ms}"
                          f" ms (the echo's history is one block)")
    aug_info: dict[str, Any] = {}
    if augment is not None and augment.enabled:
        env_T, aug_info = augment_lib.augment_environment(
            env_T, speech_rms, augment, timeline.sample_rate, rng)
    env_T, env_scale = augment_lib.limit_peak(env_T)

    prompt_tokens, prompt_mask = encode_prompt(tokenizer, timeline.prompt, dims.prompt_len, where)
    shape = (num_blocks, samples_per_block)
    record = dict(
        env_audio=env_T.reshape(shape), echo_gain=np.asarray(echo_gain, np.float32),
        echo_delay=np.asarray(echo_delay, np.int32),
        tokens=tokens_KxN, labels=labels_KxN, label_kind=label_kind_KxN,
        speaking=grid.speaking_K, speech_target=speech_target_T.reshape(shape),
        speech_mask=grid.speaking_K.copy(), block_mask=np.ones(num_blocks, bool),
        prompt_tokens=prompt_tokens, prompt_mask=prompt_mask,
        heard_tokens=_heard_tokens(timeline, tokenizer, num_blocks,
                                   dims.heard_tokens_per_block, timing))

    events = json.loads(timeline.events_json())
    for item, info in zip(events["events"][len(timeline.events):], turn_infos):
        item.update(info)
    events["render"] = dict(
        num_blocks=num_blocks, block_ms=timing.block_ms, thinking=thinking,
        echo_gain=echo_gain, echo_delay_s=echo_delay_s, echo_drawn=echo_drawn,
        env_scale=round(env_scale, 6), speech_scale=round(speech_scale, 6),
        **(dict(reverb=False, rt60_s=None, noise=None, snr_db=None, gain_db=0.0) | aug_info))
    record.update(scenario=timeline.scenario, events=json.dumps(events, sort_keys=True))
    try:
        contract.validate(record, dataclasses.replace(dims, num_blocks=num_blocks),
                          vocab_size=tokenizer.vocab_size, where=where)
    except contract.ContractError as e:
        raise RenderError(f"rendered record breaks the contract: {e}") from None
    return record


def fit_blocks(record: dict[str, Any], num_blocks: int, start_block: int = 0) -> dict[str, Any]:
    """Blocks [start_block, start_block + num_blocks) of `record`, padded at the end.

    Padding is zeros: silent audio, PAD tokens and labels, IGNORE kinds, False masks.
    """
    real_blocks = record["block_mask"].shape[0]
    if num_blocks <= 0:
        raise ValueError(f"num_blocks must be > 0, got {num_blocks}")
    if not 0 <= start_block < real_blocks:
        raise ValueError(f"start_block {start_block} outside the record's {real_blocks} blocks")
    out: dict[str, Any] = {}
    for spec in contract.FIELDS:
        value = record[spec.name]
        if spec.shape[:1] != ("K",):
            out[spec.name] = value.copy()
            continue
        kept = value[start_block:start_block + num_blocks]
        fitted = np.zeros((num_blocks,) + value.shape[1:], value.dtype)
        fitted[:kept.shape[0]] = kept
        out[spec.name] = fitted
    out["scenario"] = record["scenario"]
    events = json.loads(record["events"])
    events.setdefault("render", {}).update(crop_start_block=start_block,
                                           fitted_num_blocks=num_blocks)
    out["events"] = json.dumps(events, sort_keys=True)
    return out


def render_fixed(timeline: tl.Timeline, *, dims: contract.Dims, timing: contract.TimingRules,
                 thinking: str, tokenizer, rng: np.random.Generator,
                 augment: augment_lib.AugmentConfig | None = None,
                 crop: str = "start") -> dict[str, Any]:
    """`render`, then `fit_blocks` to dims.num_blocks; crop 'start' or 'random' (uses rng)."""
    if crop not in CROPS:
        raise ValueError(f"crop {crop!r} is not one of {CROPS}")
    record = render(timeline, dims=dims, timing=timing, thinking=thinking,
                    tokenizer=tokenizer, rng=rng, augment=augment)
    real_blocks = record["block_mask"].shape[0]
    start = 0
    if crop == "random" and real_blocks > dims.num_blocks:
        start = int(rng.integers(0, real_blocks - dims.num_blocks + 1))
    return fit_blocks(record, dims.num_blocks, start)
