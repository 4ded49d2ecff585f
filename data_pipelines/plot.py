"""A picture of one BlockSequence: what the model hears, says and emits, block by block.

Rows: environment waveform, assistant stream waveform, speech target, speaking state, and
the label (and input token, where it differs) of every block. Used by `inspect` and by the
evaluation case studies.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from data_pipelines import contract

_KIND_COLORS = {
    contract.LabelKind.IGNORE: "#bbbbbb",
    contract.LabelKind.TEXT: "#1f77b4",
    contract.LabelKind.THINK: "#999999",
    contract.LabelKind.SHIFT: "#d62728",
    contract.LabelKind.START: "#d62728",
    contract.LabelKind.END: "#9467bd",
}


def _short(piece: str) -> str:
    """Compact token text for a crowded axis."""
    names = {contract.THINK: "·", contract.SHIFT: "SHIFT", contract.START_SPEAK: "START",
             contract.END_SPEAK: "END", contract.PAD: "", contract.BOS: "BOS"}
    return names.get(piece, piece.replace("\u2581", "_"))


def _title(events: dict) -> str:
    """Scenario, prompt and the facts a reader checks the picture against."""
    meta, render = events.get("meta", {}), events.get("render", {})
    facts = [f"{k}={meta[k]}" for k in ("interruption_kind", "interruption", "should_stop")
             if meta.get(k) is not None]
    if render.get("echo_gain"):
        facts.append(f"echo gain {render['echo_gain']:.2f}")
    return f"{events.get('scenario', '')}: \"{events.get('prompt', '')}\"  " + ", ".join(facts)


def plot_block_sequence(record, piece_of, path: str | Path, *, sample_rate: int,
                        title: str = "", streams=None) -> Path:
    """Writes a PNG timeline of `record` (unbatched) to `path`; `piece_of(id) -> str`.
    `streams`: (microphone KxS, assistant stream KxS) to draw (default: the record's
    microphone and its reference speech)."""
    import matplotlib  # slow to import, only pictures need it

    matplotlib.use("Agg")  # before pyplot: no display
    import matplotlib.pyplot as plt

    num_real = int(record["block_mask"].sum())
    env_KxS, asst_KxS = streams or (record["env_audio"], record["speech_target"])
    env_T = np.asarray(env_KxS)[:num_real].reshape(-1)
    asst_T = np.asarray(asst_KxS)[:num_real].reshape(-1)
    target_T = record["speech_target"][:num_real].reshape(-1)
    block_s = record["env_audio"].shape[1] / sample_rate
    t_T = np.arange(env_T.size) / sample_rate
    labels_KxN = record["labels"][:num_real]
    kinds_KxN = record["label_kind"][:num_real]
    tokens_KxN = record["tokens"][:num_real]

    fig, axes = plt.subplots(5, 1, figsize=(max(10, num_real * 0.16), 9), sharex=True,
                             gridspec_kw=dict(height_ratios=[2, 1.2, 1.2, 0.6, 2.2]))
    for ax, wave, name, color in ((axes[0], env_T, "environment (mic)", "#333333"),
                                  (axes[1], asst_T, "assistant stream", "#2ca02c"),
                                  (axes[2], target_T, "speech target", "#ff7f0e")):
        ax.plot(t_T, wave, lw=0.4, color=color)
        ax.set_ylabel(name, rotation=0, ha="right", fontsize=8)
        ax.set_ylim(-1, 1)
    speaking_K = record["speaking"][:num_real].astype(float)
    axes[3].step(np.arange(num_real + 1) * block_s, np.append(speaking_K, speaking_K[-1:]),
                 where="post", color="#d62728")
    axes[3].set_ylabel("speaking", rotation=0, ha="right", fontsize=8)
    axes[3].set_yticks([0, 1], ["listen", "speak"], fontsize=7)

    ax = axes[4]
    n_per_block = labels_KxN.shape[1]
    for k in range(num_real):
        for n in range(n_per_block):
            x = (k + (n + 0.5) / n_per_block) * block_s
            kind = contract.LabelKind(int(kinds_KxN[k, n]))
            label = _short(piece_of(int(labels_KxN[k, n])))
            ax.text(x, 0.65, label, rotation=90, ha="center", va="center", fontsize=6,
                    color=_KIND_COLORS[kind])
            fed = _short(piece_of(int(tokens_KxN[k, n])))
            ax.text(x, 0.15, fed, rotation=90, ha="center", va="center", fontsize=5,
                    color="#777777")
    ax.set_ylim(0, 1)
    ax.set_yticks([0.15, 0.65], ["input", "label"], fontsize=7)
    ax.set_xlabel(f"time (s); one block = {block_s * 1000:.0f} ms")
    if not title and "events" in record:
        title = _title(json.loads(record["events"]))
    return save_timeline(fig, axes, num_real * block_s, title, path, dpi=110)


def save_timeline(fig, axes, duration_s: float, title: str, path: str | Path,
                  dpi: int = 100) -> Path:
    """Shared time axis and grid over `duration_s`, the title, then the PNG at `path`."""
    import matplotlib.pyplot as plt  # slow to import, only pictures need it

    for a in axes:
        a.set_xlim(0, duration_s)
        a.grid(axis="x", alpha=0.2)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
