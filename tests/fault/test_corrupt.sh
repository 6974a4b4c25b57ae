#!/usr/bin/env bash
# test_corrupt.sh - corrupt checkpoints met by a resuming run (issue 6, item 4).
# A finished 20-step run has flow-10 and flow-20. The newest is damaged in one
# way per case; the same command is run again. It must warn naming the file,
# resume from flow-10, and write a step-20 checkpoint bitwise equal to the
# undamaged one: nothing of the bad file was used ("never loads garbage").
#   truncated        cut to half its size                 (size check)
#   flipped_data     one bit flipped in a tensor's bytes  (CRC32C)
#   flipped_header   one byte of the JSON header changed  (header parse)
#   header_length    the 8-byte header length made huge   (size check)
#   other_shape      the step-20 file of a model with unet.channels=[24, 32]
#   other_model      the step-20 file of a model with unet.channels=[32, 32]
#                    (equal widths: no 1x1 skip convolutions, fewer tensors)
#   zero_bytes       an empty file
#   wrong_step       flow-10 copied to the name flow-00000030 (the newest name)
#   none_valid       every flow checkpoint damaged: exit 3, each file named
source "$(dirname "$0")/lib.sh"
make_base
P=(--set flow.steps=20 --set flow.ckpt_every=10 --set run.ckpt_keep=3)
GOOD=$T/good
new_run "$GOOD"
if ! flow "$GOOD" "${P[@]}" >"$T/good.log" 2>&1; then
  fail setup "the reference run failed"; show "$T/good.log"; exit 1
fi
C10=ckpt/flow-00000010.safetensors
C20=ckpt/flow-00000020.safetensors
for ch in 24 32; do
  new_run "$T/other$ch"
  if ! flow "$T/other$ch" "${P[@]}" --set unet.channels=[$ch,32] >"$T/other$ch.log" 2>&1; then
    fail setup "the unet.channels=[$ch, 32] run failed"; show "$T/other$ch.log"; exit 1
  fi
done

# flip FILE OFFSET: invert every bit of the byte at OFFSET
flip() {
  local b
  b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
  printf "$(printf '\\%03o' $((255 - b)))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}
# data_offset FILE: the first byte of tensor data (8 + header length)
data_offset() { echo $((8 + $(od -An -tu8 -N8 "$1" | tr -d ' '))); }

# case NAME DAMAGED_FILE WHAT_IN_THE_WARNING: damage is done by the caller in $D
run_case() {
  local name=$1 bad=$2 what=$3
  flow "$D" "${P[@]}" >"$T/$name.log" 2>&1
  local rc=$?
  if [ $rc -ne 0 ]; then fail $name "exit $rc"; show "$T/$name.log"; return; fi
  if ! grep -q "warning: checkpoint rejected: $D/$bad: .*$what" "$T/$name.log"; then
    fail $name "no warning naming $bad ($what)"; show "$T/$name.log"; return
  fi
  if ! grep -q "resumed from $D/$C10 (step 10)" "$T/$name.log"; then
    fail $name "did not fall back to flow-10"; show "$T/$name.log"; return
  fi
  local out
  if ! out=$($CK same "$D/$C20" "$GOOD/$C20"); then fail $name "re-trained step 20 differs: $out"; return; fi
  pass "$name ($(grep -o "checkpoint rejected: .*" "$T/$name.log" | head -1 | sed "s|$D/||" | cut -c1-150))"
}

D=$T/case
new_run "$D" && cp -r "$GOOD/ckpt" "$D/"
truncate -s $(($(stat -c %s "$D/$C20") / 2)) "$D/$C20"
run_case truncated $C20 "data offsets outside the file (truncated?)"

new_run "$D" && cp -r "$GOOD/ckpt" "$D/"
flip "$D/$C20" $(($(data_offset "$D/$C20") + 1000))
run_case flipped_data $C20 "CRC32C mismatch"

new_run "$D" && cp -r "$GOOD/ckpt" "$D/"
flip "$D/$C20" 8
run_case flipped_header $C20 "header is not valid JSON"

new_run "$D" && cp -r "$GOOD/ckpt" "$D/"
printf '\377\377\377\377\000\000\000\000' | dd of="$D/$C20" bs=1 seek=0 conv=notrunc status=none
run_case header_length $C20 "truncated: header of 4294967295 bytes"

new_run "$D" && cp -r "$GOOD/ckpt" "$D/"
cp "$T/other24/$C20" "$D/$C20"
run_case other_shape $C20 "expected F32 shape .*, found .*(a checkpoint of a different model?)"

new_run "$D" && cp -r "$GOOD/ckpt" "$D/"
cp "$T/other32/$C20" "$D/$C20"
run_case other_model $C20 "group \"\" has 127 tensors, the model has 129 (a checkpoint of a different model?)"

new_run "$D" && cp -r "$GOOD/ckpt" "$D/"
: >"$D/$C20"
run_case zero_bytes $C20 "truncated: 0 bytes, no header"

# an older checkpoint under a newer name: the real flow-20 stays the newest valid
name=wrong_step
new_run "$D" && cp -r "$GOOD/ckpt" "$D/"
cp "$D/$C10" "$D/ckpt/flow-00000030.safetensors"
flow "$D" "${P[@]}" >"$T/$name.log" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "checkpoint rejected: $D/ckpt/flow-00000030.safetensors: metadata says step 10" "$T/$name.log" &&
  grep -q "resumed from $D/$C20 (step 20)" "$T/$name.log"; then
  pass "$name (flow-00000030 holding step 10 rejected, resumed from flow-20)"
else fail $name "exit $rc"; show "$T/$name.log"; fi

# nothing valid: a clear error naming every file, exit 3, nothing trained
name=none_valid
new_run "$D" && cp -r "$GOOD/ckpt" "$D/"
flip "$D/$C20" $(($(data_offset "$D/$C20") + 1000))
truncate -s 100 "$D/$C10"
flow "$D" "${P[@]}" >"$T/$name.log" 2>&1
rc=$?
if [ $rc -ne 3 ]; then fail $name "exit $rc, expected 3"; show "$T/$name.log"
elif ! grep -q "error: .*no valid checkpoint of stage flow in $D/ckpt: all 2 rejected; newest: $D/$C20: .*CRC32C" "$T/$name.log" ||
  ! grep -q "checkpoint rejected: $D/$C10: " "$T/$name.log"; then
  fail $name "the messages do not name both files"; show "$T/$name.log"
elif grep -q "flow  step" "$T/$name.log" || [ -s "$D/metrics.jsonl" ]; then fail $name "it trained anyway"
else pass "$name (exit 3: $(grep -o 'error: .*' "$T/$name.log" | cut -c1-120)...)"; fi
finish
