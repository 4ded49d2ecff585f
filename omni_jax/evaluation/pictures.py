"""Case-study pictures and listening files of free-running evaluation, like the papers'
figures: what the model heard, what it said, when it spoke, and what it emitted per block.

Rows of `plot_case`: the microphone as heard (log-mel spectrogram, echo included), the
model's speech (waveform), speaking state (model vs the reference rendering), and the
emitted token of every block (text in blue, transitions in red, idle <think> as a dot)
above the reference label.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data_pipelines import audio_io, contract
from data_pipelines.plot import save_timeline

_STATE_NAMES = {contract.THINK: "·", contract.SHIFT: "SHIFT", contract.START_SPEAK: "START",
                contract.END_SPEAK: "END", contract.PAD: "", contract.BOS: "BOS"}
_TRANSITION_IDS = {contract.SHIFT_ID, contract.START_SPEAK_ID, contract.END_SPEAK_ID}


def _piece(tokenizer, token: int) -> str:
    if token >= tokenizer.vocab_size:
        return "?"
    piece = tokenizer.piece_of(token)
    return _STATE_NAMES.get(piece, piece.replace("\u2581", "_"))


def plot_case(result, stream: int, reference: dict, tokenizer, path: str | Path, *,
              frontend, title: str = "") -> Path:
    """A PNG of one stream of an `EngineResult` against its reference rendering."""
    import matplotlib  # deferred: a second of import time, needed only for pictures

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heard_T = result.env_audio[stream].reshape(-1).astype(np.float32)
    speech_T = result.speech[stream].reshape(-1)
    num_blocks = result.speaking.shape[1]
    block_s = result.block_ms / 1000.0
    mel_FxM = np.asarray(frontend(heard_T[None]))[0]
    t_T = np.arange(speech_T.size) / result.sample_rate

    fig, axes = plt.subplots(4, 1, figsize=(max(10, num_blocks * 0.16), 8), sharex=True,
                             gridspec_kw=dict(height_ratios=[2, 1.2, 0.7, 2.2]))
    axes[0].imshow(mel_FxM.T, origin="lower", aspect="auto", cmap="magma",
                   extent=(0, num_blocks * block_s, 0, mel_FxM.shape[1]))
    axes[0].set_ylabel("microphone\n(log-mel)", rotation=0, ha="right", fontsize=8)
    axes[1].plot(t_T, speech_T, lw=0.4, color="#2ca02c")
    axes[1].set_ylim(-1, 1)
    axes[1].set_ylabel("model speech", rotation=0, ha="right", fontsize=8)
    edges = np.arange(num_blocks + 1) * block_s
    for speaking_K, name, color, offset in (
            (result.speaking[stream], "model", "#d62728", 0.0),
            (reference["speaking"][:num_blocks], "reference", "#1f77b4", 0.04)):
        values = speaking_K.astype(float) + offset
        axes[2].step(edges, np.append(values, values[-1:]), where="post", color=color,
                     label=name, lw=1.2)
    axes[2].set_yticks([0, 1], ["listen", "speak"], fontsize=7)
    axes[2].legend(fontsize=6, loc="upper right")

    ax = axes[3]
    labels_K = reference["labels"][:num_blocks, -1]
    for k in range(num_blocks):
        x = (k + 0.5) * block_s
        token = int(result.tokens[stream, k, -1])
        color = ("#d62728" if token in _TRANSITION_IDS else "#1f77b4"
                 if token >= contract.FIRST_TEXT_ID else "#999999")
        ax.text(x, 0.65, _piece(tokenizer, token), rotation=90, ha="center", va="center",
                fontsize=6, color=color)
        ax.text(x, 0.15, _piece(tokenizer, int(labels_K[k])), rotation=90, ha="center",
                va="center", fontsize=5, color="#777777")
    ax.set_ylim(0, 1)
    ax.set_yticks([0.15, 0.65], ["reference", "emitted"], fontsize=7)
    ax.set_xlabel(f"time (s); one block = {result.block_ms} ms")
    return save_timeline(fig, axes, num_blocks * block_s, title, path)


def write_wav(path: str | Path, heard_T: np.ndarray, speech_T: np.ndarray,
              sample_rate: int) -> None:
    """Stereo 16-bit wav: left the microphone as heard, right the model's speech (each
    scaled down only if it would clip)."""
    length = min(heard_T.size, speech_T.size)
    both_Tx2 = np.stack([heard_T[:length], speech_T[:length]], axis=1).astype(np.float32)
    peak_2 = np.max(np.abs(both_Tx2), axis=0)
    both_Tx2 /= np.maximum(peak_2, 1.0)
    audio_io.write_wav(path, both_Tx2, sample_rate)
