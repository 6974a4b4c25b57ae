#!/usr/bin/env bash
# test_nan.sh - non-finite gradients (issue 6, item 6), injected with the
# test-only key run.fault_nan_steps (rank 0's gradient turns NaN at the listed
# 0-based steps; the allreduce carries it to every rank).
#   skipped_1_rank     NaN at steps 3, 4 and 12 of 20: one warning per step
#                      (1, 2, 1 in a row), the run finishes (exit 0), the AdamW
#                      step count is 17 (three updates skipped), and every
#                      checkpoint (steps 5, 10, 15, 20) holds only finite values
#   skipped_2_ranks    the same on 2 ranks: both ranks warn at the same steps,
#                      and the losses equal the 1-rank run's within 1e-4
#                      (skipping is the same decision on every rank)
#   too_many_1_rank    NaN at steps 6, 7, 8 with run.max_bad_steps = 3: a clear
#                      message and exit 1; the step-5 checkpoint is finite and
#                      nothing after it is written
#   too_many_2_ranks   the same on 2 ranks: every rank stops at step 8, no hang
source "$(dirname "$0")/lib.sh"
make_base
P=(--set flow.steps=20 --set flow.ckpt_every=5 --set run.ckpt_keep=10)
WARN='flow step %d: non-finite gradient (loss [^ ]*, gradient norm [-]*nan): update skipped (%d in a row)'

# finite_all DIR: every flow checkpoint of DIR is finite (numpy)
finite_all() { $CK finite "$1"/ckpt/flow-*.safetensors; }

name=skipped_1_rank
D1=$T/$name
new_run "$D1"
flow "$D1" "${P[@]}" --set run.fault_nan_steps=[3,4,12] >"$T/$name.log" 2>&1
rc=$?
miss=""
for sc in "3 1" "4 2" "12 1"; do
  grep -q "\(^\|Z \)fmtrain: warning: $(printf "$WARN" $sc)" "$T/$name.log" || miss="$miss step ${sc% *}"
done
nwarn=$(grep -c 'non-finite' "$T/$name.log")
if [ $rc -ne 0 ]; then fail $name "exit $rc"; show "$T/$name.log"
elif [ -n "$miss" ] || [ "$nwarn" -ne 3 ]; then fail $name "warnings: $nwarn, missing:$miss"; show "$T/$name.log"
elif [ "$($CK meta "$D1/ckpt/flow-00000020.safetensors" adam_step)" != 17 ]; then fail $name "adam_step is not 17"
elif ! out=$(finite_all "$D1"); then fail $name "$out"
else pass "$name (3 warnings, exit 0, adam_step 17, $(echo "$out" | wc -l) checkpoints finite)"; fi

name=skipped_2_ranks
D=$T/$name
new_run "$D"
flow_mpi 2 "$D" "${P[@]}" --set run.fault_nan_steps=[3,4,12] >"$T/$name.log" 2>&1
rc=$?
miss=""
for sc in "3 1" "4 2" "12 1"; do
  w=$(printf "$WARN" $sc)
  grep -q "\(^\|Z \)fmtrain: warning: $w" "$T/$name.log" || miss="$miss rank0:${sc% *}"
  grep -q "\(^\|Z \)fmtrain\[rank 1\]: warning: $w" "$T/$name.log" || miss="$miss rank1:${sc% *}"
done
if [ $rc -ne 0 ]; then fail $name "exit $rc"; show "$T/$name.log"
elif [ -n "$miss" ]; then fail $name "warnings missing:$miss"; show "$T/$name.log"
elif [ "$($CK meta "$D/ckpt/flow-00000020.safetensors" adam_step)" != 17 ]; then fail $name "adam_step is not 17"
elif ! out=$(finite_all "$D"); then fail $name "$out"
elif ! out2=$($CK losses "$D/metrics.jsonl" "$D1/metrics.jsonl" 1 20 1e-4); then fail $name "vs 1 rank: $out2"
else pass "$name (both ranks warned at steps 3, 4, 12; checkpoints finite; $out2)"; fi

# too_many NAME RUNNER...: 3 bad steps in a row with max_bad_steps 3
too_many() {
  local name=$1; shift
  D=$T/$name
  new_run "$D"
  "$@" "$D" "${P[@]}" --set run.fault_nan_steps=[6,7,8] --set run.max_bad_steps=3 >"$T/$name.log" 2>&1
  rc=$?
  local msg="error: stage flow: flow: 3 consecutive non-finite steps at step 8: training diverged; lower flow.lr"
  if [ $rc -ne 1 ]; then fail $name "exit $rc, expected 1"; show "$T/$name.log"
  elif ! grep -q "\(^\|Z \)fmtrain: $msg" "$T/$name.log"; then fail $name "no clear message"; show "$T/$name.log"
  elif [ "$(ls "$D"/ckpt/flow-*.safetensors | xargs -n1 basename)" != flow-00000005.safetensors ]; then
    fail $name "checkpoints: $(ls "$D"/ckpt/)"
  elif ! out=$(finite_all "$D"); then fail $name "$out"
  else pass "$name (exit 1: $(grep -o 'flow: 3 consecutive.*diverged' "$T/$name.log" | head -1); flow-5 finite, nothing later)"; fi
}
too_many too_many_1_rank flow
too_many too_many_2_ranks flow_mpi 2
finish
