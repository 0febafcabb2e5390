#!/usr/bin/env bash
# Runs a jaxunlearn experiment as NUM_PROCESSES processes of one job on this machine: the code path
# of a multi-host run (jax.distributed, one data mesh over every process's devices, orbax writing
# checkpoints collectively, process 0 reporting), rehearsed on one CPU box.
#
#   launch/local.sh 2 experiments/configs/default.py:smoke /tmp/ju_mp [--config.seeds=2 ...]
#   BINARY=experiments.sweep launch/local.sh 2 experiments/configs/default.py /tmp/ju_mp \
#       --scenario=class_0 --rule=random_label --values=1e-3,1e-2
#
# Each process gets LOCAL_DEVICES CPU devices (default 2); they meet at a coordinator on a free
# local port and exchange data over gloo. Process 0's output is shown here; process i's goes to
# WORKDIR/logs/process_<i>.log. PYTHON picks the interpreter (default python3), BINARY the module
# (default experiments.main). Exits with the
# status of the first process that fails, after stopping the others (they would wait for it in
# their collectives), else 0.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 NUM_PROCESSES CONFIG WORKDIR [extra flags]" >&2
  exit 2
fi
NUM=$1; CONFIG=$2; WORKDIR=$3; shift 3
PYTHON=${PYTHON:-python3}
cd "$(dirname "$0")/.."
PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export JAX_PLATFORMS=cpu
export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${LOCAL_DEVICES:-2}"
mkdir -p "$WORKDIR/logs"

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' INT TERM
for ((i = 0; i < NUM; i++)); do
  args=(-m "${BINARY:-experiments.main}" --config="$CONFIG" --workdir="$WORKDIR" --config.distributed=True
        --coordinator_address="127.0.0.1:$PORT" --num_processes="$NUM" --process_id="$i" "$@")
  if [ "$i" -eq 0 ]; then
    "$PYTHON" "${args[@]}" &
  else
    "$PYTHON" "${args[@]}" >"$WORKDIR/logs/process_$i.log" 2>&1 &
  fi
  pids+=($!)
done

status=0
running=("${pids[@]}")
while [ ${#running[@]} -gt 0 ]; do
  rc=0
  wait -n -p finished "${running[@]}" || rc=$?
  left=()
  for pid in "${running[@]}"; do [ "$pid" = "$finished" ] || left+=("$pid"); done
  running=("${left[@]}")
  if [ "$rc" -ne 0 ]; then
    echo "$0: process $finished exited with status $rc; stopping the others" >&2
    kill "${running[@]}" 2>/dev/null || true
    wait || true
    status=$rc
    break
  fi
done
exit "$status"
