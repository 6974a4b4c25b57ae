#!/usr/bin/env bash
# test_targets_train.sh - flow.target and sample.cfg_interval end to end on the
# tiny config (pixels, flow and sample stages, 30 steps of batch 16):
#   run_<target>      x1, eps and v each train and sample (the generator
#                     refuses non-finite samples, so a finished run's are finite)
#   loss_<target>     the last logged loss_mean is below 0.7 of the first step's
#   interval          the eps run samples with sample.cfg_interval [0.2, 0.8]
#                     and a linear schedule (its half-batch model runs outside)
#   refused_interval  a reversed interval is refused at --dry-run (exit 2, naming the key)
# The known-answer tests of the conversions are tests/flow/test_targets.c.
source "$(dirname "$0")/../lib.sh" flow targets_train_
export OMP_NUM_THREADS=1

common=(--set flow.latent=false --set 'run.stages=[flow,sample]' --set 'unet.attn_res=[16]' --set flow.steps=30
        --set flow.batch_size=16 --set flow.warmup=5 --set flow.sample_every=0 --set run.log_every=5
        --set 'sample.cfg=[3]' --set sample.steps=6 --set sample.per_class=1)
for target in x1 eps v; do
  extra=()
  [ "$target" = eps ] && extra=(--set 'sample.cfg_interval=[0.2,0.8]' --set sample.cfg_schedule=linear)
  run "$target" 1 "$TINY" --out "$T/r-$target" "${common[@]}" --set flow.target=$target "${extra[@]}" || continue
  if $PY - "$T/r-$target/metrics.jsonl" <<'PY'
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = [r for r in rows if r.get("stage") == "flow" and "loss" in r]
first, last = rows[0]["loss"], rows[-1]["loss_mean"]
print(f"    first loss {first:.4f}, last loss_mean {last:.4f}")
sys.exit(0 if math.isfinite(last) and last < 0.7 * first else 1)
PY
  then pass "loss_$target"; else fail "loss_$target" "the loss did not fall to 0.7 of the first step's"; fi
  [ -s "$T/r-$target/samples/sample-00000030-w3.png" ] || fail "samples_$target" "no sample grid"
done
if grep -q "sample: wrote" "$T/eps.err" 2>/dev/null; then pass interval; else fail interval "no grid with the interval"; fi

out=$T/out-bad
(cd "$T" && timeout 60 "$FMTRAIN" "$TINY" --out "$out" --set 'sample.cfg_interval=[0.8,0.2]' --dry-run >"$T/bad.out" 2>"$T/bad.err")
rc=$?
if [ $rc -eq 2 ] && grep -q "sample.cfg_interval: must be two times" "$T/bad.err" && [ ! -e "$out" ]; then
  pass refused_interval
else
  fail refused_interval "exit $rc"; show "$T/bad.err"
fi
finish
