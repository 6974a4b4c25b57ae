#!/usr/bin/env bash
# test_sigkill.sh - a rank killed with SIGKILL (issue 6, item 3), mpirun -np 2.
#   kill_rank1_mid_step        rank 1 dies between checkpoints: the job ends
#                              within 60 s (mpirun notices the death and
#                              kills the other rank), the newest checkpoint is
#                              intact, and the same command resumes from it
#                              and finishes
#   kill_rank0_while_writing   rank 0 (the writer) dies while a checkpoint is
#                              being written (checkpoint every step; killed as
#                              soon as a temporary file shows): no partial file
#                              under a checkpoint name, the re-run resumes from
#                              the newest complete checkpoint, and the stale
#                              temporary file is deleted by the next save
source "$(dirname "$0")/lib.sh"
make_base
LIMIT=60

# killed NAME D SINCE: after the job's end, within LIMIT s, checks the
# checkpoints and re-runs; $job, $rank_args are set by the caller
killed() {
  local name=$1 since=$2
  wait $job
  local rc=$? secs=$(($(date +%s) - since))
  if [ $secs -ge $LIMIT ]; then fail $name "the job took ${secs}s to end after the kill"; return 1; fi
  if [ $rc -eq 0 ]; then fail $name "the job reported success after a rank was killed"; return 1; fi
  local f bad=""
  for f in "$D"/ckpt/flow-*.safetensors; do $CK finite "$f" >/dev/null || bad="$bad $(basename "$f")"; done
  if [ -n "$bad" ]; then fail $name "unreadable checkpoint(s):$bad"; return 1; fi
  k=$(ckpt_step "$(newest "$D")")
  flow_mpi 2 "$D" "${P[@]}" >"$T/$name.2.log" 2>&1
  local rc2=$?
  if [ $rc2 -ne 0 ]; then fail $name "re-run: exit $rc2"; show "$T/$name.2.log"; return 1; fi
  if ! grep -q "resumed from .*flow-$(printf %08d "$k").safetensors (step $k)" "$T/$name.2.log" ||
    [ ! -f "$D/ckpt/flow-$(printf %08d "$STEPS").safetensors" ]; then
    fail $name "re-run did not resume from step $k and finish"; show "$T/$name.2.log"; return 1
  fi
  ended="job ended ${secs}s after the kill with exit $rc"
  return 0
}

name=kill_rank1_mid_step
STEPS=60
P=(--set flow.steps=$STEPS --set flow.ckpt_every=10)
D=$T/$name
new_run "$D"
flow_mpi 2 "$D" "${P[@]}" >"$T/$name.log" 2>&1 &
job=$!
if ! wait_step "$D" 15 60; then fail $name "the run did not start"; show "$T/$name.log"
else
  ranks=($(procs $job "$FMNAME"))
  kill -KILL "${ranks[1]}"
  t0=$(date +%s)
  killed $name $t0 && pass "$name ($ended; resumed from step $k and finished)"
fi

name=kill_rank0_while_writing
# enough steps that the job cannot finish while the loop below looks for a
# temporary file (a tiny checkpoint exists as one for well under 1 ms)
STEPS=300
P=(--set flow.steps=$STEPS --set flow.ckpt_every=1 --set run.ckpt_keep=2)
D=$T/$name
new_run "$D"
flow_mpi 2 "$D" "${P[@]}" >"$T/$name.log" 2>&1 &
job=$!
if ! wait_step "$D" 10 60; then fail $name "the run did not start"; show "$T/$name.log"
else
  ranks=($(procs $job "$FMNAME"))
  # rank 0 is the one with the lower pid under mpirun only by habit: ask /proc
  r0=""
  for p in "${ranks[@]}"; do
    tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=0' && r0=$p
  done
  hit=0
  for ((i = 0; i < 20000 && hit == 0; i++)); do # compgen: no process per look
    if compgen -G "$D/ckpt/flow-*.safetensors.tmp.*" >/dev/null; then kill -KILL "$r0"; hit=1; fi
  done
  [ $hit -eq 1 ] || kill -KILL "$r0"
  t0=$(date +%s)
  tmp=$(ls "$D"/ckpt/ | grep -c '\.tmp\.')
  if killed $name $t0; then
    left=$(ls "$D"/ckpt/ | grep -c '\.tmp\.')
    if [ "$left" -ne 0 ]; then fail $name "a stale temporary file survived the next save"
    else pass "$name ($ended; $tmp temporary file(s) left by the kill, removed by the next save; resumed from step $k)"; fi
  fi
fi
finish
