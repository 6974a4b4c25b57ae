# shellcheck shell=bash
# lib.sh - shared set-up of the fault tests (sourced by tests/fault/test_*.sh),
# on top of tests/lib.sh (pass, fail, skip, show, at_exit, finish, T, ...).
#
# Every test trains only the flow stage of configs/tiny.yaml, shrunk (256
# images, 1 OpenMP thread per rank, no sample grids, a metrics line per step),
# on the latents of a 2-step VAE made once per test file by make_base. What a
# test checks is the checkpoint/resume machinery, not the model.
#
#   make_base                   $BASE = a run dir with vae + encode done
#   new_run DIR                 DIR = a copy of $BASE
#   flow DIR ARGS...            fmtrain (1 rank), flow stage, into DIR
#   flow_mpi N DIR ARGS...      the same under mpirun -np N
#   wait_step DIR N SECS        wait until DIR/metrics.jsonl has flow step >= N
#   procs PID NAME              descendants of PID named NAME (rank pids)
#   newest DIR                  the newest flow checkpoint of run DIR
# FAULT_KEEP=1 keeps the temporary directory (as FM_TEST_KEEP does).
[ -n "${FAULT_KEEP:-}" ] && export FM_TEST_KEEP=1
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" fault
FMNAME=$(basename "$FMTRAIN" | cut -c1-15) # its command name, as ps shows it
CK="$PY $ROOT/tests/fault/ckpt.py"
export OMP_NUM_THREADS=1 # 2 ranks x 1 thread on 2 cores

# The overrides of every flow run (the tests add their own after these).
SETS=(--set data.train_limit=256 --set data.test_limit=100 --set run.stages=[flow] --set flow.sample_every=0
      --set run.log_every=1)

make_base() {
  BASE=$T/base
  "$FMTRAIN" "$TINY" --out "$BASE" --set data.train_limit=256 --set data.test_limit=100 \
    --set run.stages=[vae,encode] --set vae.steps=2 --set vae.warmup=1 >"$T/base.log" 2>&1 || {
    echo "FAIL $SUITE/setup: the base run (vae + encode) failed"; show "$T/base.log"; exit 1; }
}
new_run() { rm -rf "$1" && cp -r "$BASE" "$1" && rm -f "$1/metrics.jsonl"; }
# timeout: a hung run is a failure (exit 124), never a hung suite
flow() { local d=$1; shift; timeout -k 5 120 "$FMTRAIN" "$TINY" --out "$d" "${SETS[@]}" "$@"; }
flow_mpi() {
  local n=$1 d=$2; shift 2
  MPI_TIMEOUT=120 mpi "$n" "$FMTRAIN" "$TINY" --out "$d" "${SETS[@]}" "$@"
}
wait_step() {
  local d=$1 n=$2 secs=$3 i
  for ((i = 0; i < secs * 100; i++)); do
    if [ -f "$d/metrics.jsonl" ] && tail -n 1 "$d/metrics.jsonl" | grep -q '"stage":"flow"' &&
      [ "$(tail -n 1 "$d/metrics.jsonl" | sed 's/.*"step":\([0-9]*\).*/\1/')" -ge "$n" ]; then
      return 0
    fi
    sleep 0.01
  done
  return 1
}
# procs PID NAME: the descendants of PID whose command is NAME (e.g. the
# fmtrain ranks under a backgrounded `flow_mpi`), one pid a line
procs() {
  local c
  for c in $(ps -o pid= --ppid "$1"); do
    [ "$(ps -o comm= -p "$c")" = "$2" ] && echo "$c"
    procs "$c" "$2"
  done
}
newest() { ls "$1"/ckpt/flow-*.safetensors 2>/dev/null | tail -n 1; }
ckpt_step() { basename "$1" .safetensors | sed 's/^flow-0*//; s/^$/0/'; }
