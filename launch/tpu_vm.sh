#!/bin/bash
# omni_jax on a Cloud TPU VM slice: the same command on every worker, over
# `gcloud compute tpus tpu-vm ssh --worker=all`. On TPU VMs jax.distributed.initialize()
# finds the coordinator, the worker count and this worker's id by itself.
#
#   launch/tpu_vm.sh [--tpu=NAME] [--zone=ZONE] [--project=P] [--dir=DIR] [--setup]
#                    [--dry_run] -- --config=configs/omni_1b.py --workdir=gs://bucket/run
#
# Everything after `--` goes to `python -m omni_jax.main` (with
# --config.distributed.initialize=True appended). The code must already be at DIR on every
# worker (default ~/omni_jax: git clone it there, or copy it with
# `gcloud compute tpus tpu-vm scp --recurse --worker=all`); --setup first runs
# `pip install -e .` in DIR on every worker. The workdir must be shared by all workers
# (a GCS bucket or a mounted filesystem). --dry_run prints the gcloud commands only.
# Defaults come from TPU_NAME, ZONE, PROJECT, REMOTE_DIR and PYTHON (default python3).

set -euo pipefail

tpu="${TPU_NAME:-}"
zone="${ZONE:-}"
project="${PROJECT:-}"
remote_dir="${REMOTE_DIR:-~/omni_jax}"
python="${PYTHON:-python3}"
setup=0
dry_run=0

usage() {
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --tpu=*) tpu="${1#*=}" ;;
    --zone=*) zone="${1#*=}" ;;
    --project=*) project="${1#*=}" ;;
    --dir=*) remote_dir="${1#*=}" ;;
    --setup) setup=1 ;;
    --dry_run) dry_run=1 ;;
    --) shift; break ;;
    *) echo "unknown option: $1" >&2; usage ;;
  esac
  shift
done
if [[ -z "${tpu}" || -z "${zone}" || $# -eq 0 ]]; then
  usage
fi

# The remote command is one string: quote every argument for the remote shell.
main_args="$(printf ' %q' "$@")"
run_cmd="cd ${remote_dir} && ${python} -m omni_jax.main${main_args} --config.distributed.initialize=True"
setup_cmd="cd ${remote_dir} && ${python} -m pip install -e ."

ssh_all() {
  local cmd=(gcloud compute tpus tpu-vm ssh "${tpu}" "--zone=${zone}" --worker=all)
  if [[ -n "${project}" ]]; then
    cmd+=("--project=${project}")
  fi
  cmd+=("--command=$1")
  if [[ "${dry_run}" == "1" ]]; then
    printf '%q ' "${cmd[@]}"
    echo
  else
    "${cmd[@]}"
  fi
}

if [[ "${setup}" == "1" ]]; then
  ssh_all "${setup_cmd}"
fi
ssh_all "${run_cmd}"
