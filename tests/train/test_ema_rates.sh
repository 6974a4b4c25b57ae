#!/usr/bin/env bash
# test_ema_rates.sh - several EMA rates side by side (flow.ema_decay a list), on
# the flow stage of configs/tiny.yaml cut to 8 steps (a 4-step VAE on 256
# images gives the latents):
#   1. [0.99, 0.9] trains; its weights and its "ema." tensors are bitwise the
#      single-rate 0.99 run's, its "ema@0.9." tensors bitwise the single-rate
#      0.9 run's "ema." (the same steps);
#   1b. with flow.ema_warmup (the rest runs without it, so that the rates
#      differ) two rates that (1+k)/(10+k) does not reach within the 8 steps
#      give the same weights, and the run warns so;
#   2. resume keeps every rate: the 2-rank ZeRO run's step-4 checkpoint resumes
#      on 1 rank without ZeRO and the 1-rank checkpoint on 2 ranks with ZeRO;
#      both EMAs at step 8 agree with the uninterrupted run (<= 1e-5 relative;
#      a rate started afresh would be far off);
#   3. a single-rate checkpoint resumed with two rates: the missing rate starts
#      from the resumed weights, logged; the checkpoint then holds both;
#   4. the memory plan of the flow stage grows with the rates;
#   5. fmtrain sample --ema 0.99 | 0.9 | raw draws three different grids, whose
#      header names the weights; --ema 0.5 (not a rate of the run) stops with
#      exit 2 naming sample.ema; the sample stage with sample.ema = 0.9 on a
#      checkpoint without that rate stops naming sample.ema; eval.json's "ema"
#      field says which weights the eval used.
# Prints PASS/FAIL train/ema_<name>; exits non-zero on any failure.
source "$(dirname "$0")/../lib.sh" train ema_

SMALL=(--set data.train_limit=256 --set vae.steps=4 --set vae.warmup=0)
FLOW=("${SMALL[@]}" --set "run.stages=[flow]" --set flow.steps=8 --set flow.warmup=2 --set flow.ckpt_every=4
      --set flow.sample_every=0 --set run.log_every=1 --set flow.batch_size=16 --set flow.bucket_mb=0.05
      --set flow.ema_warmup=false) # with warm-up, 8 steps keep every rate on (1+k)/(10+k): the EMAs would be equal
export OMP_NUM_THREADS=1

if ! timeout 300 "$FMTRAIN" "$TINY" --out "$T/base" "${SMALL[@]}" --set "run.stages=[vae,encode]" >"$T/base.log" 2>&1; then
  fail latents "the VAE and encode stages failed"; show "$T/base.log" 5; exit 1
fi

# run_flow NAME NP ARGS...: the flow stage on a copy of the latents run, under mpirun -np NP
run_flow() {
  local name=$1 np=$2; shift 2
  [ -d "$T/$name" ] || cp -r "$T/base" "$T/$name"
  MPI_TIMEOUT=300 mpi "$np" "$FMTRAIN" "$TINY" --out "$T/$name" "${FLOW[@]}" "$@" >>"$T/$name.log" 2>&1
}

# same CKPT:A CKPT2:B [TOL]: tensor group A (a prefix) of one checkpoint against group B of another:
# bitwise (TOL absent), or the norm of the difference over the group within TOL of the norm of B
same() {
  $PY - "$@" <<'EOF'
import json, struct, sys
import numpy as np
def load(f):
    b = open(f, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n]); h.pop("__metadata__", None)
    return {k: np.frombuffer(b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]], dtype=np.float32)
            for k, v in h.items()}
(fa, pa), (fb, pb) = (a.rsplit(":", 1) for a in sys.argv[1:3])
tol = float(sys.argv[3]) if len(sys.argv) > 3 else None
A, B = load(fa), load(fb)
params = [k for k in B if not k.startswith(("ema", "adam.", "latent_scale"))]
dd, bb, differ = 0.0, 0.0, 0
for k in params:
    a, b = A.get(pa + k), B.get(pb + k)
    if a is None or b is None:
        sys.exit("tensor %s%s or %s%s missing" % (pa, k, pb, k))
    differ += not np.array_equal(a.view(np.uint32), b.view(np.uint32))
    dd += float(np.sum((a.astype(np.float64) - b) ** 2)); bb += float(np.sum(b.astype(np.float64) ** 2))
worst = (dd / bb) ** 0.5
print("%d tensors %s* vs %s*: %d not bitwise equal, |a - b| / |b| = %.1e" % (len(params), pa, pb, differ, worst))
sys.exit(0 if (differ == 0 if tol is None else worst <= tol) else 1)
EOF
}
C8=ckpt/flow-00000008.safetensors; C4=ckpt/flow-00000004.safetensors

# --- 1. two rates = two single-rate runs, bitwise ------------------------------------------------
run_flow r99 1 --set flow.ema_decay=0.99 || { fail single_rate "exit code (see below)"; show "$T/r99.log" 5; }
run_flow r9 1 --set flow.ema_decay=0.9 || { fail single_rate "exit code (see below)"; show "$T/r9.log" 5; }
if run_flow two 1 --set "flow.ema_decay=[0.99,0.9]"; then
  pass "two_rates_train"
  if m1=$(same "$T/two/$C8:" "$T/r99/$C8:") && m2=$(same "$T/two/$C8:ema." "$T/r99/$C8:ema.") &&
     m3=$(same "$T/two/$C8:ema@0.9." "$T/r9/$C8:ema."); then
    pass "rates_bitwise_single_rate_runs ($m2; $m3)"
  else fail rates_bitwise_single_rate_runs "$m1 / $m2 / $m3"; fi
  if m=$(same "$T/two/$C8:ema." "$T/two/$C8:ema@0.9."); then fail rates_differ "the two EMAs are equal: $m"
  elif [[ $m == *missing* ]]; then fail rates_differ "$m"
  else pass "rates_differ (${m#*: })"; fi
  grep -q "AdamW m, v and 2 EMAs" "$T/two.log" && pass state_log_counts_emas ||
    fail state_log_counts_emas "no 'and 2 EMAs' in the zero: state line"
else fail two_rates_train "exit code (see below)"; show "$T/two.log" 5; fi

# --- 1b. with warm-up, rates the stage never reaches are the same weights: a warning ----------------
if run_flow warm 1 --set "flow.ema_decay=[0.99,0.9]" --set flow.ema_warmup=true &&
   grep -q "warning: flow.ema_decay: rates 0.99, 0.9 stay on the warm-up curve (1+k)/(10+k) for all 8 steps" "$T/warm.log" &&
   m=$(same "$T/warm/$C8:ema." "$T/warm/$C8:ema@0.9.") && ! grep -q "stay on the warm-up curve" "$T/two.log"; then
  pass "warmup_capped_rates_warned ($m)"
else fail warmup_capped_rates_warned "no warning, or the EMAs differ, or the run without warm-up warned"; show "$T/warm.log" 3; fi

# --- 2. resume across rank counts and ZeRO on/off keeps every rate ---------------------------------
TWO=(--set "flow.ema_decay=[0.99,0.9]")
run_flow z2 2 "${TWO[@]}" --set dist.zero=true || { fail resume "2-rank ZeRO run failed"; show "$T/z2.log" 5; }
# cut NAME FROM: NAME holds FROM's state of step 4
cut() { cp -r "$T/$2" "$T/$1"; rm -f "$T/$1/$C8"; : >"$T/$1.log"; }
cut z2to1 z2; cut n1to2 two
for c in "z2to1 1 false z2 resume_2_ranks_zero_to_1_rank" "n1to2 2 true two resume_1_rank_to_2_ranks_zero"; do
  read -r name np zero ref what <<<"$c"
  if ! run_flow "$name" "$np" "${TWO[@]}" --set dist.zero="$zero"; then fail "$what" "exit code (see below)"; show "$T/$name.log" 5
  elif ! grep -q "flow: resumed from .*flow-00000004.safetensors (step 4)" "$T/$name.log"; then
    fail "$what" "did not resume from the step-4 checkpoint"
  elif grep -q "starts from the resumed weights" "$T/$name.log"; then fail "$what" "a rate was not resumed"
  elif m1=$(same "$T/$name/$C8:ema." "$T/$ref/$C8:ema." 1e-5) && m2=$(same "$T/$name/$C8:ema@0.9." "$T/$ref/$C8:ema@0.9." 1e-5)
  then pass "$what ($m1; $m2)"
  else fail "$what" "$m1 / $m2"; fi
done

# --- 3. a checkpoint with fewer rates ----------------------------------------------------------------
cut fewer r99
if ! run_flow fewer 1 "${TWO[@]}"; then fail fewer_rates "exit code (see below)"; show "$T/fewer.log" 5
elif ! grep -q "has no EMA of decay 0.9 (tensors ema@0.9.\*): it starts from the resumed weights" "$T/fewer.log"; then
  fail fewer_rates "no warning that rate 0.9 starts from the resumed weights"; show "$T/fewer.log" 5
elif ! m=$(same "$T/fewer/$C8:ema." "$T/r99/$C8:ema."); then fail fewer_rates_start_from_weights "$m"
# the restarted rate is held, and differs from the continued one by far more than part 2's tolerance
elif m=$(same "$T/fewer/$C8:ema@0.9." "$T/two/$C8:ema@0.9." 1e-5); then
  fail fewer_rates_start_from_weights "the restarted rate equals the continued one: $m"
elif [[ $m == *missing* ]]; then fail fewer_rates_start_from_weights "$m"
else pass "fewer_rates_start_from_weights (restarted vs continued rate 0.9: ${m#*: })"; fi

# --- the memory plan counts each further EMA (the refusal names the flow stage's plan) -------------
plan() {
  "$FMTRAIN" "$TINY" --dry-run --set "run.stages=[flow]" --set run.memory_limit_gb=0.001 --set "flow.ema_decay=$1" 2>&1 |
    sed -n 's/.*stage flow would take \([0-9.]*\) GB.*/\1/p'
}
p1=$(plan 0.99); p3=$(plan "[0.99,0.9,0.999]")
if [ -n "$p1" ] && [ -n "$p3" ] && $PY -c "import sys; sys.exit(not float('$p3') > float('$p1'))"; then
  pass "memory_plan_counts_emas (flow stage $p1 GB with one rate, $p3 GB with three)"
else fail memory_plan_counts_emas "plan $p1 GB with one rate, $p3 GB with three"; fi

# --- 4. sampling with each rate ---------------------------------------------------------------------
ok=1
for r in 0.99 0.9 raw; do
  if ! "$FMTRAIN" sample "$T/two/$C8" --ema "$r" --steps 4 -o "$T/s-$r.png" >"$T/s-$r.log" 2>&1; then
    ok=0; fail "sample_$r" "exit code (see below)"; show "$T/s-$r.log" 5
  fi
done
if [ $ok = 1 ]; then
  n=$(md5sum "$T"/s-*.png | awk '{print $1}' | sort -u | wc -l)
  [ "$n" = 3 ] && pass "sample_each_rate_differs" || fail sample_each_rate_differs "$n different grids of 3"
fi
"$FMTRAIN" sample "$T/two/$C8" --ema 0.5 --steps 4 -o "$T/bad.png" >"$T/bad.log" 2>&1; rc=$?
if [ $rc = 2 ] && grep -q "sample.ema: rate 0.5 is not one of flow.ema_decay = \[0.99, 0.9\]" "$T/bad.log"; then
  pass sample_unknown_rate_exit_2
else fail sample_unknown_rate_exit_2 "exit $rc"; show "$T/bad.log" 3; fi
# the sample and eval stages: eval.json names the weights; a rate the checkpoint lacks names sample.ema
EV=(--set "run.stages=[sample,eval]" --set eval.classifier_steps=2 --set eval.samples_per_class=2 --set sample.steps=2
    --set sample.per_class=1 --set "sample.cfg=[3]")
if run_flow two 1 "${TWO[@]}" "${EV[@]}" --set sample.ema=0.9 && grep -q '"ema": 0.9,' "$T/two/eval.json" &&
   grep -q "wrote .*sample-00000008-w3.png (EMA 0.9)" "$T/two.log"; then
  pass eval_json_names_the_ema
else fail eval_json_names_the_ema "no \"ema\": 0.9 in eval.json or no (EMA 0.9) in the log"; show "$T/two.log" 3; fi
rm -f "$T/r99/eval.json"
if run_flow r99 1 "${TWO[@]}" "${EV[@]}" --set sample.ema=0.9; then fail missing_rate "sampled a rate it lacks"
elif grep -q "sample.ema = 0.9: the checkpoint must hold the EMA of decay 0.9" "$T/r99.log"; then pass missing_rate_names_key
else fail missing_rate_names_key "no message naming sample.ema"; show "$T/r99.log" 3; fi
finish
