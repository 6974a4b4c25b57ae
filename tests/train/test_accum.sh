#!/usr/bin/env bash
# test_accum.sh - gradient accumulation (flow.accum_steps) on the flow stage of
# configs/tiny.yaml (one VAE + latents, then 5 flow steps):
#   1. batch_size 32 with accum_steps 4 gives the flow losses of batch_size 128
#      with accum_steps 1 to <= 1e-5 relative, at 1 rank and at 2 ranks (small
#      buckets, so the allreduce of the last micro-batch overlaps its backward);
#   2. the check can fail: batch_size 32 alone gives other losses (> 1e-4);
#   3. accum_steps 0 is refused with exit 2 naming the key.
# Prints PASS/FAIL train/accum_<name>; exits non-zero on any failure.
source "$(dirname "$0")/../lib.sh" train accum_

FLOW=(--set "run.stages=[flow]" --set flow.steps=5 --set run.log_every=1 --set flow.sample_every=0
      --set flow.bucket_mb=0.05)

tiny_latents || exit 1

# run_flow NAME NP ARGS...: the flow stage on a copy of the latents run, under mpirun -np NP
run_flow() {
  local name=$1 np=$2; shift 2
  cp -r "$T/base" "$T/$name"
  MPI_TIMEOUT=600 mpi "$np" "$FMTRAIN" "$TINY" --out "$T/$name" "${FLOW[@]}" "$@" >"$T/$name.log" 2>&1
}

# compare REF RUN [differ]: max relative flow-loss difference over steps 1..5, <= 1e-5 (> 1e-4 with differ)
compare() {
  $PY - "$T/$1/metrics.jsonl" "$T/$2/metrics.jsonl" ${3:+differ} <<'EOF'
import json, sys
def losses(f):
    return {r["step"]: r["loss"] for r in map(json.loads, open(f)) if r["stage"] == "flow"}
a, b = losses(sys.argv[1]), losses(sys.argv[2])
steps = range(1, 6)
missing = [s for s in steps if s not in a or s not in b]
if missing:
    sys.exit("no loss at steps %s" % missing)
m = max(abs(a[s] - b[s]) / abs(a[s]) for s in steps)
print("max relative loss difference %.2e over 5 steps" % m)
sys.exit(0 if (m > 1e-4 if len(sys.argv) > 3 else m <= 1e-5) else 1)
EOF
}

for np in 1 2; do
  if ! run_flow "big$np" "$np" --set flow.batch_size=128; then
    fail "batch128_${np}_ranks" "exit code $?"; show "$T/big$np.log" 5; continue
  fi
  if ! run_flow "acc$np" "$np" --set flow.batch_size=32 --set flow.accum_steps=4; then
    fail "accum4_${np}_ranks" "exit code $?"; show "$T/acc$np.log" 5; continue
  fi
  if msg=$(compare "big$np" "acc$np"); then pass "losses_${np}_ranks ($msg)"
  else fail "losses_${np}_ranks" "$msg"; fi
done

if ! run_flow small 1 --set flow.batch_size=32; then fail control "exit code $?"; show "$T/small.log" 5
elif msg=$(compare big1 small differ); then pass "batch32_alone_differs ($msg)"
else fail batch32_alone_differs "$msg"; fi

"$FMTRAIN" "$TINY" --out "$T/bad" --set flow.accum_steps=0 >"$T/bad.log" 2>&1
rc=$?
if [ "$rc" -eq 2 ] && grep -q 'flow.accum_steps' "$T/bad.log"; then pass accum_below_1_refused
else fail accum_below_1_refused "exit $rc (want 2 naming flow.accum_steps)"; show "$T/bad.log" 3; fi

finish
