#!/usr/bin/env bash
# The CUDA MPS control daemon, so that several runs on one GPU (hydra/launcher=gpu_shared) run
# their kernels side by side instead of taking turns.
#
#   scripts/mps.sh start     start the daemon (nothing to do if one already answers)
#   scripts/mps.sh stop      ask it to quit (its server ends once its clients have)
#   scripts/mps.sh status    say whether one answers; exit status 0 if so, 3 if not
#   ... --print              print the commands instead of running them (no GPU needed)
#
# The daemon and the runs find each other through CUDA_MPS_PIPE_DIRECTORY (default
# /tmp/nvidia-mps; logs in CUDA_MPS_LOG_DIRECTORY, default /tmp/nvidia-log): start the runs
# from a shell with the same values. Start it before the runs (a process that opened the GPU
# earlier does not use it) and stop it after them. It changes no setting of the GPU (compute
# mode, clocks): under MPS the GPU stays shared with processes that do not use it.
# nvidia-cuda-mps-control is looked up on PATH, then in /usr/local/nvidia/bin; MPS_CONTROL
# names another (the tests use a stand-in).
set -euo pipefail

usage() {
  echo "usage: scripts/mps.sh start|stop|status [--print]" >&2
  exit 2
}
[ $# -ge 1 ] || usage
action=$1
shift
case $action in start | stop | status) ;; *) usage ;; esac
print=0
for arg in "$@"; do
  case $arg in
    --print) print=1 ;;
    *) usage ;;
  esac
done

export CUDA_MPS_PIPE_DIRECTORY=${CUDA_MPS_PIPE_DIRECTORY:-/tmp/nvidia-mps}
export CUDA_MPS_LOG_DIRECTORY=${CUDA_MPS_LOG_DIRECTORY:-/tmp/nvidia-log}

control=${MPS_CONTROL:-}
if [ -z "$control" ]; then
  control=$(command -v nvidia-cuda-mps-control || true)
  if [ -z "$control" ] && [ -x /usr/local/nvidia/bin/nvidia-cuda-mps-control ]; then
    control=/usr/local/nvidia/bin/nvidia-cuda-mps-control
  fi
fi

if [ "$print" = 1 ]; then
  bin=${control:-nvidia-cuda-mps-control}
  env="CUDA_MPS_PIPE_DIRECTORY=$CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY=$CUDA_MPS_LOG_DIRECTORY"
  case $action in
    start)
      echo "mkdir -p $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY"
      echo "$env $bin -d"
      ;;
    stop) echo "echo quit | $env $bin" ;;
    status) echo "echo get_server_list | $env $bin" ;;
    *) usage ;;
  esac
  exit 0
fi

if [ -z "$control" ]; then
  echo "mps: nvidia-cuda-mps-control not found (no NVIDIA driver tools here): runs share the GPU without MPS" >&2
  exit 1
fi

answers() { # the daemon answers on its pipe
  [ -e "$CUDA_MPS_PIPE_DIRECTORY/control" ] || return 1
  echo get_server_list | timeout 5 "$control" >/dev/null 2>&1
}

case $action in
  start)
    if answers; then
      echo "mps: already running ($CUDA_MPS_PIPE_DIRECTORY)"
      exit 0
    fi
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    "$control" -d
    for _ in $(seq 50); do
      if answers; then
        echo "mps: started ($CUDA_MPS_PIPE_DIRECTORY, logs in $CUDA_MPS_LOG_DIRECTORY)"
        exit 0
      fi
      sleep 0.1
    done
    echo "mps: the daemon did not answer within 5 s (see $CUDA_MPS_LOG_DIRECTORY/control.log)" >&2
    exit 1
    ;;
  stop)
    if ! answers; then
      echo "mps: not running ($CUDA_MPS_PIPE_DIRECTORY)"
      exit 0
    fi
    echo quit | "$control"
    echo "mps: stopped"
    ;;
  status)
    if answers; then
      echo "mps: running ($CUDA_MPS_PIPE_DIRECTORY)"
      exit 0
    fi
    echo "mps: not running ($CUDA_MPS_PIPE_DIRECTORY)"
    exit 3
    ;;
  *) usage ;;
esac
