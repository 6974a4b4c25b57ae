#!/usr/bin/env bash
# test_preempt.sh - preemption (issue 6, item 2) under mpirun -np 2.
# A signal -> every rank stops at the same step boundary, rank 0 writes a
# checkpoint of exactly that step, the job exits 75, and the same command run
# again resumes from that checkpoint and completes.
#   usr1_one_rank   SIGUSR1 to one rank only (the other learns it at the boundary)
#   term_one_rank   SIGTERM to one rank only (what Slurm's scancel / time limit sends)
#   usr1_mpirun     SIGUSR1 to mpirun, which forwards it to every rank
#   term_mpirun     SIGTERM to mpirun: Open MPI 4.1 does NOT forward it as such:
#                   it aborts the job (SIGCONT, wait, SIGTERM, wait, SIGKILL to the
#                   ranks; each wait is odls_base_sigkill_timeout, 1 s by default)
#                   and exits 1 whatever the ranks return. The ranks checkpoint at
#                   the boundary if a step + checkpoint fits in the second wait.
#                   The test sets the wait to 3 s (a sanitizer build on a busy
#                   machine needs more than 1 s), checks the checkpoint and the
#                   resume, and that mpirun's status is 1 or 75.
#   term_single     SIGTERM to a 1-rank run without mpirun -> 75
#   usr1_eval_generation  SIGUSR1 while the eval stage generates -> 75, and
#                   the re-run reuses the saved classifier
source "$(dirname "$0")/lib.sh"
make_base
P=(--set flow.steps=100 --set flow.ckpt_every=30)

# start NAME: a 2-rank run in the background; $job = its shell, $mpirun, $ranks
start() {
  D=$T/$1
  new_run "$D"
  flow_mpi 2 "$D" "${P[@]}" >"$T/$1.log" 2>&1 &
  job=$!
  if ! wait_step "$D" 5 60; then return 1; fi
  mpirun=$(procs $job mpirun)
  ranks=$(procs $job "$FMNAME")
  [ -n "$mpirun" ] && [ "$(echo $ranks | wc -w)" -eq 2 ]
}

# check NAME SIG WANT_RC...: after the signal, the job's status is one of
# WANT_RC, the newest checkpoint is the step of the "stopped" message
check() {
  local name=$1 sig=$2; shift 2
  steps=$(echo "${P[@]}" | sed 's/.*flow.steps=\([0-9]*\).*/\1/')
  wait $job
  rc=$?
  stop_rc=$rc
  local ok=0 w
  for w in "$@"; do [ $rc -eq "$w" ] && ok=1; done
  k=$(ckpt_step "$(newest "$D")")
  if [ $ok -ne 1 ]; then fail $name "exit $rc, expected $*"; show "$T/$name.log"; return 1; fi
  if ! grep -q "flow: stopped by signal $sig after step $k: checkpoint written" "$T/$name.log" || [ "$k" -ge "$steps" ]; then
    fail $name "no checkpoint at the step boundary where it stopped (newest step $k)"; show "$T/$name.log"; return 1
  fi
  if ! $CK finite "$(newest "$D")" >/dev/null; then fail $name "the checkpoint does not load"; return 1; fi
  return 0
}

# resume NAME: the same command again resumes from step $k and completes
resume() {
  local name=$1
  flow_mpi 2 "$D" "${P[@]}" >"$T/$name.2.log" 2>&1
  rc=$?
  if [ $rc -ne 0 ]; then fail $name "re-run: exit $rc"; show "$T/$name.2.log"; return 1; fi
  if ! grep -q "resumed from .*flow-$(printf %08d "$k").safetensors (step $k)" "$T/$name.2.log" ||
    [ ! -f "$D/ckpt/flow-$(printf %08d "$steps").safetensors" ]; then
    fail $name "re-run did not resume from step $k and finish"; show "$T/$name.2.log"; return 1
  fi
  return 0
}

name=usr1_one_rank
if ! start $name; then fail $name "the run did not start"; show "$T/$name.log"
else
  kill -USR1 $(echo $ranks | cut -d' ' -f2)
  check $name 10 75 && resume $name && pass "$name (stopped after step $k, exit 75, resumed and finished)"
fi

name=term_one_rank
if ! start $name; then fail $name "the run did not start"; show "$T/$name.log"
else
  kill -TERM $(echo $ranks | cut -d' ' -f1)
  check $name 15 75 && pass "$name (stopped after step $k, exit 75)"
fi

name=usr1_mpirun
if ! start $name; then fail $name "the run did not start"; show "$T/$name.log"
else
  kill -USR1 $mpirun
  check $name 10 75 && pass "$name (forwarded by mpirun; stopped after step $k, exit 75)"
fi

name=term_mpirun
export OMPI_MCA_odls_base_sigkill_timeout=3
# a model big enough that a step takes tens of ms: the run must still be going
# after mpirun's first 3 s wait, however fast the machine
P=(--set flow.steps=300 --set flow.ckpt_every=100 --set unet.channels=[64,128] --set unet.emb_dim=256
   --set flow.batch_size=64)
if ! start $name; then fail $name "the run did not start"; show "$T/$name.log"
else
  kill -TERM $mpirun
  check $name 15 1 75 && resume $name &&
    pass "$name (ranks checkpointed after step $k within mpirun's grace time; mpirun exit $stop_rc; resumed and finished)"
fi
unset OMPI_MCA_odls_base_sigkill_timeout
P=(--set flow.steps=100 --set flow.ckpt_every=30)

name=term_single
D=$T/$name
new_run "$D"
flow "$D" "${P[@]}" >"$T/$name.log" 2>&1 &
job=$!
if ! wait_step "$D" 5 60; then fail $name "the run did not start"; show "$T/$name.log"
else
  kill -TERM $(procs $job "$FMNAME")
  check $name 15 75 && pass "$name (stopped after step $k, exit 75)"
fi

# usr1_eval_generation: a signal while the eval stage generates samples (no
# training loop there) -> 75 within a batch, no eval.json; the same command
# again loads the saved classifier, generates and writes eval.json
name=usr1_eval_generation
D=$T/$name
new_run "$D"
EV=(--set run.stages=[eval] --set eval.samples_per_class=150 --set eval.classifier_steps=20)
if ! flow "$D" --set flow.steps=4 --set flow.warmup=1 >"$T/$name.0.log" 2>&1; then
  fail $name "the flow run failed"; show "$T/$name.0.log"
else
  timeout -k 5 120 "$FMTRAIN" "$TINY" --out "$D" "${SETS[@]}" "${EV[@]}" >"$T/$name.log" 2>&1 &
  job=$!
  for ((i = 0; i < 6000; i++)); do grep -q "Fréchet floor" "$T/$name.log" && break; sleep 0.01; done
  kill -USR1 $(procs $job "$FMNAME") 2>/dev/null
  t_sig=$(date +%s.%N)
  wait $job
  rc=$?
  secs=$(awk -v a="$t_sig" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  if [ $rc -ne 75 ]; then fail $name "exit $rc, expected 75"; show "$T/$name.log"
  elif ! grep -q "eval: stopped by signal 10 while generating" "$T/$name.log"; then fail $name "no stop message"; show "$T/$name.log"
  elif [ -e "$D/eval.json" ]; then fail $name "eval.json was written"
  elif ! timeout -k 5 120 "$FMTRAIN" "$TINY" --out "$D" "${SETS[@]}" "${EV[@]}" >"$T/$name.2.log" 2>&1; then
    fail $name "re-run: exit $?"; show "$T/$name.2.log"
  elif [ ! -f "$D/eval.json" ] || grep -q "classifier  step" "$T/$name.2.log"; then
    fail $name "the re-run did not load the classifier and write eval.json"; show "$T/$name.2.log"
  else
    pass "$name (exit 75 ${secs}s after the signal; the re-run wrote eval.json)"
  fi
fi
finish
