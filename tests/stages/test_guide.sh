#!/usr/bin/env bash
# test_guide.sh - the guide stage (noise-conditioned latent classifier of
# classifier guidance) on the tiny config, and sampling with it.
#   1. vae, encode, guide for 30 steps: checkpoint guide-00000030; then
#      guide.steps=60 resumes from step 30 (log "from 30") to guide-00000060;
#      a third run logs "guide: done" and trains nothing.
#   2. The loss falls: the mean loss of the last 10 steps is below 0.85 x that of
#      the first 10 (the classifier learns the classes from x_t).
#   3. Data parallel: 10 steps on 2 ranks from the same latents give the
#      1-rank losses (up to reduction order, 1e-4 relative).
#   4. Sampling: a flow trained on the same run; `fmtrain sample
#      --classifier-scale 3` draws another grid than scale 0, and a run
#      without a guide checkpoint stops with exit 3 naming it.
source "$(dirname "$0")/../lib.sh" stages guide/
export OMP_NUM_THREADS=1

SETS=(--set vae.batch_size=32 --set vae.steps=30 --set encode.batch_size=256 --set flow.steps=30
      --set sample.per_class=2)
run first 1 "$TINY" --out "$T/r" "${SETS[@]}" --set "run.stages=[vae,encode,guide]" --set guide.steps=30 \
  || { finish; exit 1; }
run second 1 "$TINY" --out "$T/r" "${SETS[@]}" --set "run.stages=[vae,encode,guide]" --set guide.steps=60
run third 1 "$TINY" --out "$T/r" "${SETS[@]}" --set "run.stages=[vae,encode,guide]" --set guide.steps=60

# --- 1. checkpoints, resume, skip ----------------------------------------------------------
if [ -f "$T/r/ckpt/guide-00000030.safetensors" ] && [ -f "$T/r/ckpt/guide-00000060.safetensors" ] &&
   grep -q "60 steps from 30" "$T/second.err" && grep -q "guide: done" "$T/third.err" &&
   ! grep -q '"stage":"guide"' "$T/third.out"; then
  pass resume_and_skip
else
  fail resume_and_skip "checkpoints $(ls "$T/r/ckpt" | tr '\n' ' '), or no resume from 30 / no skip"
  show "$T/second.err" 4
fi

# --- 2. the loss falls -----------------------------------------------------------------------
if $PY - "$T/r/metrics.jsonl" <<'PY'; then pass loss_falls; else fail loss_falls "see above"; fi
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"stage":"guide"' in l]
loss = {r["step"]: r["loss_mean"] for r in rows}
first, last = loss[10], loss[60]
print(f"    guide loss_mean: steps 1-10 {first:.4f}, 51-60 {last:.4f}")
sys.exit(0 if last < 0.85 * first else 1)
PY

# --- 3. the same losses on 2 ranks -----------------------------------------------------------
for np in 1 2; do
  mkdir -p "$T/np$np/ckpt"
  cp "$T/r"/ckpt/vae-* "$T/np$np/ckpt/"
  cp "$T/r/latents.safetensors" "$T/np$np/"
  "$FMTRAIN" "$TINY" --out "$T/np$np" "${SETS[@]}" --set "run.stages=[guide]" --set guide.steps=10 --dry-run \
    >"$T/np$np/config.yaml" 2>/dev/null
  run "np$np" "$np" "$TINY" --out "$T/np$np" "${SETS[@]}" --set "run.stages=[guide]" --set guide.steps=10
done
if $PY - "$T/np1/metrics.jsonl" "$T/np2/metrics.jsonl" <<'PY'; then pass two_ranks; else fail two_ranks "see above"; fi
import json, sys
def losses(p):
    return [json.loads(l)["loss"] for l in open(p) if '"stage":"guide"' in l]
a, b = losses(sys.argv[1]), losses(sys.argv[2])
worst = max(abs(x - y) / abs(x) for x, y in zip(a, b)) if a and len(a) == len(b) else 1
print(f"    {len(a)} logged steps, worst relative loss difference 1 vs 2 ranks {worst:.2e} (tol 1e-4)")
sys.exit(0 if worst < 1e-4 else 1)
PY

# --- 4. sampling with classifier guidance ------------------------------------------------------
run flow 1 "$TINY" --out "$T/r" "${SETS[@]}" --set "run.stages=[flow]" --set guide.steps=60
CK=$T/r/ckpt/flow-00000030.safetensors
for s in 0 3; do
  run "sample_s$s" 1 sample "$CK" --cfg 1 --steps 8 --per-class 2 --classifier-scale $s -o "$T/s$s.png"
done
if [ -f "$T/s0.png" ] && [ -f "$T/s3.png" ] && ! cmp -s "$T/s0.png" "$T/s3.png"; then
  pass guided_grid_differs
else
  fail guided_grid_differs "the grids of scale 0 and 3 are missing or equal"
fi
mkdir -p "$T/noguide/ckpt"
cp "$T/r"/ckpt/vae-* "$CK" "$T/noguide/ckpt/"
(cd "$T" && "$FMTRAIN" sample "$T/noguide/ckpt/flow-00000030.safetensors" --classifier-scale 1 -o "$T/x.png") \
  >"$T/noguide.out" 2>"$T/noguide.err"
rc=$?
if [ $rc -eq 3 ] && grep -q "no guide checkpoint" "$T/noguide.err" && [ ! -f "$T/x.png" ]; then
  pass missing_guide_ckpt
else
  fail missing_guide_ckpt "exit $rc"; show "$T/noguide.err" 3
fi
finish
