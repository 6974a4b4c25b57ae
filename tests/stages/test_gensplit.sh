#!/usr/bin/env bash
# test_gensplit.sh - generation split over the ranks writes what one rank writes.
#   The grids of the flow and sample stages (grid k drawn by rank k mod the
#   rank count) and the eval stage's generation and classification (whole
#   batches round-robin, features gathered to rank 0) give byte-identical PNGs
#   and eval.json on 1, 2 and 3 ranks, and rank 0 logs each rank's share.
# Training is not bitwise rank-invariant (reduction order), so every run
# starts from the same 1-rank checkpoints: the VAE, the latents, the flow at
# step 30 and the trained classifier; the flow stage then runs steps 31-60
# with flow.lr = 1e-30 (the weights stay, the EMA still moves: its grids of
# step 60 come from an EMA every rank count computes alike), then sample and
# eval. eval.batch_size 48 leaves a partial last batch (300 = 6·48 + 12) and
# a partial test batch (1000 = 20·48 + 40).
#   1. 1, 2, 3 ranks: flow-60 and sample-60 grids and eval.json identical.
#   2. Per-rank counts: "eval: rank R generated N of 600 samples" for every
#      rank, the round-robin shares (3 ranks: 204, 204, 192), and grids drawn
#      by rank 1.
#   3. dist.zero=true on 2 ranks: the EMA allgathered for rank 1's grid, the
#      same grids as 1 rank.
source "$(dirname "$0")/../lib.sh" stages gensplit/
export OMP_NUM_THREADS=1

SETS=(--set vae.batch_size=24 --set flow.batch_size=24 --set encode.batch_size=192
      --set eval.classifier_batch_size=48 --set eval.batch_size=48
      --set sample.per_class=12 --set eval.samples_per_class=30)

run base 1 "$TINY" --out "$T/base" "${SETS[@]}" || { finish; exit 1; }

# from_base DIR ARGS...: the 1-rank run's trained state, the flow at step 30, and a config record of the
# run's own ARGS (flow.lr changes: without a record the guard would compare with the checkpoints' config)
from_base() {
  local d=$1; shift
  mkdir -p "$d/ckpt"
  cp "$T/base"/ckpt/vae-* "$T/base"/ckpt/classifier-* "$T/base/ckpt/flow-00000030.safetensors" "$d/ckpt/"
  cp "$T/base/latents.safetensors" "$d/"
  "$FMTRAIN" "$TINY" --out "$d" "$@" --dry-run >"$d/config.yaml" 2>/dev/null
}
RE=(--set "run.stages=[flow,sample,eval]" --set flow.lr=1e-30)
for np in 1 2 3; do
  from_base "$T/np$np" "${SETS[@]}" "${RE[@]}"
  run "np$np" "$np" "$TINY" --out "$T/np$np" "${SETS[@]}" "${RE[@]}"
done
Z=(--set "run.stages=[flow]" --set flow.lr=1e-30 --set dist.zero=true)
from_base "$T/zero2" "${SETS[@]}" "${Z[@]}"
run zero2 2 "$TINY" --out "$T/zero2" "${SETS[@]}" "${Z[@]}"

# --- 1. byte-identical outputs ----------------------------------------------------------
FILES=(samples/flow-00000060-w1.png samples/flow-00000060-w3.png samples/sample-00000060-w1.png
       samples/sample-00000060-w3.png eval.json)
for np in 2 3; do
  differ=()
  for f in "${FILES[@]}"; do cmp -s "$T/np1/$f" "$T/np$np/$f" || differ+=("$f"); done
  if [ ${#differ[@]} -eq 0 ] && [ -s "$T/np1/eval.json" ]; then pass "identical_np$np (${#FILES[@]} files)"
  else fail "identical_np$np" "${differ[*]} differ from 1 rank's"; fi
done

# --- 2. each rank's share, logged by rank 0 ---------------------------------------------
share() { grep -o "eval: rank [0-9]* generated [0-9]* of 600 samples" "$T/$1.err" | awk '{print $5}' | paste -sd' '; }
for want in "1:600" "2:300 300" "3:204 204 192"; do
  np=${want%%:*} exp=${want#*:}
  got=$(share "np$np")
  if [ "$got" = "$exp" ]; then pass "counts_np$np ($got)"; else fail "counts_np$np" "got '$got', expected '$exp'"; fi
done
if grep -q "sample: wrote .*w3.png (.*drawn by rank 1)" "$T/np2.err" && grep -q "flow: wrote .*w3.png (.*drawn by rank 1)" "$T/np3.err"
then pass grids_drawn_by_rank1; else fail grids_drawn_by_rank1 "no 'drawn by rank 1' line"; grep wrote "$T/np2.err" | sed 's/^/    /'; fi

# --- 3. ZeRO: rank 1 draws from the allgathered EMA ---------------------------------------
differ=()
for f in samples/flow-00000060-w1.png samples/flow-00000060-w3.png; do cmp -s "$T/np1/$f" "$T/zero2/$f" || differ+=("$f"); done
if [ ${#differ[@]} -eq 0 ]; then pass "zero_grids_np2"; else fail zero_grids_np2 "${differ[*]} differ from 1 rank's"; fi

finish
