"""Launchers: sweep expansion (launch/sweep.py), the Slurm / TPU VM shell scripts, the GKE Job."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from absl import flags
from ml_collections import config_flags

from omni_jax import configuration

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
TINY = str(REPO / "configs" / "tiny.py")


def _load_sweep_module():
    spec = importlib.util.spec_from_file_location("launch_sweep", LAUNCH / "sweep.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    return module


sweep = _load_sweep_module()


def parse_main_flags(argv):
    """(config, workdir) as `omni_jax.main` would parse these arguments."""
    argv = ["main", *argv]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                    sys_argv=argv)  # overrides are found in this argv
    flags.DEFINE_string("workdir", None, "", flag_values=values)
    values(argv)
    return values.config, values.workdir


def test_tiny_sweep_expands_to_valid_runs(tmp_path):
    runs = sweep.plan(TINY, str(tmp_path / "base"), extra=["--config.train.steps=50"])
    assert [r.name for r in runs] == [
        "00_thinking-explicit", "01_thinking-implicit",
        "02_thinking-negative_ce_think_form-paper",
        "03_thinking-negative_ce_think_form-unlikelihood"]
    assert runs[3].overrides == {"model.thinking": "negative_ce",
                                 "loss.think_form": "unlikelihood"}
    for run in runs:
        assert run.workdir == f"{tmp_path}/base/{run.name}"
        assert run.argv[:3] == ("python", "-m", "omni_jax.main")
        # The command line, parsed as omni_jax.main parses it, gives the run's config.
        config, workdir = parse_main_flags(run.argv[3:])
        assert workdir == run.workdir
        assert config.train.steps == 50
        for field, value in run.overrides.items():
            node = config
            for part in field.split("."):
                node = node[part]
            assert node == value
        configuration.validate(config)


def _config_file(tmp_path, sweep_source: str, name: str = "exp.py") -> str:
    file = tmp_path / name
    file.write_text(textwrap.dedent("""
        from configs import default

        def get_config(arg=None):
            c = default.get_config()
            c.name = arg or "exp"
            return c
        """) + textwrap.dedent(sweep_source))
    return str(file)


def test_list_form_and_variant_arg(tmp_path):
    path = _config_file(tmp_path, """
        def get_sweep(arg=None):
            return [{"model.fusion": "cross_attention", "train.frozen": ("encoder/.*",)},
                    {"loss.think": 0.5, "name": arg}]
        """)
    runs = sweep.plan(f"{path}:v1", "/runs", prefix=["sbatch", "launch/slurm.sbatch"])
    assert [r.name for r in runs] == ["00_fusion-cross_attention_frozen-encoder.", "01_think-0.5_name-v1"]
    assert runs[0].argv[:3] == ("sbatch", "launch/slurm.sbatch", f"--config={path}:v1")
    config, _ = parse_main_flags(runs[0].argv[2:])
    assert config.model.fusion == "cross_attention"
    assert tuple(config.train.frozen) == ("encoder/.*",)


@pytest.mark.parametrize("source, match", [
    ("", "defines no get_sweep"),
    ("def get_sweep(arg=None):\n    return {'model.nope': [1]}\n", "'model.nope'.*no 'nope'"),
    ("def get_sweep(arg=None):\n    return {'train.steps': ['many']}\n", "'train.steps'.*'many'"),
    ("def get_sweep(arg=None):\n    return {'model.thinking': 'explicit'}\n", "non-empty list"),
    ("def get_sweep(arg=None):\n    return [{'model.thinking': 'bogus'}]\n",
     r"run 00_thinking-bogus: config.model.thinking: 'bogus' is not one of"),
])
def test_bad_sweeps_are_named(tmp_path, source, match):
    with pytest.raises(sweep.SweepError, match=match):
        sweep.plan(_config_file(tmp_path, source), "/runs")


def test_extra_arguments_are_validated_with_the_runs():
    # Extra flags count: 5 steps are fewer than tiny's 40 warmup steps.
    with pytest.raises(sweep.SweepError, match="run 00_.*train.warmup_steps"):
        sweep.plan(TINY, "/runs", extra=["--config.train.steps=5"])
    with pytest.raises(sweep.SweepError, match=r"run 00_.*could not parse .*--config.train.nope=5.*'nope'"):
        sweep.plan(TINY, "/runs", extra=["--config.train.nope=5"])
    assert len(sweep.plan(TINY, "/runs", extra=["--mode=eval"])) == 4  # not a config flag


def test_main_writes_and_runs_commands(tmp_path, capsys):
    path = _config_file(tmp_path, """
        def get_sweep(arg=None):
            return {"seed": [1, 2]}
        """)
    out = tmp_path / "commands.sh"
    assert sweep.main([f"--config={path}", f"--base_workdir={tmp_path}/runs",
                       f"--out={out}"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == out.read_text().splitlines()
    assert printed[1].endswith(f"--config.seed=2 --workdir={tmp_path}/runs/01_seed-2")
    # --run: each "job" here makes its workdir (the last argument), one after another.
    make_workdir = ("import sys, pathlib; "
                    "pathlib.Path(sys.argv[-1].split('=', 1)[1]).mkdir(parents=True)")
    prefix = f"{sys.executable} -c \"{make_workdir}\""
    assert sweep.main([f"--config={path}", f"--base_workdir={tmp_path}/runs", "--run",
                       f"--prefix={prefix}"]) == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["00_seed-1", "01_seed-2"]
    # A failing run stops the sweep with its status.
    assert sweep.main([f"--config={path}", f"--base_workdir={tmp_path}/runs", "--run",
                       f"--prefix={sys.executable} -c 'raise SystemExit(3)'"]) == 3
    assert sweep.main([f"--config={path}:x", "--base_workdir=/r"]) == 0
    assert sweep.main(["--config=/no/such.py", "--base_workdir=/r"]) == 2


# ---- shell scripts -----------------------------------------------------------------------

SCRIPTS = ["slurm.sbatch", "slurm_task.sh", "tpu_vm.sh"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_shell_scripts_parse(script):
    result = subprocess.run(["bash", "-n", str(LAUNCH / script)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stderr


def _slurm_task(env_updates: dict) -> list[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "JAX_LOCAL_DEVICE_IDS", "CUDA_VISIBLE_DEVICES"))}
    env.update(OMNI_DRY_RUN="1", PYTHON="py", **env_updates)
    result = subprocess.run(["bash", str(LAUNCH / "slurm_task.sh"), "--config=c.py",
                             "--workdir=/w"], env=env, capture_output=True, text=True,
                            check=True)
    return result.stdout.splitlines()


@pytest.mark.parametrize("env, device_ids", [
    # One process per GPU, every GPU visible: JAX takes GPU SLURM_LOCALID by itself.
    ({"SLURM_NTASKS_PER_NODE": "8", "SLURM_LOCALID": "3"}, ""),
    # One GPU bound to each task: it is device 0 of that task.
    ({"SLURM_NTASKS_PER_NODE": "8", "SLURM_LOCALID": "3", "CUDA_VISIBLE_DEVICES": "3"}, "0"),
    # One process per node: all of its GPUs.
    ({"SLURM_NTASKS_PER_NODE": "1", "SLURM_GPUS_ON_NODE": "4"}, "0,1,2,3"),
    ({"SLURM_TASKS_PER_NODE": "1(x2)", "CUDA_VISIBLE_DEVICES": "0,1"}, "0,1"),
])
def test_slurm_task_chooses_devices(env, device_ids):
    ids_line, command = _slurm_task(env)
    assert ids_line == f"JAX_LOCAL_DEVICE_IDS={device_ids}"
    assert command == ("py -m omni_jax.main --config=c.py --workdir=/w "
                       "--config.distributed.initialize=True")


def test_slurm_sbatch_runs_the_task_script():
    text = (LAUNCH / "slurm.sbatch").read_text()
    assert "#SBATCH --ntasks-per-node=8" in text and "#SBATCH --gpus-per-node=8" in text
    assert 'srun --kill-on-bad-exit=1 bash launch/slurm_task.sh "$@"' in text


def test_tpu_vm_dry_run():
    env = {k: v for k, v in os.environ.items() if k not in ("TPU_NAME", "ZONE", "PROJECT")}
    result = subprocess.run(
        ["bash", str(LAUNCH / "tpu_vm.sh"), "--tpu=pod", "--zone=us-central2-b", "--setup",
         "--dry_run", "--", "--config=configs/tiny.py:negative_ce", "--workdir=gs://b/run 1"],
        env=env, capture_output=True, text=True, check=True)
    setup, run = result.stdout.splitlines()
    assert setup.startswith("gcloud compute tpus tpu-vm ssh pod --zone=us-central2-b "
                            "--worker=all --command=")
    assert "pip\\ install\\ -e\\ ." in setup
    assert "--worker=all" in run and "omni_jax.main" in run
    assert "--config.distributed.initialize=True" in run
    assert "run\\\\\\ 1" in run  # the space survives both shells
    missing = subprocess.run(["bash", str(LAUNCH / "tpu_vm.sh"), "--", "--config=x"], env=env,
                             capture_output=True, text=True, check=False)
    assert missing.returncode == 2


# ---- GKE ---------------------------------------------------------------------------------

def test_gke_job_yaml():
    yaml = pytest.importorskip("yaml")
    docs = list(yaml.safe_load_all((LAUNCH / "gke_job.yaml").read_text()))
    service = next(d for d in docs if d["kind"] == "Service")
    job = next(d for d in docs if d["kind"] == "Job")
    assert service["spec"]["clusterIP"] == "None"
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["parallelism"] == spec["completions"]
    assert pod["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["selector"].items() <= job["spec"]["template"]["metadata"][
        "labels"].items()
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert "job-completion-index" in env["PROCESS_ID"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert int(env["NUM_PROCESSES"]["value"]) == spec["completions"]
    args = container["args"]
    port = service["spec"]["ports"][0]["port"]
    coordinator = f"{job['metadata']['name']}-0.{service['metadata']['name']}:{port}"
    assert f"--config.distributed.coordinator_address={coordinator}" in args
    assert "--config.distributed.process_id=$(PROCESS_ID)" in args
    assert "--config.distributed.num_processes=$(NUM_PROCESSES)" in args
    assert "--config.distributed.initialize=True" in args
    assert container["resources"]["limits"]["nvidia.com/gpu"] >= 1


def test_sweep_summary_tabulates_finished_runs_and_names_missing_ones(tmp_path):
    runs = sweep.plan(TINY, str(tmp_path / "base"))
    done = Path(runs[1].workdir)
    done.mkdir(parents=True)
    (done / "report.json").write_text(json.dumps(dict(step=400, wall_seconds=750.0, suites={
        "turn_taking": {"success_rate": 0.75, "success_rate_ci95": [0.51, 0.9]},
        "asr": {"wer": 0.88, "wer_ci95": [0.81, 0.96]}})))
    table = sweep.summary(runs).splitlines()
    assert table[0].startswith("| run | turn-taking success | ASR WER |")
    assert len(table) == 2 + len(runs)
    assert table[3] == ("| 01_thinking-implicit | 0.75 [0.51, 0.9] | 0.88 [0.81, 0.96] | n/a "
                        "| n/a | 400 | 12.5 min |")
    assert table[2].count("not run") == len(table[0].split("|")) - 3
    (Path(runs[0].workdir)).mkdir(parents=True)
    (Path(runs[0].workdir) / "report.json").write_text("{broken")
    with pytest.raises(sweep.SweepError, match="00_thinking-explicit/report.json"):
        sweep.summary(runs)
