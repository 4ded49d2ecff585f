#!/bin/bash
# One Slurm task of launch/slurm.sbatch: chooses the GPUs this process drives, then runs
# `python -m omni_jax.main ARGS --config.distributed.initialize=True`.
#
# jax.distributed.initialize() reads JAX_LOCAL_DEVICE_IDS when set; otherwise, under Slurm,
# it drives only GPU number SLURM_LOCALID. That is right for one process per GPU when every
# task sees all of the node's GPUs, and wrong in two cases handled here:
#   one process per node        -> every GPU of the node (0..N-1)
#   one GPU bound to each task  -> that GPU, which the task sees as device 0
#     (Slurm's --gpus-per-task binding sets a one-entry CUDA_VISIBLE_DEVICES)
# With OMNI_DRY_RUN=1 it prints the device choice and the command instead of running it.

set -euo pipefail

tasks_per_node="${SLURM_NTASKS_PER_NODE:-${SLURM_TASKS_PER_NODE:-1}}"
tasks_per_node="${tasks_per_node%%(*}"  # "8(x2)" -> "8"
visible="${CUDA_VISIBLE_DEVICES:-}"

num_gpus() {
  if [[ -n "${SLURM_GPUS_ON_NODE:-}" ]]; then
    echo "${SLURM_GPUS_ON_NODE}"
  elif [[ -n "${visible}" ]]; then
    awk -F, '{print NF}' <<< "${visible}"
  else
    nvidia-smi -L 2>/dev/null | wc -l
  fi
}

if [[ -z "${JAX_LOCAL_DEVICE_IDS:-}" ]]; then
  if [[ "${tasks_per_node}" == "1" ]]; then
    count="$(num_gpus)"
    if [[ "${count}" -gt 0 ]]; then
      JAX_LOCAL_DEVICE_IDS="$(seq -s, 0 $((count - 1)))"
      export JAX_LOCAL_DEVICE_IDS
    fi
  elif [[ -n "${visible}" && "${visible}" != *,* ]]; then
    export JAX_LOCAL_DEVICE_IDS=0
  fi
fi

command=("${PYTHON:-python}" -m omni_jax.main "$@" --config.distributed.initialize=True)
if [[ "${OMNI_DRY_RUN:-0}" == "1" ]]; then
  echo "JAX_LOCAL_DEVICE_IDS=${JAX_LOCAL_DEVICE_IDS:-}"
  echo "${command[*]}"
  exit 0
fi
exec "${command[@]}"
