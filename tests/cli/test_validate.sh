#!/usr/bin/env bash
# test_validate.sh - every value the key table admits either works in bounded
# memory or is refused before anything runs (issue 16, items 1 and 2).
#   refused_*     values that passed --dry-run and failed later (or blew the
#                 memory): exit 2 at --dry-run naming the key and the limit,
#                 no run directory created; among them stages whose planned
#                 memory (build.h: fm_build_check_memory) exceeds tiny.yaml's
#                 run.memory_limit_gb of 4
#   admitted_*    the same keys where the value is usable
#   grid_bounded  a flow run whose grids have 10 x 150 samples, then
#                 `fmtrain sample` of its checkpoint, each at most 1 GB peak RSS
#                 (grids are drawn 256 samples a call: include/fm/generate.h),
#                 the PNG 150 cells wide; the old code built a generator for all
#                 1500 samples at once (2.4 GB here, 24+ GB for the schema's old
#                 maximum). A sanitizer build is not held to the bound.
source "$(dirname "$0")/../lib.sh" cli validate_
export OMP_NUM_THREADS=1

# refused NAME OVERRIDE MESSAGE: --dry-run exits 2 with "error: --set OVERRIDE: MESSAGE", creates nothing
refused() {
  local name=refused_$1 out=$T/out-$1
  local rc
  (cd "$T" && timeout 60 "$FMTRAIN" "$TINY" --out "$out" --set "$2" --dry-run >"$T/$name.out" 2>"$T/$name.err")
  rc=$?
  if [ $rc -ne 2 ]; then fail "$name" "exit $rc, expected 2"; show "$T/$name.err"
  elif ! grep -qF "error: --set $3" "$T/$name.err"; then fail "$name" "no message \"--set $3\""; show "$T/$name.err"
  elif [ -e "$out" ]; then fail "$name" "$out was created"
  else pass "$name (exit 2: $3)"; fi
}
refused bucket flow.bucket_mb=1e-7 \
  "flow.bucket_mb=1e-07: flow.bucket_mb: 1e-07 MiB is less than one 4-byte gradient value (use at least 4e-06)"
refused test_limit data.test_limit=1 \
  "data.test_limit=1: data.test_limit: 1 test image: the eval stage's Fréchet distances need at least 2 (0 = all)"
refused train_limit data.train_limit=1 "data.train_limit=1: data.train_limit: 1 training image"
refused per_class sample.per_class=1501 "sample.per_class=1501: sample.per_class: 1501 is out of range [1, 1500]"
refused eval_samples eval.samples_per_class=10001 \
  "eval.samples_per_class=10001: eval.samples_per_class: 10001 is out of range [1, 10000]"
# memory: tiny.yaml sets run.memory_limit_gb: 4; the plan is measured from the models' set-up
refused encode_batch encode.batch_size=1048576 "encode.batch_size=1048576: encode.batch_size: stage encode would take"
refused flow_batch flow.batch_size=1048576 "flow.batch_size=1048576: flow.batch_size: stage flow would take"
refused unet_width "unet.channels=[4096, 4096]" "unet.channels=[4096, 4096]: unet.channels: stage flow would take"
refused eval_batch eval.batch_size=1048576 "eval.batch_size=1048576: eval.batch_size: stage eval would take"

# admitted NAME OVERRIDE...: --dry-run exits 0
admitted() {
  local name=admitted_$1; shift
  local sets=() o
  for o in "$@"; do sets+=(--set "$o"); done
  (cd "$T" && timeout 60 "$FMTRAIN" "$TINY" --out "$T/adm-$name" "${sets[@]}" --dry-run >"$T/$name.out" 2>"$T/$name.err")
  local rc=$?
  if [ $rc -eq 0 ]; then pass "$name ($*)"; else fail "$name" "exit $rc"; show "$T/$name.err"; fi
}
admitted bucket flow.bucket_mb=4e-6
admitted test_limit_no_eval data.test_limit=1 "run.stages=[vae, encode, flow, sample]"
admitted limits_2 data.test_limit=2 data.train_limit=2
admitted per_class_max sample.per_class=1500
admitted eval_samples_max eval.samples_per_class=10000
admitted unlimited encode.batch_size=1048576 run.memory_limit_gb=1e6

# grid_bounded: peak RSS (of the process and its children: getrusage) at most 1 GB
name=grid_bounded
LIMIT_KB=1048576
ldd "$FMTRAIN" 2>/dev/null | grep -q libasan && LIMIT_KB=0 # ASan's own memory: no bound
# peak LOG CMD...: CMD with output in LOG; prints its exit status and peak RSS in KB
peak() {
  local log=$1; shift
  $PY -c 'import resource, subprocess, sys
rc = subprocess.run(sys.argv[2:], stdout=open(sys.argv[1], "w"), stderr=subprocess.STDOUT, timeout=300).returncode
print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)' "$log" "$@"
}
# png_is FILE WxH: the PNG's IHDR says so
png_is() { [ "$($PY -c 'import struct, sys; print("%dx%d" % struct.unpack(">II", open(sys.argv[1], "rb").read()[16:24]))' "$1" 2>/dev/null)" = "$2" ]; }
# png_holds FILE W H: the PNG is at least W x H (a labelled grid adds a label column and a header strip)
png_holds() { $PY -c 'import struct, sys; w, h = struct.unpack(">II", open(sys.argv[1], "rb").read()[16:24]); sys.exit(not (int(sys.argv[2]) <= w < int(sys.argv[2]) + 200 and int(sys.argv[3]) < h < int(sys.argv[3]) + 100))' "$@" 2>/dev/null; }
D=$T/grid
SETS=(--set data.train_limit=256 --set data.test_limit=100 --set vae.steps=2 --set vae.warmup=1 --set flow.steps=1
      --set flow.warmup=0 --set flow.sample_every=1 --set sample.steps=1 --set "sample.cfg=[1]" --set sample.per_class=150
      --set "run.stages=[vae, encode, flow]")
read -r rc kb < <(peak "$T/$name-flow.log" "$FMTRAIN" "$TINY" --out "$D" "${SETS[@]}")
png=$D/samples/flow-00000001-w1.png
if [ "$rc" != 0 ]; then fail $name "the flow run (grid of 10 x 150) exited $rc"; show "$T/$name-flow.log"
elif [ "$LIMIT_KB" -gt 0 ] && [ "$kb" -gt "$LIMIT_KB" ]; then fail $name "the flow run took $kb KB (limit $LIMIT_KB)"
elif ! png_is "$png" 9902x662; then fail $name "$png is not a 9902 x 662 PNG"
else
  flow_kb=$kb
  read -r rc kb < <(peak "$T/$name-sample.log" "$FMTRAIN" sample "$D/ckpt/flow-00000001.safetensors" --steps 1 -o "$T/g.png")
  if [ "$rc" != 0 ]; then fail $name "fmtrain sample (10 x 150) exited $rc"; show "$T/$name-sample.log"
  elif [ "$LIMIT_KB" -gt 0 ] && [ "$kb" -gt "$LIMIT_KB" ]; then fail $name "fmtrain sample took $kb KB (limit $LIMIT_KB)"
  elif ! png_holds "$T/g.png" 9902 662; then fail $name "g.png is not a labelled 9902 x 662 grid"
  else pass "$name (10 x 150 grids: flow run $flow_kb KB, fmtrain sample $kb KB peak RSS)"; fi
fi
finish
