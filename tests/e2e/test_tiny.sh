#!/usr/bin/env bash
# test_tiny.sh - the whole pipeline end to end on configs/tiny.yaml:
# vae -> encode -> flow -> sample -> eval, then the outputs a user and a script
# rely on (DESIGN.md §8), `fmtrain sample` on the last flow checkpoint, a
# second run that skips every finished stage, and `fmtrain eval RUN_DIR`.
# Prints PASS/FAIL e2e/<name>; exits non-zero on any failure.
source "$(dirname "$0")/../lib.sh" e2e
R=$T/run

start=$(date +%s%N)
"$FMTRAIN" "$TINY" --out "$R" >"$T/run.out" 2>"$T/run.err"
rc=$?
ms=$((($(date +%s%N) - start) / 1000000))
secs="$((ms / 1000)).$(printf '%03d' $((ms % 1000)))"
if [ $rc -eq 0 ]; then pass "tiny_pipeline (${secs}s)"; else
  fail tiny_pipeline "exit $rc"; show "$T/run.err" 5; finish; exit 1; fi

# the run directory holds what DESIGN §8 promises
missing=""
for f in config.yaml metrics.jsonl latents.safetensors eval.json; do [ -s "$R/$f" ] || missing="$missing $f"; done
ls "$R"/ckpt/vae-*.safetensors "$R"/ckpt/flow-*.safetensors "$R"/ckpt/classifier-*.safetensors >/dev/null 2>&1 || missing="$missing ckpt"
ls "$R"/samples/flow-*-w3.png "$R"/samples/sample-*-w1.png >/dev/null 2>&1 || missing="$missing samples"
if [ -z "$missing" ]; then pass run_directory; else fail run_directory "missing:$missing"; fi

# metrics, checkpoints, eval.json: readable by a few lines of Python (json + numpy)
$PY - "$R" <<'PYEOF' && pass outputs_readable || fail outputs_readable "see above"
import glob, json, struct, sys
import numpy as np
R = sys.argv[1]
lines = [json.loads(l) for l in open(f"{R}/metrics.jsonl")]
stages = {l["stage"] for l in lines}
assert {"vae", "flow", "classifier"} <= stages, stages
for l in lines:
    want = ("cfg", "accuracy", "fd") if l["stage"] == "eval" else ("loss", "loss_mean", "lr", "grad_norm",
                                                                    "images_per_s", "step_ms", "mfu", "world_size")
    for k in ("stage", "step", "time", "elapsed_s") + want:
        assert k in l, (k, l)
assert len([l for l in lines if l["stage"] == "eval"]) == 2, "one eval line per guidance scale"
flow = [l for l in lines if l["stage"] == "flow"]
assert flow[-1]["loss"] < flow[0]["loss"], "flow loss did not fall"
ck = sorted(glob.glob(f"{R}/ckpt/flow-*.safetensors"))[-1]
with open(ck, "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    hdr = json.loads(f.read(n))
    data = f.read()
meta = hdr.pop("__metadata__")
assert meta["stage"] == "flow" and int(meta["step"]) == 60, meta
w = hdr["conv_in.weight"]
a = np.frombuffer(data[w["data_offsets"][0]:w["data_offsets"][1]], np.float32).reshape(w["shape"])
assert a.shape[1] == 4 and np.isfinite(a).all()
assert any(k.startswith("ema.") for k in hdr) and any(k.startswith("adam.m.") for k in hdr)
ev = json.load(open(f"{R}/eval.json"))
assert 0 <= ev["classifier_test_accuracy"] <= 1 and ev["fd_floor"] >= 0
assert ev["fd_floor_train_images"] == ev["samples_per_class"] * 10 == ev["by_cfg"][0]["n"], ev
assert ev["fd_test_images"] > 0, ev
assert [b["cfg"] for b in ev["by_cfg"]] == [1, 3], ev
print("    eval.json:", json.dumps(ev))
PYEOF

# fmtrain sample on the last flow checkpoint writes a PNG (one row of class 3)
last=$(ls "$R"/ckpt/flow-*.safetensors | tail -1)
"$FMTRAIN" sample "$last" --class 3 --cfg 2 --steps 8 --sampler heun -o "$T/s.png" 2>"$T/sample.err"
rc=$?
if [ $rc -eq 0 ] && [ "$(head -c 8 "$T/s.png" | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ]; then
  pass sample_command
else fail sample_command "exit $rc"; cat "$T/sample.err"; fi

# a second run skips every finished stage and writes nothing new
before=$(find "$R" -type f -newer "$R/eval.json" | wc -l)
"$FMTRAIN" "$TINY" --out "$R" >"$T/run2.out" 2>"$T/run2.err"
rc=$?
if [ $rc -eq 0 ] && [ "$(grep -c ': done' "$T/run2.err")" -ge 5 ] && ! grep -q '  step ' "$T/run2.err"; then
  pass rerun_skips_finished_stages
else fail rerun_skips_finished_stages "exit $rc"; cat "$T/run2.err" | head; fi

# fmtrain eval recomputes eval.json: deterministic, same figures
cp "$R/eval.json" "$T/eval1.json"
"$FMTRAIN" eval "$R" >"$T/eval.out" 2>"$T/eval.err"
rc=$?
if [ $rc -eq 0 ] && cmp -s "$R/eval.json" "$T/eval1.json"; then pass eval_command_reproduces
else fail eval_command_reproduces "exit $rc"; diff "$R/eval.json" "$T/eval1.json"; fi

finish
