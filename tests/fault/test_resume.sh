#!/usr/bin/env bash
# test_resume.sh - exact resume (issue 6, item 1).
#   straight     40 flow steps in one go (checkpoints at 20 and 40): the reference
#   from_ckpt    a new run holding only the reference's step-20 checkpoint,
#                resumed to 40: losses 21..40 and every tensor of the step-40
#                checkpoint (weights, EMA, AdamW m and v) bitwise equal
#   signal       SIGUSR1 at some step k < 40 (exit 75, checkpoint at k), the same
#                command again: all 40 losses and the final tensors bitwise equal
#   two_ranks    the same with mpirun -np 2: 2-rank straight vs 2-rank 20 + 20
#   rank_change  the 1-rank step-20 checkpoint resumed on 2 ranks: same data
#                order, losses within 1e-4 relative of the 1-rank run
#   unshared     two ranks whose run directories differ (not shared): exit 3
# flow.steps stays 40 in every run: the LR schedule depends on it.
source "$(dirname "$0")/lib.sh"
make_base
R40=(--set flow.steps=40 --set flow.ckpt_every=20 --set run.ckpt_keep=5)

A=$T/straight
new_run "$A"
if flow "$A" "${R40[@]}" >"$T/a.log" 2>&1 && [ -f "$A/ckpt/flow-00000020.safetensors" ] &&
  [ -f "$A/ckpt/flow-00000040.safetensors" ]; then
  pass straight_40_steps
else
  fail straight_40_steps "the reference run failed"; show "$T/a.log"; exit 1
fi

# resume from a copy of the reference's step-20 checkpoint
B=$T/from_ckpt
new_run "$B"
mkdir -p "$B/ckpt" && cp "$A/ckpt/flow-00000020.safetensors" "$B/ckpt/"
if ! flow "$B" "${R40[@]}" >"$T/b.log" 2>&1; then fail resume_from_step_20 "exit $?"; show "$T/b.log"
elif ! grep -q "resumed from .*flow-00000020.safetensors (step 20)" "$T/b.log"; then
  fail resume_from_step_20 "no 'resumed from ... (step 20)'"; show "$T/b.log"
elif ! out=$($CK losses "$B/metrics.jsonl" "$A/metrics.jsonl" 21 40 0); then fail resume_from_step_20 "$out"
elif ! out2=$($CK same "$B/ckpt/flow-00000040.safetensors" "$A/ckpt/flow-00000040.safetensors"); then
  fail resume_from_step_20 "$out2"
else pass "resume_from_step_20 ($out; $out2)"; fi

# stop by SIGUSR1 at a step of its own choosing, then the same command again
C=$T/signal
new_run "$C"
flow "$C" "${R40[@]}" >"$T/c1.log" 2>&1 &
job=$!
# stop the process while the signal is delivered, so that it cannot finish first
if wait_step "$C" 3 60; then
  pid=$(procs $job "$FMNAME")
  kill -STOP $pid; kill -USR1 $pid; kill -CONT $pid
fi
wait $job
rc=$?
k=$(ckpt_step "$(newest "$C")")
if [ $rc -ne 75 ]; then fail signal_stop "expected exit 75, got $rc"; show "$T/c1.log"
elif ! grep -q "stopped by signal 10 after step $k: checkpoint written" "$T/c1.log" || [ "$k" -ge 40 ]; then
  fail signal_stop "no checkpoint at the step where it stopped (newest: step $k)"; show "$T/c1.log"
else
  flow "$C" "${R40[@]}" >"$T/c2.log" 2>&1
  rc=$?
  if [ $rc -ne 0 ]; then fail signal_stop_and_resume "resume exit $rc"; show "$T/c2.log"
  elif ! grep -q "resumed from .*flow-$(printf %08d "$k").safetensors (step $k)" "$T/c2.log"; then
    fail signal_stop_and_resume "did not resume from step $k"; show "$T/c2.log"
  elif ! out=$($CK losses "$C/metrics.jsonl" "$A/metrics.jsonl" 1 40 0); then fail signal_stop_and_resume "$out"
  elif ! out2=$($CK same "$C/ckpt/flow-00000040.safetensors" "$A/ckpt/flow-00000040.safetensors"); then
    fail signal_stop_and_resume "$out2"
  else pass "signal_stop_and_resume (stopped after step $k; $out; $out2)"; fi
fi

# 2 ranks: straight vs resumed from its own step-20 checkpoint
E=$T/two_straight
new_run "$E"
if ! flow_mpi 2 "$E" "${R40[@]}" >"$T/e.log" 2>&1; then fail two_ranks_resume "2-rank straight run: exit $?"; show "$T/e.log"
else
  F=$T/two_resumed
  new_run "$F"
  mkdir -p "$F/ckpt" && cp "$E/ckpt/flow-00000020.safetensors" "$F/ckpt/"
  if ! flow_mpi 2 "$F" "${R40[@]}" >"$T/f.log" 2>&1; then fail two_ranks_resume "exit $?"; show "$T/f.log"
  elif ! out=$($CK losses "$F/metrics.jsonl" "$E/metrics.jsonl" 21 40 0); then fail two_ranks_resume "$out"
  elif ! out2=$($CK same "$F/ckpt/flow-00000040.safetensors" "$E/ckpt/flow-00000040.safetensors"); then
    fail two_ranks_resume "$out2"
  else pass "two_ranks_resume ($out; $out2)"; fi
fi

# the 1-rank step-20 checkpoint continued on 2 ranks
G=$T/rank_change
new_run "$G"
mkdir -p "$G/ckpt" && cp "$A/ckpt/flow-00000020.safetensors" "$G/ckpt/"
if ! flow_mpi 2 "$G" "${R40[@]}" >"$T/g.log" 2>&1; then fail resume_on_2_ranks "exit $?"; show "$T/g.log"
elif ! grep -q "resumed from .*flow-00000020.safetensors (step 20)" "$T/g.log"; then
  fail resume_on_2_ranks "did not resume from step 20"; show "$T/g.log"
elif ! out=$($CK losses "$G/metrics.jsonl" "$A/metrics.jsonl" 21 40 1e-4); then fail resume_on_2_ranks "$out"
else
  out2=$($CK close "$G/ckpt/flow-00000040.safetensors" "$A/ckpt/flow-00000040.safetensors" 1)
  pass "resume_on_2_ranks ($out; step-40 tensors vs 1 rank: $out2)"
fi

# ranks that see different checkpoints (a run directory that is not shared
# between nodes: here two copies, one rank each, the second without the
# step-40 checkpoint) must stop with exit 3 naming both steps, not train
# diverged replicas
H=$T/unshared
mkdir -p "$H/a" "$H/b"
new_run "$H/a/run" && new_run "$H/b/run"
mkdir -p "$H/a/run/ckpt" "$H/b/run/ckpt"
cp "$A/ckpt/flow-00000020.safetensors" "$A/ckpt/flow-00000040.safetensors" "$H/a/run/ckpt/"
cp "$A/ckpt/flow-00000020.safetensors" "$H/b/run/ckpt/"
R60=(--set flow.steps=60 --set flow.ckpt_every=20 --set run.ckpt_keep=5)
timeout -k 5 120 mpirun --oversubscribe -np 1 -wdir "$H/a" "$FMTRAIN" "$TINY" --out run "${SETS[@]}" "${R60[@]}" : \
  -np 1 -wdir "$H/b" "$FMTRAIN" "$TINY" --out run "${SETS[@]}" "${R60[@]}" >"$T/h.log" 2>&1
rc=$?
if [ $rc -ne 3 ]; then fail ranks_see_other_checkpoints "exit $rc, expected 3"; show "$T/h.log"
elif ! grep -q "rank 1 found step 20 in run/ckpt, rank 0 step 40" "$T/h.log"; then
  fail ranks_see_other_checkpoints "the error does not name both steps"; show "$T/h.log"
elif [ "$(tail -n 1 "$H/a/run/metrics.jsonl" 2>/dev/null | grep -c '"step":4[1-9]')" != 0 ]; then
  fail ranks_see_other_checkpoints "rank 0 trained on"
else
  pass ranks_see_other_checkpoints
fi
finish
