#!/usr/bin/env bash
# test_filevalues.sh - values read from files are validated (issue 16, item 3).
# Each case rewrites the latents file or the newest flow checkpoint with
# tests/fault/stedit.py, which makes every CRC32C (tensors and metadata) match
# again, so only the loader's own checks can notice the bad value.
#   latents_*   the flow stage refuses the file: exit 3, the message names the
#               file and the field (labels 10 / NaN / 2.5, scale NaN / 0,
#               latents as BF16, labels [N, 1], latents stored [N, C, s, s])
#   adam_*      a checkpoint whose metadata adam_step lies outside [0, step]:
#               exit 3 naming the file and adam_step (it made every resumed
#               step NaN before)
#   meta_edit   one metadata value edited without its checksum: rejected
#               ("metadata: CRC32C mismatch"), resumed from the previous one
#   dup, overlap, step_negative
#               a tensor listed twice, two tensors sharing bytes, a negative
#               step: rejected naming the file, resumed from the previous one
#   legacy      a checkpoint without the metadata checksum (an older fmtrain):
#               resumed from, with a warning
source "$(dirname "$0")/lib.sh"
make_base
ED="$PY $ROOT/tests/fault/stedit.py"
L=latents.safetensors

# latents CASE "STEDIT OPS" "EXPECTED MESSAGE (after 'error: stage flow: DIR/latents.safetensors: ')"
latents() {
  local name=latents_$1 d=$T/$1
  new_run "$d"
  if ! $ED "$BASE/$L" "$d/$L" $2; then fail "$name" "stedit.py failed"; return; fi
  flow "$d" --set flow.steps=2 --set flow.warmup=1 >"$T/$name.log" 2>&1
  local rc=$?
  if [ $rc -ne 3 ]; then fail "$name" "exit $rc, expected 3"; show "$T/$name.log"
  elif ! grep -qF "error: stage flow: $d/$L: $3" "$T/$name.log"; then
    fail "$name" "no message \"$3\""; show "$T/$name.log"
  elif ls "$d"/ckpt/flow-* >/dev/null 2>&1; then fail "$name" "a flow checkpoint was written"
  else pass "$name (exit 3: $3)"; fi
}
latents label10 "set labels 0 10" "labels: entry 0 is 10, not a class index 0..9"
latents label_nan "set labels 3 nan" "labels: entry 3 is nan, not a class index 0..9"
latents label_frac "set labels 5 2.5" "labels: entry 5 is 2.5, not a class index 0..9"
latents scale_nan "set scale 0 nan" "scale: nan is not a finite number > 0"
latents scale_zero "set scale 0 0" "scale: 0 is not a finite number > 0"
latents bf16 "bf16 latents" "latents: dtype BF16, expected F32"
latents labels_2d "reshape labels 256,1" "labels: 2 dimensions, expected 1"
latents nchw "reshape latents 256,4,8,8" "latents: samples of shape [4, 8, 8], this config's latents are [8, 8, 4]"

# a 2-step run with a checkpoint at each step
CKR=$T/ck
new_run "$CKR"
if ! flow "$CKR" --set flow.steps=2 --set flow.warmup=1 --set flow.ckpt_every=1 >"$T/ck.log" 2>&1; then
  fail setup "the 2-step run failed"; show "$T/ck.log"; finish; exit
fi
C2=ckpt/flow-00000002.safetensors
C1=ckpt/flow-00000001.safetensors
# resume CASE "STEDIT OPS" : the step-2 file rewritten, then 3 steps
resume() {
  local d=$T/$1
  rm -rf "$d" && cp -r "$CKR" "$d" && rm -f "$d/metrics.jsonl"
  $ED "$CKR/$C2" "$d/$C2" $2 && flow "$d" --set flow.steps=3 --set flow.warmup=1 --set flow.ckpt_every=1 >"$T/$1.log" 2>&1
}
for v in -1 3; do
  name=adam_$v
  resume "$name" "meta adam_step $v"
  rc=$?
  if [ $rc -ne 3 ]; then fail "$name" "exit $rc, expected 3"; show "$T/$name.log"
  elif ! grep -qF "error: stage flow: $T/$name/$C2: metadata adam_step: $v is outside [0, 2]" "$T/$name.log"; then
    fail "$name" "the message does not name the file and adam_step"; show "$T/$name.log"
  else pass "$name (exit 3 naming adam_step)"; fi
done

# fallback CASE "STEDIT OPS" "WARNING": rejected with WARNING, resumed from step 1
fallback() {
  local name=$1
  if [ $rc -ne 0 ]; then fail "$name" "exit $rc, expected 0 (resumed from step 1)"; show "$T/$name.log"
  elif ! grep -qF "checkpoint rejected: $T/$name/$C2: $2" "$T/$name.log" ||
    ! grep -qF "resumed from $T/$name/$C1 (step 1)" "$T/$name.log"; then
    fail "$name" "not rejected with \"$2\" and resumed from step 1"; show "$T/$name.log"
  else pass "$name (rejected: $2)"; fi
}
resume dup "dup out_conv.bias"; rc=$?; fallback dup "tensor out_conv.bias appears twice"
resume overlap "overlap out_conv.weight out_conv.bias"; rc=$?
fallback overlap "tensors out_conv.bias and out_conv.weight overlap"
resume step_negative "meta step -2"; rc=$?; fallback step_negative "metadata step: -2 is negative"
# meta_edit: one metadata value of the step-2 file changed by hand, its checksum not
name=meta_edit
rm -rf "$T/$name" && cp -r "$CKR" "$T/$name" && rm -f "$T/$name/metrics.jsonl"
$PY - "$T/$name/$C2" <<'PYEOF'
import sys
p = sys.argv[1]
b = open(p, "rb").read()
i = b.index(b'"adam_step":"2"')
open(p, "wb").write(b[:i] + b'"adam_step":"1"' + b[i + 15:])
PYEOF
flow "$T/$name" --set flow.steps=3 --set flow.warmup=1 --set flow.ckpt_every=1 >"$T/$name.log" 2>&1
rc=$?
fallback $name "metadata: CRC32C mismatch"

name=legacy
resume $name "nometacrc"
rc=$?
if [ $rc -ne 0 ]; then fail $name "exit $rc"; show "$T/$name.log"
elif ! grep -qF "resumed from $T/$name/$C2 (step 2)" "$T/$name.log" ||
  ! grep -qF "written without a metadata checksum" "$T/$name.log"; then
  fail $name "not resumed from step 2 with a warning"; show "$T/$name.log"
else pass "$name (read with a warning)"; fi
finish
