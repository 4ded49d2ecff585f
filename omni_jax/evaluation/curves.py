r"""Training curves of a run as one picture: loss parts, held-out accuracies and the suites'
headline figures over steps, read from DIR/metrics.jsonl.

  python -m omni_jax.evaluation.curves --workdir=DIR [--out=DIR/curves.png]

Panels: the training loss parts (solid, per logged window) with the held-out ones
(`eval/PART`, dashed) on a log scale; the held-out teacher-forced accuracies; every suite
whose headline was scored (`suites/SUITE/HEADLINE`, written every `train.suites_every` steps
and after the last) with its 95% interval as error bars and its best blind baseline as a
dotted line of the same colour. A run without suite points draws the first two panels.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

from omni_jax.evaluation.catalog import SUITES
from omni_jax.train import writers

# Loss parts that are not losses (written beside them) and never drawn as one.
_NOT_LOSSES = ("acc_", "grad_norm", "nonfinite", "steps_per_sec", "examples_per_sec",
               "skipped_samples", "learning_rate")


class CurvesError(ValueError):
    """A run whose metrics cannot be drawn; the message names the file."""


def series(records: Sequence[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """name -> (steps, values) over every record holding that name as a finite number; a
    step written twice (a rerun's --mode=eval) keeps its last value."""
    by_name: dict[str, dict[int, float]] = {}
    for record in records:
        if "step" not in record:
            continue
        for name, value in record.items():
            if name == "step" or not isinstance(value, (int, float)):
                continue
            if isinstance(value, float) and not math.isfinite(value):
                continue
            by_name.setdefault(name, {})[int(record["step"])] = float(value)
    return {name: (sorted(points), [points[s] for s in sorted(points)])
            for name, points in by_name.items()}


def suite_headlines(curves: dict) -> list[tuple[str, str]]:
    """(suite, headline key) of every catalog suite with a headline point in `curves`."""
    return [(name, suite.headline) for name, suite in SUITES.items()
            if suite.headline and f"suites/{name}/{suite.headline}" in curves]


def plot(records: Sequence[dict], path: str | Path, title: str = "") -> Path:
    """Draws the run's curves to `path` (PNG); returns it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = series(records)
    train_losses = sorted(n for n in curves if "/" not in n and not n.startswith(_NOT_LOSSES))
    if not train_losses:
        raise CurvesError("no training loss parts in the metrics (is this a run's "
                          "metrics.jsonl?)")
    headlines = suite_headlines(curves)
    panels = 3 if headlines else 2
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    ax = axes[0]
    for i, name in enumerate(train_losses):
        colour = colours[i % len(colours)]
        steps, values = curves[name]
        ax.plot(steps, values, color=colour, lw=1, label=name)
        if f"eval/{name}" in curves:
            steps, values = curves[f"eval/{name}"]
            ax.plot(steps, values, color=colour, lw=1.5, ls="--", marker=".")
    ax.set_yscale("log")
    ax.set(xlabel="step", title="loss parts (solid: training, dashed: held-out)")
    ax.legend(fontsize=7, ncol=2)

    ax = axes[1]
    accuracies = sorted(n for n in curves if n.startswith("eval/acc_"))
    for i, name in enumerate(accuracies):
        steps, values = curves[name]
        ax.plot(steps, values, color=colours[i % len(colours)], marker="o", label=name[5:])
    ax.set(xlabel="step", ylim=(0, 1.02), title="held-out teacher-forced accuracy")
    if accuracies:
        ax.legend(fontsize=8)

    if headlines:
        ax = axes[2]
        for i, (suite, key) in enumerate(headlines):
            colour = colours[i % len(colours)]
            steps, values = curves[f"suites/{suite}/{key}"]
            lo = dict(zip(*curves.get(f"suites/{suite}/{key}_lo", ([], []))))
            hi = dict(zip(*curves.get(f"suites/{suite}/{key}_hi", ([], []))))
            below = [v - lo.get(s, v) for s, v in zip(steps, values)]
            above = [hi.get(s, v) - v for s, v in zip(steps, values)]
            ax.errorbar(steps, values, yerr=[below, above], color=colour, marker="o",
                        capsize=3, label=f"{suite}: {key}")
            if f"suites/{suite}/best_baseline" in curves:
                b_steps, b_values = curves[f"suites/{suite}/best_baseline"]
                ax.plot(b_steps, b_values, color=colour, ls=":", lw=1)
        ax.set(xlabel="step", ylim=(-0.02, 1.02),
               title="suites: headline [95%] (dotted: best blind baseline)")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A run's training curves as one PNG.")
    parser.add_argument("--workdir", required=True, help="the run directory")
    parser.add_argument("--out", default=None, help="PNG path (default WORKDIR/curves.png)")
    args = parser.parse_args(argv)
    metrics = Path(args.workdir) / writers.JSONL_NAME
    if not metrics.is_file():
        raise SystemExit(f"{metrics}: no such file (train a run into {args.workdir} first)")
    try:
        out = plot(writers.read_jsonl(str(metrics)), args.out or Path(args.workdir) /
                   "curves.png", title=str(args.workdir))
    except CurvesError as e:
        raise SystemExit(f"{metrics}: {e}") from None
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
