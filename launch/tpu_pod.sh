#!/usr/bin/env bash
# Runs a jaxunlearn experiment on every host of a Cloud TPU VM pod slice.
#
#   launch/tpu_pod.sh TPU_NAME ZONE experiments/configs/default.py gs://BUCKET/workdir [--config.seeds=8 ...]
#
# Copies this checkout to every worker, installs it, and starts the same binary on all hosts with
# --config.distributed=True, so `jax.distributed.initialize()` joins them into one job (the TPU
# runtime supplies the coordinator address). The workdir should be a GCS path that every host
# can write (orbax checkpoints are written collectively and resume after preemption).
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: $0 TPU_NAME ZONE CONFIG WORKDIR [extra flags]" >&2
  exit 2
fi
TPU_NAME=$1; ZONE=$2; CONFIG=$3; WORKDIR=$4; shift 4
REPO_DIR=jaxunlearn
gcloud compute tpus tpu-vm scp --recurse --zone="$ZONE" --worker=all \
  "$(git rev-parse --show-toplevel)" "$TPU_NAME:~/$REPO_DIR"
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="
  set -e; cd ~/$REPO_DIR
  python3 -m pip install -q -e . 'jax[tpu]' -f https://storage.googleapis.com/jax-releases/libtpu_releases.html
  python3 -m experiments.main --config=$CONFIG --workdir=$WORKDIR --config.distributed=True $*"
