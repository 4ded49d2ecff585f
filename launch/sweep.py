r"""Expands a config's sweep into runs: one `omni_jax.main` command line per run.

  python launch/sweep.py --config=configs/tiny.py --base_workdir=/tmp/sweep
  python launch/sweep.py --config=configs/tiny.py:stage1 --base_workdir=/tmp/sweep --run
  python launch/sweep.py --config=configs/tiny.py --base_workdir=/shared/sweep \
      --prefix="sbatch launch/slurm.sbatch" --out=commands.sh -- --config.train.steps=200

The convention: a config module may define `get_sweep(arg=None)` (`arg` is the variant
string after `:`, as for `get_config`) returning either
  a dict of axes    {"model.thinking": ["explicit", "implicit"], "train.learning_rate":
                     [1e-3, 3e-3]}: every combination, the first axis varying slowest;
  a list of runs    [{"model.thinking": "explicit"}, {"model.thinking": "implicit",
                     "loss.think": 0.5}]: each dict one run.
Keys are dotted config fields. Every run's overrides are applied to `get_config(arg)` and
the command line's config (parsed as `omni_jax.main` parses it, EXTRA included) must pass
`omni_jax.configuration.validate`, so a bad sweep fails here, before anything is launched. Run names are `NN_leaf-value_...` (NN the run's index), the workdir
BASE_WORKDIR/NAME.

Each line printed (or written to --out) is
  python -m omni_jax.main --config=CONFIG --config.FIELD=VALUE ... --workdir=BASE/NAME [EXTRA]
with `--prefix` replacing `python -m omni_jax.main` (e.g. a launcher that takes the
main job's arguments: `sbatch launch/slurm.sbatch`, `python launch/local.py
--num_processes=2 -- -m omni_jax.main`). EXTRA is whatever follows `--`. `--run` runs the
lines here, one after another, and stops at the first failure (exit status of that run).
`--summary` prints instead a markdown table of the finished runs' DIR/report.json: per run
the headline figures (with 95% intervals) of `SUMMARY_KEYS` and the wall time; a run
without a report shows as "not run".
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import itertools
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # config files import `configs.default`
    sys.path.insert(0, str(REPO_ROOT))


class SweepError(ValueError):
    """A sweep that cannot be expanded; the message names the config and the field."""


@dataclasses.dataclass(frozen=True)
class Run:
    name: str
    overrides: dict  # dotted field -> value
    workdir: str
    argv: tuple[str, ...]  # the command line, unquoted

    @property
    def command(self) -> str:
        return shlex.join(self.argv)


def load_config_module(config_path: str):
    """(module, arg) of `path/to/config.py[:arg]`."""
    path, _, arg = config_path.partition(":")
    file = Path(path)
    if not file.is_file():
        raise SweepError(f"{path}: no such config file")
    spec = importlib.util.spec_from_file_location(f"sweep_config_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, (arg or None)


def expand_sweep(sweep) -> list[dict]:
    """The runs of a sweep definition (a dict of axes or a list of override dicts)."""
    if isinstance(sweep, Mapping):
        for field, values in sweep.items():
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
                raise SweepError(f"sweep axis {field!r}: needs a non-empty list of values, "
                                 f"got {values!r}")
        fields = list(sweep)
        return [dict(zip(fields, combo)) for combo in itertools.product(*sweep.values())]
    if isinstance(sweep, Sequence) and not isinstance(sweep, (str, bytes)):
        for i, run in enumerate(sweep):
            if not isinstance(run, Mapping):
                raise SweepError(f"sweep run {i}: must be a dict of dotted overrides, got "
                                 f"{run!r}")
        return [dict(run) for run in sweep]
    raise SweepError(f"get_sweep() must return a dict of axes or a list of dicts, got "
                     f"{type(sweep).__name__}")


def apply_overrides(config, overrides: Mapping):
    """Sets dotted fields in place (the config's types apply: a wrong type is an error)."""
    for field, value in overrides.items():
        *parents, leaf = field.split(".")
        node = config
        for part in parents:
            if part not in node:
                raise SweepError(f"sweep field {field!r}: config has no {part!r}")
            node = node[part]
        if leaf not in node:
            raise SweepError(f"sweep field {field!r}: config has no {leaf!r}")
        try:
            node[leaf] = value
        except (TypeError, ValueError) as e:
            raise SweepError(f"sweep field {field!r}: cannot take {value!r} ({e})") from None
    return config


def format_value(value) -> str:
    """A value as ml_collections' config flags parse it back."""
    if isinstance(value, (list, tuple)):
        return repr(tuple(value))
    return str(value)


def run_name(index: int, overrides: Mapping, width: int = 2) -> str:
    parts = [f"{field.split('.')[-1]}-{format_value(value)}" for field, value in overrides.items()]
    name = "_".join([f"{index:0{width}d}", *parts])
    return re.sub(r"[^A-Za-z0-9._-]+", "", name)


def parse_main_config(main_args: Sequence[str]):
    """The config `omni_jax.main` builds from these arguments: its own `--config` flag
    (ml_collections config_flags, overrides included); other flags are ignored."""
    from absl import flags
    from ml_collections import config_flags

    argv = ["omni_jax.main", *main_args]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                    sys_argv=argv)
    values(argv, known_only=True)
    return values.config


def plan(config_path: str, base_workdir: str, *, prefix: Sequence[str] | None = None,
         extra: Sequence[str] = ()) -> list[Run]:
    """Every run of the config's sweep, each validated after its overrides."""
    from absl import flags

    from omni_jax import configuration  # deferred: `--help` needs no JAX

    module, arg = load_config_module(config_path)
    if not hasattr(module, "get_sweep"):
        raise SweepError(f"{config_path}: the config module defines no get_sweep()")
    runs = expand_sweep(module.get_sweep(arg))
    width = max(2, len(str(len(runs) - 1)))
    command = list(prefix) if prefix else ["python", "-m", "omni_jax.main"]
    out = []
    for index, overrides in enumerate(runs):
        name = run_name(index, overrides, width)
        apply_overrides(module.get_config(arg), overrides)  # names a bad field or value
        workdir = f"{base_workdir.rstrip('/')}/{name}"
        main_args = (f"--config={config_path}",
                     *(f"--config.{field}={format_value(value)}"
                       for field, value in overrides.items()),
                     f"--workdir={workdir}", *extra)
        try:  # the config the job will see, from its own command line
            configuration.validate(parse_main_config(main_args))
        except configuration.ConfigError as e:
            raise SweepError(f"{config_path}: run {name}: {e}") from None
        except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
            # a flag the config flags cannot parse (their own messages are terse)
            raise SweepError(f"{config_path}: run {name}: the job could not parse "
                             f"{shlex.join(main_args)}: {type(e).__name__}: {e}") from None
        out.append(Run(name, overrides, workdir, (*command, *main_args)))
    return out


# (column, suite, metric) of the summary table; the v2 paper's thinking ablation (Table 9)
# reports turn-taking success and ASR WER.
SUMMARY_KEYS = (("turn-taking success", "turn_taking", "success_rate"),
                ("ASR WER", "asr", "wer"),
                ("barge-in F1 (echo 0)", "barge_in_ci", "f1_echo_0"),
                ("pause success", "pause_handling", "success_rate"))


def _figure(scores: Mapping, metric: str) -> str:
    value = scores.get(metric)
    if not isinstance(value, (int, float)):
        return "n/a"
    interval = scores.get(f"{metric}_ci95")
    if isinstance(interval, (list, tuple)) and len(interval) == 2 and None not in interval:
        return f"{value:.3g} [{interval[0]:.3g}, {interval[1]:.3g}]"
    return f"{value:.3g}"


def summary(runs: Sequence[Run]) -> str:
    """A markdown table of the runs' reports (`SUMMARY_KEYS`, the step and wall time)."""
    import json

    head = ["run", *(column for column, _, _ in SUMMARY_KEYS), "step", "wall"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in runs:
        path = Path(run.workdir) / "report.json"
        if not path.is_file():
            lines.append(f"| {run.name} | " + " | ".join(["not run"] * (len(head) - 1)) + " |")
            continue
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise SweepError(f"{path}: unreadable report ({e})") from None
        suites = report.get("suites", {})
        cells = [_figure(suites.get(suite, {}), metric) for _, suite, metric in SUMMARY_KEYS]
        wall = report.get("wall_seconds")
        lines.append(f"| {run.name} | " + " | ".join(cells) + f" | {report.get('step')} | "
                     + (f"{wall / 60:.1f} min" if isinstance(wall, (int, float)) else "n/a")
                     + " |")
    return "\n".join(lines)


def run_all(runs: Sequence[Run]) -> int:
    """Runs one after another; the exit status of the first failure, else 0."""
    for i, run in enumerate(runs):
        print(f"[sweep] {i + 1}/{len(runs)} {run.name}: {run.command}", flush=True)
        status = subprocess.call(list(run.argv))
        if status:
            print(f"[sweep] {run.name} failed with status {status}; stopping", file=sys.stderr,
                  flush=True)
            return status
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        split = argv.index("--")
        argv, extra = argv[:split], argv[split + 1:]
    parser = argparse.ArgumentParser(description="One omni_jax.main command per sweep run.")
    parser.add_argument("--config", required=True, help="path/to/config.py[:variant]")
    parser.add_argument("--base_workdir", required=True, help="runs go to BASE/NAME")
    parser.add_argument("--prefix", default=None,
                        help="command instead of 'python -m omni_jax.main' (shell words)")
    parser.add_argument("--out", default=None, help="also write the commands to this file")
    parser.add_argument("--run", action="store_true", help="run them here, one after another")
    parser.add_argument("--summary", action="store_true",
                        help="print a table of the finished runs' reports instead")
    args = parser.parse_args(argv)
    prefix = shlex.split(args.prefix) if args.prefix else None
    if args.run and prefix is None:
        prefix = [sys.executable, "-m", "omni_jax.main"]  # this interpreter, not PATH's
    try:
        runs = plan(args.config, args.base_workdir, prefix=prefix, extra=extra)
        if args.summary:
            print(summary(runs))
            return 0
    except SweepError as e:
        print(f"sweep: {e}", file=sys.stderr)
        return 2
    lines = [run.command for run in runs]
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    if args.run:
        return run_all(runs)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
